//! The controller against a real control plane (cluster profile: scheduler,
//! controller-manager and kwok nodes, so cell Pods become Ready and owners are
//! garbage-collected). Each test runs its own operator, scoped to its own
//! `enforce=restricted` namespace, as its own user.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use common::*;
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_CELL, ANNOTATION_EPOCH, ANNOTATION_FORCE_MERGE, ANNOTATION_FORCE_SPLIT, ANNOTATION_REVISION,
    ANNOTATION_ROLE, LABEL_CELL, LABEL_MANAGED_BY, LABEL_WORLD, ROLE_ACTIVE, ROLE_INCOMING, decode_epoch,
};
use fleetforge_operator::mapping::cell_pod::service_name;
use fleetforge_testenv::{Options, Profile, TestEnv};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::OnceCell;

const CONVERGE: Duration = Duration::from_secs(60);
/// The steady-world test's resync: a steady world is still reconciled this often.
const STEADY_RESYNC: Duration = Duration::from_secs(1);
/// Reconciles of the steady world, with no write, that prove it steady.
const STEADY_RECONCILES: u64 = 3;

async fn env() -> anyhow::Result<&'static TestEnv> {
    static ENV: OnceCell<TestEnv> = OnceCell::const_new();
    ENV.get_or_try_init(|| TestEnv::start_with(Options::new(Profile::Cluster).nodes(2)))
        .await
}

async fn ready_world(client: &Client, ns: &str, name: &str) -> anyhow::Result<WorldSpec> {
    let api: Api<WorldSpec> = Api::namespaced(client.clone(), ns);
    eventually(&format!("world {name} Ready"), CONVERGE, || async {
        let ws = api.get(name).await?;
        Ok(is_ready(&ws).then_some(ws))
    })
    .await
}

/// How many times an Event was recorded: the recorder folds repeats into a series.
fn occurrences(events: &[Event]) -> i32 {
    events
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

async fn events_with_reason(client: &Client, ns: &str, reason: &str) -> anyhow::Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

fn cell_ids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| annotation(p, ANNOTATION_CELL).map(str::to_owned))
        .collect()
}

/// The layout epoch stamped on each active cell, by cell id. Every active cell
/// must carry one that decodes, and no two the same: each activation is stamped
/// above every mark in the world.
fn active_epochs(pods: &[Pod]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut epochs = BTreeMap::new();
    for pod in pods {
        if annotation(pod, ANNOTATION_ROLE) != Some(ROLE_ACTIVE) {
            continue;
        }
        let id = annotation(pod, ANNOTATION_CELL).context("a cell Pod without a cell id")?;
        let value =
            annotation(pod, ANNOTATION_EPOCH).with_context(|| format!("active cell {id} is not stamped"))?;
        epochs.insert(id.to_owned(), decode_epoch(value)?);
    }
    let distinct: BTreeSet<u64> = epochs.values().copied().collect();
    ensure!(
        distinct.len() == epochs.len(),
        "two activations share a stamp: {epochs:?}"
    );
    Ok(epochs)
}

#[tokio::test]
async fn a_world_becomes_ready_cells_and_a_steady_world_writes_nothing() -> anyhow::Result<()> {
    let env = env().await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("converge").await?;
    // Counts this test's reconciles only, all of them meadow's: its operator's only world.
    let reconciles = ThreadReconciles::install();
    let operator = InProcess::start(env, &ns, STEADY_RESYNC).await?;

    let started = Instant::now();
    create_world(&client, &sample_world(&ns, "meadow")?).await?;
    let ws = ready_world(&client, &ns, "meadow").await?;
    let to_ready = started.elapsed();
    assert!(
        operator.synced.load(std::sync::atomic::Ordering::SeqCst),
        "caches synced"
    );

    // Four cells, labelled and owned by the world, admitted under restricted.
    let pods = live_cells(&client, &ns, "meadow").await?;
    assert_eq!(pods.len(), 4, "{:?}", cell_ids(&pods));
    for pod in &pods {
        let labels = pod.labels();
        assert_eq!(labels.get(LABEL_WORLD).map(String::as_str), Some("meadow"));
        assert_eq!(
            labels.get(LABEL_MANAGED_BY).map(String::as_str),
            Some("fleetforge")
        );
        assert!(labels.contains_key(LABEL_CELL));
        let owners = pod.owner_references();
        assert!(
            owners.len() == 1
                && owners[0].controller == Some(true)
                && Some(&owners[0].uid) == ws.metadata.uid.as_ref(),
            "{owners:?}"
        );
    }
    let status = ws.status.clone().context("no status")?;
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!((status.active_cells, status.ready_cells), (Some(4), Some(4)));
    assert_eq!(status.cells.len(), 4);
    assert_eq!(status.observed_generation, ws.metadata.generation);
    assert_eq!(condition(&ws, "Degraded").map(|c| c.0).as_deref(), Some("False"));
    assert_eq!(
        occurrences(&events_with_reason(&client, &ns, "WorldInitialized").await?),
        1
    );

    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get(&service_name("meadow"))
        .await?;
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );

    // Steady: several resyncs (one a second) and not a single write. The
    // operator's own reconcile counter says the resyncs happened: the window
    // lasts until it has counted STEADY_RECONCILES more.
    let writes = env.writes_by(&operator.user, &ns)?;
    let before = reconciles.ok();
    let after = eventually(
        &format!("{STEADY_RECONCILES} reconciles of the steady world"),
        CONVERGE,
        || async {
            let now = reconciles.ok();
            Ok((now >= before + STEADY_RECONCILES).then_some(now))
        },
    )
    .await?;
    let later = env.writes_by(&operator.user, &ns)?;
    assert_eq!(later, writes, "a steady world was written to");
    let pod_writes = writes.iter().filter(|w| w.contains(" pods/")).count();
    println!(
        "figures: 1 world of 4 cells Ready in {:.2}s; {} writes in all ({:.2} per cell, {pod_writes} of them to pods): {writes:?}; \
         then {} reconciles wrote nothing",
        to_ready.as_secs_f64(),
        writes.len(),
        writes.len() as f64 / 4.0,
        after - before
    );
    operator.stop().await
}

#[tokio::test]
async fn an_image_change_rolls_out_one_cell_at_a_time_and_initial_cells_repartition() -> anyhow::Result<()> {
    let env = env().await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("rollout").await?;
    let operator = InProcess::start(env, &ns, Duration::from_secs(30)).await?;
    create_world(&client, &sample_world(&ns, "meadow")?).await?;
    ready_world(&client, &ns, "meadow").await?;
    let before = live_cells(&client, &ns, "meadow").await?;
    let old: BTreeSet<String> = before
        .iter()
        .filter_map(|p| annotation(p, ANNOTATION_REVISION).map(str::to_owned))
        .collect();
    assert_eq!(old.len(), 1);

    let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
    worlds
        .patch(
            "meadow",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"gameServerImage": "fleetforge/cell-simulator:0.2.0"}})),
        )
        .await?;

    // Watch the roll-out: never more than one replacement cell waiting at once,
    // never fewer than four cells serving.
    // Polled every 50 ms, to catch the roll-out between its steps.
    let most_incoming = Cell::new(0);
    let fewest_active = Cell::new(usize::MAX);
    let done = fleetforge_testenv::eventually(
        "every cell on the new image",
        Duration::from_secs(90),
        Duration::from_millis(50),
        || async {
            let pods = live_cells(&client, &ns, "meadow").await?;
            let incoming = pods
                .iter()
                .filter(|p| annotation(p, ANNOTATION_ROLE) == Some(ROLE_INCOMING))
                .count();
            most_incoming.set(most_incoming.get().max(incoming));
            fewest_active.set(fewest_active.get().min(pods.len() - incoming));
            let all_new = pods.len() == 4
                && pods.iter().all(|p| {
                    annotation(p, ANNOTATION_REVISION).is_some_and(|r| !old.contains(r))
                        && annotation(p, ANNOTATION_ROLE) != Some(ROLE_INCOMING)
                });
            if all_new {
                return Ok(Some(pods));
            }
            // What a timeout reports.
            bail!("cells now: {:?}", cell_ids(&pods))
        },
    )
    .await?;
    let (most_incoming, fewest_active) = (most_incoming.get(), fewest_active.get());
    assert!(
        most_incoming <= 1,
        "{most_incoming} cells were being replaced at once"
    );
    assert!(
        fewest_active >= 4,
        "only {fewest_active} cells served at one point"
    );
    for pod in &done {
        let image = pod.spec.as_ref().and_then(|s| s.containers[0].image.as_deref());
        assert_eq!(image, Some("fleetforge/cell-simulator:0.2.0"));
    }
    assert_eq!(
        occurrences(&events_with_reason(&client, &ns, "CellRolledOut").await?),
        4
    );
    ready_world(&client, &ns, "meadow").await?;

    // initialCells 4 -> 2: the layout follows.
    worlds
        .patch(
            "meadow",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topology": {"initialCells": 2}}})),
        )
        .await?;
    eventually("two cells after repartitioning", CONVERGE, || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let pods = live_cells(&client, &ns, "meadow").await?;
            let ids = cell_ids(&pods);
            Ok((ids == BTreeSet::from(["c0".to_owned(), "c1".to_owned()])
                && pods
                    .iter()
                    .all(|p| annotation(p, ANNOTATION_ROLE) != Some(ROLE_INCOMING)))
            .then_some(()))
        }
    })
    .await?;
    ready_world(&client, &ns, "meadow").await?;
    operator.stop().await
}

#[tokio::test]
async fn force_split_and_force_merge_by_annotation() -> anyhow::Result<()> {
    let env = env().await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("overrides").await?;
    let operator = InProcess::start(env, &ns, Duration::from_secs(30)).await?;
    create_world(&client, &sample_world(&ns, "meadow")?).await?;
    ready_world(&client, &ns, "meadow").await?;
    let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
    let initial = active_epochs(&live_cells(&client, &ns, "meadow").await?)?;
    let parent = *initial.get("c0").context("no active c0 to split")?;

    let annotate = |key: &'static str, value: &'static str| {
        let worlds = worlds.clone();
        async move {
            worlds
                .patch(
                    "meadow",
                    &PatchParams::apply("game-master").force(),
                    &Patch::Apply(json!({
                        "apiVersion": "fleetforge.io/v1", "kind": "WorldSpec",
                        "metadata": {"name": "meadow", "annotations": {key: value}},
                    })),
                )
                .await
        }
    };
    annotate(ANNOTATION_FORCE_SPLIT, "c0").await?;
    let split = eventually("c0 split into c0-0 and c0-1", CONVERGE, || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let pods = live_cells(&client, &ns, "meadow").await?;
            let ids = cell_ids(&pods);
            Ok((ids.contains("c0-0") && ids.contains("c0-1") && !ids.contains("c0")).then_some(ids))
        }
    })
    .await?;
    assert_eq!(split.len(), 5, "{split:?}");
    // The children were activated after the parent, so they are stamped above it.
    let after_split = active_epochs(&live_cells(&client, &ns, "meadow").await?)?;
    let children = ["c0-0", "c0-1"].map(|id| after_split.get(id).copied());
    assert!(
        children.iter().all(|c| c.is_some_and(|e| e > parent)),
        "parent c0 at {parent}, children {children:?}"
    );
    let ws = worlds.get("meadow").await?;
    assert!(
        !ws.annotations().contains_key(ANNOTATION_FORCE_SPLIT),
        "the acted-on annotation is removed"
    );
    let applied = events_with_reason(&client, &ns, "OverrideApplied").await?;
    let note = applied.first().and_then(|e| e.note.clone()).unwrap_or_default();
    assert!(
        note.contains("force-split of c0") && note.contains("game-master"),
        "{note}"
    );
    ready_world(&client, &ns, "meadow").await?;

    // Merge, naming one of the children as users may.
    annotate(ANNOTATION_FORCE_MERGE, "c0-1").await?;
    eventually("c0-0 and c0-1 merged back into c0", CONVERGE, || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let pods = live_cells(&client, &ns, "meadow").await?;
            let ids = cell_ids(&pods);
            Ok(
                (ids.contains("c0") && !ids.iter().any(|i| i.starts_with("c0-")) && ids.len() == 4)
                    .then_some(()),
            )
        }
    })
    .await?;
    let merged = active_epochs(&live_cells(&client, &ns, "meadow").await?)?;
    let child_max = children.iter().flatten().max().copied().unwrap_or(parent);
    assert!(
        merged.get("c0").is_some_and(|&e| e > child_max),
        "children at {children:?}, merged c0 at {:?}",
        merged.get("c0")
    );
    eventually(
        "force-merge annotation removed, split and merge in the history",
        CONVERGE,
        || {
            let worlds = worlds.clone();
            async move {
                let ws = worlds.get("meadow").await?;
                let kinds: Vec<String> = ws
                    .status
                    .as_ref()
                    .map(|s| s.recent_transitions.iter().map(|t| t.kind.clone()).collect())
                    .unwrap_or_default();
                let done = !ws.annotations().contains_key(ANNOTATION_FORCE_MERGE)
                    && kinds.iter().any(|k| k == "split")
                    && kinds.iter().any(|k| k == "merge");
                Ok(done.then_some(()))
            }
        },
    )
    .await?;
    assert_eq!(
        occurrences(&events_with_reason(&client, &ns, "CellSplit").await?),
        1
    );
    assert_eq!(
        occurrences(&events_with_reason(&client, &ns, "CellMerged").await?),
        1
    );
    operator.stop().await
}

#[tokio::test]
async fn an_invalid_world_is_degraded_while_a_valid_one_beside_it_converges() -> anyhow::Result<()> {
    let env = env().await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("invalid").await?;
    let operator = InProcess::start(env, &ns, Duration::from_secs(30)).await?;

    // CEL cannot check the override annotation's syntax; the operator can.
    let mut bad = sample_world(&ns, "broken")?;
    bad.metadata.annotations = Some([(ANNOTATION_FORCE_SPLIT.to_owned(), "c0,not a cell".to_owned())].into());
    create_world(&client, &bad).await?;
    create_world(&client, &sample_world(&ns, "meadow")?).await?;

    ready_world(&client, &ns, "meadow").await?;
    let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
    let broken = eventually("broken world Degraded", CONVERGE, || {
        let worlds = worlds.clone();
        async move {
            let ws = worlds.get("broken").await?;
            Ok(condition(&ws, "Degraded")
                .filter(|c| c.0 == "True")
                .map(|c| (ws, c)))
        }
    })
    .await?;
    let (ws, (_, reason, message)) = broken;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains(ANNOTATION_FORCE_SPLIT),
        "the message names the field: {message}"
    );
    assert_eq!(ws.status.and_then(|s| s.phase).as_deref(), Some("Degraded"));
    assert!(live_cells(&client, &ns, "broken").await?.is_empty());
    let invalid = events_with_reason(&client, &ns, "InvalidSpec").await?;
    assert_eq!(occurrences(&invalid), 1);
    assert!(
        invalid[0]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains(ANNOTATION_FORCE_SPLIT)
    );
    operator.stop().await
}

#[tokio::test]
async fn a_deleted_cell_pod_is_replaced_and_a_deleted_world_takes_its_cells() -> anyhow::Result<()> {
    let env = env().await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("replace").await?;
    let operator = InProcess::start(env, &ns, Duration::from_secs(30)).await?;
    create_world(&client, &sample_world(&ns, "meadow")?).await?;
    ready_world(&client, &ns, "meadow").await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = live_cells(&client, &ns, "meadow").await?;
    let victim = before
        .iter()
        .find(|p| annotation(p, ANNOTATION_CELL) == Some("c1"))
        .context("no cell c1")?;
    let victim_name = victim.name_any();
    pods.delete(&victim_name, &DeleteParams::default()).await?;

    let replaced = eventually("c1 replaced by a new incarnation", CONVERGE, || {
        let (client, ns, victim_name) = (client.clone(), ns.clone(), victim_name.clone());
        async move {
            let now = live_cells(&client, &ns, "meadow").await?;
            let c1: Vec<&Pod> = now
                .iter()
                .filter(|p| annotation(p, ANNOTATION_CELL) == Some("c1"))
                .collect();
            Ok(
                (now.len() == 4 && c1.len() == 1 && c1[0].name_any() != victim_name)
                    .then(|| c1[0].name_any()),
            )
        }
    })
    .await?;
    assert!(
        replaced.ends_with("-r1"),
        "the replacement is the next incarnation: {replaced}"
    );
    ready_world(&client, &ns, "meadow").await?;
    // kwok removes a deleted Pod at once: the operator may see it terminating
    // (and start draining it) or only see it gone (and fill its space); either
    // way one transition brought c1 back.
    let drained = occurrences(&events_with_reason(&client, &ns, "CellDrained").await?);
    let replaced = occurrences(&events_with_reason(&client, &ns, "CellReplaced").await?);
    assert!(
        drained + replaced >= 1,
        "no CellDrained or CellReplaced Event for c1 ({drained}, {replaced})"
    );

    // Deleting the world: the garbage collector removes its cells and Service.
    let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
    worlds.delete("meadow", &DeleteParams::foreground()).await?;
    eventually("the world and its cells gone", CONVERGE, || {
        let (client, ns, worlds, pods) = (client.clone(), ns.clone(), worlds.clone(), pods.clone());
        async move {
            let cells = pods.list(&ListParams::default()).await?.items.len();
            let svc = Api::<Service>::namespaced(client, &ns)
                .get_opt(&service_name("meadow"))
                .await?;
            let world = worlds.get_opt("meadow").await?;
            Ok((cells == 0 && svc.is_none() && world.is_none()).then_some(()))
        }
    })
    .await?;
    operator.stop().await
}
