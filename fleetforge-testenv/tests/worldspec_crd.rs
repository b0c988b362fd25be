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
    // `kubectl explain worldspec.spec.capacity` prints these descriptions: the
    // original FleetForge's names say they are deprecated and what replaces them.
    let capacity = &spec["properties"]["capacity"]["properties"];
    for (old, new) in [
        ("cpuLimitPerCell", "cpuLimit"),
        ("memoryLimitPerCell", "memoryLimit"),
        ("cpuRequestPerCell", "cpuRequest"),
        ("memoryRequestPerCell", "memoryRequest"),
    ] {
        let doc = capacity[old]["description"].as_str().unwrap_or_default();
        ensure!(
            doc.starts_with(&format!("Deprecated: use `{new}`.")),
            "spec.capacity.{old} is not marked deprecated: {doc:?}"
        );
        let current = capacity[new]["description"].as_str().unwrap_or_default();
        ensure!(
            !current.contains("Deprecated"),
            "spec.capacity.{new} is the current name: {current:?}"
        );
    }
    let cell_size = spec["properties"]["topology"]["properties"]["cellSize"]["description"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        cell_size.contains("Deprecated form: a box"),
        "cellSize doc should name its deprecated form: {cell_size:?}"
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
            "multi-cluster",
            with(base(), "multiClusterEnabled", json!(true)),
            "spec.multiClusterEnabled",
        ),
        (
            "cpu-limit-spellings-differ",
            with(
                base(),
                "capacity",
                json!({"cpuLimit": "1", "cpuLimitPerCell": "2"}),
            ),
            "spec.capacity.cpuLimitPerCell",
        ),
        (
            "old-request-above-old-limit",
            with(
                base(),
                "capacity",
                json!({"memoryLimitPerCell": "1Gi", "memoryRequestPerCell": "2Gi"}),
            ),
            "spec.capacity.memoryRequestPerCell",
        ),
        (
            "request-above-default-limit",
            with(base(), "capacity", json!({"cpuRequest": 2})),
            "spec.capacity.cpuRequest",
        ),
        (
            "cpu-limit-zero",
            with(base(), "capacity", json!({"cpuLimit": "0"})),
            "spec.capacity.cpuLimit",
        ),
        (
            "old-request-negative",
            with(base(), "capacity", json!({"cpuRequestPerCell": "-1"})),
            "spec.capacity.cpuRequestPerCell",
        ),
        (
            "retention-zero-days",
            with(base(), "persistence", json!({"retentionPeriod": "0d"})),
            "spec.persistence.retentionPeriod",
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
            "cell-size-text",
            with(base(), "topology.cellSize", json!("big")),
            "spec.topology.cellSize",
        ),
        (
            "cell-size-box-off-the-origin",
            with(base(), "topology.cellSize", json!({"xMin": 10.0, "xMax": 50.0})),
            "spec.topology.cellSize.xMin",
        ),
        (
            "cell-size-box-y-min-alone",
            with(
                base(),
                "topology.cellSize",
                json!({"xMin": 0.0, "xMax": 50.0, "yMin": 0.0}),
            ),
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

/// A world as the original FleetForge's `config/samples` wrote it (vendored in
/// fleetforge-crd/tests/fixtures/original), in namespace `ns`.
fn original_world(file: &str, ns: &str) -> anyhow::Result<DynamicObject> {
    let path = workspace_root()
        .join("fleetforge-crd/tests/fixtures/original")
        .join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut obj: DynamicObject = serde_yaml_ng::from_str(&text)?;
    obj.metadata.namespace = Some(ns.to_owned());
    Ok(obj)
}

#[tokio::test]
async fn worlds_written_for_the_original_fleetforge_are_accepted_as_written() -> anyhow::Result<()> {
    let env = env_with_worldspec().await?;
    let ns = env.create_namespace("original").await?;
    let api: Api<DynamicObject> = Api::namespaced_with(env.client().await?, &ns, &worldspec_resource());

    // Stored with its own spellings, none pruned.
    let sample = original_world("worldspec.yaml", &ns)?;
    api.create(&PostParams::default(), &sample)
        .await
        .context("the original's sample world was rejected")?;
    let stored = api.get(&sample.metadata.name.clone().unwrap_or_default()).await?;
    let spec = &stored.data["spec"];
    for (path, want) in [
        ("/capacity/cpuLimitPerCell", json!("1000m")),
        ("/capacity/memoryLimitPerCell", json!("2Gi")),
        ("/capacity/cpuRequestPerCell", json!("500m")),
        ("/capacity/memoryRequestPerCell", json!("1Gi")),
        ("/topology/cellSize/xMax", json!(500)),
        ("/topology/cellSize/yMax", json!(500)),
        ("/persistence/retentionPeriod", json!("7d")),
    ] {
        let got = spec.pointer(path).cloned().unwrap_or(Value::Null);
        ensure!(
            got.as_f64()
                .zip(want.as_f64())
                .map_or(got == want, |(a, b)| a == b),
            "spec{path} stored as {got}, expected {want}"
        );
    }
    ensure!(
        spec["capacity"].get("cpuLimit").is_none(),
        "no current-name default may appear beside the deprecated one: {}",
        spec["capacity"]
    );

    // The large one asks for placement across clusters, which does not exist.
    let large = original_world("worldspec_large.yaml", &ns)?;
    match api.create(&PostParams::default(), &large).await {
        Err(Error::Api(s))
            if s.code == 422
                && s.message.contains("spec.multiClusterEnabled")
                && s.message.contains("not supported yet") => {}
        other => bail!("multiClusterEnabled: true must be refused, naming the field: {other:?}"),
    }
    let mut single = large.clone();
    single.data["spec"]["multiClusterEnabled"] = json!(false);
    api.create(&PostParams::default(), &single)
        .await
        .context("the original's large world, on one cluster, was rejected")?;

    // Both spellings at once must agree; the refusal names both fields.
    let mut both = sample.clone();
    both.metadata.name = Some("both-spellings".into());
    both.data["spec"]["capacity"]["cpuLimit"] = json!("2");
    match api.create(&PostParams::default(), &both).await {
        Err(Error::Api(s))
            if s.code == 422
                && s.message.contains("spec.capacity.cpuLimitPerCell")
                && s.message.contains("spec.capacity.cpuLimit ") => {}
        other => bail!("differing spellings must be refused naming both: {other:?}"),
    }
    both.data["spec"]["capacity"]["cpuLimit"] = json!("1");
    api.create(&PostParams::default(), &both)
        .await
        .context("1 and 1000m are the same limit")?;
    Ok(())
}

#[tokio::test]
async fn what_the_api_server_admits_the_conversion_accepts() -> anyhow::Result<()> {
    // Partial, deprecated and mixed specs on the real API server, each checked
    // against `to_world`: admitted exactly when it converts, and refused naming
    // the field the conversion blames. The offline property test covers random
    // specs; this pins the evaluator it uses to the real one.
    let env = env_with_worldspec().await?;
    let ns = env.create_namespace("agree").await?;
    let api: Api<DynamicObject> = Api::namespaced_with(env.client().await?, &ns, &worldspec_resource());
    let base = valid_spec;
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        // The world of issue 21: limits below the default requests, no requests.
        (
            "limits-only",
            with(
                base(),
                "capacity",
                json!({"cpuLimit": "250m", "memoryLimit": "256Mi"}),
            ),
            None,
        ),
        (
            "old-limits-only",
            with(
                base(),
                "capacity",
                json!({"cpuLimitPerCell": "250m", "memoryLimitPerCell": 268_435_456}),
            ),
            None,
        ),
        (
            "same-values-spelled-twice",
            with(
                base(),
                "capacity",
                json!({"cpuLimit": 1, "cpuLimitPerCell": "1000m", "memoryRequest": "0.5Gi", "memoryRequestPerCell": "512Mi"}),
            ),
            None,
        ),
        (
            "request-equal-to-old-limit",
            with(
                base(),
                "capacity",
                json!({"cpuLimitPerCell": "2", "cpuRequest": "2000m"}),
            ),
            None,
        ),
        (
            "request-above-old-limit",
            with(
                base(),
                "capacity",
                json!({"cpuLimitPerCell": "250m", "cpuRequest": "500m"}),
            ),
            Some("spec.capacity.cpuRequest"),
        ),
        (
            "request-spellings-differ",
            with(
                base(),
                "capacity",
                json!({"memoryRequest": "128Mi", "memoryRequestPerCell": "256Mi"}),
            ),
            Some("spec.capacity.memoryRequestPerCell"),
        ),
        (
            "malformed-old-limit",
            with(base(), "capacity", json!({"memoryLimitPerCell": "1GB"})),
            Some("spec.capacity.memoryLimitPerCell"),
        ),
        (
            "cell-size-integer",
            with(base(), "topology.cellSize", json!(25)),
            None,
        ),
        (
            "cell-size-box-3d",
            with(
                base(),
                "topology.cellSize",
                json!({"xMin": -10.0, "xMax": 40.0, "yMin": 0.0, "yMax": 50.0, "zMin": 0.0, "zMax": 5.0}),
            ),
            None,
        ),
        (
            "cell-size-box-empty-axis",
            with(base(), "topology.cellSize", json!({"xMin": 0.0, "xMax": 0.0})),
            Some("spec.topology.cellSize.xMax"),
        ),
        (
            "retention-in-days",
            with(
                base(),
                "persistence",
                json!({"retentionPeriod": "30d", "checkpointInterval": "3m"}),
            ),
            None,
        ),
        (
            "multi-cluster-false",
            with(base(), "multiClusterEnabled", json!(false)),
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (name, spec, blamed) in &cases {
        let obj = worldspec(name, spec.clone())?;
        let admitted = api.create(&PostParams::default(), &obj).await;
        let offline: fleetforge_crd::WorldSpec = serde_json::from_value(serde_json::to_value(&obj)?)?;
        let converted = fleetforge_crd::to_world(&offline);
        match (admitted, blamed) {
            (Ok(stored), None) => {
                // The stored object (with the API server's defaults) converts too.
                let stored: fleetforge_crd::WorldSpec =
                    serde_json::from_value(serde_json::to_value(&stored)?)?;
                if let Err(e) = fleetforge_crd::to_world(&stored) {
                    failures.push(format!(
                        "{name}: admitted, but the stored object does not convert: {e}"
                    ));
                }
                if let Err(e) = converted {
                    failures.push(format!("{name}: admitted, but does not convert: {e}"));
                }
            }
            (Err(Error::Api(s)), Some(field)) if s.code == 422 && s.message.contains(field) => {
                match converted {
                    Ok(_) => failures.push(format!("{name}: refused ({}), but converts", s.message)),
                    Err(e) if !e.paths().any(|p| p == *field) => {
                        failures.push(format!("{name}: refused naming {field}, conversion blames: {e}"));
                    }
                    Err(_) => {}
                }
            }
            (outcome, _) => failures.push(format!("{name}: expected {blamed:?}, got {outcome:?}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn deprecated_spellings_draw_a_warning_from_the_shipped_policy() -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::api::{Patch, PatchParams};

    let env = env_with_worldspec().await?;
    let client = env.client().await?;
    let ns = env.create_namespace("warn").await?;
    let path = workspace_crd_dir().join("worldspec-deprecations.yaml");
    let pp = PatchParams::apply("worldspec-crd-test").force();
    for value in fleetforge_testenv::yaml::file_documents(&path)? {
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match value["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => {
                let policy: ValidatingAdmissionPolicy = serde_json::from_value(value)?;
                Api::<ValidatingAdmissionPolicy>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&policy))
                    .await?;
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(value)?;
                Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&binding))
                    .await?;
            }
            other => bail!("unexpected {other:?} in {}", path.display()),
        }
    }

    // A dry-run create, returning the API server's warnings.
    let warnings = |obj: DynamicObject| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let uri = format!("/apis/fleetforge.io/v1/namespaces/{ns}/worldspecs?dryRun=All");
            let req = http::Request::post(uri)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&obj)?))?;
            let resp = client.send(req).await?;
            ensure!(
                resp.status().is_success(),
                "dry-run create failed: {}",
                resp.status()
            );
            Ok::<_, anyhow::Error>(
                resp.headers()
                    .get_all("warning")
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let sample = original_world("worldspec.yaml", &ns)?;
    // Admission policies take effect shortly after they are created.
    let got = eventually(
        "warnings from the deprecation policy",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let w = warnings(sample.clone()).await?;
            Ok((!w.is_empty()).then_some(w))
        },
    )
    .await?;
    for field in [
        "spec.capacity.cpuLimitPerCell",
        "spec.capacity.memoryLimitPerCell",
        "spec.capacity.cpuRequestPerCell",
        "spec.capacity.memoryRequestPerCell",
        "spec.topology.cellSize as a box",
    ] {
        ensure!(
            got.iter().any(|w| w.contains(field)),
            "no warning about {field}: {got:?}"
        );
    }
    let current = worldspec("current", with(valid_spec(), "topology.cellSize", json!(50)))?;
    let none = warnings(current).await?;
    ensure!(none.is_empty(), "current spellings drew warnings: {none:?}");
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
