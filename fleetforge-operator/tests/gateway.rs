//! The player gateway on the real control plane (RBAC and PodSecurity on), run as
//! its own ServiceAccount with nothing but the shipped RBAC
//! (`deploy/rbac/gateway.yaml`), beside the operator:
//!
//! - a position is located to the cell that owns it before, during and after a
//!   split and a merge: to the parent until the children are active, then to the
//!   child that contains it (and back to the merged cell), never to a cell that
//!   was retired, with an epoch that only grows;
//! - a world that stops opting in disappears from the gateway;
//! - the gateway's identity may read WorldSpecs and Pods and nothing else: it is
//!   denied Secrets and every write.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use anyhow::Context as _;
use common::*;
use fleetforge_core::{Axis, Bounds, Point};
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_FORCE_MERGE, ANNOTATION_FORCE_SPLIT, decode_bounds,
};
use fleetforge_gateway::app::{self, Settings};
use fleetforge_gateway::http::Limits;
use fleetforge_gateway::http::answers::{ErrorBody, Located};
use fleetforge_gateway::watch::Scope;
use fleetforge_testenv::locate::{LocatePoller, check_run};
use fleetforge_testenv::{Options, Profile, TestEnv, workspace_root, yaml};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::json;

const GATEWAY_NS: &str = "fleetforge-system";
const GATEWAY_SA: &str = "fleetforge-gateway";
/// How long the world may take to converge after a change.
const CONVERGE: Duration = Duration::from_secs(60);

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(ref s)) if s.code == 403)
}

/// The bounds of each live cell of `world`, by id.
async fn cell_bounds(client: &kube::Client, ns: &str, world: &str) -> anyhow::Result<Vec<(String, Bounds)>> {
    live_cells(client, ns, world)
        .await?
        .iter()
        .map(|p: &Pod| {
            let id = annotation(p, ANNOTATION_CELL).context("cell id")?.to_owned();
            let bounds = decode_bounds(annotation(p, ANNOTATION_BOUNDS).context("bounds")?)?;
            Ok((id, bounds))
        })
        .collect()
}

#[tokio::test]
async fn the_gateway_as_its_service_account_follows_a_split_and_a_merge() -> anyhow::Result<()> {
    let env = TestEnv::start_with(Options::new(Profile::Cluster).nodes(2)).await?;
    let admin = env.client().await?;

    // The shipped identity, and nothing else.
    let discovery = Discovery::new(admin.clone()).run().await?;
    for path in ["deploy/namespace.yaml", "deploy/rbac/gateway.yaml"] {
        for value in yaml::file_documents(&workspace_root().join(path))? {
            let obj: DynamicObject = serde_json::from_value(value)?;
            apply(&admin, &discovery, &obj, "deploy-test", false).await?;
        }
    }
    let gateway_client = env.impersonate_service_account(GATEWAY_NS, GATEWAY_SA).await?;

    let ns = env.create_restricted_namespace("gateway").await?;
    let operator = InProcess::start(&env, &ns, Duration::from_secs(30)).await?;
    let gateway = app::start(
        gateway_client.clone(),
        Settings {
            scope: Scope::Cluster,
            listen: "127.0.0.1:0".parse()?,
            admin_listen: None,
            limits: Limits {
                rate_per_second: 1000.0,
                burst: 1000,
                ..Limits::default()
            },
        },
        None,
        None,
    )
    .await?;
    let base = format!("http://{}/v1/worlds/{ns}/meadow", gateway.api);
    let http = reqwest::Client::new();

    let mut ws = sample_world(&ns, "meadow")?;
    ws.spec.gateway.enabled = true;
    create_world(&admin, &ws).await?;

    // A position well inside c0, in the lower half of it along every axis: it
    // stays in c0-0 whichever axis the split cuts.
    let c0 = eventually("c0 exists", CONVERGE, || async {
        Ok(cell_bounds(&admin, &ns, "meadow")
            .await?
            .into_iter()
            .find_map(|(id, b)| (id == "c0").then_some(b)))
    })
    .await?;
    let at = |axis: Axis| c0.min(axis) + (c0.max(axis) - c0.min(axis)) * 0.1;
    let point = Point::new(at(Axis::X), at(Axis::Y), 0.0);
    let url = format!("{base}/locate?x={}&y={}", point.x, point.y);

    let first: Located = eventually("the gateway locates the position in c0", CONVERGE, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http.get(&url).send().await?;
            Ok(if response.status() == 200 {
                Some(response.json::<Located>().await?)
            } else {
                None
            })
        }
    })
    .await?;
    assert_eq!(first.cell, "c0");
    assert!(first.bounds.contains(&point));
    assert_eq!(first.address.port, 7777);

    // The split, watched by a poller from start to end.
    let worlds: Api<WorldSpec> = Api::namespaced(admin.clone(), &ns);
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
    let poller = LocatePoller::start(url.clone(), Duration::from_millis(20));
    annotate(ANNOTATION_FORCE_SPLIT, "c0").await?;
    eventually("c0 split, and the gateway answers c0-0", CONVERGE, || async {
        let ids: Vec<String> = cell_bounds(&admin, &ns, "meadow")
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok((!ids.contains(&"c0".to_owned()) && poller.last_cell().as_deref() == Some("c0-0")).then_some(()))
    })
    .await?;
    let split_run = poller.take();
    check_run(&split_run, &["c0"], "c0-0")?;
    let child: Located = http.get(&url).send().await?.json().await?;
    assert_eq!(child.cell, "c0-0");
    assert!(child.bounds.contains(&point) && child.epoch > first.epoch);

    // The merge back.
    annotate(ANNOTATION_FORCE_MERGE, "c0-1").await?;
    eventually(
        "c0-0 and c0-1 merged, and the gateway answers c0",
        CONVERGE,
        || async {
            let ids: Vec<String> = cell_bounds(&admin, &ns, "meadow")
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            Ok(
                (!ids.iter().any(|i| i.starts_with("c0-")) && poller.last_cell().as_deref() == Some("c0"))
                    .then_some(()),
            )
        },
    )
    .await?;
    let merge_run = poller.take();
    drop(poller);
    check_run(&merge_run, &["c0-0"], "c0")?;
    let merged: Located = http.get(&url).send().await?.json().await?;
    assert_eq!(merged.cell, "c0");
    assert!(
        merged.epoch > child.epoch,
        "{} then {}",
        child.epoch,
        merged.epoch
    );
    println!(
        "gateway: {} answers through the split, {} through the merge; epochs {} -> {} -> {}",
        split_run.len(),
        merge_run.len(),
        first.epoch,
        child.epoch,
        merged.epoch
    );

    // Bad input over a real socket (every case is in fleetforge-gateway's tests).
    for (query, status, code) in [
        ("x=1", 400, "invalid_parameter"),
        ("x=1&y=5000", 422, "outside_world"),
    ] {
        let response = http.get(format!("{base}/locate?{query}")).send().await?;
        assert_eq!(response.status().as_u16(), status, "{query}");
        assert_eq!(response.json::<ErrorBody>().await?.error.code, code, "{query}");
    }

    // The world stops opting in: it is gone from the gateway.
    worlds
        .patch(
            "meadow",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"gateway": {"enabled": false}}})),
        )
        .await?;
    eventually("an unpublished world answers 404", CONVERGE, || {
        let (http, url) = (http.clone(), url.clone());
        async move { Ok((http.get(&url).send().await?.status() == 404).then_some(())) }
    })
    .await?;

    // The gateway's identity reads, and does nothing else.
    let pods: Api<Pod> = Api::namespaced(gateway_client.clone(), &ns);
    assert!(!pods.list(&ListParams::default()).await?.items.is_empty());
    let secrets: Api<Secret> = Api::namespaced(gateway_client.clone(), &ns);
    assert!(
        forbidden(secrets.list(&ListParams::default()).await),
        "list secrets"
    );
    let some_pod = live_cells(&admin, &ns, "meadow").await?.remove(0);
    let name = some_pod.metadata.name.clone().unwrap();
    assert!(forbidden(secrets.get("anything").await), "get a secret");
    let mut copy = some_pod.clone();
    copy.metadata = kube::api::ObjectMeta {
        name: Some("gateway-made".into()),
        ..Default::default()
    };
    assert!(
        forbidden(pods.create(&PostParams::default(), &copy).await),
        "create a pod"
    );
    assert!(
        forbidden(pods.delete(&name, &DeleteParams::default()).await),
        "delete a pod"
    );
    assert!(
        forbidden(
            pods.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))
            )
            .await
        ),
        "patch a pod"
    );
    let gateway_worlds: Api<WorldSpec> = Api::namespaced(gateway_client, &ns);
    assert!(
        forbidden(
            gateway_worlds
                .patch(
                    "meadow",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"gateway": {"enabled": true}}}))
                )
                .await
        ),
        "patch a world"
    );
    assert!(
        forbidden(gateway_worlds.delete("meadow", &DeleteParams::default()).await),
        "delete a world"
    );

    gateway.stop().await?;
    operator.stop().await?;
    Ok(())
}
