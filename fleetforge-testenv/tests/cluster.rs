//! The cluster profile: Pods are scheduled to kwok nodes, turn Ready with IPs from the
//! configured CIDR, are garbage-collected with their owner, and notice node failure.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fleetforge_testenv::{Options, Profile, TestEnv, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::sync::OnceCell;

/// Not the default range, to prove the CIDR option reaches kwok.
const POD_CIDR: &str = "127.42.0.0/16";

/// One cluster for the tests in this binary; each test uses its own namespace (and
/// the failure test its own node).
async fn env() -> anyhow::Result<&'static TestEnv> {
    static ENV: OnceCell<TestEnv> = OnceCell::const_new();
    ENV.get_or_try_init(|| TestEnv::start_with(Options::new(Profile::Cluster).nodes(2).pod_cidr(POD_CIDR)))
        .await
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(ip), Ok(net), Ok(bits)) = (
        ip.parse::<Ipv4Addr>(),
        net.parse::<Ipv4Addr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_for<F: Fn(&Pod) -> bool>(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    timeout: Duration,
    f: F,
) -> anyhow::Result<Pod> {
    eventually(
        &format!("pod {name} {what}"),
        timeout,
        Duration::from_millis(100),
        || async {
            let pod = pods.get(name).await?;
            if f(&pod) {
                return Ok(Some(pod));
            }
            // Reported if time runs out.
            bail!("its status: {:?}", pod.status)
        },
    )
    .await
}

#[tokio::test]
async fn pod_is_scheduled_ready_in_cidr_and_collected_with_its_owner() -> anyhow::Result<()> {
    let env = env().await?;
    let ns = env.create_namespace("gc").await?;
    let client = env.client().await?;
    let owners: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}}))?;
    let owner = owners.create(&PostParams::default(), &owner).await?;
    let uid = owner.metadata.uid.context("owner has no uid")?;

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "cell-0",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
        "spec": {"containers": [{"name": "cell", "image": "registry.example/game/server:1.0"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let pod = wait_for(&pods, "cell-0", "Ready", Duration::from_secs(60), is_ready).await?;

    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    ensure!(
        env.node_names().contains(&node),
        "scheduled to {node:?}, not a kwok node {:?}",
        env.node_names()
    );
    let status = pod.status.unwrap_or_default();
    ensure!(
        status.phase.as_deref() == Some("Running"),
        "phase {:?}",
        status.phase
    );
    let ip = status.pod_ip.unwrap_or_default();
    ensure!(in_cidr(&ip, POD_CIDR), "pod IP {ip:?} outside {POD_CIDR}");

    owners.delete("owner", &DeleteParams::background()).await?;
    eventually(
        "pod garbage-collected after its owner was deleted",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { Ok(pods.get_opt("cell-0").await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn failed_node_turns_not_ready_and_so_do_its_pods() -> anyhow::Result<()> {
    let env = env().await?;
    // A node of its own, so the other tests' Pods are not on the failing one.
    let node = format!("fail-{:x}", std::process::id());
    env.add_node(&node).await?;
    env.wait_node_ready(&node, true, Duration::from_secs(30)).await?;

    let ns = env.create_namespace("node-failure").await?;
    let pods: Api<Pod> = Api::namespaced(env.client().await?, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "cell-0"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "cell", "image": "registry.example/game/server:1.0"}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait_for(&pods, "cell-0", "Ready", Duration::from_secs(60), is_ready).await?;

    let failed_at = Instant::now();
    env.fail_node(&node).await?;
    env.wait_node_ready(&node, false, Duration::from_secs(60)).await?;
    wait_for(&pods, "cell-0", "NotReady", Duration::from_secs(30), |p| {
        !is_ready(p)
    })
    .await?;
    eprintln!(
        "node {node} and its pod NotReady {:.1?} after the failure",
        failed_at.elapsed()
    );

    env.recover_node(&node).await?;
    env.wait_node_ready(&node, true, Duration::from_secs(30)).await?;
    Ok(())
}
