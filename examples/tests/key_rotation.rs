//! The cell tokens' master key rotated under a running operator, with every part
//! real: the control plane (RBAC and PodSecurity on, kwok nodes giving each cell
//! Pod its own loopback IP), the operator in a process of its own started through
//! the binary's own entry point (`fleetforge_operator::app::main`), its stderr in
//! a file, and one `cell-sim` process per cell
//! Pod started by the local cell runner, which refreshes their Secret mounts as a
//! kubelet would.
//!
//! 1. Rotation without a restart: the world's Secret holds the HMAC of the world's
//!    uid under the mounted key, computed here independently of the operator. The
//!    key directory is then swapped the way a kubelet updates a mounted Secret
//!    (new key in `key`, the old one in `previous-key`); the same operator process
//!    must, within seconds and with the default resync (a rotation wakes every
//!    world), write both
//!    tokens to the world's Secret, change the Service's token
//!    fingerprint, the cells must take the new token (and still the old one), and a
//!    split forced after the rotation must hand every session over. Dropping
//!    `previous-key` then removes the old token from the Secret and the cells
//!    refuse it.
//! 2. Secrets never in logs: neither master key nor any world token, in any of the
//!    forms it exists in, appears in the operator's JSON log at debug level or in
//!    the cells' logs.
//! 3. The operator's `/metrics`, scraped after the split, passes `promtool check
//!    metrics` (Debian's `prometheus` package) and carries every metric of
//!    `fleetforge_obs::metrics::ALL` this run must have produced.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fleetforge_core::contract::Session;
use fleetforge_core::{Bounds, CellId};
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_FORCE_SPLIT, ANNOTATION_ROLE,
    ANNOTATION_TOKEN_FINGERPRINT, ROLE_ACTIVE, decode_bounds, world_selector,
};
use fleetforge_obs::metrics as m;
use fleetforge_operator::mapping::cell_pod::{service_name, token_secret_name};
use fleetforge_testenv::{CellRunner, Profile, TestEnv};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rand::Rng as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WORLD: &str = "vault";
const CAPACITY: u32 = 2000;
/// Players put on c0 before the rotation; the forced split hands them over.
const ON_C0: u32 = 600;
/// Players put on c1, which does not split.
const ON_C1: u32 = 200;
/// How long any one step may take before the test gives up.
const STEP: Duration = Duration::from_secs(60);
/// The operator's resync: the default. The operator checks the key files every
/// 2 s and wakes every world when they change, so a steady world must not wait
/// for its resync to write its new tokens; a short resync would hide that.
const RESYNC_SECONDS: &str = "300";
/// The HMAC message prefix of `fleetforge_operator::cells::tokens`. Tokens already
/// mounted by cells in the field depend on it: it must never change silently.
const TOKEN_CONTEXT: &[u8] = b"fleetforge.io/cell-token/v1\0";

/// The libtest name of the operator's process entry point (below) and the
/// variable carrying its command line.
const OPERATOR_TEST: &str = "operator_process";
const OPERATOR_ARGS: &str = "KEY_ROTATION_OPERATOR_ARGS";

/// Metrics of `fleetforge_obs::metrics::ALL` this run may legitimately not
/// produce (the exporter shows a series once it was first recorded; the operator
/// creates the counters alerts read at zero when it starts, the others appear
/// with their first value):
/// - the merge duration: nothing merges here;
/// - API errors: a series per verb and code, only on a failed API call (a
///   conflict may or may not happen).
///
/// The gateway's own metrics (`fleetforge_obs::metrics::GATEWAY`) come from the
/// gateway's process, never the operator's. Every other name of `ALL` must be in
/// the scrape: reconciles and their duration,
/// the queue depth, worlds by phase, active cells, players, transitions, cells
/// created and retired and their time to serve, leadership, the permission
/// self-check, the split and its duration, the hand-over and its sessions, and the
/// load samples all happen in this run; merges, lost sessions and failed samples
/// are created at zero.
const MAY_BE_ABSENT: &[&str] = &[m::MERGE_DURATION, m::API_ERRORS];

/// The operator's process, when this test binary is started by the test below
/// with `OPERATOR_ARGS` set: the operator binary's own entry point,
/// [`fleetforge_operator::app::main`], with its exit status. An integration test
/// of this package cannot name another package's binary, so the test runs its
/// own executable as the operator. Without the variable it does nothing.
#[test]
#[ignore = "the operator process of key_rotation, started by that test"]
fn operator_process() {
    let Ok(args) = std::env::var(OPERATOR_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    std::process::exit(i32::from(fleetforge_operator::app::main(args)));
}

/// The operator process, its stderr in a file.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(args: &[String], log: &Path) -> anyhow::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .args([OPERATOR_TEST, "--exact", "--ignored", "--nocapture"])
            .env(OPERATOR_ARGS, serde_json::to_string(args)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log)?)
            .spawn()
            .context("starting the operator process")?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited (it must run from start to end).
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the operator process exited ({status}); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// The admin server's address, from its log line.
    async fn admin_addr(&mut self) -> anyhow::Result<String> {
        let log = self.log.clone();
        until("the operator's admin server listening", || {
            let alive = self.alive();
            let log = log.clone();
            async move {
                alive?;
                Ok(json_lines(&fs::read_to_string(&log)?)
                    .into_iter()
                    .find(|l| l["message"] == "admin server listening")
                    .and_then(|l| l["addr"].as_str().map(str::to_owned)))
            }
        })
        .await
    }

    /// SIGTERM, then waits for the exit.
    async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM {} failed", self.pid());
        let child = &mut self.child;
        fleetforge_testenv::eventually(
            "the operator stopped after SIGTERM",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || std::future::ready(child.try_wait().map_err(anyhow::Error::from)),
        )
        .await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key directory laid out and updated as a kubelet does a Secret volume: the
/// files are symlinks into `..data`, itself a symlink to a timestamped directory
/// that is replaced at once (`..data_tmp` renamed over `..data`); files new to
/// the Secret get their symlink after the swap, files gone lose it after.
struct KeyDir {
    dir: tempfile::TempDir,
    generation: u32,
    payload: Option<String>,
}

impl KeyDir {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            generation: 0,
            payload: None,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn publish(&mut self, files: &[(&str, &str)]) -> anyhow::Result<()> {
        use std::os::unix::fs::symlink;
        self.generation += 1;
        let dir = self.dir.path();
        let payload = format!("..payload_{}", self.generation);
        fs::create_dir(dir.join(&payload))?;
        for (name, content) in files {
            fs::write(dir.join(&payload).join(name), content)?;
        }
        symlink(&payload, dir.join("..data_tmp"))?;
        fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
        let names: BTreeSet<&str> = files.iter().map(|(n, _)| *n).collect();
        for name in &names {
            let link = dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{name}"), link)?;
            }
        }
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !names.contains(name.as_str()) {
                fs::remove_file(dir.join(&name))?;
            }
        }
        if let Some(old) = self.payload.replace(payload) {
            fs::remove_dir_all(dir.join(old))?;
        }
        Ok(())
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(text.len().is_multiple_of(2), "odd length");
    (0..text.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&text[i..i + 2], 16)?))
        .collect()
}

/// Standard base64 with padding, as `base64` and a Secret's `data` write it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A master key as the README creates one: 32 random bytes, base64. The file's
/// text (trimmed) is the HMAC key.
fn new_key() -> ([u8; 32], String) {
    let mut raw = [0u8; 32];
    rand::rng().fill(&mut raw);
    let text = base64(&raw);
    (raw, text)
}

/// The token of the world with `uid` under the master key file `key_text`,
/// derived here without the operator: HMAC-SHA256 of the context and the uid,
/// lowercase hex.
fn expected_token(key_text: &str, uid: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key_text.trim().as_bytes());
    let mut message = TOKEN_CONTEXT.to_vec();
    message.extend_from_slice(uid.as_bytes());
    hex(ring::hmac::sign(&key, &message).as_ref())
}

/// The world's Secret as an admin reads it: its keys and their values.
async fn token_secret(client: &Client, ns: &str) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(secrets.get_opt(&token_secret_name(WORLD)).await?.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    }))
}

/// The holder of the operator's Lease.
async fn lease_holder(client: &Client, ns: &str) -> anyhow::Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get("fleetforge-operator")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .context("the Lease has no holder")
}

async fn fingerprint(client: &Client, ns: &str) -> anyhow::Result<Option<String>> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    Ok(services
        .get_opt(&service_name(WORLD))
        .await?
        .and_then(|s| s.annotations().get(ANNOTATION_TOKEN_FINGERPRINT).cloned()))
}

/// A cell as the test sees it.
#[derive(Debug, Clone)]
struct Cell {
    id: CellId,
    bounds: Bounds,
    ip: String,
    active: bool,
}

/// The world's live cells: Pods running with an IP and not being deleted.
async fn cells(client: &Client, ns: &str) -> anyhow::Result<Vec<Cell>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&world_selector(WORLD)))
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
            id: a.get(ANNOTATION_CELL).context("cell id")?.parse()?,
            bounds: decode_bounds(a.get(ANNOTATION_BOUNDS).context("bounds")?)?,
            ip,
            active: a.get(ANNOTATION_ROLE).map(String::as_str) == Some(ROLE_ACTIVE),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Talks to cells as a game's admin tools would.
struct Admin {
    http: reqwest::Client,
}

impl Admin {
    fn url(ip: &str, path: &str) -> String {
        format!("http://{ip}:8080{path}")
    }

    async fn answers(&self, ip: &str) -> bool {
        let sent = self.http.get(Self::url(ip, "/v1/load")).send().await;
        sent.is_ok_and(|r| r.status().is_success())
    }

    /// The status of an authenticated call presenting `token`.
    async fn status_with(&self, ip: &str, token: &str) -> anyhow::Result<StatusCode> {
        Ok(self
            .http
            .get(Self::url(ip, "/v1/admin/sessions"))
            .bearer_auth(token)
            .send()
            .await?
            .status())
    }

    async fn add(&self, ip: &str, token: &str, count: u32) -> anyhow::Result<()> {
        self.http
            .post(Self::url(ip, "/v1/admin/players"))
            .bearer_auth(token)
            .json(&json!({"add": count, "distribution": {"uniform": {}}, "rampSeconds": 0.0}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn sessions(&self, ip: &str, token: &str) -> anyhow::Result<Vec<Session>> {
        let v: Value = self
            .http
            .get(Self::url(ip, "/v1/admin/sessions"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(serde_json::from_value(v["sessions"].clone())?)
    }

    /// Waits until the world's cells are exactly `ids`, all active and answering.
    async fn layout(&self, client: &Client, ns: &str, ids: &[CellId]) -> anyhow::Result<Vec<Cell>> {
        let want: BTreeSet<&CellId> = ids.iter().collect();
        until(&format!("cells {ids:?} serving"), || async {
            let now = cells(client, ns).await?;
            let active: BTreeSet<&CellId> = now.iter().filter(|c| c.active).map(|c| &c.id).collect();
            if active != want || now.len() != ids.len() {
                return Ok(None);
            }
            for c in &now {
                if !self.answers(&c.ip).await {
                    return Ok(None);
                }
            }
            Ok(Some(now))
        })
        .await
    }

    /// Waits until every cell in `live` answers `token` with `want`.
    async fn all_answer(&self, live: &[Cell], token: &str, want: StatusCode) -> anyhow::Result<()> {
        until(&format!("every cell answering {want} to a token"), || async {
            for c in live {
                if self.status_with(&c.ip, token).await? != want {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
        .await
    }

    /// Every session of the world, checked: the active cells tile the world, each
    /// session is in exactly one cell and inside its box, and there are
    /// `expected`.
    async fn check_sessions(
        &self,
        world: &Bounds,
        live: &[Cell],
        token: &str,
        expected: usize,
    ) -> anyhow::Result<()> {
        let area: f64 = live.iter().map(|c| c.bounds.measure()).sum();
        ensure!(
            (area - world.measure()).abs() < 1e-6 * world.measure(),
            "cells cover {area}, the world {}",
            world.measure()
        );
        let mut seen = BTreeMap::new();
        for c in live {
            for s in self.sessions(&c.ip, token).await? {
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
}

/// A 1000 x 1000 world of 2 cells of `CAPACITY` players. Its players stay far from
/// the scale-up threshold and above the scale-down one (the children of the forced
/// split hold about 300 each), and a long cooldown keeps the children from merging
/// back: only the forced split changes the layout.
fn world_spec(ns: &str) -> anyhow::Result<WorldSpec> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "fleetforge.io/v1",
        "kind": "WorldSpec",
        "metadata": {"name": WORLD, "namespace": ns},
        "spec": {
            "gameServerImage": "fleetforge/cell-simulator:0.1.0",
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
                "scaleUpThreshold": 0.8,
                "scaleDownThreshold": 0.05,
                "minCells": 2,
                "maxCells": 8,
                "stabilizationWindowSeconds": 1,
                "cooldownSeconds": 600,
                "maxTransitions": 10,
                "rateLimitPeriodSeconds": 10,
                "transitionTimeoutSeconds": 30
            }
        }
    }))?)
}

/// The scrape as text.
async fn scrape_text(addr: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// Samples by series (name and labels).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Metric families by their `# TYPE` lines.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`: its output, which must be empty with exit 0.
fn promtool_check(text: &str) -> anyhow::Result<()> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "promtool is not installed: install Debian's `prometheus` package (apt-get install prometheus), which provides /usr/bin/promtool"
        ),
        Err(e) => return Err(e).context("running promtool"),
    };
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics ({}) on the operator's scrape:\n{report}\n--- scrape ---\n{text}",
        out.status
    );
    Ok(())
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Every form a secret may take in a log: the text itself, its hex and base64
/// (as a Secret's `data` holds it), and, for a text that is itself an encoding
/// (a base64 key, a hex token), the decoded bytes, raw, in hex, in base64 and as
/// Rust prints a byte array. Also a 16-character prefix of each text form, which
/// would betray a log that truncates.
fn forms(label: &str, text: &str, decoded: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = text.trim();
    let mut out = vec![
        (format!("{label} as text"), text.as_bytes().to_vec()),
        (format!("{label}, its hex"), hex(text.as_bytes()).into_bytes()),
        (
            format!("{label}, its base64"),
            base64(text.as_bytes()).into_bytes(),
        ),
        (format!("{label} decoded"), decoded.to_vec()),
        (format!("{label} decoded, in hex"), hex(decoded).into_bytes()),
        (
            format!("{label} decoded, in upper-case hex"),
            hex(decoded).to_uppercase().into_bytes(),
        ),
        (
            format!("{label} decoded, in base64"),
            base64(decoded).into_bytes(),
        ),
    ];
    let prefixes: Vec<(String, Vec<u8>)> = out
        .iter()
        .filter(|(_, v)| v.len() > 16 && v.is_ascii())
        .map(|(l, v)| (format!("{l} (first 16 characters)"), v[..16].to_vec()))
        .collect();
    out.extend(prefixes);
    out.push((
        format!("{label} decoded, as a byte array"),
        format!("{decoded:?}").into_bytes(),
    ));
    out
}

/// The secrets found in `haystack`, by label.
fn leaks(haystack: &[u8], secrets: &[(String, Vec<u8>)]) -> Vec<String> {
    secrets
        .iter()
        .filter(|(_, needle)| haystack.windows(needle.len()).any(|w| w == needle.as_slice()))
        .map(|(label, _)| label.clone())
        .collect()
}

/// What every scenario works in: one namespace of the shared cluster, the cell
/// runner, the key directory and the operator process leading in it, and the
/// world. The scenarios run in order, each on what the one before left: one
/// operator process must live through all of them, and its log and counters are
/// the evidence of the last ones.
struct Rotation {
    env: &'static TestEnv,
    client: Client,
    ns: String,
    admin: Admin,
    /// Taken when the cells are stopped.
    runner: Option<CellRunner>,
    cell_logs: PathBuf,
    keys: KeyDir,
    operator: Operator,
    operator_log: PathBuf,
    pid: u32,
    identity: String,
    admin_addr: String,
    worlds: Api<WorldSpec>,
    uid: String,
    world_bounds: Bounds,
    c0: CellId,
    c1: CellId,
}

/// A master key as the test holds it: its bytes and the text of its file.
struct Key {
    raw: [u8; 32],
    text: String,
}

impl Rotation {
    /// Starts the cell runner and the operator process with `key` in its key
    /// directory, waits until it leads, and creates the world.
    async fn start(key: &Key) -> anyhow::Result<Self> {
        let env = TestEnv::shared(Profile::Cluster).await?;
        let client = env.client().await?;
        let ns = env.create_restricted_namespace("rotation").await?;
        let admin = Admin {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };

        // Logs outlive the control plane, for a look after a failure.
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("key-rotation-{ns}"));
        let cell_logs = logs.join("cells");
        let runner = CellRunner::start(
            client.clone(),
            PathBuf::from(env!("CARGO_BIN_EXE_cell-sim")),
            &cell_logs,
        )?;

        let mut keys = KeyDir::new()?;
        keys.publish(&[("key", &key.text)])?;

        let operator_log = logs.join("operator.log");
        let identity = format!("key-rotation-{}", std::process::id());
        let args: Vec<String> = [
            "fleetforge-operator",
            "--kubeconfig",
            &env.admin_kubeconfig().display().to_string(),
            "--namespaces",
            &ns,
            "--lease-namespace",
            &ns,
            "--identity",
            &identity,
            // The port the kernel picks is read back from the log.
            "--admin-addr",
            "127.0.0.1:0",
            "--busy-requeue-seconds",
            "0.5",
            "--resync-seconds",
            RESYNC_SECONDS,
            "--sample-interval-seconds",
            "0.25",
            "--sample-timeout-seconds",
            "0.2",
            "--cell-token-key-dir",
            &keys.path().display().to_string(),
            "--log-format",
            "json",
            "--log",
            "debug",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut operator = Operator::start(&args, &operator_log)?;
        let pid = operator.pid();
        let admin_addr = operator.admin_addr().await?;
        // One process leads throughout: it holds the Lease now and at the end, it
        // never exits, and it wins one election only.
        until("the operator leading", || async {
            Ok(lease_holder(&client, &ns).await.ok().filter(|h| *h == identity))
        })
        .await?;

        let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
        worlds.create(&PostParams::default(), &world_spec(&ns)?).await?;
        let uid = worlds.get(WORLD).await?.uid().context("the world's uid")?;
        Ok(Self {
            env,
            client,
            ns,
            admin,
            runner: Some(runner),
            cell_logs,
            keys,
            operator,
            operator_log,
            pid,
            identity,
            admin_addr,
            worlds,
            uid,
            world_bounds: Bounds::rect((0.0, 1000.0), (0.0, 1000.0))?,
            c0: "c0".parse()?,
            c1: "c1".parse()?,
        })
    }
}

/// The world as the rotation finds it.
struct Before {
    /// Its cells, c0 and c1.
    live: Vec<Cell>,
    token1: String,
    fingerprint1: String,
    /// Its players.
    total: usize,
}

/// Before any rotation: the world's Secret holds the HMAC of its uid under the
/// mounted key, and nothing else; the cells take that token and refuse another;
/// players join, and the operator sees them.
async fn scenario_the_world_token_is_the_hmac_of_its_uid(
    fx: &Rotation,
    key1: &Key,
) -> anyhow::Result<Before> {
    let (client, ns, admin, worlds) = (&fx.client, fx.ns.as_str(), &fx.admin, &fx.worlds);
    let (c0, c1, uid) = (&fx.c0, &fx.c1, fx.uid.as_str());
    // Ready, cells answering.
    until("the world Ready", || async {
        let ws = worlds.get(WORLD).await?;
        Ok(ws
            .status
            .unwrap_or_default()
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(()))
    })
    .await?;
    let live = admin.layout(client, ns, &[c0.clone(), c1.clone()]).await?;

    // The Secret holds the HMAC of the uid under the key, and nothing else.
    let token1 = expected_token(&key1.text, uid);
    let data = token_secret(client, ns)
        .await?
        .context("the world's token Secret")?;
    ensure!(
        data.get("token") == Some(&token1),
        "the world's token is not HMAC-SHA256(key, context || uid) in hex"
    );
    ensure!(
        data.keys().map(String::as_str).eq(["token"]),
        "the Secret holds {:?}, expected only `token` before any rotation",
        data.keys().collect::<Vec<_>>()
    );
    let fingerprint1 = fingerprint(client, ns)
        .await?
        .context("the Service's token fingerprint")?;

    // The cells take that token and nothing else, and players join.
    admin.all_answer(&live, &token1, StatusCode::OK).await?;
    let (_, bogus) = new_key();
    for c in &live {
        let status = admin.status_with(&c.ip, &expected_token(&bogus, uid)).await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "{} answered {status} to a wrong token",
            c.id
        );
    }
    admin.add(&ip(&live, c0)?, &token1, ON_C0).await?;
    admin.add(&ip(&live, c1)?, &token1, ON_C1).await?;
    let total = (ON_C0 + ON_C1) as usize;
    admin
        .check_sessions(&fx.world_bounds, &live, &token1, total)
        .await?;

    // The operator sees them: its view is settled before the rotation.
    until("the players in the world's status", || async {
        let ws = worlds.get(WORLD).await?;
        Ok((ws.status.and_then(|s| s.total_players) == Some(total as u64)).then_some(()))
    })
    .await?;
    Ok(Before {
        live,
        token1,
        fingerprint1,
        total,
    })
}

/// The IP of cell `id` among `cells`.
fn ip(cells: &[Cell], id: &CellId) -> anyhow::Result<String> {
    Ok(cells.iter().find(|c| &c.id == id).context("cell")?.ip.clone())
}

/// The rotation as it reached the world, for the scenarios after it.
struct Rotated {
    token2: String,
    to_secret: Duration,
    to_service: Duration,
    to_cells: Duration,
}

/// 1. Rotation without a restart: the key directory swapped as a kubelet updates
///    a mounted Secret (the new key in `key`, the old one in `previous-key`), the
///    same operator process, still leading, writes both tokens to the world's
///    Secret and changes the Service's token fingerprint, and the cells take the
///    new token and still the old one.
async fn scenario_a_rotated_key_reaches_the_cells_without_a_restart(
    fx: &mut Rotation,
    before: &Before,
    key1: &Key,
    key2: &Key,
) -> anyhow::Result<Rotated> {
    let (client, ns, admin) = (&fx.client, fx.ns.as_str(), &fx.admin);
    let (live, token1, fingerprint1) = (&before.live, &before.token1, &before.fingerprint1);
    let token2 = expected_token(&key2.text, &fx.uid);
    ensure!(token2 != *token1, "two keys gave one token");
    fx.keys
        .publish(&[("key", &key2.text), ("previous-key", &key1.text)])?;
    let rotated = Instant::now();

    // A kubelet links a file new to the Secret after the swap: a reconcile in
    // between may see the new key without the previous one, and the next one then
    // writes both. Wait for the end state.
    until(
        "the new token in the world's Secret, the old one as `previous`",
        || async {
            let data = token_secret(client, ns).await?.unwrap_or_default();
            Ok((data.get("token") == Some(&token2) && data.get("previous") == Some(token1)).then_some(()))
        },
    )
    .await?;
    let to_secret = rotated.elapsed();
    until("the Service's token fingerprint changed", || async {
        Ok(fingerprint(client, ns).await?.filter(|f| f != fingerprint1))
    })
    .await?;
    let to_service = rotated.elapsed();
    admin.all_answer(live, &token2, StatusCode::OK).await?;
    let to_cells = rotated.elapsed();
    // The old token still opens the cells while it is kept as `previous`.
    admin.all_answer(live, token1, StatusCode::OK).await?;
    fx.operator.alive()?;
    ensure!(
        lease_holder(client, ns).await? == fx.identity,
        "another operator holds the Lease after the rotation"
    );
    Ok(Rotated {
        token2,
        to_secret,
        to_service,
        to_cells,
    })
}

/// The split after the rotation, for the scenarios after it.
struct Split {
    /// The world's cells after it: c0-0, c0-1 and c1.
    cells: Vec<Cell>,
    took: Duration,
    /// The operator's scrape once it counted the split.
    scrape: String,
    fingerprint2: String,
}

/// A split forced after the rotation: the operator asks c0 to export with the
/// new token, c0 sends its sessions to the children with the token it mounts;
/// every session is handed over, none lost, and the children take both tokens.
async fn scenario_a_split_after_the_rotation_hands_every_session_over(
    fx: &Rotation,
    before: &Before,
    rotated: &Rotated,
) -> anyhow::Result<Split> {
    let (client, ns, admin, worlds) = (&fx.client, fx.ns.as_str(), &fx.admin, &fx.worlds);
    let (c0, c1, total) = (&fx.c0, &fx.c1, before.total);
    let (token1, token2, fingerprint1) = (&before.token1, &rotated.token2, &before.fingerprint1);
    let patch = json!({"metadata": {"annotations": {ANNOTATION_FORCE_SPLIT: "c0"}}});
    worlds
        .patch(WORLD, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let split_asked = Instant::now();
    let [lo, hi] = c0.children();
    let split = admin
        .layout(client, ns, &[lo.clone(), hi.clone(), c1.clone()])
        .await?;
    let split_took = split_asked.elapsed();
    admin
        .check_sessions(&fx.world_bounds, &split, token2, total)
        .await?;
    // The children were created with the rotated Secret: both tokens open them.
    admin.all_answer(&split, token2, StatusCode::OK).await?;
    admin.all_answer(&split, token1, StatusCode::OK).await?;
    let after_split = until("the split counted in the operator's metrics", || async {
        let text = scrape_text(&fx.admin_addr).await?;
        Ok((metric(&samples(&text), m::SPLITS) >= 1.0).then_some(text))
    })
    .await?;
    let figures = samples(&after_split);
    // Settled by now (see above): the fingerprint of both tokens.
    let fingerprint2 = fingerprint(client, ns)
        .await?
        .context("the Service's token fingerprint")?;
    ensure!(
        fingerprint2 != *fingerprint1,
        "the fingerprint did not follow the rotation"
    );
    ensure!(
        figures.get(m::SESSIONS_LOST) == Some(&0.0),
        "sessions lost: {:?}",
        figures.get(m::SESSIONS_LOST)
    );
    ensure!(
        metric(&figures, m::SESSIONS_HANDED_OVER) == f64::from(ON_C0),
        "{} sessions handed over, c0 held {ON_C0}",
        metric(&figures, m::SESSIONS_HANDED_OVER)
    );
    ensure!(
        metric(&figures, m::SPLITS) == 1.0,
        "{} splits",
        metric(&figures, m::SPLITS)
    );
    Ok(Split {
        cells: split,
        took: split_took,
        scrape: after_split,
        fingerprint2,
    })
}

/// 3. The scrape after the split: promtool finds nothing to say, every metric
///    this run must have produced is there, and none missing from
///    `fleetforge_obs::metrics::ALL`. Returns how many families it has.
fn scenario_the_scrape_passes_promtool_with_every_metric(after_split: &str) -> anyhow::Result<usize> {
    promtool_check(after_split)?;
    let present = families(after_split);
    let missing: Vec<&str> = m::ALL
        .iter()
        .copied()
        .filter(|name| !m::GATEWAY.contains(name))
        .filter(|name| !MAY_BE_ABSENT.contains(name) && !present.contains(*name))
        .collect();
    ensure!(
        missing.is_empty(),
        "metrics of fleetforge_obs::metrics::ALL missing from the scrape after a split: {missing:?} \
         (if this run legitimately does not produce one, add it to MAY_BE_ABSENT with the reason)"
    );
    let undocumented: Vec<&String> = present
        .iter()
        .filter(|f| f.starts_with("fleetforge_") && !m::ALL.contains(&f.as_str()))
        .collect();
    ensure!(
        undocumented.is_empty(),
        "the operator exports metrics missing from fleetforge_obs::metrics::ALL: {undocumented:?}"
    );
    Ok(present.len())
}

/// The end of the rotation, for the summary.
struct Dropped {
    to_drop: Duration,
    to_refused: Duration,
}

/// The rotation is over: dropping `previous-key` removes the old token from the
/// world's Secret (the current one stays), changes the fingerprint again, and
/// the cells refuse the old token, take the new one and keep every session.
async fn scenario_dropping_the_previous_key_retires_the_old_token(
    fx: &mut Rotation,
    before: &Before,
    rotated: &Rotated,
    split: &Split,
    key2: &Key,
) -> anyhow::Result<Dropped> {
    let (token1, token2) = (&before.token1, &rotated.token2);
    let (fingerprint1, fingerprint2) = (&before.fingerprint1, &split.fingerprint2);
    fx.keys.publish(&[("key", &key2.text)])?;
    let (client, ns, admin) = (&fx.client, fx.ns.as_str(), &fx.admin);
    let dropped = Instant::now();
    until("the old token gone from the world's Secret", || async {
        let data = token_secret(client, ns).await?.unwrap_or_default();
        Ok((!data.contains_key("previous")).then_some(data))
    })
    .await
    .and_then(|data| {
        ensure!(
            data.get("token") == Some(token2),
            "the current token changed when `previous-key` went"
        );
        Ok(())
    })?;
    let to_drop = dropped.elapsed();
    until("the Service's token fingerprint changed again", || async {
        Ok(fingerprint(client, ns)
            .await?
            .filter(|f| f != fingerprint2 && f != fingerprint1))
    })
    .await?;
    admin
        .all_answer(&split.cells, token1, StatusCode::UNAUTHORIZED)
        .await?;
    let to_refused = dropped.elapsed();
    admin.all_answer(&split.cells, token2, StatusCode::OK).await?;
    admin
        .check_sessions(&fx.world_bounds, &split.cells, token2, before.total)
        .await?;
    Ok(Dropped { to_drop, to_refused })
}

/// One process all along: never restarted, leading from start to end with one
/// election won, no session lost; it stops cleanly on SIGTERM. The cells are
/// stopped too, so their logs are complete for the scenarios after it.
async fn scenario_one_process_led_throughout_and_stops_on_sigterm(
    fx: &mut Rotation,
) -> anyhow::Result<ExitStatus> {
    fx.operator.alive()?;
    ensure!(
        lease_holder(&fx.client, &fx.ns).await? == fx.identity,
        "another operator holds the Lease at the end"
    );
    let last = samples(&scrape_text(&fx.admin_addr).await?);
    ensure!(
        metric(&last, m::LEADER_ACQUISITIONS) == 1.0 && metric(&last, m::LEADER) == 1.0,
        "the operator's leadership was interrupted: {} acquisitions",
        metric(&last, m::LEADER_ACQUISITIONS)
    );
    ensure!(
        last.get(m::SESSIONS_LOST) == Some(&0.0),
        "sessions lost at the end: {:?}",
        last.get(m::SESSIONS_LOST)
    );
    let exit = fx.operator.terminate().await?;
    ensure!(exit.success(), "the operator exited with {exit} on SIGTERM");
    if let Some(runner) = fx.runner.take() {
        runner.stop();
    }
    Ok(exit)
}

/// What the log scenarios found, for the summary.
struct Logs {
    /// The operator's log, as JSON lines.
    lines: Vec<Value>,
    debug_lines: usize,
    secret_applies: usize,
    cell_log_bytes: usize,
    cell_log_count: usize,
    secret_forms: usize,
}

/// 2. Secrets never in logs: neither master key nor any world token, in any of
///    the forms it exists in, appears in the operator's JSON log at debug level
///    (which did log the token Secret being applied at creation, at the rotation
///    and when `previous-key` went) or in any of the four cells' logs.
fn scenario_no_key_or_token_in_any_log(
    fx: &Rotation,
    keys: [&Key; 2],
    tokens: [&str; 2],
) -> anyhow::Result<Logs> {
    let [key1, key2] = keys;
    let [token1, token2] = tokens;
    let operator_log = &fx.operator_log;
    let mut secrets = forms("the first master key", &key1.text, &key1.raw);
    secrets.extend(forms("the second master key", &key2.text, &key2.raw));
    secrets.extend(forms("the old world token", token1, &unhex(token1)?));
    secrets.extend(forms("the new world token", token2, &unhex(token2)?));
    let text = fs::read(operator_log)?;
    let found = leaks(&text, &secrets);
    ensure!(
        found.is_empty(),
        "the operator's log ({}) holds {found:?}",
        operator_log.display()
    );
    // The grep means something only if the log saw the tokens being handled.
    let lines = json_lines(&String::from_utf8_lossy(&text));
    let world_key = format!("{}/{WORLD}", fx.ns);
    let secret_applies = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|s| s.contains("cell token Secret"))
        })
        .filter(|l| l.to_string().contains(&world_key) || l.to_string().contains(&token_secret_name(WORLD)))
        .count();
    let debug_lines = lines.iter().filter(|l| l["level"] == "DEBUG").count();
    ensure!(
        secret_applies >= 3,
        "the operator logged {secret_applies} applies of the world's cell token Secret, expected one at creation, \
         one at the rotation and one when `previous-key` went"
    );
    ensure!(debug_lines > 0, "no debug line in a log at debug level");

    let mut cell_log_bytes = 0;
    let mut cell_log_count = 0;
    for entry in fs::read_dir(&fx.cell_logs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = fs::read(&path)?;
            let found = leaks(&text, &secrets);
            ensure!(found.is_empty(), "{} holds {found:?}", path.display());
            cell_log_bytes += text.len();
            cell_log_count += 1;
        }
    }
    ensure!(
        cell_log_count == 4,
        "{cell_log_count} cell logs, expected one for each of c0, c1, c0-0 and c0-1"
    );
    Ok(Logs {
        lines,
        debug_lines,
        secret_applies,
        cell_log_bytes,
        cell_log_count,
        secret_forms: secrets.len(),
    })
}

/// Correlation: the ids on the reconciles' log lines prefix the Audit-ID of
/// their API calls (`<id>-<n>`) in the API server's audit log, a write of the
/// world's token Secret among them, and end the notes of their Events.
async fn scenario_audit_ids_and_event_notes_carry_the_logs_correlation_ids(
    fx: &Rotation,
    lines: &[Value],
) -> anyhow::Result<()> {
    let ns = fx.ns.as_str();
    let correlation_ids: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l["correlation_id"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        !correlation_ids.is_empty(),
        "no log line carries a correlation_id"
    );
    let from_reconciles: Vec<Value> = fx
        .env
        .audit_events()?
        .into_iter()
        .filter(|e| e["objectRef"]["namespace"] == ns)
        .filter(|e| {
            e["auditID"]
                .as_str()
                .and_then(|id| id.rsplit_once('-'))
                .is_some_and(|(prefix, n)| prefix.len() == 16 && n.parse::<u32>().is_ok())
        })
        .collect();
    let secret_write = from_reconciles.iter().any(|e| {
        e["objectRef"]["resource"] == "secrets"
            && e["objectRef"]["name"] == token_secret_name(WORLD).as_str()
            && e["verb"] == "patch"
    });
    ensure!(
        secret_write,
        "no write of the world's token Secret carries a reconcile's Audit-ID"
    );
    for e in &from_reconciles {
        let id = e["auditID"].as_str().unwrap_or_default();
        let prefix = id.rsplit_once('-').map_or("", |(p, _)| p);
        ensure!(
            correlation_ids.contains(prefix),
            "audit event {id} ({} {}) has no reconcile with correlation id {prefix} in the operator's log",
            e["verb"],
            e["requestURI"]
        );
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(fx.client.clone(), ns);
    let noted = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .filter(|n| {
            n.rsplit_once("(correlation id ")
                .is_some_and(|(_, id)| correlation_ids.contains(id.trim_end_matches(')')))
        })
        .count();
    ensure!(
        noted > 0,
        "no Event note ends with a correlation id of the operator's log"
    );
    Ok(())
}

/// The scenarios, in order, each on what the one before left (see [`Rotation`]).
#[tokio::test]
async fn master_key_rotates_without_a_restart_and_secrets_stay_out_of_logs() -> anyhow::Result<()> {
    let new = || {
        let (raw, text) = new_key();
        Key { raw, text }
    };
    let (key1, key2) = (new(), new());
    let mut fx = Rotation::start(&key1).await?;
    let before = scenario_the_world_token_is_the_hmac_of_its_uid(&fx, &key1).await?;
    let rotated =
        scenario_a_rotated_key_reaches_the_cells_without_a_restart(&mut fx, &before, &key1, &key2).await?;
    let split = scenario_a_split_after_the_rotation_hands_every_session_over(&fx, &before, &rotated).await?;
    let families = scenario_the_scrape_passes_promtool_with_every_metric(&split.scrape)?;
    let dropped =
        scenario_dropping_the_previous_key_retires_the_old_token(&mut fx, &before, &rotated, &split, &key2)
            .await?;
    let exit = scenario_one_process_led_throughout_and_stops_on_sigterm(&mut fx).await?;
    let logs = scenario_no_key_or_token_in_any_log(&fx, [&key1, &key2], [&before.token1, &rotated.token2])?;
    scenario_audit_ids_and_event_notes_carry_the_logs_correlation_ids(&fx, &logs.lines).await?;

    println!("\n== key rotation: summary ==");
    println!(
        "operator process {} ({}) leading throughout, stopped by SIGTERM: {exit}",
        fx.pid, fx.identity
    );
    println!(
        "rotation -> both tokens in the world's Secret {:.2}s, Service fingerprint changed {:.2}s, every cell taking the new token {:.2}s (resync {RESYNC_SECONDS}s)",
        rotated.to_secret.as_secs_f64(),
        rotated.to_service.as_secs_f64(),
        rotated.to_cells.as_secs_f64()
    );
    println!(
        "forced split after the rotation: children serving in {:.2}s, {ON_C0} sessions handed over, {} conserved, 0 lost",
        split.took.as_secs_f64(),
        before.total
    );
    println!(
        "previous-key removed -> `previous` gone from the Secret {:.2}s, old token refused by every cell {:.2}s",
        dropped.to_drop.as_secs_f64(),
        dropped.to_refused.as_secs_f64()
    );
    println!(
        "logs: operator {} JSON lines ({} at debug, {} Secret applies), {} cell logs of {} bytes, {} secret forms searched: none found",
        logs.lines.len(),
        logs.debug_lines,
        logs.secret_applies,
        logs.cell_log_count,
        logs.cell_log_bytes,
        logs.secret_forms
    );
    println!("promtool check metrics: clean on a scrape of {families} families");
    Ok(())
}
