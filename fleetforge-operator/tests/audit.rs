//! The audit trail of world changes, against a real API server started with
//! `deploy/audit/policy.yaml` as its audit policy (so the API server itself
//! validates that file) and with the admission policy of
//! `deploy/audit/changed-by.yaml` bound:
//!
//! - a named user's create, spec change and delete of a world are in the audit
//!   log at `RequestResponse`, with request and response bodies; reads of
//!   worlds, and every Secret, ConfigMap and TokenReview request, at `Metadata`
//!   without a body, and no secret value anywhere in the log;
//! - `fleetforge.io/changed-by` names whoever last changed the spec, and
//!   nobody can set it (or remove it) with a change that leaves the spec alone;
//! - a client's `Audit-ID` header becomes the event's `auditID` verbatim, as
//!   the operator relies on to tie its API calls to a reconcile's correlation id.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::*;
use fleetforge_crd::WorldSpec;
use fleetforge_testenv::{Options, Profile, TestEnv, workspace_root, yaml};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{Value, json};

const CHANGED_BY: &str = "fleetforge.io/changed-by";

/// Group of the people editing worlds in the test namespace (`fleetforge-editor`).
const DESIGNERS: &str = "game-designers";

/// Server-side applies every object in `file` (relative to the workspace root).
async fn apply_file(client: &Client, file: &str) -> anyhow::Result<()> {
    let discovery = Discovery::new(client.clone()).run().await?;
    for value in yaml::file_documents(&workspace_root().join(file))? {
        let obj: DynamicObject = serde_json::from_value(value)?;
        apply(client, &discovery, &obj, "fleetforge-audit-test", false)
            .await
            .with_context(|| format!("from {file}"))?;
    }
    Ok(())
}

fn changed_by(ws: &WorldSpec) -> Option<&str> {
    ws.metadata
        .annotations
        .as_ref()?
        .get(CHANGED_BY)
        .map(String::as_str)
}

/// Merge-patches world `name` and returns it as stored.
async fn merge(api: &Api<WorldSpec>, name: &str, patch: Value) -> anyhow::Result<WorldSpec> {
    Ok(api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?)
}

/// The completed audit events about object `resource`/`name` in `ns`.
fn events_about(env: &TestEnv, resource: &str, ns: &str, name: &str) -> anyhow::Result<Vec<Value>> {
    Ok(env
        .audit_events()?
        .into_iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            let o = &e["objectRef"];
            o["resource"] == resource && o["namespace"] == ns && o["name"] == name
        })
        .collect())
}

#[tokio::test]
async fn world_changes_are_audited_and_stamped_with_who_made_them() -> anyhow::Result<()> {
    let policy = std::fs::read_to_string(workspace_root().join("deploy/audit/policy.yaml"))?;
    let mut options = Options::new(Profile::ApiServer);
    options.audit_policy = Some(policy);
    // The API server refuses to start with a policy it cannot load.
    let env = TestEnv::start_with(options)
        .await
        .context("starting kube-apiserver with deploy/audit/policy.yaml")?;
    let admin = env.client().await?;

    // People's roles, a game namespace where game-designers edit worlds, and a
    // world that predates the admission policy (so it has no annotation).
    apply_file(&admin, "deploy/rbac/user-roles.yaml").await?;
    let ns = env.create_restricted_namespace("audit").await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "game-designers-fleetforge-editor"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "fleetforge-editor"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DESIGNERS}],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    create_world(&admin, &sample_world(&ns, "legacy")?).await?;

    // The admission policy; it takes effect once the API server has loaded it.
    apply_file(&admin, "deploy/audit/changed-by.yaml").await?;
    let as_admin: Api<WorldSpec> = Api::namespaced(admin.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe = sample_world(&ns, "probe")?;
    eventually(
        "the changed-by policy in effect",
        Duration::from_secs(30),
        || async {
            let ws = as_admin.create(&dry_run, &probe).await?;
            Ok((changed_by(&ws) == Some("admin")).then_some(()))
        },
    )
    .await?;

    let alice: Api<WorldSpec> = Api::namespaced(env.client_for("alice", &[DESIGNERS]).await?, &ns);
    let bob: Api<WorldSpec> = Api::namespaced(env.client_for("bob", &[DESIGNERS]).await?, &ns);
    eventually("alice may read worlds", Duration::from_secs(10), || async {
        Ok(alice.list(&Default::default()).await.ok().map(|_| ()))
    })
    .await?;

    // Created by alice, even though she claims it was mallory.
    let mut world = sample_world(&ns, "meadow")?;
    world
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(CHANGED_BY.to_owned(), "mallory".to_owned());
    let ws = alice.create(&PostParams::default(), &world).await?;
    assert_eq!(changed_by(&ws), Some("alice"), "on create");

    // alice changes the spec.
    let ws = merge(&alice, "meadow", json!({"spec": {"scaling": {"maxCells": 20}}})).await?;
    assert_eq!(ws.spec.scaling.max_cells, 20);
    assert_eq!(changed_by(&ws), Some("alice"), "after alice's spec change");
    alice.get("meadow").await?; // a read, for the audit checks below

    // bob changes only metadata: still alice.
    let ws = merge(&bob, "meadow", json!({"metadata": {"labels": {"team": "blue"}}})).await?;
    assert_eq!(changed_by(&ws), Some("alice"), "after bob's label change");

    // bob changes the spec: bob.
    let ws = merge(&bob, "meadow", json!({"spec": {"scaling": {"maxCells": 24}}})).await?;
    assert_eq!(changed_by(&ws), Some("bob"), "after bob's spec change");

    // alice cannot forge it without changing the spec, neither by a patch nor
    // by a full update, nor remove it.
    let ws = merge(
        &alice,
        "meadow",
        json!({"metadata": {"annotations": {CHANGED_BY: "mallory"}}}),
    )
    .await?;
    assert_eq!(changed_by(&ws), Some("bob"), "after alice's forged patch");
    let mut forged = alice.get("meadow").await?;
    forged
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(CHANGED_BY.to_owned(), "mallory".to_owned());
    let ws = alice.replace("meadow", &PostParams::default(), &forged).await?;
    assert_eq!(changed_by(&ws), Some("bob"), "after alice's forged update");
    let ws = merge(
        &alice,
        "meadow",
        json!({"metadata": {"annotations": {CHANGED_BY: null}}}),
    )
    .await?;
    assert_eq!(changed_by(&ws), Some("bob"), "after alice removed it");
    // Changing the spec with the same request names the one who made it.
    let ws = merge(
        &alice,
        "meadow",
        json!({"metadata": {"annotations": {CHANGED_BY: "mallory"}}, "spec": {"scaling": {"maxCells": 16}}}),
    )
    .await?;
    assert_eq!(
        changed_by(&ws),
        Some("alice"),
        "after alice's spec change claiming mallory"
    );
    // A world from before the policy has none, and gets none without a spec change.
    let ws = merge(
        &alice,
        "legacy",
        json!({"metadata": {"annotations": {CHANGED_BY: "mallory"}}}),
    )
    .await?;
    assert_eq!(changed_by(&ws), None, "on a world that had none");
    // A status write cannot touch metadata at all.
    let status = json!({"metadata": {"annotations": {CHANGED_BY: "mallory"}}, "status": {}});
    let ws = as_admin
        .patch_status("meadow", &PatchParams::default(), &Patch::Merge(status))
        .await?;
    assert_eq!(changed_by(&ws), Some("alice"), "after a status write");

    alice.delete("meadow", &DeleteParams::default()).await?;

    // The audit log: alice's writes of meadow in full.
    let events = events_about(&env, "worldspecs", &ns, "meadow")?;
    let by_alice: Vec<&Value> = events
        .iter()
        .filter(|e| e["user"]["username"] == "alice")
        .collect();
    for verb in ["create", "patch", "update", "delete"] {
        let writes: Vec<&&Value> = by_alice.iter().filter(|e| e["verb"] == verb).collect();
        ensure!(
            !writes.is_empty(),
            "no {verb} of meadow by alice in the audit log"
        );
        for e in writes {
            assert_eq!(e["level"], "RequestResponse", "{e}");
            assert!(
                e["user"]["groups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|g| g == DESIGNERS))
            );
            assert!(
                e["responseObject"].is_object(),
                "{verb} without a response body: {e}"
            );
            if verb != "delete" {
                assert!(
                    e["requestObject"].is_object(),
                    "{verb} without a request body: {e}"
                );
            }
        }
    }
    let create = by_alice.iter().find(|e| e["verb"] == "create").unwrap();
    assert_eq!(create["responseStatus"]["code"], 201);
    // The request as alice sent it, the object as stored (stamped).
    assert_eq!(
        create["requestObject"]["metadata"]["annotations"][CHANGED_BY],
        "mallory"
    );
    assert_eq!(
        create["responseObject"]["metadata"]["annotations"][CHANGED_BY],
        "alice"
    );
    assert_eq!(create["requestObject"]["spec"]["scaling"]["maxCells"], 16);
    let spec_change = by_alice
        .iter()
        .find(|e| e["verb"] == "patch" && e["requestObject"]["spec"]["scaling"]["maxCells"] == 20)
        .context("alice's spec change is not in the audit log with its request")?;
    assert_eq!(spec_change["responseObject"]["spec"]["scaling"]["maxCells"], 20);
    // bob's changes are there too, and reads are metadata only.
    assert!(
        events.iter().any(|e| e["user"]["username"] == "bob"
            && e["verb"] == "patch"
            && e["level"] == "RequestResponse")
    );
    let read = by_alice
        .iter()
        .find(|e| e["verb"] == "get")
        .context("alice's read of meadow is not in the audit log")?;
    assert_eq!(read["level"], "Metadata", "{read}");
    assert!(read.get("responseObject").is_none() && read.get("requestObject").is_none());
    // The status write is audited in full as well.
    assert!(events.iter().any(|e| e["objectRef"]["subresource"] == "status"
        && e["verb"] == "patch"
        && e["level"] == "RequestResponse"));

    // Secrets, ConfigMaps and TokenReviews: who and what, never the content.
    let token = "s3cr3t-world-token-7d1f0a";
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "meadow-cell-token", "namespace": ns},
        "stringData": {"token": token},
    }))?;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    secrets
        .patch(
            "meadow-cell-token",
            &PatchParams::apply("fleetforge-audit-test"),
            &Patch::Apply(&secret),
        )
        .await?;
    secrets.get("meadow-cell-token").await?;
    let config_value = "c0nf1g-p4ssw0rd-91ab";
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "game-settings", "namespace": ns},
        "data": {"password": config_value},
    }))?;
    Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &config)
        .await?;
    let bearer = "t0k3n-und3r-r3v13w-55c2";
    let review = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": bearer},
        }))?)?;
    admin.request_text(review).await?;

    let secret_events = events_about(&env, "secrets", &ns, "meadow-cell-token")?;
    ensure!(
        secret_events.iter().any(|e| e["verb"] == "patch")
            && secret_events.iter().any(|e| e["verb"] == "get"),
        "the Secret's write and read are not both in the audit log: {secret_events:?}"
    );
    let mut sensitive = secret_events;
    sensitive.extend(events_about(&env, "configmaps", &ns, "game-settings")?);
    sensitive.extend(
        env.audit_events()?
            .into_iter()
            .filter(|e| e["stage"] == "ResponseComplete" && e["objectRef"]["resource"] == "tokenreviews"),
    );
    ensure!(
        sensitive
            .iter()
            .any(|e| e["objectRef"]["resource"] == "tokenreviews"),
        "the TokenReview is not in the audit log"
    );
    for e in &sensitive {
        assert_eq!(e["level"], "Metadata", "{e}");
        assert!(
            e.get("requestObject").is_none() && e.get("responseObject").is_none(),
            "a body in {e}"
        );
    }
    let log = std::fs::read_to_string(env.audit_log_path())?;
    for value in [token, config_value, bearer] {
        assert!(!log.contains(value), "{value} is in the audit log");
        let b64 = base64_encode(value.as_bytes());
        assert!(!log.contains(&b64), "{value} is in the audit log in base64");
    }
    // omitStages: RequestReceived
    assert!(
        env.audit_events()?
            .iter()
            .all(|e| e["stage"] != "RequestReceived")
    );
    Ok(())
}

/// A client's `Audit-ID` header is the event's `auditID`, verbatim, whatever
/// its format, and the API server does not require it to be unique.
#[tokio::test]
async fn a_client_audit_id_is_recorded_verbatim() -> anyhow::Result<()> {
    let env = TestEnv::shared(Profile::ApiServer).await?;
    let ns = env.create_namespace("audit-id").await?;
    let admin = env.client().await?;
    let id = "0123456789abcdef-not/a uuid:1";
    for _ in 0..2 {
        let req = http::Request::get(format!("/api/v1/namespaces/{ns}/configmaps"))
            .header("Audit-ID", id)
            .body(Vec::new())?;
        let resp = admin.send(req.map(kube::client::Body::from)).await?;
        assert_eq!(
            resp.headers().get("Audit-ID").and_then(|v| v.to_str().ok()),
            Some(id),
            "the API server echoes the id"
        );
    }
    let events: Vec<Value> = env
        .audit_events()?
        .into_iter()
        .filter(|e| e["stage"] == "ResponseComplete" && e["auditID"] == id)
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["objectRef"]["namespace"] == ns.as_str()));
    Ok(())
}

/// Standard base64 with padding, as the API server encodes Secret data.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
