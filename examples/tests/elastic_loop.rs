//! The elastic loop end to end, with every part real: the control plane (RBAC and
//! PodSecurity on, kwok nodes giving each cell Pod its own loopback IP), the
//! operator as its binary runs it, and one `cell-sim` process per cell Pod started
//! by the local cell runner. Players are synthetic; their sessions really cross
//! between processes on every split and merge.
//!
//! 1. Rounds of split and merge: a cell is ramped past the scale-up threshold
//!    until it splits; the children must tile the parent, and every session must
//!    sit in exactly one cell that contains it, none lost. Load is lowered until
//!    the siblings merge back, with the same checks. Throughout, the player
//!    gateway locates a position of the splitting cell again and again: to the
//!    parent until the child that contains it is active, then to that child,
//!    never back, with a layout epoch that never falls (and the same through the
//!    merge); the time from a cell's activation to the gateway's first answer
//!    naming it is the directory lag of the summary.
//!    A split whose child never comes up is rolled back: the children go, the
//!    parent keeps serving with its sessions.
//! 2. A storm: several cells hot at once, and again once split. The rate limit and
//!    the cooldown must hold throughout, and no session is lost.
//! 3. A cell's process is killed as if its node died: it must be detected and
//!    replaced within seconds, and its sessions counted as lost.
//!
//! The figures (latencies, hand-over time, losses, directory lag) are printed as
//! a summary; run `cargo xtask e2e` for them from a release build (with more
//! rounds: `FLEETFORGE_E2E_ROUNDS`, default 3).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser as _;
use fleetforge_core::contract::{LoadReport, Session};
use fleetforge_core::{Axis, Bounds, CellId};
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_ACTIVE_SINCE, ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_ROLE, ROLE_ACTIVE, decode_bounds,
    world_selector,
};
use fleetforge_gateway::app::{Running as Gateway, Settings as GatewaySettings};
use fleetforge_gateway::http::Limits;
use fleetforge_gateway::watch::Scope;
use fleetforge_operator::config::cli::Cli;
use fleetforge_operator::mapping::cell_pod::token_secret_name;
use fleetforge_testenv::locate::{LocatePoller, check_run, first_naming};
use fleetforge_testenv::{CellRunner, Profile, TestEnv};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// The world of the split/merge rounds and the dead cell.
const FRONTIER: &str = "frontier";
/// The world whose split is rolled back.
const FRAGILE: &str = "fragile";
/// The world of the storm, with tight pacing from its start.
const TEMPEST: &str = "tempest";
/// The storm world's rate limit: splits and merges per period.
const STORM_MAX: usize = 2;
/// The storm world's rate-limit period.
const STORM_PERIOD: Duration = Duration::from_secs(20);
const CAPACITY: u32 = 2000;
const UP: f64 = 0.8;
const DOWN: f64 = 0.3;
/// Rounds of split-then-merge for the latency figures, unless
/// `FLEETFORGE_E2E_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
/// How often the gateway poller asks where its position is: the resolution of
/// the directory-lag figure.
const LOCATE_EVERY: Duration = Duration::from_millis(10);

fn rounds() -> anyhow::Result<usize> {
    match std::env::var("FLEETFORGE_E2E_ROUNDS") {
        Ok(n) => n
            .parse()
            .with_context(|| format!("FLEETFORGE_E2E_ROUNDS={n:?} is not a number of rounds")),
        Err(_) => Ok(ROUNDS),
    }
}
/// How long any one step of the loop may take before the test gives up.
const STEP: Duration = Duration::from_secs(60);

/// A cell as the test sees it: its Pod and what its process reports.
#[derive(Debug, Clone)]
struct Cell {
    pod: String,
    id: CellId,
    bounds: Bounds,
    ip: String,
    active: bool,
}

/// Talks to cells as a game's admin tools would, with the world's token.
struct Players {
    http: reqwest::Client,
    token: String,
}

impl Players {
    fn url(ip: &str, path: &str) -> String {
        format!("http://{ip}:8080{path}")
    }

    async fn load(&self, ip: &str) -> anyhow::Result<LoadReport> {
        Ok(self
            .http
            .get(Self::url(ip, "/v1/load"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn add(&self, ip: &str, count: u32, ramp_seconds: f64) -> anyhow::Result<()> {
        self.http
            .post(Self::url(ip, "/v1/admin/players"))
            .bearer_auth(&self.token)
            .json(&json!({"add": count, "distribution": {"uniform": {}}, "rampSeconds": ramp_seconds}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn remove(&self, ip: &str, count: u32) -> anyhow::Result<()> {
        self.http
            .post(Self::url(ip, "/v1/admin/players"))
            .bearer_auth(&self.token)
            .json(&json!({"remove": count}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn sessions(&self, ip: &str) -> anyhow::Result<Vec<Session>> {
        let v: Value = self
            .http
            .get(Self::url(ip, "/v1/admin/sessions"))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(serde_json::from_value(v["sessions"].clone())?)
    }
}

/// Polls `check` every 50 ms until it yields a value or `STEP` passes.
async fn until<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    fleetforge_testenv::eventually(what, STEP, Duration::from_millis(50), check).await
}

/// A world's live cells: Pods running with an IP and not being deleted.
async fn cells(client: &Client, ns: &str, world: &str) -> anyhow::Result<Vec<Cell>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&world_selector(world)))
        .await?;
    let mut out = Vec::new();
    for p in list.items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let a = p.annotations();
        out.push(Cell {
            pod: p.name_any(),
            id: a.get(ANNOTATION_CELL).context("cell id")?.parse()?,
            bounds: decode_bounds(a.get(ANNOTATION_BOUNDS).context("bounds")?)?,
            ip,
            active: a.get(ANNOTATION_ROLE).map(String::as_str) == Some(ROLE_ACTIVE),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Waits until a world's cells are exactly `ids`, all active and answering.
async fn layout(
    client: &Client,
    ns: &str,
    world: &str,
    players: &Players,
    ids: &[CellId],
) -> anyhow::Result<Vec<Cell>> {
    let want: BTreeSet<&CellId> = ids.iter().collect();
    until(&format!("{world}: cells {ids:?}"), || async {
        let now = cells(client, ns, world).await?;
        let active: BTreeSet<&CellId> = now.iter().filter(|c| c.active).map(|c| &c.id).collect();
        if active != want || now.len() != ids.len() {
            return Ok(None);
        }
        for c in &now {
            if players.load(&c.ip).await.is_err() {
                return Ok(None);
            }
        }
        Ok(Some(now))
    })
    .await
}

/// Every session of the world, checked: active cells tile the world, each session
/// is in exactly one cell and inside that cell's box, and there are `expected`.
async fn check_sessions(
    world: &Bounds,
    live: &[Cell],
    players: &Players,
    expected: usize,
) -> anyhow::Result<()> {
    let area: f64 = live.iter().map(|c| c.bounds.measure()).sum();
    ensure!(
        (area - world.measure()).abs() < 1e-6 * world.measure(),
        "cells cover {area}, the world {}",
        world.measure()
    );
    for (i, a) in live.iter().enumerate() {
        for b in &live[i + 1..] {
            ensure!(!a.bounds.overlaps(&b.bounds), "{} and {} overlap", a.id, b.id);
        }
    }
    let mut seen = BTreeMap::new();
    for c in live {
        for s in players.sessions(&c.ip).await? {
            ensure!(
                c.bounds.contains_closed(&s.position),
                "session {} at {:?} is in {} whose bounds do not contain it",
                s.id,
                s.position,
                c.id
            );
            if let Some(other) = seen.insert(s.id.clone(), c.id.clone()) {
                bail!("session {} is in both {other} and {}", s.id, c.id);
            }
        }
    }
    ensure!(
        seen.len() == expected,
        "{} sessions, expected {expected}",
        seen.len()
    );
    Ok(())
}

/// The cells of the first split generation that split again: the parents of the
/// cells two levels deep.
fn split_again(cells: &[Cell]) -> BTreeSet<CellId> {
    cells
        .iter()
        .filter(|c| c.id.depth() == 2)
        .filter_map(|c| c.id.parent())
        .collect()
}

/// The operator's metrics, as Prometheus scrapes them.
async fn scrape(addr: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A 1000 x 1000 world of 2 cells of `CAPACITY` players, splitting after 1 s
/// above `UP`, with `max_transitions` per `period` and `cooldown` seconds.
fn world_spec(
    ns: &str,
    name: &str,
    max_transitions: usize,
    period: Duration,
    cooldown: u64,
) -> anyhow::Result<WorldSpec> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "fleetforge.io/v1",
        "kind": "WorldSpec",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "gameServerImage": "fleetforge/cell-simulator:0.1.0",
            "gateway": {"enabled": true},
            "topology": {
                "initialCells": 2,
                "worldBoundaries": {"xMin": 0, "xMax": 1000, "yMin": 0, "yMax": 1000},
                "cellSize": 50
            },
            "capacity": {
                "maxPlayersPerCell": CAPACITY,
                "cpuRequest": "100m", "cpuLimit": "500m",
                "memoryRequest": "64Mi", "memoryLimit": "128Mi"
            },
            "scaling": {
                "scaleUpThreshold": UP,
                "scaleDownThreshold": DOWN,
                "minCells": 2,
                "maxCells": 16,
                "stabilizationWindowSeconds": 1,
                "cooldownSeconds": cooldown,
                "maxTransitions": max_transitions,
                "rateLimitPeriodSeconds": period.as_secs(),
                "transitionTimeoutSeconds": 30
            }
        }
    }))?)
}

/// Splits and merges a world's status lists, by start time, kind and new cells.
async fn transitions(
    worlds: &Api<WorldSpec>,
    world: &str,
) -> anyhow::Result<BTreeSet<(String, String, Vec<String>)>> {
    let ws = worlds.get(world).await?;
    Ok(ws
        .status
        .unwrap_or_default()
        .recent_transitions
        .into_iter()
        .map(|r| (format!("{:?}", r.at), r.kind, r.cells))
        .collect())
}

/// The token a world's cells accept, as an admin reads it from its Secret.
async fn players_of(client: &Client, ns: &str, world: &str) -> anyhow::Result<Players> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = token_secret_name(world);
    let token = until(&format!("{world}: token Secret"), || async {
        Ok(secrets
            .get_opt(&name)
            .await?
            .and_then(|s| s.data)
            .and_then(|d| d.get("token").map(|t| String::from_utf8_lossy(&t.0).into_owned())))
    })
    .await?;
    Ok(Players {
        http: reqwest::Client::new(),
        token,
    })
}

/// Where the in-process operator's admin server listens, as its log line
/// `admin server listening` (field `addr`) tells it: the operator is given
/// `--admin-addr 127.0.0.1:0` and says the port the kernel chose only there.
static ADMIN_ADDR: OnceLock<SocketAddr> = OnceLock::new();

/// Takes the `addr` of the operator's `admin server listening` event into
/// [`ADMIN_ADDR`].
struct AdminAddrLayer;

impl<S: tracing::Subscriber> Layer<S> for AdminAddrLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            addr: String,
        }
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "addr" => self.addr = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "admin server listening"
            && let Ok(addr) = fields.addr.parse()
        {
            let _ = ADMIN_ADDR.set(addr);
        }
    }
}

/// The test's log set-up: warnings of every crate to standard error (the
/// operator's warnings, a hand-over that failed, a cell that died, show in the
/// test's output), and the operator's own `info` events to [`AdminAddrLayer`].
fn init_logging() -> anyhow::Result<()> {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(LevelFilter::WARN),
        )
        .with(AdminAddrLayer.with_filter(Targets::new().with_target("fleetforge_operator", Level::INFO)))
        .try_init()?;
    Ok(())
}

/// What every scenario works in: one namespace of the shared cluster, with the
/// cell runner and the operator, as its binary runs it, watching it. The
/// scenarios run in order in it, one operator for all: the operator records
/// metrics in the process's one global recorder (so a test binary holds one),
/// and its counters (sessions lost, above all) are the scenarios' evidence.
struct Loop {
    client: Client,
    ns: String,
    runner: CellRunner,
    worlds: Api<WorldSpec>,
    /// The operator's admin server (`/metrics`).
    admin_addr: String,
    world_bounds: Bounds,
    c0: CellId,
    c1: CellId,
    /// Players that make a cell hot: 85% of its seats.
    hot: u32,
    stop: oneshot::Sender<()>,
    operator: JoinHandle<anyhow::Result<()>>,
    /// The player gateway, in this process, reading the namespace as admin.
    gateway: Gateway,
    _key_dir: tempfile::TempDir,
}

impl Loop {
    /// Starts the cell runner and the operator, sampling every 250 ms, in a new
    /// namespace, and waits for the operator's admin server.
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::shared(Profile::Cluster).await?;
        init_logging()?;
        let client = env.client().await?;

        let ns = env.create_restricted_namespace("elastic").await?;

        // Cell logs outlive the control plane, for a look after a failure.
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cells-{ns}"));
        let runner = CellRunner::start(
            client.clone(),
            PathBuf::from(env!("CARGO_BIN_EXE_cell-sim")),
            &logs,
        )?;

        // The operator as its binary runs it, sampling every 250 ms.
        let key_dir = tempfile::tempdir()?;
        std::fs::write(key_dir.path().join("key"), "e2e-master-key-0123456789abcdef")?;
        let kubeconfig = env.admin_kubeconfig().display().to_string();
        let key_dir_arg = key_dir.path().display().to_string();
        let cli = Cli::try_parse_from([
            "fleetforge-operator",
            "--kubeconfig",
            &kubeconfig,
            "--namespaces",
            &ns,
            "--lease-namespace",
            &ns,
            "--admin-addr",
            "127.0.0.1:0",
            "--busy-requeue-seconds",
            "0.5",
            "--sample-interval-seconds",
            "0.25",
            "--sample-timeout-seconds",
            "0.2",
            "--dead-cell-seconds",
            "2",
            "--cell-token-key-dir",
            &key_dir_arg,
            "--log-format",
            "text",
            "--log",
            "warn",
        ])?;
        let (stop, stopped) = oneshot::channel::<()>();
        let mut operator = tokio::spawn(fleetforge_operator::app::operator::run_until(
            cli,
            None,
            async move {
                let _ = stopped.await;
            },
        ));
        let admin_addr = tokio::select! {
            addr = until("the operator's admin server listening", || async {
                Ok(ADMIN_ADDR.get().copied())
            }) => addr?.to_string(),
            ended = &mut operator => bail!("the operator stopped before its admin server listened: {ended:?}"),
        };

        let gateway = fleetforge_gateway::app::start(
            client.clone(),
            GatewaySettings {
                scope: Scope::Namespace(ns.clone()),
                listen: "127.0.0.1:0".parse()?,
                admin_listen: None,
                limits: Limits {
                    rate_per_second: 1e4,
                    burst: 10_000,
                    ..Limits::default()
                },
            },
            None,
            None,
        )
        .await?;

        Ok(Self {
            worlds: Api::namespaced(client.clone(), &ns),
            client,
            ns,
            runner,
            admin_addr,
            world_bounds: Bounds::rect((0.0, 1000.0), (0.0, 1000.0))?,
            c0: "c0".parse()?,
            c1: "c1".parse()?,
            hot: (f64::from(CAPACITY) * 0.85) as u32,
            stop,
            operator,
            gateway,
            _key_dir: key_dir,
        })
    }

    /// Stops the operator (it must end cleanly), then the cells.
    async fn stop(self) -> anyhow::Result<()> {
        self.gateway.stop().await?;
        self.stop.send(()).ok();
        self.operator.await??;
        self.runner.stop();
        Ok(())
    }
}

/// What the split/merge rounds leave for the dead-cell scenario and the summary.
struct Rounds {
    /// Players of the split/merge world.
    players: Players,
    /// Its cells after the last merge.
    live: Vec<Cell>,
    split_latency: Vec<f64>,
    merge_latency: Vec<f64>,
    /// Seconds from a cell's activation to the gateway first naming it, for each
    /// child that took the polled position over and each merged parent.
    directory_lag: Vec<f64>,
}

/// Seconds from `cell`'s activation (its Pod's `active-since`) to `seen`.
async fn lag_of(client: &Client, ns: &str, cell: &Cell, seen: std::time::SystemTime) -> anyhow::Result<f64> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns).get(&cell.pod).await?;
    let since: u64 = pod
        .annotations()
        .get(ANNOTATION_ACTIVE_SINCE)
        .context("active-since")?
        .parse()?;
    let seen = seen.duration_since(std::time::UNIX_EPOCH)?.as_millis() as f64;
    Ok((seen - since as f64) / 1000.0)
}

/// 1. Rounds of split and merge of c0, with 85% of its seats taken: ramped past
///    the scale-up threshold, c0 splits, its children tile it exactly and every
///    session sits in exactly one cell that contains it; lowered, the children
///    merge back into a c0 of the same bounds, with the same checks. No session
///    is lost in any round.
async fn scenario_split_merge_rounds_lose_no_session(fx: &Loop) -> anyhow::Result<Rounds> {
    let (client, ns, c0, c1, hot) = (&fx.client, fx.ns.as_str(), &fx.c0, &fx.c1, fx.hot);
    let world_bounds = &fx.world_bounds;
    fx.worlds
        .create(
            &PostParams::default(),
            &world_spec(ns, FRONTIER, 10, Duration::from_secs(10), 2)?,
        )
        .await?;
    let players = players_of(client, ns, FRONTIER).await?;

    let mut live = layout(client, ns, FRONTIER, &players, &[c0.clone(), c1.clone()]).await?;
    check_sessions(world_bounds, &live, &players, 0).await?;

    let (mut split_latency, mut merge_latency, mut directory_lag) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds()? {
        let parent = live.iter().find(|c| c.id == *c0).context("c0")?.clone();
        // A position in the lower tenth of c0 along both axes: in its first child
        // whichever axis the split cuts.
        let b = &parent.bounds;
        let at = |axis: Axis| b.min(axis) + (b.max(axis) - b.min(axis)) * 0.1;
        let url = format!(
            "http://{}/v1/worlds/{ns}/{FRONTIER}/locate?x={}&y={}",
            fx.gateway.api,
            at(Axis::X),
            at(Axis::Y)
        );
        let poller = LocatePoller::start(url, LOCATE_EVERY);
        players.add(&parent.ip, hot, 0.5).await?;
        until("c0 past the scale-up threshold", || async {
            let l = players.load(&parent.ip).await?;
            Ok((f64::from(l.players) > UP * f64::from(CAPACITY)).then_some(()))
        })
        .await?;
        let crossed = Instant::now();
        let [lo, hi] = c0.children();
        live = layout(
            client,
            ns,
            FRONTIER,
            &players,
            &[lo.clone(), hi.clone(), c1.clone()],
        )
        .await?;
        split_latency.push(crossed.elapsed().as_secs_f64());
        let lo_id = lo.to_string();
        until("the gateway answers the child", || async {
            Ok((poller.last_cell().as_deref() == Some(lo_id.as_str())).then_some(()))
        })
        .await?;
        let split_run = poller.take();
        check_run(&split_run, &["c0"], &lo_id)
            .with_context(|| format!("round {round}: locating through the split"))?;
        let child = live.iter().find(|c| c.id == lo).context("the first child")?;
        let seen = first_naming(&split_run, &lo_id).context("never named")?;
        directory_lag.push(lag_of(client, ns, child, seen).await?);
        check_sessions(world_bounds, &live, &players, hot as usize).await?;
        let children: Vec<Cell> = live
            .iter()
            .filter(|c| c.id == lo || c.id == hi)
            .cloned()
            .collect();
        let union = children[0].bounds.union(&children[1].bounds);
        ensure!(
            union == parent.bounds && !children[0].bounds.overlaps(&children[1].bounds),
            "round {round}: children {:?} and {:?} do not tile the parent {:?}",
            children[0].bounds,
            children[1].bounds,
            parent.bounds
        );

        // Down to a third of the merge threshold per child: two thirds of it
        // together.
        let keep = (DOWN * f64::from(CAPACITY) / 3.0) as u32;
        for child in &children {
            let held = players.load(&child.ip).await?.players;
            players.remove(&child.ip, held.saturating_sub(keep)).await?;
        }
        let lowered = Instant::now();
        live = layout(client, ns, FRONTIER, &players, &[c0.clone(), c1.clone()]).await?;
        merge_latency.push(lowered.elapsed().as_secs_f64());
        until("the gateway answers the merged cell", || async {
            Ok((poller.last_cell().as_deref() == Some("c0")).then_some(()))
        })
        .await?;
        let merge_run = poller.take();
        drop(poller);
        // The split run ended on the child: the merge run starts there.
        check_run(&merge_run, &[lo_id.as_str()], "c0")
            .with_context(|| format!("round {round}: locating through the merge"))?;
        check_sessions(world_bounds, &live, &players, 2 * keep as usize).await?;
        let merged = live.iter().find(|c| c.id == *c0).context("c0")?.clone();
        let seen = first_naming(&merge_run, "c0").context("never named")?;
        directory_lag.push(lag_of(client, ns, &merged, seen).await?);
        ensure!(
            merged.bounds == parent.bounds,
            "round {round}: the merged c0 has other bounds"
        );
        players.remove(&merged.ip, 2 * keep).await?;
        // Let the merged cell's cooldown (2 s) pass, so the next round measures
        // the loop rather than the pacing.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let m = scrape(&fx.admin_addr).await?;
    ensure!(
        metric(&m, "fleetforge_sessions_lost_total") == 0.0,
        "sessions lost in the split/merge rounds"
    );
    Ok(Rounds {
        players,
        live,
        split_latency,
        merge_latency,
        directory_lag,
    })
}

/// A split whose child never comes up (its image cannot start, say) is rolled
/// back after the world's transition timeout: the children go, the parent keeps
/// serving with every session.
async fn scenario_a_split_whose_child_never_serves_is_rolled_back(fx: &Loop) -> anyhow::Result<()> {
    let (client, ns, c0, c1, hot) = (&fx.client, fx.ns.as_str(), &fx.c0, &fx.c1, fx.hot);
    let mut fragile = world_spec(ns, FRAGILE, 10, Duration::from_secs(10), 2)?;
    fragile.spec.scaling.transition_timeout_seconds = 3;
    fx.worlds.create(&PostParams::default(), &fragile).await?;
    let shaky = players_of(client, ns, FRAGILE).await?;
    let before = layout(client, ns, FRAGILE, &shaky, &[c0.clone(), c1.clone()]).await?;
    let [stuck, _] = c0.children();
    fx.runner.hold(ns, &stuck.name(FRAGILE));
    let hot_cell = before.iter().find(|c| c.id == *c0).context("c0")?.clone();
    shaky.add(&hot_cell.ip, hot, 0.0).await?;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    until("a SplitRolledBack Event", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("SplitRolledBack")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(FRAGILE)
            })
            .then_some(()))
    })
    .await?;
    // Cool the parent so it does not try again, then it must be as before.
    shaky.remove(&hot_cell.ip, hot).await?;
    let after = layout(client, ns, FRAGILE, &shaky, &[c0.clone(), c1.clone()]).await?;
    ensure!(
        after.iter().find(|c| c.id == *c0).map(|c| &c.pod) == Some(&hot_cell.pod),
        "the parent of a rolled-back split was replaced"
    );
    check_sessions(&fx.world_bounds, &after, &shaky, 0).await
}

/// The storm's figures, and the operator's own, for the summary.
struct Storm {
    first_wave: usize,
    second_wave: usize,
    handed_over: f64,
    handoffs: f64,
    handoff_seconds: f64,
    split_mean: f64,
    merge_mean: f64,
}

/// 2. A storm on a world paced at 2 splits or merges per 20 s and 8 s of
///    cooldown: both cells hot at once, then all four children. The rate limit
///    and the cooldown hold throughout (no more than 2 splits in either period,
///    none of the second generation inside the first), and no session is lost.
async fn scenario_a_storm_keeps_to_the_rate_limit_and_loses_no_session(fx: &Loop) -> anyhow::Result<Storm> {
    let (client, ns, c0, c1, hot) = (&fx.client, fx.ns.as_str(), &fx.c0, &fx.c1, fx.hot);
    let (worlds, world_bounds) = (&fx.worlds, &fx.world_bounds);
    worlds
        .create(
            &PostParams::default(),
            &world_spec(ns, TEMPEST, STORM_MAX, STORM_PERIOD, 8)?,
        )
        .await?;
    let storm = players_of(client, ns, TEMPEST).await?;
    let roots = layout(client, ns, TEMPEST, &storm, &[c0.clone(), c1.clone()]).await?;
    let storm_started = Instant::now();
    for c in &roots {
        storm.add(&c.ip, hot, 0.0).await?;
    }
    let [a0, a1] = c0.children();
    let [b0, b1] = c1.children();
    let children = layout(client, ns, TEMPEST, &storm, &[a0, a1, b0, b1]).await?;
    let mut total = 2 * hot as usize;
    check_sessions(world_bounds, &children, &storm, total).await?;
    // Each child holds about half its parent's players: lift each well past the
    // threshold.
    let extra = (UP * f64::from(CAPACITY)) as u32 - hot / 2 + 150;
    for c in &children {
        storm.add(&c.ip, extra, 0.0).await?;
        total += extra as usize;
    }
    // Every child is hot now, but the period's budget is spent and they cool
    // down: nothing may split until the period that began with the first wave
    // is over.
    let mut seen = BTreeSet::new();
    while storm_started.elapsed() < STORM_PERIOD - Duration::from_millis(500) {
        seen.extend(transitions(worlds, TEMPEST).await?);
        let now = cells(client, ns, TEMPEST).await?;
        ensure!(
            now.iter().all(|c| c.id.depth() <= 1),
            "a cell split again inside the rate-limit period: {:?}",
            now.iter().map(|c| c.id.to_string()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_wave = seen.iter().filter(|(_, kind, _)| kind == "split").count();
    ensure!(
        first_wave <= STORM_MAX,
        "{first_wave} splits in the storm's first period"
    );
    check_sessions(world_bounds, &cells(client, ns, TEMPEST).await?, &storm, total).await?;
    // The next period allows two more, and no third before it ends.
    let second_wave = until("the storm's second wave of splits", || async {
        let parents = split_again(&cells(client, ns, TEMPEST).await?);
        Ok((parents.len() >= STORM_MAX).then_some(parents))
    })
    .await?;
    while storm_started.elapsed() < 2 * STORM_PERIOD - Duration::from_millis(500) {
        let parents = split_again(&cells(client, ns, TEMPEST).await?);
        ensure!(
            parents.len() <= STORM_MAX,
            "more than {STORM_MAX} splits in the storm's second period: {parents:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = until("the storm's cells settled", || async {
        let now = cells(client, ns, TEMPEST).await?;
        Ok(now.iter().all(|c| c.active).then_some(now))
    })
    .await?;
    check_sessions(world_bounds, &settled, &storm, total).await?;
    let m = scrape(&fx.admin_addr).await?;
    ensure!(
        metric(&m, "fleetforge_sessions_lost_total") == 0.0,
        "sessions lost in the storm"
    );
    let mean = |name: &str| metric(&m, &format!("{name}_sum")) / metric(&m, &format!("{name}_count"));
    Ok(Storm {
        first_wave,
        second_wave: second_wave.len(),
        handed_over: metric(&m, "fleetforge_sessions_handed_over_total"),
        handoff_seconds: metric(&m, "fleetforge_handoff_duration_seconds_sum"),
        handoffs: metric(&m, "fleetforge_handoff_duration_seconds_count"),
        split_mean: mean("fleetforge_split_duration_seconds"),
        merge_mean: mean("fleetforge_merge_duration_seconds"),
    })
}

/// The dead cell's figures, for the summary.
struct Dead {
    held: u32,
    detected: f64,
    replaced: f64,
    lost: f64,
}

/// 3. A cell's process dies as with its node, while its Pod still says Running.
///    Its sessions are gone with it; the operator notices from the missing
///    samples, replaces it with a cell of the same bounds, and counts exactly the
///    sessions it held as lost. Runs last: the scenarios before it prove that
///    nothing was lost.
async fn scenario_a_dead_cell_is_replaced_and_its_sessions_counted_lost(
    fx: &Loop,
    rounds: &Rounds,
) -> anyhow::Result<Dead> {
    let (client, ns, worlds, players) = (&fx.client, fx.ns.as_str(), &fx.worlds, &rounds.players);
    // 700 players lift c1 out of the cold band, which wakes the world: its
    // status then shows the sample the operator took.
    let victim = rounds.live.iter().find(|c| c.id == fx.c1).context("c1")?.clone();
    let held = 700;
    players.add(&victim.ip, held, 0.0).await?;
    until("the operator sampled the victim's players", || async {
        let ws = worlds.get(FRONTIER).await?;
        Ok((ws.status.and_then(|s| s.total_players) == Some(u64::from(held))).then_some(()))
    })
    .await?;
    fx.runner.kill(ns, &victim.pod)?;
    let killed = Instant::now();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    until("the dead cell's Pod retired", || async {
        let p = pods.get_opt(&victim.pod).await?;
        Ok(p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    let detected = killed.elapsed().as_secs_f64();
    let replacement = until("a replacement answering", || async {
        for c in cells(client, ns, FRONTIER).await? {
            if c.id == victim.id && c.pod != victim.pod && c.active && players.load(&c.ip).await.is_ok() {
                return Ok(Some(c));
            }
        }
        Ok(None)
    })
    .await?;
    let replaced = killed.elapsed().as_secs_f64();
    ensure!(
        replacement.bounds == victim.bounds,
        "the replacement covers other space"
    );
    let lost = until("the lost sessions counted", || async {
        let m = scrape(&fx.admin_addr).await?;
        let lost = metric(&m, "fleetforge_sessions_lost_total");
        Ok((lost > 0.0).then_some(lost))
    })
    .await?;
    ensure!(
        lost == f64::from(held),
        "{lost} sessions counted lost, the dead cell held {held}"
    );
    Ok(Dead {
        held,
        detected,
        replaced,
        lost,
    })
}

fn print_summary(rounds: &mut Rounds, storm: &Storm, dead: &Dead) {
    let (split_latency, merge_latency) = (&mut rounds.split_latency, &mut rounds.merge_latency);
    split_latency.sort_by(f64::total_cmp);
    merge_latency.sort_by(f64::total_cmp);
    rounds.directory_lag.sort_by(f64::total_cmp);
    let lag = &rounds.directory_lag;
    let Storm {
        first_wave,
        second_wave,
        handed_over,
        handoffs,
        handoff_seconds,
        split_mean,
        merge_mean,
    } = storm;
    let Dead {
        held,
        detected,
        replaced,
        lost,
    } = dead;
    println!("\n== elastic loop: summary ==");
    println!(
        "split (threshold crossed -> children serving, parent retired): p50 {:.2}s p95 {:.2}s over {} splits",
        percentile(split_latency, 0.5),
        percentile(split_latency, 0.95),
        split_latency.len()
    );
    println!(
        "merge (load lowered -> parent serving, children retired): p50 {:.2}s p95 {:.2}s over {} merges",
        percentile(merge_latency, 0.5),
        percentile(merge_latency, 0.95),
        merge_latency.len()
    );
    println!(
        "hand-over: {handed_over} sessions in {handoffs} exports taking {handoff_seconds:.3}s: {:.3}s per 1000 sessions",
        if *handed_over > 0.0 {
            handoff_seconds / handed_over * 1000.0
        } else {
            f64::NAN
        }
    );
    println!(
        "operator's own view (plan started -> old cells retired), mean: split {split_mean:.2}s, merge {merge_mean:.2}s"
    );
    println!(
        "gateway directory lag (cell activated -> gateway first answers with it, polled every {} ms): p50 {:.3}s p99 {:.3}s max {:.3}s over {} activations",
        LOCATE_EVERY.as_millis(),
        percentile(lag, 0.5),
        percentile(lag, 0.99),
        lag.last().copied().unwrap_or(f64::NAN),
        lag.len()
    );
    println!("sessions lost in the rounds and the storm: 0");
    println!("a split whose child never came up: rolled back (SplitRolledBack), the parent kept serving");
    println!(
        "storm: {first_wave} splits in the first {}s period, {second_wave} in the second (limit {STORM_MAX})",
        STORM_PERIOD.as_secs(),
    );
    println!(
        "dead cell ({held} sessions): Pod retired {detected:.2}s after its process died, replacement serving at {replaced:.2}s, {lost} sessions counted lost"
    );
}

/// The scenarios, in order, in one namespace with one operator (see [`Loop`]):
/// the dead cell comes last, after the scenarios that prove no session is lost.
#[tokio::test]
async fn cells_split_merge_and_hand_sessions_over_with_none_lost() -> anyhow::Result<()> {
    let fx = Loop::start().await?;
    let mut rounds = scenario_split_merge_rounds_lose_no_session(&fx).await?;
    scenario_a_split_whose_child_never_serves_is_rolled_back(&fx).await?;
    let storm = scenario_a_storm_keeps_to_the_rate_limit_and_loses_no_session(&fx).await?;
    let dead = scenario_a_dead_cell_is_replaced_and_its_sessions_counted_lost(&fx, &rounds).await?;
    print_summary(&mut rounds, &storm, &dead);
    fx.stop().await
}
