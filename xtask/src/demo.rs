//! `cargo xtask demo`: FleetForge on an embedded default. Starts the local control
//! plane (cluster profile: scheduler, controller-manager and kwok nodes, so cell
//! Pods are scheduled and get loopback IPs), runs a `cell-sim` process for every
//! cell Pod at its Pod's IP (the local cell runner), installs the WorldSpec CRD,
//! starts the operator and the player gateway, applies the sample worlds from
//! `examples/worlds/` and prints each cell as it becomes Ready, then each world as
//! it turns Ready (every cell answering the operator's load samples), then asks
//! the gateway which cell serves a position of each world, as a game client
//! would, and prints the `curl` that does the same. Keeps everything up for
//! `kubectl` and `curl` until Ctrl-C, or stops there with `--exit`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_WORLD, APP_NAME, LABEL_NAME};
use fleetforge_operator::config::cli::Cli;
use fleetforge_testenv::{CellRunner, Options, Profile, TestEnv};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::oneshot;

use crate::bench_gate::{cargo, target_dir};

/// The field manager the demo applies the samples with.
const MANAGER: &str = "fleetforge-demo";

/// Where the demo's player gateway listens.
const GATEWAY_ADDR: &str = "127.0.0.1:8090";

/// How long the gateway gets to answer for a world that is Ready.
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the worlds get to turn Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Entry point of `cargo xtask demo`. With `exit`, stops once every world is
/// Ready instead of waiting for Ctrl-C.
pub fn run(root: &Path, exit: bool) -> anyhow::Result<()> {
    crate::k8s::run(root, false)?;
    let cell_sim = build_cell_sim(root)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(demo(root, &cell_sim, exit))
}

/// Builds the cell simulator and returns the path of its binary.
fn build_cell_sim(root: &Path) -> anyhow::Result<PathBuf> {
    let status = std::process::Command::new(cargo())
        .current_dir(root)
        .args(["build", "--package", "fleetforge-examples", "--bin", "cell-sim"])
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("building the cell simulator failed ({status})");
    }
    Ok(target_dir(root).join("debug").join("cell-sim"))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn world_ready(ws: &WorldSpec) -> bool {
    ws.status.as_ref().is_some_and(|s| {
        s.observed_generation == ws.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn demo(root: &Path, cell_sim: &Path, exit: bool) -> anyhow::Result<()> {
    println!("starting the local control plane (etcd, kube-apiserver with RBAC and PodSecurity,");
    println!("controller-manager, scheduler, kwok nodes) ...");
    let env = TestEnv::start_with(Options::new(Profile::Cluster).nodes(3)).await?;
    println!(
        "control plane up in {:.1}s at {}; the WorldSpec CRD is installed",
        env.startup_time().as_secs_f64(),
        env.server_url()
    );
    // Logging starts once the control plane is up: its readiness polling would
    // log every refused connection before that.
    fleetforge_obs::init_logging(fleetforge_obs::LogFormat::Text, "warn")?;
    let client = env.client().await?;
    let kubeconfig = env.admin_kubeconfig().display().to_string();
    let cell_logs = env.dir().join("cells");
    let runner = CellRunner::start(client.clone(), cell_sim, &cell_logs)?;
    println!(
        "cell runner started: one cell-sim process per cell Pod, bound to the Pod's IP (logs in {})",
        cell_logs.display()
    );

    // The operator, as its binary runs it (leader election included).
    let cli = Cli::try_parse_from([
        "fleetforge-operator",
        "--kubeconfig",
        &kubeconfig,
        "--lease-namespace",
        "default",
        "--admin-addr",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ])?;
    let (stop_operator, stopped) = oneshot::channel::<()>();
    let operator = tokio::spawn(fleetforge_operator::app::operator::run_until(
        cli,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    println!("operator started");

    // The player gateway, reading the cluster as its watches would; on its usual
    // port, or any free one when that is taken.
    let settings = |listen: &str| -> anyhow::Result<fleetforge_gateway::app::Settings> {
        Ok(fleetforge_gateway::app::Settings {
            scope: fleetforge_gateway::watch::Scope::Cluster,
            listen: listen.parse()?,
            admin_listen: None,
            limits: fleetforge_gateway::http::Limits::default(),
        })
    };
    let gateway =
        match fleetforge_gateway::app::start(client.clone(), settings(GATEWAY_ADDR)?, None, None).await {
            Ok(gateway) => gateway,
            Err(_) => {
                fleetforge_gateway::app::start(client.clone(), settings("127.0.0.1:0")?, None, None).await?
            }
        };
    println!("player gateway listening on http://{}", gateway.api);

    // Print every cell once it is Ready.
    let cells = Api::<Pod>::all(client.clone());
    let printer = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let config = watcher::Config::default().labels(&format!("{LABEL_NAME}={APP_NAME}"));
        let mut pods = watcher(cells, config).default_backoff().applied_objects().boxed();
        while let Some(Ok(pod)) = pods.next().await {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if !is_ready(&pod) || !seen.insert(name.clone()) {
                continue;
            }
            let a = pod.metadata.annotations.clone().unwrap_or_default();
            let get = |k: &str| a.get(k).cloned().unwrap_or_default();
            let ip = pod.status.and_then(|s| s.pod_ip).unwrap_or_default();
            println!(
                "  cell ready: {:<10} {:<8} {name:<24} {ip:<15} {}",
                get(ANNOTATION_WORLD),
                get(ANNOTATION_CELL),
                get(ANNOTATION_BOUNDS)
            );
        }
    });

    let started = Instant::now();
    for path in sample_files(root)? {
        let text = std::fs::read_to_string(&path)?;
        let ws: WorldSpec = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not a WorldSpec", path.display()))?;
        let ns = ws.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = ws.metadata.name.clone().context("a sample world has no name")?;
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .patch(&ns, &PatchParams::apply(MANAGER), &Patch::Apply(&namespace))
            .await?;
        Api::<WorldSpec>::namespaced(client.clone(), &ns)
            .patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(&ws))
            .await
            .with_context(|| format!("applying {}", path.display()))?;
        println!("applied {} ({ns}/{name})", path.display());
    }

    // Wait for every world to turn Ready.
    let worlds = Api::<WorldSpec>::all(client.clone());
    let mut ready: BTreeMap<String, Duration> = BTreeMap::new();
    loop {
        let list = worlds.list(&ListParams::default()).await?;
        for ws in &list.items {
            let key = format!(
                "{}/{}",
                ws.metadata.namespace.as_deref().unwrap_or_default(),
                ws.metadata.name.as_deref().unwrap_or_default()
            );
            if world_ready(ws) && !ready.contains_key(&key) {
                let cells = ws.status.as_ref().and_then(|s| s.ready_cells).unwrap_or(0);
                println!(
                    "world ready: {key} with {cells} cells, {:.2}s after the samples were applied",
                    started.elapsed().as_secs_f64()
                );
                ready.insert(key, started.elapsed());
            }
        }
        if !list.items.is_empty() && ready.len() == list.items.len() {
            break;
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "not every world was Ready within {READY_TIMEOUT:?}; ready: {:?}; see kubectl --kubeconfig {kubeconfig} get ws -A",
                ready.keys().collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Where a player at the centre of each world's first quarter plays, as a game
    // client asks it.
    let http = reqwest::Client::new();
    let mut curl = None;
    for ws in worlds.list(&ListParams::default()).await?.items {
        if !ws.spec.gateway.enabled {
            continue;
        }
        let world = fleetforge_crd::to_world(&ws).map_err(|e| anyhow::anyhow!("{e}"))?;
        let b = world.bounds;
        let query: Vec<String> = b
            .axes()
            .map(|axis| {
                format!(
                    "{}={}",
                    axis.name(),
                    b.min(axis) + (b.max(axis) - b.min(axis)) / 4.0
                )
            })
            .collect();
        let url = format!(
            "http://{}/v1/worlds/{}/{}/locate?{}",
            gateway.api,
            ws.metadata.namespace.as_deref().unwrap_or_default(),
            world.name,
            query.join("&")
        );
        let answer = locate(&http, &url).await?;
        println!(
            "located: {}/{} at {} -> cell {} at {}:{} (epoch {}.{})",
            ws.metadata.namespace.as_deref().unwrap_or_default(),
            world.name,
            query.join(" "),
            answer["cell"].as_str().unwrap_or("?"),
            answer["address"]["ip"].as_str().unwrap_or("?"),
            answer["address"]["port"],
            answer["epoch"]["mark"],
            answer["epoch"]["seq"],
        );
        // The small sample is the one the README follows.
        if curl.is_none() || world.name == "meadow" {
            curl = Some(url);
        }
    }

    println!("\nkubeconfig: {kubeconfig}");
    println!("try: kubectl --kubeconfig {kubeconfig} get worldspecs -A");
    if let Some(url) = curl {
        println!("     curl '{url}'");
        println!(
            "     curl -N -H 'Accept: text/event-stream' '{}'",
            url.split('?')
                .next()
                .unwrap_or_default()
                .replace("/locate", "/topology")
        );
    }
    println!("     curl http://<cell IP>:8080/v1/load");
    if !exit {
        println!("the control plane and the operator stay up until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    println!("stopping");
    gateway.stop().await?;
    printer.abort();
    let _ = stop_operator.send(());
    operator.await??;
    runner.stop();
    Ok(())
}

/// Asks the gateway `url` until it locates the position: a world just turned
/// Ready, and the gateway may read its last activation a moment later.
async fn locate(http: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    loop {
        let response = http.get(url).send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if status.is_success() {
            return Ok(body);
        }
        if started.elapsed() > GATEWAY_TIMEOUT {
            bail!("the gateway does not locate {url}: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sample_files(root: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let dir = root.join("examples").join("worlds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}
