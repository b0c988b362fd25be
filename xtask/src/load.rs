//! `cargo xtask load`: the operator binary (release build) against the local
//! cluster with many worlds at once. Reports how long the worlds took to turn
//! Ready, the API writes per created cell, writes while steady (must be none),
//! and the operator's memory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetforge_crd::WorldSpec;
use fleetforge_testenv::{Options, Profile, TestEnv};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::bench_gate::{cargo, target_dir};

/// The user the operator authenticates as, to find its writes in the audit log.
const OPERATOR_USER: &str = "fleetforge-operator";

/// Entry point of `cargo xtask load`.
pub fn run(root: &Path, worlds: usize, cells: u32) -> anyhow::Result<()> {
    crate::k8s::run(root, false)?;
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["build", "--release", "--package", "fleetforge-operator"])
        .status()?;
    if !status.success() {
        bail!("building the operator failed");
    }
    let binary = target_dir(root).join("release").join("fleetforge-operator");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(load(root, &binary, worlds, cells))
}

/// Kills the operator when the run ends, however it ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The operator's `/metrics` text, found through the admin address its log
/// reports.
fn scrape(log: &Path) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let text = std::fs::read_to_string(log)?;
    let addr = text
        .lines()
        .filter(|l| l.contains("admin server listening"))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["addr"].as_str().map(str::to_owned)
        })
        .context("the operator log names no admin address")?;
    let mut stream = std::net::TcpStream::connect(&addr)?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body.to_owned())
}

/// Series in a Prometheus text exposition: lines that are neither comments nor
/// blank.
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

fn writes(env: &TestEnv, ns: &str) -> anyhow::Result<usize> {
    Ok(env.writes_by(OPERATOR_USER, ns)?.len())
}

async fn load(root: &Path, binary: &Path, worlds: usize, cells: u32) -> anyhow::Result<()> {
    let pods = worlds * cells as usize;
    let nodes = pods.div_ceil(200).max(3);
    println!("starting the local cluster ({nodes} kwok nodes) ...");
    let mut options = Options::new(Profile::Cluster).nodes(nodes);
    options.pods_per_node = 250;
    let env = TestEnv::start_with(options).await?;
    let client = env.client().await?;
    let ns = "load";
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;

    let kubeconfig = env.kubeconfig_for(OPERATOR_USER, &["system:masters"])?;
    let log = env.dir().join("operator.log");
    let child = Command::new(binary)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--lease-namespace", "default", "--admin-addr", "127.0.0.1:0"])
        // The operator module at info: its "admin server listening" line gives
        // the port of /metrics.
        .args([
            "--resync-seconds",
            "2",
            "--log",
            "warn,fleetforge_operator::app::operator=info",
        ])
        // The load run measures the control plane: its cells are kwok Pods with
        // no process behind them, so there is no load to sample and nothing to
        // hand over.
        .args(["--cell-contract", "false"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let operator = Operator(child);
    let pid = operator.0.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = memory_kib(pid)?;

    let text = std::fs::read_to_string(root.join("examples/worlds/small.yaml"))?;
    let template: WorldSpec = serde_yaml_ng::from_str(&text)?;
    let api = Api::<WorldSpec>::namespaced(client.clone(), ns);
    let started = Instant::now();
    let mut created_at = std::collections::BTreeMap::new();
    for i in 0..worlds {
        let mut ws = template.clone();
        ws.metadata.name = Some(format!("world-{i:03}"));
        ws.metadata.namespace = Some(ns.to_owned());
        ws.spec.topology.initial_cells = cells;
        api.create(&PostParams::default(), &ws).await?;
        created_at.insert(format!("world-{i:03}"), started.elapsed().as_secs_f64());
    }
    let created = started.elapsed();
    println!(
        "created {worlds} worlds of {cells} cells in {:.2}s",
        created.as_secs_f64()
    );

    let mut ready_at: Vec<f64> = Vec::new();
    let mut latency: Vec<f64> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < worlds {
        for ws in api.list(&ListParams::default()).await?.items {
            let ready = ws.status.as_ref().is_some_and(|s| {
                s.ready_cells == Some(cells)
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            let name = ws.metadata.name.clone().unwrap_or_default();
            if ready && seen.insert(name.clone()) {
                let at = started.elapsed().as_secs_f64();
                ready_at.push(at);
                latency.push(at - created_at.get(&name).copied().unwrap_or(0.0));
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {} of {worlds} worlds Ready after 600s", seen.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ready_at.sort_by(f64::total_cmp);
    latency.sort_by(f64::total_cmp);
    let (busy_rss, busy_peak) = memory_kib(pid)?;
    let init_writes = writes(&env, ns)?;

    // Steady: five resyncs of every world.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady_writes = writes(&env, ns)? - init_writes;
    let (steady_rss, peak) = memory_kib(pid)?;

    println!("\nfigures ({worlds} worlds x {cells} cells = {pods} cell Pods, operator release build):");
    println!(
        "  all worlds Ready {:.2}s after the first was created (creating them took {:.2}s)",
        ready_at.last().copied().unwrap_or(0.0),
        created.as_secs_f64()
    );
    println!(
        "  each world from its creation to Ready: p50 {:.2}s, p95 {:.2}s, max {:.2}s",
        percentile(&latency, 0.5),
        percentile(&latency, 0.95),
        latency.last().copied().unwrap_or(0.0)
    );
    println!(
        "  API writes until Ready: {init_writes} ({:.2} per cell, incl. Services, status and Events)",
        init_writes as f64 / pods as f64
    );
    println!("  API writes over 10s steady (resync every 2s): {steady_writes}");
    println!(
        "  operator RSS: idle {:.1} MiB, all Ready {:.1} MiB (peak {:.1} MiB), steady {:.1} MiB (peak {:.1} MiB)",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        busy_peak as f64 / 1024.0,
        steady_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let metrics = scrape(&log)?;
    let per_world = metrics
        .lines()
        .filter(|l| l.starts_with("fleetforge_") && l.contains("world=\""))
        .count();
    println!(
        "  metric series on /metrics: {} ({} of them per world, {:.1} per world)",
        series(&metrics),
        per_world,
        per_world as f64 / worlds as f64
    );
    if steady_writes != 0 {
        bail!("steady worlds were written to {steady_writes} times");
    }
    drop(operator);
    Ok(())
}
