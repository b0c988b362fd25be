//! The WorldSpec CRD from `deploy/crd/`, as a real API server serves and enforces it.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use fleetforge_testenv::{Profile, TestEnv, eventually, workspace_crd_dir, workspace_root};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Client, Error};
use serde_json::{Value, json};

fn worldspec_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("fleetforge.io", "v1", "WorldSpec"),
        "worldspecs",
    )
}

/// The shared environment, after checking the WorldSpec CRD really was installed (a
/// missing `deploy/crd/worldspec.yaml` must fail loudly, not skip).
async fn env_with_worldspec() -> anyhow::Result<&'static TestEnv> {
    let env = TestEnv::shared(Profile::ApiServer).await?;
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(env.client().await?);
    ensure!(
        crds.get_opt("worldspecs.fleetforge.io").await?.is_some(),
        "CRD worldspecs.fleetforge.io is not installed: no WorldSpec CRD in {} (run `cargo xtask crdgen`)",
        workspace_crd_dir().display()
    );
    Ok(env)
}

fn worldspec(name: &str, spec: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "fleetforge.io/v1",
        "kind": "WorldSpec",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

/// A valid spec every invalid case below changes in exactly one place.
fn valid_spec() -> Value {
    json!({
        "gameServerImage": "registry.example/game/server:1.0",
        "topology": {
            "initialCells": 4,
            "worldBoundaries": {"xMin": 0.0, "xMax": 1000.0, "yMin": 0.0, "yMax": 1000.0},
        },
        "capacity": {"maxPlayersPerCell": 100},
        "scaling": {"scaleUpThreshold": 0.8, "scaleDownThreshold": 0.3, "minCells": 1, "maxCells": 16},
    })
}

/// Sets (or with `Value::Null`, removes) the field at a dotted path under `spec`.
fn with(mut spec: Value, path: &str, value: Value) -> Value {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut node = &mut spec;
    for part in parts {
        node = &mut node[part];
    }
    if let Some(map) = node.as_object_mut() {
        if value.is_null() {
            map.remove(last);
        } else {
            map.insert(last.to_owned(), value);
        }
    }
    spec
}

#[tokio::test]
async fn openapi_publishes_worldspec_field_docs() -> anyhow::Result<()> {
    let env = env_with_worldspec().await?;
    let client = env.client().await?;
    // The OpenAPI controller publishes a new CRD's schema shortly after it is
    // Established; poll instead of racing it.
    let schema = eventually(
        "the WorldSpec schema published under /openapi/v3",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let req = http::Request::get("/openapi/v3/apis/fleetforge.io/v1").body(Vec::new())?;
            let doc = client.request::<Value>(req).await?;
            Ok(doc["components"]["schemas"]["io.fleetforge.v1.WorldSpec"]
                .as_object()
                .map(|found| Value::Object(found.clone())))
        },
    )
    .await?;
    let spec = &schema["properties"]["spec"];
    ensure!(
        spec["description"].as_str().is_some_and(|d| !d.is_empty()),
        "spec has no description: {spec}"
    );
    for field in ["topology", "capacity", "scaling", "gameServerImage"] {
        ensure!(
            spec["properties"][field].is_object(),
            "spec.{field} missing from the published schema"
        );
    }
    let undocumented = undocumented_fields(spec, "spec");
    ensure!(
        undocumented.is_empty(),
        "fields without a description in the published schema: {undocumented:?}"
    );
    let initial = spec["properties"]["topology"]["properties"]["initialCells"]["description"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        initial.contains("1000"),
        "initialCells doc should state its range, got {initial:?}"
    );
    Ok(())
}

/// Paths of properties under `schema` that carry no description.
fn undocumented_fields(schema: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(props) = schema["properties"].as_object() {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            if prop["description"].as_str().is_none_or(str::is_empty) {
                out.push(here.clone());
            }
            out.extend(undocumented_fields(prop, &here));
        }
    }
    out
}

#[tokio::test]
async fn every_sample_world_is_accepted() -> anyhow::Result<()> {
    let env = env_with_worldspec().await?;
    let ns = env.create_namespace("samples").await?;
    let api: Api<DynamicObject> = Api::namespaced_with(env.client().await?, &ns, &worldspec_resource());
    let dir = workspace_root().join("examples/worlds");
    let mut samples: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading the sample worlds in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    samples.sort();
    ensure!(
        !samples.is_empty(),
        "no sample worlds (*.yaml) in {}",
        dir.display()
    );
    for path in &samples {
        let text = std::fs::read_to_string(path)?;
        let mut obj: DynamicObject =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        obj.metadata.namespace = Some(ns.clone());
        api.create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("the API server rejected sample {}", path.display()))?;
    }
    Ok(())
}

#[tokio::test]
async fn invalid_worldspecs_are_rejected_naming_the_field() -> anyhow::Result<()> {
    let env = env_with_worldspec().await?;
    let ns = env.create_namespace("invalid").await?;
    let api: Api<DynamicObject> = Api::namespaced_with(env.client().await?, &ns, &worldspec_resource());

    // Without this, every rejection below could be for some other reason.
    api.create(&PostParams::default(), &worldspec("valid", valid_spec())?)
        .await
        .context("the valid base spec was rejected")?;

    let base = valid_spec;
    let cases: Vec<(&str, Value, &str)> = vec![
        // CEL rules.
        (
            "scale-down-above-up",
            with(
                with(base(), "scaling.scaleDownThreshold", json!(0.9)),
                "scaling.scaleUpThreshold",
                json!(0.5),
            ),
            "spec.scaling.scaleDownThreshold",
        ),
        (
            "scale-down-equals-up",
            with(
                with(base(), "scaling.scaleDownThreshold", json!(0.5)),
                "scaling.scaleUpThreshold",
                json!(0.5),
            ),
            "spec.scaling.scaleDownThreshold",
        ),
        (
            "x-min-equals-x-max",
            with(base(), "topology.worldBoundaries.xMin", json!(1000.0)),
            "spec.topology.worldBoundaries.xMin",
        ),
        (
            "x-min-above-x-max",
            with(base(), "topology.worldBoundaries.xMin", json!(2000.0)),
            "spec.topology.worldBoundaries.xMin",
        ),
        (
            "y-min-above-y-max",
            with(base(), "topology.worldBoundaries.yMin", json!(5000.0)),
            "spec.topology.worldBoundaries.yMin",
        ),
        (
            "y-min-without-y-max",
            with(base(), "topology.worldBoundaries.yMax", Value::Null),
            "spec.topology.worldBoundaries.yMax",
        ),
        (
            "y-max-without-y-min",
            with(base(), "topology.worldBoundaries.yMin", Value::Null),
            "spec.topology.worldBoundaries.yMin",
        ),
        (
            "z-min-without-z-max",
            with(base(), "topology.worldBoundaries.zMin", json!(0.0)),
            "spec.topology.worldBoundaries.zMax",
        ),
        (
            "z-without-y",
            with(
                with(
                    with(
                        with(base(), "topology.worldBoundaries.yMin", Value::Null),
                        "topology.worldBoundaries.yMax",
                        Value::Null,
                    ),
                    "topology.worldBoundaries.zMin",
                    json!(0.0),
                ),
                "topology.worldBoundaries.zMax",
                json!(10.0),
            ),
            "spec.topology.worldBoundaries.zMin",
        ),
        (
            "min-cells-above-initial",
            with(base(), "scaling.minCells", json!(5)),
            "spec.scaling.minCells",
        ),
        (
            "initial-above-max-cells",
            with(base(), "topology.initialCells", json!(17)),
            "spec.scaling.maxCells",
        ),
        (
            "min-cells-above-max-cells",
            with(
                with(base(), "scaling.minCells", json!(20)),
                "scaling.maxCells",
                json!(10),
            ),
            "spec.scaling.minCells",
        ),
        (
            "max-cells-per-cluster-below-initial",
            with(base(), "topology.maxCellsPerCluster", json!(2)),
            "spec.topology.maxCellsPerCluster",
        ),
        (
            "checkpoint-interval-zero",
            with(base(), "persistence", json!({"checkpointInterval": "0s"})),
            "spec.persistence.checkpointInterval",
        ),
        (
            "retention-negative",
            with(base(), "persistence", json!({"retentionPeriod": "-1h"})),
            "spec.persistence.retentionPeriod",
        ),
        // Schema bounds.
        (
            "initial-cells-0",
            with(base(), "topology.initialCells", json!(0)),
            "spec.topology.initialCells",
        ),
        (
            "initial-cells-1001",
            with(
                with(base(), "topology.initialCells", json!(1001)),
                "scaling.maxCells",
                json!(2000),
            ),
            "spec.topology.initialCells",
        ),
        (
            "players-per-cell-0",
            with(base(), "capacity.maxPlayersPerCell", json!(0)),
            "spec.capacity.maxPlayersPerCell",
        ),
        (
            "players-per-cell-10001",
            with(base(), "capacity.maxPlayersPerCell", json!(10001)),
            "spec.capacity.maxPlayersPerCell",
        ),
        (
            "scale-up-0",
            with(
                with(base(), "scaling.scaleUpThreshold", json!(0.0)),
                "scaling.scaleDownThreshold",
                json!(-0.5),
            ),
            "spec.scaling.scaleUpThreshold",
        ),
        (
            "scale-up-1",
            with(base(), "scaling.scaleUpThreshold", json!(1.0)),
            "spec.scaling.scaleUpThreshold",
        ),
        (
            "scale-up-above-1",
            with(base(), "scaling.scaleUpThreshold", json!(1.5)),
            "spec.scaling.scaleUpThreshold",
        ),
        (
            "scale-down-0",
            with(base(), "scaling.scaleDownThreshold", json!(0.0)),
            "spec.scaling.scaleDownThreshold",
        ),
        (
            "scale-down-negative",
            with(base(), "scaling.scaleDownThreshold", json!(-0.1)),
            "spec.scaling.scaleDownThreshold",
        ),
        (
            "min-cells-0",
            with(base(), "scaling.minCells", json!(0)),
            "spec.scaling.minCells",
        ),
        (
            "max-transitions-0",
            with(base(), "scaling.maxTransitions", json!(0)),
            "spec.scaling.maxTransitions",
        ),
        (
            "prediction-min-samples-1",
            with(base(), "scaling.predictionMinSamples", json!(1)),
            "spec.scaling.predictionMinSamples",
        ),
        (
            "cell-size-0",
            with(base(), "topology.cellSize", json!(0.0)),
            "spec.topology.cellSize",
        ),
        (
            "image-empty",
            with(base(), "gameServerImage", json!("")),
            "spec.gameServerImage",
        ),
        (
            "image-missing",
            with(base(), "gameServerImage", Value::Null),
            "spec.gameServerImage",
        ),
    ];

    let mut failures = Vec::new();
    for (name, spec, field) in &cases {
        match api
            .create(&PostParams::default(), &worldspec(name, spec.clone())?)
            .await
        {
            Ok(_) => failures.push(format!("{name}: accepted, expected a rejection naming {field}")),
            Err(Error::Api(status)) if status.code == 422 && status.message.contains(field) => {}
            Err(Error::Api(status)) => failures.push(format!(
                "{name}: rejected with {} but the message does not name {field}: {}",
                status.code, status.message
            )),
            Err(other) => failures.push(format!("{name}: unexpected error {other}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} invalid WorldSpecs misjudged:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// Lists worldspecs in `ns` as `client`, returning the HTTP status of a refusal.
async fn list_status(client: Client, ns: &str) -> anyhow::Result<Option<u16>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &worldspec_resource());
    match api.list(&Default::default()).await {
        Ok(_) => Ok(None),
        Err(Error::Api(status)) => Ok(Some(status.code)),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn rbac_denies_worldspecs_until_a_role_is_bound() -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let env = env_with_worldspec().await?;
    let ns = env.create_namespace("rbac").await?;
    let other = env.create_namespace("rbac-other").await?;
    let admin = env.client().await?;
    let user = "alice";
    let alice = env.client_for(user, &["fleetforge:testers"]).await?;
    ensure!(
        list_status(alice.clone(), &ns).await? == Some(403),
        "a user without a role must get 403"
    );
    let sa = env.impersonate_service_account(&ns, "operator").await?;
    ensure!(
        list_status(sa.clone(), &ns).await? == Some(403),
        "a ServiceAccount without a role must get 403"
    );

    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "worldspec-reader"},
        "rules": [{"apiGroups": ["fleetforge.io"], "resources": ["worldspecs"], "verbs": ["get", "list", "watch"]}],
    }))?;
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "worldspec-readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "worldspec-reader"},
        "subjects": [
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user},
            {"kind": "ServiceAccount", "name": "operator", "namespace": ns},
        ],
    }))?;
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await?;

    // The authorizer reads bindings from an informer: allow it a moment to see them.
    eventually(
        "alice no longer denied after the RoleBinding",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { Ok((list_status(alice.clone(), &ns).await? != Some(403)).then_some(())) },
    )
    .await?;
    ensure!(
        list_status(alice.clone(), &ns).await?.is_none(),
        "alice should list worldspecs in {ns}"
    );
    ensure!(
        list_status(sa, &ns).await?.is_none(),
        "the bound ServiceAccount should list worldspecs"
    );
    ensure!(
        list_status(alice.clone(), &other).await? == Some(403),
        "the Role must not reach {other}"
    );
    let write = Api::<DynamicObject>::namespaced_with(alice, &ns, &worldspec_resource())
        .create(&PostParams::default(), &worldspec("w", valid_spec())?)
        .await;
    ensure!(
        matches!(&write, Err(Error::Api(s)) if s.code == 403),
        "a read-only Role must not allow create, got {write:?}"
    );

    // The denial is in the audit log, attributed to the certificate's user.
    let denied = env.audit_events()?.into_iter().any(|e| {
        e["user"]["username"] == user
            && e["objectRef"]["resource"] == "worldspecs"
            && e["objectRef"]["namespace"] == other.as_str()
            && e["responseStatus"]["code"] == 403
    });
    ensure!(denied, "no audit event for alice's denied list in {other}");
    Ok(())
}

#[tokio::test]
async fn pod_security_admission_is_enforced() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Patch, PatchParams};

    let env = TestEnv::shared(Profile::ApiServer).await?;
    let ns = env.create_namespace("psa").await?;
    let client = env.client().await?;
    let label = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]},
    }))?;
    let result = Api::<Pod>::namespaced(client, &ns)
        .create(&PostParams::default(), &pod)
        .await;
    match result {
        Err(Error::Api(s)) if s.code == 403 && s.message.contains("violates PodSecurity") => Ok(()),
        other => bail!("a privileged Pod in a restricted namespace must be refused, got {other:?}"),
    }
}
