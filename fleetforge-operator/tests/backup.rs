//! Backup and restore against a real control plane: worlds, one of them split,
//! are backed up with the operator binary, their namespace is deleted, and the
//! restore brings back every world with the same cell layout while the operator
//! keeps running.
//!
//! `FLEETFORGE_BACKUP_WORLDS` sets how many worlds (default 3); the test prints
//! the time from the start of the restore to every world Ready with its layout.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::*;
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_FORCE_SPLIT, ANNOTATION_RESTORE_LAYOUT, ANNOTATION_ROLE,
    ROLE_ACTIVE,
};
use fleetforge_operator::commands::backup::WorldBackup;
use fleetforge_testenv::{Options, Profile, TestEnv};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Time for every world to converge: a debug build creating hundreds of cells
/// on two cores needs more than a handful of worlds does.
fn converge(worlds: usize) -> Duration {
    Duration::from_secs(120 + 2 * worlds as u64)
}

/// Each world's active cells: cell id to bounds, as its Pods say.
type Layouts = BTreeMap<String, BTreeMap<String, String>>;

async fn layouts(client: &Client, ns: &str, worlds: &[String]) -> anyhow::Result<Layouts> {
    let mut out = Layouts::new();
    for world in worlds {
        let cells = live_cells(client, ns, world)
            .await?
            .iter()
            .filter(|p| annotation(p, ANNOTATION_ROLE) == Some(ROLE_ACTIVE))
            .map(|p| {
                (
                    annotation(p, ANNOTATION_CELL).unwrap_or_default().to_owned(),
                    annotation(p, ANNOTATION_BOUNDS).unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.insert(world.clone(), cells);
    }
    Ok(out)
}

async fn all_ready(client: &Client, ns: &str, worlds: &[String]) -> anyhow::Result<()> {
    let api: Api<WorldSpec> = Api::namespaced(client.clone(), ns);
    eventually("every world Ready", converge(worlds.len()), || {
        let api = api.clone();
        async move {
            for name in worlds {
                if !api.get_opt(name).await?.as_ref().is_some_and(is_ready) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await
}

/// Runs the operator binary with `args`, failing with its output when it fails.
/// It runs on a blocking thread: the operator under test shares this runtime and
/// must keep reconciling meanwhile.
async fn operator_command(args: &[&str]) -> anyhow::Result<String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking({
        let args = args.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_fleetforge-operator"))
                .args(&args)
                .args(["--log-format", "text"])
                .output()
        }
    })
    .await?
    .context("running fleetforge-operator")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("fleetforge-operator {args:?} failed ({}):\n{stderr}", out.status);
    }
    Ok(stderr)
}

#[tokio::test]
async fn a_deleted_namespace_is_restored_with_every_world_and_its_cell_layout() -> anyhow::Result<()> {
    let count: usize = std::env::var("FLEETFORGE_BACKUP_WORLDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Room for every cell: 4 to 6 per world, at most 200 on a kwok node.
    let mut options = Options::new(Profile::Cluster).nodes((count * 6).div_ceil(200).max(2));
    options.pods_per_node = 250;
    let env = TestEnv::start_with(options).await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("backup").await?;
    let operator = InProcess::start(&env, &ns, Duration::from_secs(30)).await?;
    let names: Vec<String> = (0..count).map(|i| format!("world-{i}")).collect();
    for name in &names {
        create_world(&client, &sample_world(&ns, name)?).await?;
    }
    all_ready(&client, &ns, &names).await?;

    // world-0 splits two of its cells, so its layout is not the initial one.
    let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
    worlds
        .patch(
            "world-0",
            &PatchParams::apply("game-master").force(),
            &Patch::Apply(json!({
                "apiVersion": "fleetforge.io/v1", "kind": "WorldSpec",
                "metadata": {"name": "world-0", "annotations": {ANNOTATION_FORCE_SPLIT: "c0,c3"}},
            })),
        )
        .await?;
    eventually("world-0 split c0 and c3", converge(count), || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let l = layouts(&client, &ns, &["world-0".to_owned()]).await?;
            Ok((l["world-0"].len() == 6 && !l["world-0"].contains_key("c0")).then_some(()))
        }
    })
    .await?;
    all_ready(&client, &ns, &names).await?;
    let before = layouts(&client, &ns, &names).await?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("worlds.yaml");
    let admin = env.kubeconfig_for("backup-admin", &["system:masters"])?;
    let admin = admin.to_str().unwrap();
    operator_command(&[
        "backup",
        "--kubeconfig",
        admin,
        "-n",
        &ns,
        "-o",
        file.to_str().unwrap(),
    ])
    .await?;
    let backup = WorldBackup::parse(&std::fs::read_to_string(&file)?)?;
    assert_eq!(backup.worlds.len(), count);
    let w0 = backup.worlds.iter().find(|w| w.name == "world-0").unwrap();
    let ids: Vec<String> = w0.layout.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(ids, before["world-0"].keys().cloned().collect::<Vec<_>>());
    assert!(
        !w0.annotations.contains_key(ANNOTATION_FORCE_SPLIT),
        "a request already acted on is not restored"
    );

    // Disaster: the namespace and everything in it goes.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    eventually("namespace gone", converge(count), || {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move { Ok(namespaces.get_opt(&ns).await?.is_none().then_some(())) }
    })
    .await?;

    let started = Instant::now();
    operator_command(&[
        "restore",
        "--kubeconfig",
        admin,
        "-i",
        file.to_str().unwrap(),
        "--wait-seconds",
        "300",
    ])
    .await?;
    let took = started.elapsed();

    let restored_ns = namespaces.get(&ns).await?;
    assert_eq!(
        restored_ns
            .labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted"),
        "the namespace comes back with its Pod Security labels"
    );
    all_ready(&client, &ns, &names).await?;
    let after = layouts(&client, &ns, &names).await?;
    assert_eq!(
        after, before,
        "every world has the cells it had, with the same bounds"
    );
    eventually(
        "restore layouts removed once the cells exist",
        converge(count),
        || {
            let worlds = worlds.clone();
            let names = names.clone();
            async move {
                for name in &names {
                    if worlds
                        .get(name)
                        .await?
                        .annotations()
                        .contains_key(ANNOTATION_RESTORE_LAYOUT)
                    {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            }
        },
    )
    .await?;
    let cells: usize = after.values().map(BTreeMap::len).sum();
    println!(
        "restore: {count} worlds, {cells} cells Ready with their layouts {:.2} s after the restore started",
        took.as_secs_f64()
    );
    operator.stop().await
}
