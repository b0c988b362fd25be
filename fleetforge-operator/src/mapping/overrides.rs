//! Manual overrides: the force-split and force-merge annotations on a WorldSpec,
//! who set them, and what remains of them once the planner acted.

use std::collections::BTreeSet;

use fleetforge_core::CellId;
use fleetforge_core::plan::{OverrideOutcome, OverrideRequest, OverrideResult};
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_FORCE_MERGE, ANNOTATION_FORCE_SPLIT, annotation_pointer, parse_cell_list,
};
use serde_json::{Value, json};

/// The field manager that last wrote annotation `key` on `ws`, by its managed
/// fields: the closest thing to "who asked" the API server records on the object
/// (`kubectl-annotate`, `kubectl-client-side-apply`, a GitOps tool's name, ...).
/// The user's own identity is in the API server's audit log.
pub fn requester(ws: &WorldSpec, key: &str) -> Option<String> {
    let field = format!("f:{key}");
    ws.metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:metadata"))
                .and_then(|m| m.get("f:annotations"))
                .and_then(|a| a.as_object())
                .is_some_and(|a| a.contains_key(&field))
        })
        // Later writes win; `time` is RFC 3339 and sorts as text.
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.clone())
}

/// The requests the plan is done with: started or rejected ones are removed from
/// the annotations, deferred ones stay for a later plan.
pub fn settled(outcomes: &[OverrideOutcome]) -> Vec<&OverrideOutcome> {
    outcomes
        .iter()
        .filter(|o| matches!(o.result, OverrideResult::Started | OverrideResult::Rejected(_)))
        .collect()
}

/// The JSON patch that removes the settled requests from `ws`'s override
/// annotations, or `None` when there is nothing to remove.
///
/// Each change is preceded by a `test` of the annotation's value as the plan saw
/// it: a request the user added in the meantime makes the patch fail (and the
/// reconcile retry) instead of being dropped, while writes to anything else on the
/// world (its status, say) do not get in the way as a `resourceVersion`
/// precondition would.
///
/// A force-merge entry may name the parent or one of its children (see
/// [`fleetforge_crd::resolve_force_merge`]): both spellings of a settled merge go.
/// An annotation left empty is removed.
pub fn removal_patch(ws: &WorldSpec, settled: &[&OverrideOutcome]) -> Option<Value> {
    let splits: BTreeSet<&CellId> = settled
        .iter()
        .filter_map(|o| match &o.request {
            OverrideRequest::Split(id) => Some(id),
            OverrideRequest::Merge(_) => None,
        })
        .collect();
    let merges: BTreeSet<&CellId> = settled
        .iter()
        .filter_map(|o| match &o.request {
            OverrideRequest::Merge(id) => Some(id),
            OverrideRequest::Split(_) => None,
        })
        .collect();
    let annotations = ws.metadata.annotations.as_ref()?;
    let mut ops = Vec::new();
    for (key, done) in [
        (ANNOTATION_FORCE_SPLIT, &|id: &CellId| splits.contains(id)),
        (ANNOTATION_FORCE_MERGE, &|id: &CellId| {
            merges.contains(id) || id.parent().is_some_and(|p| merges.contains(&p))
        }),
    ] as [(&str, &dyn Fn(&CellId) -> bool); 2]
    {
        let Some(value) = annotations.get(key) else {
            continue;
        };
        // An unreadable annotation was reported as an invalid spec; leave it be.
        let Ok(ids) = parse_cell_list(key, value) else {
            continue;
        };
        let remaining: Vec<String> = ids
            .iter()
            .filter(|id| !done(id))
            .map(ToString::to_string)
            .collect();
        if remaining.len() == ids.len() {
            continue;
        }
        let path = annotation_pointer(key);
        ops.push(json!({"op": "test", "path": path, "value": value}));
        ops.push(if remaining.is_empty() {
            json!({"op": "remove", "path": path})
        } else {
            json!({"op": "replace", "path": path, "value": remaining.join(",")})
        });
    }
    (!ops.is_empty()).then_some(Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
    use std::collections::BTreeMap;

    fn id(s: &str) -> CellId {
        s.parse().unwrap()
    }

    fn ws_with(annotations: &[(&str, &str)]) -> WorldSpec {
        let (mut ws, _) = crate::testutil::world_spec("meadow");
        ws.metadata.resource_version = Some("42".into());
        ws.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        );
        ws
    }

    fn entry(manager: &str, secs: i64, annotation: &str) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            time: Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())),
            fields_v1: Some(FieldsV1(
                json!({"f:metadata": {"f:annotations": {format!("f:{annotation}"): {}}}}),
            )),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn the_latest_writer_of_the_annotation_is_the_requester() {
        let mut ws = ws_with(&[(ANNOTATION_FORCE_SPLIT, "c0")]);
        ws.metadata.managed_fields = Some(vec![
            entry("kubectl-annotate", 100, ANNOTATION_FORCE_SPLIT),
            entry("argocd-controller", 200, ANNOTATION_FORCE_SPLIT),
            entry("someone-else", 300, "example.com/other"),
        ]);
        assert_eq!(
            requester(&ws, ANNOTATION_FORCE_SPLIT).as_deref(),
            Some("argocd-controller")
        );
        assert_eq!(requester(&ws, ANNOTATION_FORCE_MERGE), None);
    }

    #[test]
    fn settled_requests_are_removed_and_deferred_ones_kept() {
        let ws = ws_with(&[
            (ANNOTATION_FORCE_SPLIT, "c0, c1"),
            (ANNOTATION_FORCE_MERGE, "c2-1"),
        ]);
        let outcomes = vec![
            OverrideOutcome {
                request: OverrideRequest::Split(id("c0")),
                result: OverrideResult::Started,
            },
            OverrideOutcome {
                request: OverrideRequest::Split(id("c1")),
                result: OverrideResult::Deferred("busy".into()),
            },
            // The user named a child; the planner acted on its parent.
            OverrideOutcome {
                request: OverrideRequest::Merge(id("c2")),
                result: OverrideResult::Rejected("no sibling".into()),
            },
        ];
        let patch = removal_patch(&ws, &settled(&outcomes)).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/annotations/fleetforge.io~1force-split", "value": "c0, c1"},
                {"op": "replace", "path": "/metadata/annotations/fleetforge.io~1force-split", "value": "c1"},
                {"op": "test", "path": "/metadata/annotations/fleetforge.io~1force-merge", "value": "c2-1"},
                {"op": "remove", "path": "/metadata/annotations/fleetforge.io~1force-merge"},
            ])
        );
        // It is a valid JSON patch.
        serde_json::from_value::<json_patch::Patch>(patch).unwrap();
    }

    #[test]
    fn nothing_settled_means_no_patch() {
        let ws = ws_with(&[(ANNOTATION_FORCE_SPLIT, "c0")]);
        let deferred = [OverrideOutcome {
            request: OverrideRequest::Split(id("c0")),
            result: OverrideResult::Deferred("cooldown".into()),
        }];
        assert_eq!(removal_patch(&ws, &settled(&deferred)), None);
    }
}
