//! A cell deleted by someone else loses no session: with every part real (the
//! control plane, kwok nodes that keep a deleted Pod for its grace period as a
//! kubelet does, one `cell-sim` process per cell Pod, the operator in process), a
//! cell Pod with players is deleted by hand. The operator must see it
//! terminating, start its replacement for the same space, hand every session
//! over while the old process still answers, and let it go: afterwards every
//! session sits in exactly one live cell, none lost, none held twice.
//!
//! Then the Eviction API, as `kubectl drain` and the cluster autoscaler use it:
//! the world's PodDisruptionBudget lets one cell go at rest, asks for every
//! other cell while the first drains, and lets the next go once it is done,
//! with every session kept throughout.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::Parser as _;
use fleetforge_core::contract::Session;
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{ANNOTATION_CELL, ANNOTATION_ROLE, ROLE_ACTIVE, world_selector};
use fleetforge_operator::config::cli::Cli;
use fleetforge_operator::mapping::cell_pod::token_secret_name;
use fleetforge_testenv::{CellRunner, Options, Profile, TestEnv};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const WORLD: &str = "harbour";
const PLAYERS: u32 = 300;
/// How long any one step may take before the test gives up.
const STEP: Duration = Duration::from_secs(60);

async fn until<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    fleetforge_testenv::eventually(what, STEP, Duration::from_millis(100), check).await
}

/// The live (not terminating) cell Pods of the world: (cell id, Pod name, IP,
/// active).
async fn cells(client: &Client, ns: &str) -> anyhow::Result<Vec<(String, String, String, bool)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&world_selector(WORLD)))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let a = p.annotations();
            Some((
                a.get(ANNOTATION_CELL)?.clone(),
                p.name_any(),
                p.status.as_ref()?.pod_ip.clone()?,
                a.get(ANNOTATION_ROLE).map(String::as_str) == Some(ROLE_ACTIVE),
            ))
        })
        .collect())
}

/// The sessions each answering cell holds, by Pod IP.
async fn sessions(
    http: &reqwest::Client,
    token: &str,
    ips: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<Session>>> {
    let mut out = BTreeMap::new();
    for ip in ips {
        let v: Value = http
            .get(format!("http://{ip}:8080/v1/admin/sessions"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.insert(ip.clone(), serde_json::from_value(v["sessions"].clone())?);
    }
    Ok(out)
}

/// How many sessions the cells hold in all, and how many distinct ids: the two
/// differ when a session is held twice.
fn counts(by_cell: &BTreeMap<String, Vec<Session>>) -> (usize, usize) {
    let mut ids: Vec<&str> = by_cell.values().flatten().map(|s| s.id.as_str()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    (total, ids.len())
}

#[tokio::test]
async fn a_cell_deleted_by_hand_hands_every_session_over() -> anyhow::Result<()> {
    let env = TestEnv::start_with(Options::new(Profile::Cluster).nodes(2).graceful_deletion(true)).await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("disruption").await?;
    let logs = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cells-{ns}"));
    let runner = CellRunner::start(
        client.clone(),
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_cell-sim")),
        &logs,
    )?;
    let key_dir = tempfile::tempdir()?;
    std::fs::write(key_dir.path().join("key"), "disruption-master-key-0123456789")?;
    let (kubeconfig, key) = (
        env.admin_kubeconfig().display().to_string(),
        key_dir.path().display().to_string(),
    );
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
        &key,
        "--log-format",
        "text",
        "--log",
        "warn",
    ])?;
    let (stop, stopped) = oneshot::channel::<()>();
    let operator = tokio::spawn(fleetforge_operator::app::operator::run_until(
        cli,
        None,
        async move {
            let _ = stopped.await;
        },
    ));

    let ws: WorldSpec = serde_json::from_value(json!({
        "apiVersion": "fleetforge.io/v1", "kind": "WorldSpec",
        "metadata": {"name": WORLD, "namespace": ns},
        "spec": {
            "gameServerImage": "fleetforge/cell-simulator:0.1.0",
            "topology": {"initialCells": 2, "worldBoundaries": {"xMin": 0, "xMax": 1000, "yMin": 0, "yMax": 1000}},
            "capacity": {"maxPlayersPerCell": 1000, "cpuRequest": "100m", "cpuLimit": "500m",
                         "memoryRequest": "64Mi", "memoryLimit": "128Mi"},
            "scaling": {"minCells": 2, "maxCells": 4, "scaleUpThreshold": 0.9, "scaleDownThreshold": 0.01}
        }
    }))?;
    Api::<WorldSpec>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ws)
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let token = until("the world's token", || async {
        Ok(secrets
            .get_opt(&token_secret_name(WORLD))
            .await?
            .and_then(|s| s.data)
            .and_then(|d| d.get("token").map(|t| String::from_utf8_lossy(&t.0).into_owned())))
    })
    .await?;
    let http = reqwest::Client::new();
    let answering = |want: &'static [&'static str]| {
        let (client, ns, http) = (client.clone(), ns.clone(), http.clone());
        async move {
            until(&format!("cells {want:?} active and answering"), || async {
                let now = cells(&client, &ns).await?;
                let ids: Vec<&str> = now.iter().filter(|c| c.3).map(|c| c.0.as_str()).collect();
                if now.len() != want.len() || !want.iter().all(|w| ids.contains(w)) {
                    return Ok(None);
                }
                for (_, _, ip, _) in &now {
                    if http
                        .get(format!("http://{ip}:8080/v1/load"))
                        .send()
                        .await
                        .is_err()
                    {
                        return Ok(None);
                    }
                }
                Ok(Some(now))
            })
            .await
        }
    };
    let before = answering(&["c0", "c1"]).await?;
    let (_, victim, victim_ip, _) = before.iter().find(|c| c.0 == "c1").context("c1")?.clone();
    http.post(format!("http://{victim_ip}:8080/v1/admin/players"))
        .bearer_auth(&token)
        .json(&json!({"add": PLAYERS, "distribution": {"uniform": {}}}))
        .send()
        .await?
        .error_for_status()?;
    let held = sessions(&http, &token, std::slice::from_ref(&victim_ip)).await?[&victim_ip].len();
    ensure!(
        held == PLAYERS as usize,
        "c1 holds {held} sessions, not {PLAYERS}"
    );

    // Deleted by hand, with the Pod's own grace period, as `kubectl delete pod` does.
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&victim, &DeleteParams::default())
        .await?;
    let after = answering(&["c0", "c1"]).await?;
    let (_, replacement, new_ip, _) = after.iter().find(|c| c.0 == "c1").context("c1")?.clone();
    ensure!(replacement != victim, "c1 still runs in its deleted Pod {victim}");
    let all = sessions(
        &http,
        &token,
        &after.iter().map(|c| c.2.clone()).collect::<Vec<_>>(),
    )
    .await?;
    let (total, distinct) = counts(&all);
    ensure!(distinct == total, "{} sessions are held twice", total - distinct);
    ensure!(
        all[&new_ip].len() == PLAYERS as usize && total == PLAYERS as usize,
        "after the deletion: {} sessions in the replacement {replacement}, {total} in all; {PLAYERS} expected",
        all[&new_ip].len()
    );
    println!("c1 deleted by hand: {PLAYERS} sessions handed from {victim} to {replacement}, none lost");

    // Evictions, one cell at a time.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let budget = fleetforge_operator::mapping::cell_pod::service_name(WORLD);
    let one_may_go = || {
        let (budgets, budget) = (budgets.clone(), budget.clone());
        async move {
            until("the budget lets one cell go", || async {
                let pdb = budgets.get_opt(&budget).await?;
                let allowed = pdb.and_then(|p| p.status).map(|s| s.disruptions_allowed);
                Ok((allowed == Some(1)).then_some(()))
            })
            .await
        }
    };
    let (_, c0_pod, c0_ip, _) = after.iter().find(|c| c.0 == "c0").context("c0")?.clone();
    http.post(format!("http://{c0_ip}:8080/v1/admin/players"))
        .bearer_auth(&token)
        .json(&json!({"add": PLAYERS, "distribution": {"uniform": {}}}))
        .send()
        .await?
        .error_for_status()?;
    one_may_go().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.evict(&c0_pod, &EvictParams::default()).await?;
    // While it drains, the operator holds every other cell of the world: the
    // budget asks for all of them.
    until("the budget holds the world while c0 drains", || async {
        let pdb = budgets.get(&budget).await?;
        let min = pdb.spec.and_then(|s| s.min_available);
        Ok((min == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2))).then_some(()))
    })
    .await?;
    let drained = answering(&["c0", "c1"]).await?;
    ensure!(
        drained.iter().all(|c| c.1 != c0_pod),
        "c0 still runs in its evicted Pod"
    );
    one_may_go().await?;
    let (_, c1_pod, _, _) = drained.iter().find(|c| c.0 == "c1").context("c1")?.clone();
    pods.evict(&c1_pod, &EvictParams::default()).await?;
    let settled = answering(&["c0", "c1"]).await?;
    ensure!(
        settled.iter().all(|c| c.1 != c1_pod),
        "c1 still runs in its evicted Pod"
    );
    let all = sessions(
        &http,
        &token,
        &settled.iter().map(|c| c.2.clone()).collect::<Vec<_>>(),
    )
    .await?;
    let (total, distinct) = counts(&all);
    ensure!(
        distinct == total && total == 2 * PLAYERS as usize,
        "after two evictions: {total} sessions ({} distinct); {} expected",
        distinct,
        2 * PLAYERS
    );
    println!("two evictions through the Eviction API, one at a time: {total} sessions kept");

    let _ = stop.send(());
    operator.await??;
    runner.stop();
    Ok(())
}
