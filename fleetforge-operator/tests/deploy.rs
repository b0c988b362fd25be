//! The manifests in `deploy/` against a real API server (RBAC and PodSecurity
//! on): every object under `deploy/` passes a server-side dry run (the
//! kustomize base, the cell NetworkPolicy, the changed-by admission policy,
//! the monitoring resources); the base applies, every Deployment's Pod passes
//! the namespace's `restricted` Pod Security, and the operator running with
//! nothing but the shipped RBAC (its ServiceAccount, impersonated) elects
//! itself leader and brings a world to Ready, while it is denied what it must
//! not do; the player gateway's ServiceAccount reads worlds and cell Pods and
//! nothing else, and people get the WorldSpec rights their roles say.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use common::*;
use fleetforge_crd::WorldSpec;
use fleetforge_operator::app::controllers::{ControllerSettings, run_controllers};
use fleetforge_operator::config::cli::Scope;
use fleetforge_operator::ha::leader::{Election, LeaderConfig};
use fleetforge_operator::ha::selfcheck::{Report, SelfCheckError, checks, self_check};
use fleetforge_operator::reconcile::context::{Identity, Timing};
use fleetforge_operator::runtime::clock::Clock;
use fleetforge_testenv::{Options, Profile, TestEnv, workspace_root, yaml};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope as ApiScope};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

const OPERATOR_NS: &str = "fleetforge-system";
const OPERATOR_SA: &str = "fleetforge-operator";
const GATEWAY_SA: &str = "fleetforge-gateway";

/// Every object of the kustomize base, in the order its `resources` list them.
fn base_objects() -> anyhow::Result<Vec<DynamicObject>> {
    let dir = workspace_root().join("deploy");
    let kustomization: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml"))?)?;
    let mut objects = Vec::new();
    for file in kustomization["resources"].as_sequence().context("no resources")? {
        let path = dir.join(file.as_str().context("resource is not a path")?);
        for value in yaml::file_documents(&path)? {
            let obj: DynamicObject =
                serde_json::from_value(value).with_context(|| format!("an object in {}", path.display()))?;
            objects.push(obj);
        }
    }
    Ok(objects)
}

/// Server-side applies `obj` as the deploy test (a dry run when `dry_run`).
async fn apply(
    client: &Client,
    discovery: &Discovery,
    obj: &DynamicObject,
    dry_run: bool,
) -> anyhow::Result<()> {
    common::apply(client, discovery, obj, "fleetforge-deploy-test", dry_run).await
}

fn forbidden<T>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn the_operator_runs_with_the_shipped_rbac_only() -> anyhow::Result<()> {
    let env = TestEnv::start_with(Options::new(Profile::Cluster).nodes(1)).await?;
    let admin = env.client().await?;
    let discovery = Discovery::new(admin.clone()).run().await?;

    // Every manifest passes a server-side dry run (the namespace is created
    // first: a dry run does not create what the others live in), then applies.
    let objects = base_objects()?;
    let namespace = objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Namespace"));
    apply(
        &admin,
        &discovery,
        namespace.context("the base has no Namespace")?,
        false,
    )
    .await?;
    for obj in &objects {
        apply(&admin, &discovery, obj, true).await?;
    }
    for obj in &objects {
        apply(&admin, &discovery, obj, false).await?;
    }
    // PodSecurity enforces on Pods; on a Deployment it only warns. So each
    // Deployment's Pod template, as a Pod, must pass `restricted` in its
    // namespace (a dry run: the Deployments' own Pods are not waited for).
    for obj in objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
    {
        let template = &obj.data["spec"]["template"];
        let pod: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("{}-pod-security", obj.name_any()),
                "namespace": obj.namespace(),
                "labels": template["metadata"]["labels"],
            },
            "spec": template["spec"],
        }))?;
        apply(&admin, &discovery, &pod, true).await.with_context(|| {
            format!(
                "a Pod of Deployment {} under restricted Pod Security",
                obj.name_any()
            )
        })?;
    }

    // The operator as its ServiceAccount: leader election and controllers.
    let operator = env.impersonate_service_account(OPERATOR_NS, OPERATOR_SA).await?;
    let election = Election::start(
        Api::<Lease>::namespaced(operator.clone(), OPERATOR_NS),
        LeaderConfig {
            namespace: OPERATOR_NS.to_owned(),
            name: "fleetforge-operator".to_owned(),
            identity: "rbac-test".to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        },
        Clock::system(),
    );
    let mut is_leader = election.is_leader.clone();
    tokio::time::timeout(Duration::from_secs(30), is_leader.wait_for(|l| *l))
        .await
        .context("no leadership within 30s under the shipped Role")??;
    let (stop, stop_rx) = watch::channel(false);
    let settings = ControllerSettings {
        scope: Scope::All,
        concurrency: 4,
        timing: Timing::default(),
        identity: Identity {
            instance: "rbac-test".to_owned(),
            user: None,
        },
        sampling: None,
        tokens: std::sync::Arc::new(fleetforge_operator::cells::tokens::TokenKeys::ephemeral()?),
        clock: Clock::system(),
    };
    let controllers = tokio::spawn(run_controllers(operator.clone(), settings, stop_rx, || {}));

    let ns = env.create_restricted_namespace("rbac-world").await?;
    create_world(&admin, &sample_world(&ns, "meadow")?).await?;
    let worlds: Api<WorldSpec> = Api::namespaced(admin.clone(), &ns);
    eventually(
        "the world Ready under the shipped RBAC",
        Duration::from_secs(60),
        || async { Ok(is_ready(&worlds.get("meadow").await?).then_some(())) },
    )
    .await?;

    // What the operator must not do.
    if !forbidden(
        Api::<Secret>::namespaced(operator.clone(), OPERATOR_NS)
            .list(&ListParams::default())
            .await,
    ) {
        bail!("the operator can list Secrets in its own namespace");
    }
    if !forbidden(Api::<Secret>::namespaced(operator.clone(), &ns).get("any").await) {
        bail!("the operator can read Secrets in a game namespace");
    }
    if !forbidden(
        Api::<Lease>::namespaced(operator.clone(), "kube-system")
            .list(&ListParams::default())
            .await,
    ) {
        bail!("the operator can read other namespaces' Leases");
    }

    // The player gateway, as its ServiceAccount: it watches worlds and their
    // cell Pods in every namespace, and can do nothing else.
    let gateway = env.impersonate_service_account(OPERATOR_NS, GATEWAY_SA).await?;
    let cells = Api::<Pod>::all(gateway.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=fleetforge"))
        .await
        .context("the gateway lists cell Pods")?;
    ensure!(!cells.items.is_empty(), "the gateway sees no cell Pods");
    Api::<WorldSpec>::all(gateway.clone())
        .list(&ListParams::default())
        .await
        .context("the gateway lists WorldSpecs")?;
    if !forbidden(Api::<Secret>::namespaced(gateway.clone(), &ns).get("any").await) {
        bail!("the gateway can read Secrets");
    }
    let gateway_worlds: Api<WorldSpec> = Api::namespaced(gateway.clone(), &ns);
    if !forbidden(
        gateway_worlds
            .patch(
                "meadow",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"gateway": "was-here"}}})),
            )
            .await,
    ) {
        bail!("the gateway can change a world");
    }
    if !forbidden(
        Api::<Pod>::namespaced(gateway.clone(), &ns)
            .delete_collection(&Default::default(), &ListParams::default())
            .await,
    ) {
        bail!("the gateway can delete Pods");
    }

    // People: fleetforge-viewer reads but does not write; the built-in `edit`
    // role carries WorldSpec rights through aggregation.
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &ns);
    for (user, role) in [("alice", "fleetforge-viewer"), ("bob", "edit")] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{user}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))?;
        bindings.create(&PostParams::default(), &binding).await?;
    }
    let alice: Api<WorldSpec> = Api::namespaced(env.client_for("alice", &[]).await?, &ns);
    let bob: Api<WorldSpec> = Api::namespaced(env.client_for("bob", &[]).await?, &ns);
    let label = Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}}}));
    eventually("alice reads worlds", Duration::from_secs(10), || async {
        Ok(alice
            .list(&ListParams::default())
            .await
            .ok()
            .map(|l| l.items.len()))
    })
    .await?;
    if !forbidden(alice.patch("meadow", &PatchParams::default(), &label).await) {
        bail!("a fleetforge-viewer could change a world");
    }
    eventually(
        "bob edits worlds through the aggregated edit role",
        Duration::from_secs(10),
        || async {
            Ok(bob
                .patch("meadow", &PatchParams::default(), &label)
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await?;

    stop.send(true).ok();
    controllers.await?;
    election.release().await;

    // The startup self-check: clean with the shipped RBAC; a missing rule is
    // named; a permission beyond the documented set is reported.
    let (required, unwanted) = checks(&[None], Some((OPERATOR_NS, "fleetforge-operator")));
    let report = self_check(&operator, &required, &unwanted).await?;
    assert_eq!(report, Report::default());

    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let mut role = roles.get("fleetforge-operator").await?;
    let full = role.clone();
    role.rules.get_or_insert_with(Vec::new).retain(|r| {
        !r.resources
            .as_ref()
            .is_some_and(|res| res.iter().any(|x| x == "services"))
    });
    role.metadata.managed_fields = None;
    roles
        .replace("fleetforge-operator", &PostParams::default(), &role)
        .await?;
    let missing = eventually("the removed rule reported", Duration::from_secs(10), || async {
        match self_check(&operator, &required, &unwanted).await {
            Err(SelfCheckError::Missing(m)) => Ok(Some(m)),
            _ => Ok(None),
        }
    })
    .await?;
    let text = SelfCheckError::Missing(missing.clone()).to_string();
    assert!(
        missing.iter().all(|c| c.permission.resource == "services"),
        "{text}"
    );
    assert!(text.contains("create core/services in all namespaces"), "{text}");

    let mut restored = full;
    restored.metadata.managed_fields = None;
    restored.metadata.resource_version = None;
    roles
        .replace("fleetforge-operator", &PostParams::default(), &restored)
        .await?;
    let too_much: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "too-much"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }))?;
    roles.create(&PostParams::default(), &too_much).await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "too-much"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "too-much"},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NS}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let excess = eventually(
        "the excess permission reported",
        Duration::from_secs(10),
        || async {
            let report = self_check(&operator, &required, &unwanted).await?;
            Ok((!report.excess.is_empty()).then_some(report.excess))
        },
    )
    .await?;
    assert_eq!(excess.len(), 1, "{excess:?}");
    assert_eq!(excess[0].to_string(), "get core/secrets in all namespaces");
    Ok(())
}

/// Files under `deploy/` that hold no Kubernetes object, and why they are not
/// dry-run. Every other `*.yaml` file there must hold only objects.
const NOT_OBJECTS: &[(&str, &str)] = &[
    (
        "audit/policy.yaml",
        "the API server's audit policy file: tests/audit.rs starts the API server with it",
    ),
    (
        "monitoring/rules/",
        "a plain Prometheus rule file (promtool); the PrometheusRule carries the same groups",
    ),
    ("monitoring/tests/", "promtool unit tests of the rules"),
];

/// Every `*.yaml` file under `dir`, sorted, as paths relative to `dir`.
fn yaml_files(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                found.push(rel);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The ConfigMaps a kustomization's `configMapGenerator` makes (file sources,
/// `key=path` or `path`, with its labels, annotations and namespace).
fn generated_config_maps(
    dir: &std::path::Path,
    kustomization: &serde_yaml_ng::Value,
) -> anyhow::Result<Vec<DynamicObject>> {
    let mut maps = Vec::new();
    for generator in kustomization["configMapGenerator"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let name = generator["name"]
            .as_str()
            .context("a configMapGenerator without a name")?;
        let mut data = serde_json::Map::new();
        for file in generator["files"].as_sequence().into_iter().flatten() {
            let spec = file.as_str().context("a generator file is not a string")?;
            let (key, rel) = match spec.split_once('=') {
                Some((key, rel)) => (key.to_owned(), rel),
                None => (
                    std::path::Path::new(spec)
                        .file_name()
                        .context("a generator file without a name")?
                        .to_string_lossy()
                        .into_owned(),
                    spec,
                ),
            };
            let content = std::fs::read_to_string(dir.join(rel)).with_context(|| format!("reading {rel}"))?;
            data.insert(key, json!(content));
        }
        let options = &generator["options"];
        let metadata = json!({
            "name": name,
            "namespace": kustomization["namespace"].as_str(),
            "labels": serde_json::to_value(&options["labels"])?,
            "annotations": serde_json::to_value(&options["annotations"])?,
        });
        maps.push(serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": data,
        }))?);
    }
    Ok(maps)
}

/// A stand-in for a CRD of another project: the right group, version, kind,
/// plural and scope, and a schema that accepts anything
/// (`x-kubernetes-preserve-unknown-fields`). Dry-running against it checks that
/// a manifest names a resource that exists, in the right kind of scope and
/// namespace, and that the admin may write it; it does not check the object
/// against that project's own schema.
fn stand_in_crd(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> anyhow::Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.to_lowercase(),
                "kind": kind,
                "listKind": format!("{kind}List"),
            },
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))?)
}

#[tokio::test]
async fn every_manifest_under_deploy_passes_a_server_side_dry_run() -> anyhow::Result<()> {
    let env = TestEnv::start(Profile::ApiServer).await?;
    let admin = env.client().await?;
    let deploy = workspace_root().join("deploy");

    // The Prometheus Operator's CRDs are not in the test API server: stand-ins
    // for the two kinds deploy/monitoring/ uses.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in [
        stand_in_crd("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules")?,
        stand_in_crd("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors")?,
    ] {
        let name = crd.name_any();
        crds.create(&PostParams::default(), &crd).await?;
        eventually(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || async {
                let established = crds
                    .get(&name)
                    .await?
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
                Ok(established.then_some(()))
            },
        )
        .await?;
    }
    let discovery = eventually(
        "the stand-in CRDs discoverable",
        Duration::from_secs(30),
        || async {
            let discovery = Discovery::new(admin.clone()).run().await?;
            let gvk = kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
            let served = discovery.resolve_gvk(&gvk).is_some()
                && discovery
                    .resolve_gvk(&kube::api::GroupVersionKind::gvk(
                        "monitoring.coreos.com",
                        "v1",
                        "PrometheusRule",
                    ))
                    .is_some();
            Ok(served.then_some(discovery))
        },
    )
    .await?;

    // A dry run does not create what the others live in: the operator's
    // namespace for real, and a game namespace for the per-namespace cell
    // manifests (applied with `kubectl apply -n <game namespace>`).
    let namespace = yaml::file_documents(&deploy.join("namespace.yaml"))?;
    let namespace: DynamicObject = serde_json::from_value(namespace[0].clone())?;
    apply(&admin, &discovery, &namespace, false).await?;
    let game_ns = env.create_restricted_namespace("deploy-dry-run").await?;

    // Every file: objects, kustomizations (their generated ConfigMaps), or a
    // file known to hold none.
    let mut objects: Vec<(String, DynamicObject)> = Vec::new();
    for file in yaml_files(&deploy)? {
        if let Some((_, why)) = NOT_OBJECTS
            .iter()
            .find(|(prefix, _)| file == *prefix || (prefix.ends_with('/') && file.starts_with(prefix)))
        {
            eprintln!("not dry-run: {file}: {why}");
            continue;
        }
        let path = deploy.join(&file);
        let dir = path.parent().context("a file without a directory")?.to_owned();
        // A kustomization's `namespace:` applies to the objects of its directory.
        let kustomization = dir.join("kustomization.yaml");
        let kustomization = if kustomization.is_file() {
            Some(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(
                &std::fs::read_to_string(&kustomization)?,
            )?)
        } else {
            None
        };
        let kustomize_ns = kustomization
            .as_ref()
            .and_then(|k| k["namespace"].as_str().map(str::to_owned));
        if file.ends_with("kustomization.yaml") {
            let k = kustomization.context("kustomization")?;
            for resource in k["resources"].as_sequence().into_iter().flatten() {
                let rel = resource.as_str().context("a resource is not a path")?;
                ensure!(
                    dir.join(rel).is_file(),
                    "{file} lists {rel}, which does not exist"
                );
            }
            for cm in generated_config_maps(&dir, &k)? {
                objects.push((format!("{file} (configMapGenerator)"), cm));
            }
            continue;
        }
        for doc in yaml::file_documents(&path)? {
            let mut obj: DynamicObject =
                serde_json::from_value(doc).with_context(|| format!("an object in {file}"))?;
            ensure!(
                obj.types.is_some(),
                "{file} holds a document without apiVersion/kind"
            );
            if obj.metadata.namespace.is_none() {
                obj.metadata.namespace = kustomize_ns.clone();
            }
            objects.push((file.clone(), obj));
        }
    }

    let mut seen = std::collections::BTreeSet::new();
    for (file, obj) in &objects {
        let mut obj = obj.clone();
        let types = obj.types.clone().context("types")?;
        let gvk = kube::api::GroupVersionKind::try_from(&types)?;
        let namespaced = discovery
            .resolve_gvk(&gvk)
            .is_some_and(|(_, caps)| caps.scope == ApiScope::Namespaced);
        if namespaced && obj.metadata.namespace.is_none() {
            obj.metadata.namespace = Some(game_ns.clone());
        }
        apply(&admin, &discovery, &obj, true)
            .await
            .with_context(|| format!("dry-running {file}"))?;
        seen.insert(format!("{} {}", types.kind, obj.name_any()));
    }
    // The ones this test was written for, so a path or kind change cannot
    // silently drop them.
    for expected in [
        "CustomResourceDefinition worldspecs.fleetforge.io",
        "Deployment fleetforge-operator",
        "Deployment fleetforge-gateway",
        "ClusterRole fleetforge-gateway",
        "NetworkPolicy fleetforge-cells",
        "MutatingAdmissionPolicy fleetforge-changed-by",
        "MutatingAdmissionPolicyBinding fleetforge-changed-by",
        "PrometheusRule fleetforge",
        "ServiceMonitor fleetforge-operator",
        "ServiceMonitor fleetforge-gateway",
        "ConfigMap fleetforge-dashboards",
    ] {
        ensure!(
            seen.contains(expected),
            "{expected} was not dry-run; dry-run: {seen:?}"
        );
    }
    Ok(())
}
