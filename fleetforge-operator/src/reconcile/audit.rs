//! The operator's audit trail (REQ-OBS-005): one structured record for every
//! action it takes on a world's cells, under the log target [`TARGET`], with the
//! actor behind it.
//!
//! A record names two actors: who last changed the WorldSpec (the
//! `fleetforge.io/changed-by` annotation that `deploy/audit/changed-by.yaml`
//! stamps with the requesting user, else the field manager that last wrote the
//! spec) and the operator itself (its Pod and the user it authenticates as). The
//! reconcile span adds the correlation id, which is also the prefix of the
//! `Audit-ID` of the API calls, so a record leads to the API server's own audit
//! events. The timestamp is the log line's.

use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::ANNOTATION_CHANGED_BY;
use kube::ResourceExt;
use tracing::info;

use crate::reconcile::context::Identity;

/// Log target of audit records: route it to the audit sink of the log pipeline.
pub const TARGET: &str = "fleetforge::audit";

/// What the operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Created cell Pods.
    CreateCells,
    /// Retired (deleted) cell Pods.
    RetireCells,
    /// Started a transition (split, merge, replace, roll-out, roll-back...).
    StartTransition,
    /// Acted on a manual override annotation.
    Override,
    /// Wrote a world's cell token Secret.
    WriteToken,
}

impl Action {
    /// The record's `action` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateCells => "create-cells",
            Action::RetireCells => "retire-cells",
            Action::StartTransition => "start-transition",
            Action::Override => "override",
            Action::WriteToken => "write-token",
        }
    }
}

/// Who last changed `ws`: the stamped user, else `field-manager:<name>` of the
/// last write to its spec, else `unknown`.
pub fn actor(ws: &WorldSpec) -> String {
    if let Some(user) = ws.annotations().get(ANNOTATION_CHANGED_BY) {
        return user.clone();
    }
    ws.metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.get("f:spec").is_some()))
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.as_deref())
        .map_or_else(|| "unknown".to_owned(), |m| format!("field-manager:{m}"))
}

/// Writes one audit record of `action` on `ws`'s `cells` by the operator
/// `operator`; `detail` says what and why in words.
pub fn record(ws: &WorldSpec, action: Action, cells: &[String], operator: &Identity, detail: &str) {
    info!(
        target: TARGET,
        audit = true,
        action = action.as_str(),
        namespace = %ws.namespace().unwrap_or_default(),
        world_name = %ws.name_any(),
        world_uid = %ws.uid().unwrap_or_default(),
        generation = ws.metadata.generation.unwrap_or(0),
        actor = %actor(ws),
        operator = %operator.instance,
        operator_user = %operator.user.as_deref().unwrap_or("unknown"),
        cells = %cells.join(","),
        "{detail}"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
    use serde_json::json;

    use super::*;
    use crate::testutil::world_spec;

    fn entry(manager: &str, secs: i64, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            time: Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn the_actor_is_the_stamped_user_else_the_last_spec_writer() {
        let (mut ws, _) = world_spec("meadow");
        assert_eq!(actor(&ws), "unknown");
        ws.metadata.managed_fields = Some(vec![
            entry("kubectl-client-side-apply", 10, json!({"f:spec": {}})),
            entry("argocd-controller", 20, json!({"f:spec": {"f:scaling": {}}})),
            // A later write that does not touch the spec changes nothing.
            entry("kubectl-annotate", 30, json!({"f:metadata": {}})),
        ]);
        assert_eq!(actor(&ws), "field-manager:argocd-controller");
        ws.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_CHANGED_BY.to_owned(),
            "alice".to_owned(),
        )]));
        assert_eq!(actor(&ws), "alice");
    }
}
