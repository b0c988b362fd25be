//! Start-up and teardown of an environment owned by one test.

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use fleetforge_testenv::{Options, Profile, TestEnv};

#[tokio::test]
async fn drop_stops_every_process_and_removes_the_directory() -> anyhow::Result<()> {
    let env = TestEnv::start(Profile::ApiServer).await?;
    let dir = env.dir().to_owned();
    let pids: Vec<String> = std::fs::read_to_string(dir.join("supervisors.pid"))?
        .lines()
        .map(str::to_owned)
        .collect();
    ensure!(
        pids.len() == 2,
        "expected etcd and kube-apiserver supervisors, got {pids:?}"
    );
    ensure!(
        env.audit_log_path().exists(),
        "no audit log at {}",
        env.audit_log_path().display()
    );
    drop(env);
    for pid in &pids {
        ensure!(
            !Path::new("/proc").join(pid).exists(),
            "process {pid} outlived the environment"
        );
    }
    ensure!(!dir.exists(), "{} outlived the environment", dir.display());
    Ok(())
}

/// kube-apiserver can be handed neither a listener nor port 0, so the harness
/// chooses its port; when that port is taken, the server starts again on another.
#[tokio::test]
async fn a_taken_api_server_port_makes_it_start_on_another() -> anyhow::Result<()> {
    // Held until the end: the API server cannot have it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let env = TestEnv::start_with(Options::new(Profile::ApiServer).crd_dir(None).api_port(port)).await?;
    ensure!(
        !env.server_url().ends_with(&format!(":{port}")),
        "{} is the taken port",
        env.server_url()
    );
    let clash = env.log_path(&format!("kube-apiserver-port-{port}"));
    let first = std::fs::read_to_string(&clash)?;
    ensure!(
        first.contains("address already in use"),
        "the first start did not fail on its port: {}",
        clash.display()
    );
    let version = env.client().await?.apiserver_version().await?;
    ensure!(!version.git_version.is_empty(), "{version:?}");
    drop(taken);
    Ok(())
}

/// Prints the start-up time of each profile over several runs, and their median.
#[tokio::test]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn startup_times() -> anyhow::Result<()> {
    for profile in [Profile::ApiServer, Profile::Cluster] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let env = TestEnv::start(profile).await?;
            times.push(env.startup_time());
            drop(env);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let all: Vec<String> = times.iter().map(|t| format!("{:.2}s", t.as_secs_f64())).collect();
        times.sort();
        println!(
            "{profile}: median {:.2}s over {} runs ({})",
            times[times.len() / 2].as_secs_f64(),
            times.len(),
            all.join(", ")
        );
    }
    Ok(())
}
