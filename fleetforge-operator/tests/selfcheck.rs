//! The self-check's warning about excess permissions, against a real API
//! server: a cluster admin holds everything the operator must not have, and the
//! warning reaches the operator's own Pod as a Warning Event; the SelfSubjectReview
//! names the user the audit records will carry.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::eventually;
use fleetforge_operator::ha::selfcheck::{checks, self_check, warn_excess, whoami};
use fleetforge_testenv::{Options, Profile, TestEnv};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn excess_permissions_are_reported_on_the_operators_pod_and_whoami_names_the_user() -> anyhow::Result<()>
{
    let env = TestEnv::start_with(Options::new(Profile::ApiServer)).await?;
    let ns = env.create_namespace("operator").await?;
    let admin = env.client_for("too-powerful", &["system:masters"]).await?;
    assert_eq!(whoami(&admin).await?, "too-powerful");

    let (required, unwanted) = checks(&[None], Some((ns.as_str(), "fleetforge-operator")));
    let report = self_check(&admin, &required, &unwanted).await?;
    assert!(report.missing.is_empty());
    assert!(
        !report.excess.is_empty(),
        "system:masters can read Secrets, among others"
    );

    let pod = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("fleetforge-operator-0".into()),
        namespace: Some(ns.clone()),
        ..ObjectReference::default()
    };
    warn_excess(&admin, &report, Some(pod), "fleetforge-operator-0").await;
    let client = env.client().await?;
    let events: Api<Event> = Api::namespaced(client, &ns);
    let event = eventually("an ExcessPermissions Event", Duration::from_secs(10), || {
        let events = events.clone();
        async move {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("ExcessPermissions")))
        }
    })
    .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.and_then(|r| r.name).as_deref(),
        Some("fleetforge-operator-0")
    );
    let note = event.note.unwrap_or_default();
    assert!(note.contains("secrets"), "the note names the permission: {note}");
    Ok(())
}
