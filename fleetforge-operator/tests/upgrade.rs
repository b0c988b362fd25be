//! Upgrading from the original FleetForge (Go), which served the same
//! `fleetforge.io/v1` WorldSpec with other field spellings, on a real control
//! plane (cluster profile, so cell Pods are scheduled and turn Ready): its CRD
//! (vendored in fleetforge-crd/tests/fixtures/original) is installed, worlds are
//! stored as its users wrote them and given a status as its operator wrote it,
//! the CRD is replaced by `deploy/crd/worldspec.yaml`, and the operator starts.
//!
//! Each world keeps what it means: nothing it says is pruned, its cell Pods get
//! the requests and limits its `*PerCell` fields name, its spec is never
//! written (its generation does not move), and it converges and then stays
//! steady. The world that asks for placement across clusters, which does not
//! exist, is refused naming that field until its owner turns it off.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::*;
use fleetforge_crd::WorldSpec;
use fleetforge_crd::quantity::parse_quantity;
use fleetforge_operator::mapping::cell_pod::CELL_CONTAINER;
use fleetforge_testenv::{Options, Profile, TestEnv, read_crds, workspace_crd_dir, workspace_root};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Client, Error};
use serde_json::{Value, json};

const CONVERGE: Duration = Duration::from_secs(90);
const CRD: &str = "worldspecs.fleetforge.io";
/// Reconciles, after every world converged, that prove the worlds steady.
const STEADY_RECONCILES: u64 = 6;

fn original_dir() -> std::path::PathBuf {
    workspace_root().join("fleetforge-crd/tests/fixtures/original")
}

fn worldspecs(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("fleetforge.io", "v1", "WorldSpec");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "worldspecs"),
    )
}

/// A world exactly as the original's `config/samples` file wrote it.
fn original_world(file: &str, ns: &str) -> anyhow::Result<DynamicObject> {
    let path = original_dir().join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut obj: DynamicObject = serde_yaml_ng::from_str(&text)?;
    obj.metadata.namespace = Some(ns.to_owned());
    Ok(obj)
}

async fn wait_established(api: &Api<CustomResourceDefinition>) -> anyhow::Result<()> {
    eventually("the WorldSpec CRD Established", CONVERGE, || async {
        let crd = api.get(CRD).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        Ok(established.then_some(()))
    })
    .await
}

/// Every leaf of `before` is in `after` with the same value (numbers compared
/// as numbers): nothing was pruned or rewritten; `after` may hold more (the
/// new schema's defaults).
fn kept(before: &Value, after: &Value, path: &str, lost: &mut Vec<String>) {
    match before {
        Value::Object(m) => {
            for (k, v) in m {
                kept(v, &after[k.as_str()], &format!("{path}.{k}"), lost);
            }
        }
        _ => {
            let same = match (before.as_f64(), after.as_f64()) {
                (Some(a), Some(b)) => a == b,
                _ => before == after,
            };
            if !same {
                lost.push(format!("{path}: {before} became {after}"));
            }
        }
    }
}

/// `(cpu request, cpu limit, memory request, memory limit)` of a cell Pod's
/// game-server container, as values in cores and bytes.
fn pod_resources(pod: &Pod) -> anyhow::Result<(f64, f64, f64, f64)> {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == CELL_CONTAINER))
        .context("a cell Pod without its container")?;
    let r = container.resources.clone().unwrap_or_default();
    let get = |list: &Option<BTreeMap<String, Quantity>>, key: &str| {
        list.as_ref()
            .and_then(|l| l.get(key))
            .map(|q| parse_quantity(&q.0))
            .transpose()?
            .with_context(|| format!("no {key}"))
    };
    Ok((
        get(&r.requests, "cpu")?,
        get(&r.limits, "cpu")?,
        get(&r.requests, "memory")?,
        get(&r.limits, "memory")?,
    ))
}

async fn ready(client: &Client, ns: &str, name: &str) -> anyhow::Result<WorldSpec> {
    let api: Api<WorldSpec> = Api::namespaced(client.clone(), ns);
    eventually(&format!("world {name} Ready"), CONVERGE, || async {
        let ws = api.get(name).await?;
        Ok(is_ready(&ws).then_some(ws))
    })
    .await
}

/// Checks the world's live cells: `cells` of them, each with these resources.
async fn check_cells(
    client: &Client,
    ns: &str,
    world: &str,
    cells: usize,
    want: (f64, f64, f64, f64),
) -> anyhow::Result<()> {
    let pods = live_cells(client, ns, world).await?;
    ensure!(
        pods.len() == cells,
        "{world}: {} cells, expected {cells}",
        pods.len()
    );
    for pod in &pods {
        let got = pod_resources(pod)?;
        ensure!(
            got == want,
            "{world}: a cell has (cpu request, cpu limit, memory request, memory limit) {got:?}, expected {want:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn worlds_of_the_original_fleetforge_keep_their_meaning_across_the_crd_upgrade() -> anyhow::Result<()> {
    // Its own control plane: this test installs the CRD itself, twice.
    let env = TestEnv::start_with(Options::new(Profile::Cluster).nodes(2).crd_dir(None)).await?;
    let client = env.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());

    // --- The original FleetForge's CRD, and worlds written for it.
    let original = read_crds(&original_dir())?;
    ensure!(
        original.len() == 1,
        "one CRD in the fixtures, found {}",
        original.len()
    );
    // As the original's `make install` did: `kubectl apply -f config/crd/bases`.
    crds.create(&PostParams::default(), &original[0]).await?;
    wait_established(&crds).await?;
    let ns = env.create_restricted_namespace("upgrade").await?;
    let api = worldspecs(&client, &ns);

    let sample = original_world("worldspec.yaml", &ns)?;
    let large = original_world("worldspec_large.yaml", &ns)?;
    // The original required limits and made requests optional: a world that
    // gives only limits, below the requests the original defaulted to.
    let mut limits_only = sample.clone();
    limits_only.metadata.name = Some("limits-only".into());
    limits_only.data["spec"]["capacity"] =
        json!({"maxPlayersPerCell": 100, "cpuLimitPerCell": "250m", "memoryLimitPerCell": "256Mi"});
    let names = ["worldspec-sample", "worldspec-large", "limits-only"];
    for world in [&sample, &large, &limits_only] {
        api.create(&PostParams::default(), world)
            .await
            .context("the original CRD refused a world written for it")?;
    }
    // A status as the original operator wrote it, cells and all.
    let status = json!({"status": {
        "phase": "Running",
        "activeCells": 2,
        "totalPlayers": 0,
        "message": "All cells running",
        "lastUpdateTime": "2025-09-26T12:00:00Z",
        "cells": [
            {"id": "worldspec-sample-cell-0", "podName": "worldspec-sample-cell-0-7d9f", "health": "Healthy",
             "currentPlayers": 0, "boundaries": {"xMin": -1000.0, "xMax": 0.0, "yMin": -1000.0, "yMax": 1000.0}},
            {"id": "worldspec-sample-cell-1", "podName": "worldspec-sample-cell-1-5c2a", "health": "Healthy",
             "currentPlayers": 0, "boundaries": {"xMin": 0.0, "xMax": 1000.0, "yMin": -1000.0, "yMax": 1000.0}},
        ],
        "conditions": [{"type": "Ready", "status": "True", "reason": "CellsReady",
                        "message": "2 cells ready", "lastTransitionTime": "2025-09-26T12:00:00Z"}],
    }});
    api.patch_status(
        "worldspec-sample",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    let mut before = Vec::new();
    for name in names {
        before.push(api.get(name).await?);
    }

    // --- Replaced by this CRD as docs/api.md says:
    // `kubectl apply --server-side --force-conflicts -f deploy/crd/worldspec.yaml`.
    let ours = read_crds(&workspace_crd_dir())?
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(CRD))
        .context("no WorldSpec CRD in deploy/crd")?;
    crds.patch(CRD, &PatchParams::apply("kubectl").force(), &Patch::Apply(&ours))
        .await?;
    wait_established(&crds).await?;
    // In force once the API server refuses what only this CRD refuses.
    let mut probe = large.clone();
    probe.metadata.name = Some("probe".into());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the new WorldSpec schema in force", CONVERGE, || async {
        Ok(match api.create(&dry_run, &probe).await {
            Err(Error::Api(s)) if s.code == 422 => Some(()),
            _ => None,
        })
    })
    .await?;

    // Nothing any world said was pruned or changed by the new schema.
    let mut upgraded = Vec::new();
    for old in &before {
        let name = old.metadata.name.clone().unwrap_or_default();
        let now = api.get(&name).await?;
        let mut lost = Vec::new();
        kept(&old.data["spec"], &now.data["spec"], "spec", &mut lost);
        ensure!(lost.is_empty(), "{name} changed in the upgrade: {lost:?}");
        ensure!(
            now.metadata.generation == old.metadata.generation,
            "{name}: generation moved"
        );
        upgraded.push(now);
    }

    // --- The operator.
    let reconciles = ThreadReconciles::install();
    let operator = InProcess::start(&env, &ns, Duration::from_secs(1)).await?;

    // The sample: 2 cells with its requests (500m, 1Gi) and limits (1000m, 2Gi);
    // its old status (cells with `boundaries`) did not stop it being read.
    let gi = 1024f64.powi(3);
    let ws = ready(&client, &ns, "worldspec-sample").await?;
    check_cells(&client, &ns, "worldspec-sample", 2, (0.5, 1.0, gi, 2.0 * gi)).await?;
    ensure!(
        ws.status.as_ref().is_some_and(|s| s.cells.len() == 2),
        "the status was not rewritten: {:?}",
        ws.status
    );
    // Limits only: each request is its limit, as Kubernetes defaults a container.
    ready(&client, &ns, "limits-only").await?;
    check_cells(&client, &ns, "limits-only", 2, (0.25, 0.25, 0.25 * gi, 0.25 * gi)).await?;
    // Across clusters: refused, naming the field, and no cells.
    let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
    let (reason, message) = eventually("worldspec-large Degraded", CONVERGE, || async {
        let ws = worlds.get("worldspec-large").await?;
        Ok(condition(&ws, "Degraded")
            .filter(|(status, _, _)| status == "True")
            .map(|(_, reason, message)| (reason, message)))
    })
    .await?;
    ensure!(reason == "InvalidSpec", "{reason}: {message}");
    ensure!(
        message.contains("spec.multiClusterEnabled") && message.contains("not supported yet"),
        "{message}"
    );
    ensure!(live_cells(&client, &ns, "worldspec-large").await?.is_empty());

    // Steady, and never a write to a world's spec: only its status.
    let writes = env.writes_by(&operator.user, &ns)?;
    let start = reconciles.ok();
    eventually("reconciles of the steady worlds", CONVERGE, || async {
        Ok((reconciles.ok() >= start + STEADY_RECONCILES).then_some(()))
    })
    .await?;
    let later = env.writes_by(&operator.user, &ns)?;
    ensure!(
        later == writes,
        "steady worlds were written to: {:?}",
        &later[writes.len().min(later.len())..]
    );
    let spec_writes: Vec<&String> = later
        .iter()
        .filter(|w| w.contains(" worldspecs/") && !w.contains(" worldspecs/status/"))
        .collect();
    ensure!(
        spec_writes.is_empty(),
        "the operator wrote worlds: {spec_writes:?}"
    );
    for old in &upgraded {
        let name = old.metadata.name.clone().unwrap_or_default();
        let now = api.get(&name).await?;
        ensure!(
            now.metadata.generation == old.metadata.generation && now.data["spec"] == old.data["spec"],
            "{name}'s spec changed under the operator"
        );
    }

    // --- The large world's owner keeps it on one cluster: a 3-D world of 10
    // cells with its requests (2000m, 4Gi) and limits (4000m, 8Gi).
    api.patch(
        "worldspec-large",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"multiClusterEnabled": false}})),
    )
    .await?;
    let ws = ready(&client, &ns, "worldspec-large").await?;
    check_cells(
        &client,
        &ns,
        "worldspec-large",
        10,
        (2.0, 4.0, 4.0 * gi, 8.0 * gi),
    )
    .await?;
    ensure!(
        ws.status
            .as_ref()
            .is_some_and(|s| !s.cells.is_empty() && s.cells.iter().all(|c| c.bounds.z.is_some())),
        "a 3-D world's cells have z bounds: {:?}",
        ws.status
    );
    let large_spec = &api.get("worldspec-large").await?.data["spec"];
    ensure!(
        large_spec["capacity"]["cpuLimitPerCell"] == "4000m"
            && large_spec["topology"]["cellSize"]["zMax"].as_f64() == Some(500.0),
        "the owner's patch kept the rest as written: {large_spec}"
    );
    operator.stop().await
}
