//! The operator binary as a deployment runs it: several replicas against one API
//! server, one leader through a Lease, hand-over on SIGTERM (released at once,
//! well before the old term would have run out) and on SIGKILL (after the lease
//! duration), and the admin endpoints.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use common::*;
use fleetforge_testenv::{Profile, TestEnv};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LEASE: &str = "fleetforge-test";
/// The first leader's lease duration: long, so that a standby that waited for
/// its term to run out instead of taking the released Lease would be caught.
const LONG_LEASE_SECONDS: i64 = 15;
/// Everyone else's: short, so the SIGKILL hand-over, which must wait it out,
/// stays quick.
const SHORT_LEASE_SECONDS: i64 = 3;

/// One operator process, its stderr in a file.
struct Replica {
    identity: String,
    child: Child,
    log: PathBuf,
}

impl Replica {
    fn start(env: &TestEnv, ns: &str, identity: &str, lease_seconds: i64) -> anyhow::Result<Self> {
        let log = env.dir().join(format!("{identity}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_fleetforge-operator"))
            .args(["--kubeconfig"])
            .arg(env.admin_kubeconfig())
            .args(["--namespaces", ns, "--lease-namespace", ns, "--lease-name", LEASE])
            .args(["--identity", identity, "--admin-addr", "127.0.0.1:0"])
            .args(["--lease-duration-seconds", &lease_seconds.to_string()])
            .args(["--renew-deadline-seconds", "2"])
            .args(["--retry-period-seconds", "0.5", "--busy-requeue-seconds", "0.5"])
            .args(["--log-format", "json", "--log", "info"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting fleetforge-operator")?;
        Ok(Self {
            identity: identity.to_owned(),
            child,
            log,
        })
    }

    /// The admin server's address, from its log line.
    async fn admin_addr(&self) -> anyhow::Result<String> {
        eventually("admin server address logged", Duration::from_secs(20), || async {
            let text = std::fs::read_to_string(&self.log)?;
            Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["message"] == "admin server listening")
                .and_then(|l| l["addr"].as_str().map(str::to_owned)))
        })
        .await
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn lease(client: &Client, ns: &str) -> anyhow::Result<Option<LeaseSpec>> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE)
        .await?;
    Ok(lease.and_then(|l| l.spec))
}

async fn holder(client: &Client, ns: &str) -> anyhow::Result<Option<String>> {
    Ok(lease(client, ns)
        .await?
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// A Lease time in milliseconds since the epoch.
fn millis(t: Option<&MicroTime>) -> anyhow::Result<i64> {
    Ok(t.context("the Lease lacks a time")?.0.as_millisecond())
}

/// Waits for a holder other than `not`, returning it and how long it took.
async fn new_holder(client: &Client, ns: &str, not: &str) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let h = eventually("a new leader", Duration::from_secs(30), || async {
        Ok(holder(client, ns).await?.filter(|h| h != not))
    })
    .await?;
    Ok((h, started.elapsed()))
}

/// A plain HTTP/1.1 GET: status code and body.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Who recorded the Events of world `world`.
async fn reporters(client: &Client, ns: &str, world: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(world))
        .filter_map(|e| e.reporting_instance)
        .collect())
}

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over_on_sigterm_and_sigkill() -> anyhow::Result<()> {
    let env = TestEnv::shared(Profile::ApiServer).await?;
    let client = env.client().await?;
    let ns = env.create_namespace("leader").await?;
    // op-a starts alone, so it is the first leader and holds the Lease on the long
    // duration; the others join as standbys.
    let mut replicas = vec![Replica::start(env, &ns, "op-a", LONG_LEASE_SECONDS)?];
    let first = eventually("a leader", Duration::from_secs(30), || holder(&client, &ns)).await?;
    for id in ["op-b", "op-c"] {
        replicas.push(Replica::start(env, &ns, id, SHORT_LEASE_SECONDS)?);
    }
    let leader = replicas
        .iter()
        .find(|r| r.identity == first)
        .context("leader is no replica")?;

    // The leader serves /healthz and /metrics and turns ready; standbys are
    // ready too (waiting is their job) and report leader 0.
    let addr = leader.admin_addr().await?;
    assert_eq!(http_get(&addr, "/healthz").await?.0, 200);
    eventually("leader ready", Duration::from_secs(20), || async {
        Ok((http_get(&addr, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let (_, metrics) = http_get(&addr, "/metrics").await?;
    assert!(metrics.lines().any(|l| l == "fleetforge_leader 1"), "{metrics}");
    for standby in replicas.iter().filter(|r| r.identity != first) {
        let (_, metrics) = http_get(&standby.admin_addr().await?, "/metrics").await?;
        assert!(metrics.lines().any(|l| l == "fleetforge_leader 0"), "{metrics}");
    }

    // Only the leader acts on a world.
    create_world(&client, &sample_world(&ns, "alpha")?).await?;
    eventually("alpha's four cells", Duration::from_secs(30), || async {
        Ok((live_cells(&client, &ns, "alpha").await?.len() == 4).then_some(()))
    })
    .await?;
    assert_eq!(
        reporters(&client, &ns, "alpha").await?,
        BTreeSet::from([first.clone()])
    );
    eventually(
        "a successful reconcile counted",
        Duration::from_secs(20),
        || async {
            let (_, metrics) = http_get(&addr, "/metrics").await?;
            Ok(metrics
                .contains("fleetforge_reconciles_total{result=\"ok\"}")
                .then_some(()))
        },
    )
    .await?;

    // SIGTERM: the leader finishes, releases the Lease and exits 0; a standby
    // takes over at once.
    let held = lease(&client, &ns).await?.context("no Lease")?;
    ensure!(
        held.holder_identity.as_deref() == Some(first.as_str()),
        "{held:?}"
    );
    ensure!(
        held.lease_duration_seconds == Some(LONG_LEASE_SECONDS as i32),
        "{held:?}"
    );
    leader.signal("TERM")?;
    let (second, term_gap) = new_holder(&client, &ns, &first).await?;
    // What justifies the election: the standby held the Lease before the old
    // holder's term would have run out. Both times come from the Lease, written by
    // the two operators (one machine, one clock); `held` was read before the
    // signal, so the old holder's real last renewal is no earlier and the bound
    // only gets stricter.
    let taken = lease(&client, &ns).await?.context("no Lease")?;
    ensure!(
        taken.holder_identity.as_deref() == Some(second.as_str()),
        "{taken:?}"
    );
    let expiry = millis(held.renew_time.as_ref())? + LONG_LEASE_SECONDS * 1000;
    let acquired = millis(taken.acquire_time.as_ref())?;
    ensure!(
        acquired < expiry,
        "{second} acquired the Lease at {:?}, not before {first}'s term ran out at {expiry} ms",
        taken.acquire_time
    );
    ensure!(
        taken.lease_transitions > held.lease_transitions,
        "a new holder is a transition: {held:?} then {taken:?}"
    );
    let idx = replicas.iter().position(|r| r.identity == first).unwrap();
    let mut stopped = replicas.remove(idx);
    let status = tokio::task::spawn_blocking(move || stopped.child.wait()).await??;
    ensure!(status.success(), "the leader exited with {status} on SIGTERM");

    create_world(&client, &sample_world(&ns, "beta")?).await?;
    eventually("beta's four cells", Duration::from_secs(30), || async {
        Ok((live_cells(&client, &ns, "beta").await?.len() == 4).then_some(()))
    })
    .await?;
    assert_eq!(
        reporters(&client, &ns, "beta").await?,
        BTreeSet::from([second.clone()])
    );

    // SIGKILL: nothing is released; the last standby waits out the lease.
    let idx = replicas.iter().position(|r| r.identity == second).unwrap();
    let mut killed = replicas.remove(idx);
    killed.child.kill()?;
    let (third, kill_gap) = new_holder(&client, &ns, &second).await?;
    if !replicas.iter().any(|r| r.identity == third) {
        bail!("{third} took over but is not the remaining replica");
    }

    // A leader that finds the Lease taken from it exits, with a failure, rather
    // than act on as a zombie.
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    leases
        .patch(
            LEASE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"holderIdentity": "intruder"}})),
        )
        .await?;
    let last = replicas.iter_mut().find(|r| r.identity == third).unwrap();
    let status = eventually("the displaced leader exits", Duration::from_secs(20), || {
        let status = last.child.try_wait();
        async move { Ok(status?) }
    })
    .await?;
    ensure!(
        !status.success(),
        "a displaced leader must fail, not exit cleanly: {status}"
    );
    let log = std::fs::read_to_string(&last.log)?;
    ensure!(log.contains("intruder"), "the exit names the new holder: {log}");

    println!(
        "figures: leader hand-over gap on SIGTERM {:.3}s (lease duration {LONG_LEASE_SECONDS}s), \
         on SIGKILL {:.3}s (lease duration {SHORT_LEASE_SECONDS}s)",
        term_gap.as_secs_f64(),
        kill_gap.as_secs_f64()
    );
    Ok(())
}
