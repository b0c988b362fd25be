//! The world's PodDisruptionBudget: voluntary disruptions (a node drain, the
//! cluster autoscaler, `kubectl drain`, anything that uses the Eviction API) take
//! at most one cell of a world at a time, and only once the world is at rest, so
//! each evicted cell is drained into its replacement before the next may go.
//!
//! Cells are bare Pods (no controller with a scale), and for those a budget can
//! only say `minAvailable` as a number. So the operator keeps that number
//! current: with `n` cell Pods not being deleted, `n - 1` while the world is at
//! rest (every cell active, none being deleted), and `n` while anything is in
//! progress (an incoming cell, a Pod terminating: a drain, split, merge or
//! roll-out), which holds every further eviction back until it is done.

use std::collections::BTreeMap;

use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{ANNOTATION_ROLE, LABEL_MANAGED_BY, LABEL_WORLD, ROLE_ACTIVE, world_labels};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::mapping::cell_pod::{DesiredError, owner, service_name};

/// How many of a world's cell Pods must stay available, given its cell Pods.
pub fn min_available(pods: &[Pod]) -> i32 {
    let deleting = |p: &Pod| p.metadata.deletion_timestamp.is_some();
    let live = pods.iter().filter(|p| !deleting(p)).count();
    let at_rest = pods.iter().all(|p| {
        !deleting(p)
            && p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_ROLE))
                .is_some_and(|r| r == ROLE_ACTIVE)
    });
    let wanted = if at_rest { live.saturating_sub(1) } else { live };
    i32::try_from(wanted).unwrap_or(i32::MAX)
}

/// The world's PodDisruptionBudget given its cell Pods, exactly as the operator
/// server-side-applies it: named like the world's Service, selecting its cell
/// Pods as the Service does, owned by the world.
pub fn desired_budget(ws: &WorldSpec, pods: &[Pod]) -> Result<PodDisruptionBudget, DesiredError> {
    let (world_name, namespace, owner_ref) = owner(ws)?;
    let labels = world_labels(&world_name);
    let selector: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| *k == LABEL_WORLD || *k == LABEL_MANAGED_BY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(service_name(&world_name)),
            namespace: Some(namespace),
            labels: Some(labels),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available(pods))),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(role: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(ANNOTATION_ROLE.to_owned(), role.to_owned())])),
                deletion_timestamp: deleting.then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn one_cell_may_go_only_while_the_world_is_at_rest() {
        let active = || pod(ROLE_ACTIVE, false);
        assert_eq!(
            min_available(&[active(), active(), active()]),
            2,
            "at rest: one may go"
        );
        // An eviction in progress: the cell terminating and its replacement incoming.
        let draining = [pod(ROLE_ACTIVE, true), pod("incoming", false), active(), active()];
        assert_eq!(min_available(&draining), 3, "every live cell must stay");
        // The replacement took over; the old Pod is still going away.
        let finishing = [pod(ROLE_ACTIVE, true), active(), active(), active()];
        assert_eq!(min_available(&finishing), 3);
        assert_eq!(min_available(&[active(), active(), active()]), 2, "at rest again");
        assert_eq!(min_available(&[]), 0);
        assert_eq!(
            min_available(&[active()]),
            0,
            "a world of one cell can be drained too"
        );
    }
}
