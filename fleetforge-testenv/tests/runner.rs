//! The cell runner turns Running cell Pods of the cluster profile into local
//! processes: with the Pod's env and Secret volume, stopped when the Pod goes, killed
//! on demand and then left dead.
//!
//! One test in this binary on purpose: it writes a script and then execs it, which
//! other threads forking at the same moment could make fail with ETXTBSY.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use fleetforge_testenv::{CellRunner, Profile, TestEnv};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Records its environment and the token it finds, then stays up like a server.
/// `exec` keeps the pid, so the recorded pid is the process the runner signals.
const CELL_SCRIPT: &str = r#"#!/bin/sh
{
  env
  echo "PID=$$"
  echo "TOKEN_CONTENT=$(cat "$TOKEN_DIR/token")"
} > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo started >> "$OUT.starts"
exec sleep 1000
"#;

fn cell_pod(name: &str, out: &Path) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "fleetforge", "app.kubernetes.io/name": "fleetforge-cell"},
        },
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "cell",
                "image": "registry.example/game/server:1.0",
                "env": [
                    {"name": "PLAIN", "value": "hello world"},
                    {"name": "OUT", "value": out},
                    {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "TOKEN_DIR", "value": "/var/run/x"},
                ],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/x", "readOnly": true}],
            }],
            "volumes": [{"name": "token", "secret": {"secretName": "cell-token"}}],
        },
    }))?)
}

/// Polls `f` every 100 ms until it returns `Some`, failing with `what` after
/// `TIMEOUT`: [`fleetforge_testenv::eventually`] for a check that need not wait.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    fleetforge_testenv::eventually(what, TIMEOUT, Duration::from_millis(100), || {
        std::future::ready(f())
    })
    .await
}

/// The `KEY=value` lines the script recorded, once it has.
fn recorded(out: &Path) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return Ok(None);
    };
    Ok(Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

/// One recorded variable, failing with everything recorded when it is missing.
fn var<'a>(seen: &'a BTreeMap<String, String>, name: &str) -> anyhow::Result<&'a str> {
    seen.get(name)
        .map(String::as_str)
        .with_context(|| format!("the process did not see {name}: {seen:?}"))
}

/// Whether `pid` is still a `sleep` (the script after its exec); a reaped pid that
/// was reused by something else counts as gone.
fn sleep_alive(pid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
}

#[tokio::test]
async fn runs_cell_pods_as_processes_until_deleted_or_killed() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let script = work.path().join("cell.sh");
    std::fs::write(&script, CELL_SCRIPT)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let logs = work.path().join("logs");

    let env = TestEnv::start(Profile::Cluster).await?;
    let client = env.client().await?;
    let ns = env.create_namespace("runner").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cell-token"},
        "stringData": {"token": "first-token"},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;

    let runner = CellRunner::start(client.clone(), &script, &logs)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let out: BTreeMap<&str, PathBuf> = ["cell-a", "cell-b"]
        .into_iter()
        .map(|name| (name, work.path().join(format!("out-{name}"))))
        .collect();
    for (name, path) in &out {
        pods.create(&PostParams::default(), &cell_pod(name, path)?)
            .await?;
    }

    // The process of cell-a sees what the container would.
    runner.wait_running(&ns, "cell-a", TIMEOUT).await?;
    let seen = eventually("cell-a recorded its environment", || recorded(&out["cell-a"])).await?;
    let pod_ip = pods
        .get("cell-a")
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .context("cell-a has no IP")?;
    let mount = runner.mount_dir(&ns, "cell-a", "token");
    ensure!(
        var(&seen, "MY_POD_IP")? == pod_ip,
        "pod IP {pod_ip}, process saw {seen:?}"
    );
    ensure!(var(&seen, "MY_POD_NAME")? == "cell-a", "{seen:?}");
    ensure!(var(&seen, "PLAIN")? == "hello world", "{seen:?}");
    ensure!(
        Path::new(var(&seen, "TOKEN_DIR")?) == mount,
        "TOKEN_DIR {} not rewritten to {}",
        var(&seen, "TOKEN_DIR")?,
        mount.display()
    );
    ensure!(var(&seen, "TOKEN_CONTENT")? == "first-token", "{seen:?}");
    ensure!(seen.contains_key("PATH"), "parent environment not kept: {seen:?}");
    let mode = std::fs::metadata(mount.join("token"))?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "token file mode {mode:o}");

    // A rotated Secret reaches the mounted file.
    let patch = json!({"stringData": {"token": "second-token"}});
    secrets
        .patch("cell-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    eventually("the rotated token reached the mounted file", || {
        Ok((std::fs::read_to_string(mount.join("token"))? == "second-token").then_some(()))
    })
    .await?;

    // Killing cell-a ends its process for good.
    let pid_a = var(&seen, "PID")?.to_owned();
    ensure!(sleep_alive(&pid_a), "cell-a's process {pid_a} is not running");
    runner.kill(&ns, "cell-a")?;
    eventually("cell-a's process gone after kill", || {
        Ok((!sleep_alive(&pid_a)).then_some(()))
    })
    .await?;
    ensure!(
        !runner.running().contains(&(ns.clone(), "cell-a".to_owned())),
        "{:?}",
        runner.running()
    );
    // An update of cell-a must not bring its process back. The watch delivers events
    // in order, so once the runner has acted on the later deletion of cell-b it has
    // seen this update too.
    let touch = json!({"metadata": {"annotations": {"touched": "yes"}}});
    pods.patch("cell-a", &PatchParams::default(), &Patch::Merge(&touch))
        .await?;

    // Deleting cell-b stops its process.
    runner.wait_running(&ns, "cell-b", TIMEOUT).await?;
    let seen_b = eventually("cell-b recorded its environment", || recorded(&out["cell-b"])).await?;
    let pid_b = var(&seen_b, "PID")?.to_owned();
    ensure!(sleep_alive(&pid_b), "cell-b's process {pid_b} is not running");
    pods.delete("cell-b", &DeleteParams::default()).await?;
    eventually("cell-b's process stopped after its Pod was deleted", || {
        let listed = runner.running().contains(&(ns.clone(), "cell-b".to_owned()));
        Ok((!listed && !sleep_alive(&pid_b)).then_some(()))
    })
    .await?;

    ensure!(
        pods.get_opt("cell-a").await?.is_some(),
        "cell-a should still exist"
    );
    ensure!(
        runner.pid(&ns, "cell-a").is_none(),
        "cell-a was restarted after kill: {:?}",
        runner.running()
    );
    let starts = std::fs::read_to_string(format!("{}.starts", out["cell-a"].display()))?;
    ensure!(
        starts.lines().count() == 1,
        "cell-a started {} times",
        starts.lines().count()
    );
    ensure!(runner.log_path(&ns, "cell-a").exists(), "no log file for cell-a");

    runner.stop();
    Ok(())
}
