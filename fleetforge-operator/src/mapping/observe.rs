//! From cell Pods back to the core's view of a world's cells.
//!
//! The layout is never kept only in the operator's memory: each cell Pod carries
//! its id, incarnation, bounds, layout key, revision and role in annotations
//! (written by [`crate::mapping::cell_pod::desired_pod`]), and its health is read from the
//! Pod's status. A restarted operator therefore plans exactly as the one before it.
//! A Pod that cannot be read is reported, never guessed at and never a panic.

use std::collections::BTreeMap;

use fleetforge_core::{
    Bounds, CellId, CellRef, Health, Observed, ObservedCell, Role, Timestamp, TransitionRecord,
};
use fleetforge_crd::WorldSpecStatus;
use fleetforge_crd::keys::{
    ANNOTATION_ACTIVE_SINCE, ANNOTATION_BOUNDS, ANNOTATION_CELL, ANNOTATION_EPOCH, ANNOTATION_INCARNATION,
    ANNOTATION_LAYOUT, ANNOTATION_REVISION, ANNOTATION_ROLE, AnnotationError, ROLE_ACTIVE, decode_bounds,
    decode_epoch, decode_incarnation, decode_layout, decode_role,
};
use fleetforge_crd::status::TransitionStatusError;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use thiserror::Error;

/// A cell Pod that could not be read back as a cell.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("pod {pod}: {key}: {problem}")]
pub struct ObserveError {
    /// `namespace/name` of the Pod (`?` for a part it lacks).
    pub pod: String,
    /// The annotation key at fault, or the Pod field path (such as
    /// `metadata.creationTimestamp`) when the problem is not an annotation.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ObserveError {
    fn new(pod: &Pod, key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            pod: pod_ref(pod),
            key,
            problem: problem.into(),
        }
    }

    fn annotation(pod: &Pod, e: AnnotationError) -> Self {
        Self::new(pod, e.key, e.problem)
    }
}

/// `namespace/name` of a Pod, for messages.
fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("?"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

/// The core's view of the cell a Pod runs: identity, bounds, layout, revision and
/// role from its annotations; creation time and health from the Pod itself. Load
/// samples are left empty: they come from sampling the cell, not from the Pod.
pub fn observed_cell(pod: &Pod) -> Result<ObservedCell, ObserveError> {
    let annotations = pod.metadata.annotations.as_ref();
    let get = |key: &'static str| -> Result<&str, ObserveError> {
        annotations
            .and_then(|a| a.get(key))
            .map(String::as_str)
            .ok_or_else(|| ObserveError::new(pod, key, "annotation missing"))
    };

    let id = get(ANNOTATION_CELL)?
        .parse::<CellId>()
        .map_err(|e| ObserveError::new(pod, ANNOTATION_CELL, e.to_string()))?;
    let incarnation =
        decode_incarnation(get(ANNOTATION_INCARNATION)?).map_err(|e| ObserveError::annotation(pod, e))?;
    let bounds = decode_bounds(get(ANNOTATION_BOUNDS)?).map_err(|e| ObserveError::annotation(pod, e))?;
    let layout = decode_layout(get(ANNOTATION_LAYOUT)?).map_err(|e| ObserveError::annotation(pod, e))?;
    let revision = get(ANNOTATION_REVISION)?.to_owned();
    let since = annotations
        .and_then(|a| a.get(ANNOTATION_ACTIVE_SINCE))
        .map(String::as_str);
    let role = decode_role(get(ANNOTATION_ROLE)?, since).map_err(|e| ObserveError::annotation(pod, e))?;

    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .ok_or_else(|| ObserveError::new(pod, "metadata.creationTimestamp", "missing"))?;
    let created_at = timestamp(created).ok_or_else(|| {
        ObserveError::new(
            pod,
            "metadata.creationTimestamp",
            format!("{} is before 1970", created.0),
        )
    })?;

    Ok(ObservedCell {
        cell: CellRef { id, incarnation },
        bounds,
        layout,
        revision,
        role,
        health: health(pod),
        created_at,
        samples: Vec::new(),
    })
}

/// A cell Pod's *mark*, by which the gateway's directory orders activations: the
/// layout epoch the operator stamped when it last activated the cell
/// ([`ANNOTATION_EPOCH`]), else the time it became active in milliseconds; `None`
/// for a cell that is not active.
///
/// The operator reads marks only to stamp the next activation above them, so a
/// value that does not decode is passed over instead of reported: a stamp it
/// cannot read must not stop the world's activations. A garbled stamp falls back
/// to the activation time, which can only raise the next stamp.
pub fn mark(pod: &Pod) -> Option<u64> {
    let annotations = pod.metadata.annotations.as_ref()?;
    if annotations.get(ANNOTATION_ROLE).map(String::as_str) != Some(ROLE_ACTIVE) {
        return None;
    }
    let stamped = annotations
        .get(ANNOTATION_EPOCH)
        .and_then(|v| decode_epoch(v).ok());
    stamped.or_else(|| {
        let since = annotations.get(ANNOTATION_ACTIVE_SINCE).map(String::as_str);
        match decode_role(ROLE_ACTIVE, since).ok()? {
            Role::Active { since } => Some(since.as_millis()),
            Role::Incoming => None,
        }
    })
}

/// A Kubernetes time as a core timestamp (milliseconds since the Unix epoch), or
/// `None` before the epoch.
fn timestamp(t: &Time) -> Option<Timestamp> {
    u64::try_from(t.0.as_millisecond())
        .ok()
        .map(Timestamp::from_millis)
}

/// The health of the cell process a Pod runs.
///
/// | Pod | health |
/// | --- | --- |
/// | phase `Failed` or `Succeeded` | `Failed` |
/// | a container terminated (phase not updated yet) | `Failed` |
/// | being deleted (`deletionTimestamp` set), phase `Running` | `Terminating` |
/// | being deleted, not running yet | `Failed` |
/// | phase `Pending`, or unknown/empty | `Starting` |
/// | `Running`, condition `Ready=True` | `Ready` |
/// | `Running`, not ready, never was | `Starting` |
/// | `Running`, not ready, was ready since its container started | `Unready` |
/// | phase `Unknown` (node lost) | `Unready` |
///
/// Cells run with `restartPolicy: Never`, so a terminated container never comes
/// back: it is `Failed` at once, without waiting for the phase to catch up. A
/// running Pod being deleted (by a person, the Eviction API, a node drain) is
/// going away whatever its probes say, but its process still answers for its
/// grace period: `Terminating`, which the planner drains (its sessions handed
/// to a replacement) instead of replacing it empty-handed. One that never ran
/// holds nothing: `Failed`. (A retired cell whose Pod is still terminating is
/// left out by [`observe_world`] instead.)
///
/// "Was ready": the kubelet sets `Ready=False` when it first reports the Pod,
/// before the container starts, and keeps that condition's `lastTransitionTime`
/// while the status stays the same. So a `Ready=False` whose
/// `lastTransitionTime` is later than the container's `startedAt` has changed
/// since the start, which it can only have done by going `True` and back. Times
/// have second precision: a readiness lost within the container's first second is
/// taken for `Starting`, which errs on the side of waiting (the planner rolls a
/// transition back if its cells do not become ready in time). Missing data
/// (no condition, no container status) also reads as not-yet-ready.
pub fn health(pod: &Pod) -> Health {
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let Some(status) = pod.status.as_ref() else {
        return if deleting {
            Health::Failed
        } else {
            Health::Starting
        };
    };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    if containers
        .iter()
        .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
    {
        return Health::Failed;
    }
    if deleting {
        return match status.phase.as_deref() {
            Some("Running") => Health::Terminating,
            _ => Health::Failed,
        };
    }
    match status.phase.as_deref() {
        Some("Failed" | "Succeeded") => Health::Failed,
        Some("Unknown") => Health::Unready,
        Some("Running") => {
            let ready = status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "Ready");
            let Some(ready) = ready else {
                return Health::Starting;
            };
            if ready.status == "True" {
                return Health::Ready;
            }
            let started = containers
                .iter()
                .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| t.0)
                .max();
            match (ready.last_transition_time.as_ref(), started) {
                (Some(changed), Some(started)) if changed.0 > started => Health::Unready,
                _ => Health::Starting,
            }
        }
        _ => Health::Starting,
    }
}

/// Every cell of a world read from its Pods, plus an error for each Pod that could
/// not be read (the operator turns those into Events). Bad Pods are left out: the
/// planner sees their space as uncovered only if no other cell covers it.
///
/// Two Pods claiming the same cell incarnation (a copy made by hand) would make the
/// plan ambiguous: the one whose name is the incarnation's own process name is
/// kept, and the other reported. The cells are sorted by cell and incarnation, so
/// the result does not depend on the order the Pods were listed in.
///
/// An active cell whose running Pod is being deleted reads as `Terminating`
/// ([`health`]), so that a cell deleted by someone else is drained into a
/// replacement. But the operator also deletes the
/// Pods of cells it retired after handing their space over, and those linger while
/// terminating: seen as terminating active cells they would be drained again for
/// the grace period of every split and merge. So an active cell being deleted whose
/// space is wholly covered by live active cells (not being deleted, not failed) is
/// left out: it has been replaced already and needs nothing more.
///
/// The history of splits and merges is not on Pods; set it from the world's status
/// ([`history_from_status`]).
pub fn observe_world(pods: &[Pod]) -> (Observed, Vec<ObserveError>) {
    let mut errors = Vec::new();
    let mut cells: BTreeMap<CellRef, (ObservedCell, &Pod)> = BTreeMap::new();
    for pod in pods {
        let cell = match observed_cell(pod) {
            Ok(cell) => cell,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match cells.remove(&cell.cell) {
            None => {
                cells.insert(cell.cell.clone(), (cell, pod));
            }
            Some((kept, kept_pod)) => {
                let (keep, drop) = if is_own_pod(kept_pod) || !is_own_pod(pod) {
                    ((kept, kept_pod), pod)
                } else {
                    ((cell, pod), kept_pod)
                };
                errors.push(ObserveError::new(
                    drop,
                    ANNOTATION_CELL,
                    format!("cell {} is already run by pod {}", keep.0.cell, pod_ref(keep.1)),
                ));
                cells.insert(keep.0.cell.clone(), keep);
            }
        }
    }
    let all: Vec<(ObservedCell, bool)> = cells
        .into_values()
        .map(|(c, pod)| (c, pod.metadata.deletion_timestamp.is_some()))
        .collect();
    let live: Vec<&ObservedCell> = all
        .iter()
        .filter(|(c, deleting)| !deleting && c.is_active() && c.health != Health::Failed)
        .map(|(c, _)| c)
        .collect();
    let cells = all
        .iter()
        .filter(|(c, deleting)| !(*deleting && c.is_active() && covered(&c.bounds, &live)))
        .map(|(c, _)| c.clone())
        .collect();
    let observed = Observed {
        cells,
        history: Vec::new(),
    };
    (observed, errors)
}

/// Whether `bounds` is wholly covered by the bounds of `cells` (taken not to
/// overlap one another, as live active cells do not).
fn covered(bounds: &Bounds, cells: &[&ObservedCell]) -> bool {
    let overlap: f64 = cells.iter().map(|c| intersection(bounds, &c.bounds)).sum();
    overlap >= bounds.measure() * (1.0 - 1e-9)
}

/// Length, area or volume of the intersection of two boxes (0 when disjoint or
/// of different dimensions).
fn intersection(a: &Bounds, b: &Bounds) -> f64 {
    if a.dims() != b.dims() {
        return 0.0;
    }
    a.axes()
        .map(|axis| (a.max(axis).min(b.max(axis)) - a.min(axis).max(b.min(axis))).max(0.0))
        .product()
}

/// Whether a Pod's name is the process name of the cell incarnation it claims.
fn is_own_pod(pod: &Pod) -> bool {
    let world = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(fleetforge_crd::keys::ANNOTATION_WORLD));
    match (world, observed_cell(pod), pod.metadata.name.as_deref()) {
        (Some(world), Ok(cell), Some(name)) => cell.cell.process_name(world) == name,
        _ => false,
    }
}

/// The split and merge history kept in a world's status, as core records, plus an
/// error for each entry that cannot be read (left out of the history).
pub fn history_from_status(
    status: Option<&WorldSpecStatus>,
) -> (Vec<TransitionRecord>, Vec<TransitionStatusError>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for entry in status
        .map(|s| s.recent_transitions.as_slice())
        .unwrap_or_default()
    {
        match TransitionRecord::try_from(entry) {
            Ok(r) => records.push(r),
            Err(e) => errors.push(e),
        }
    }
    (records, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::cell_pod::desired_pod;
    use crate::testutil::world_spec;
    use fleetforge_core::{Bounds, Role};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, PodCondition,
        PodStatus,
    };
    use k8s_openapi::jiff;

    const CREATED: i64 = 1_700_000_000;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    /// The desired Pod of `cell`, as the API server would return it (created).
    fn pod(cell: &str, incarnation: u32, bounds: Bounds, role: Role) -> Pod {
        let (ws, world) = world_spec("meadow");
        let cell = CellRef {
            id: cell.parse().unwrap(),
            incarnation,
        };
        let mut pod = desired_pod(&ws, &world, &cell, &bounds, role, None).unwrap();
        pod.metadata.creation_timestamp = Some(at(CREATED));
        pod
    }

    fn plain_pod() -> Pod {
        pod(
            "c0",
            0,
            Bounds::rect((0.0, 500.0), (0.0, 500.0)).unwrap(),
            Role::Incoming,
        )
    }

    #[test]
    fn desired_pod_reads_back_as_the_same_cell() {
        let (_, world) = world_spec("meadow");
        let cases = [
            (
                "c0",
                0,
                Bounds::rect((0.0, 500.0), (0.0, 500.0)).unwrap(),
                Role::Incoming,
            ),
            (
                "c3-01",
                7,
                Bounds::cuboid((0.25, 1.5), (-2.0, 2.0), (3.0, 4.0)).unwrap(),
                Role::Active {
                    since: Timestamp(1_700_000_123_456),
                },
            ),
            (
                "c12",
                1,
                Bounds::line((-10.0, 10.0)).unwrap(),
                Role::Active { since: Timestamp(0) },
            ),
        ];
        for (id, incarnation, bounds, role) in cases {
            let observed = observed_cell(&pod(id, incarnation, bounds, role)).unwrap();
            assert_eq!(observed.cell.id.to_string(), id);
            assert_eq!(observed.cell.incarnation, incarnation);
            assert_eq!(observed.bounds, bounds);
            assert_eq!(observed.layout, world.layout_key());
            assert_eq!(observed.revision, world.revision);
            assert_eq!(observed.role, role);
            assert_eq!(observed.created_at, Timestamp::from_millis(1_700_000_000_000));
            assert_eq!(observed.health, Health::Starting);
            assert!(observed.samples.is_empty());
        }
    }

    #[test]
    fn a_mark_is_the_stamp_else_the_activation_time_and_never_an_error() {
        let active = |since: u64| {
            pod(
                "c0",
                0,
                Bounds::rect((0.0, 500.0), (0.0, 500.0)).unwrap(),
                Role::Active {
                    since: Timestamp(since),
                },
            )
        };
        let with = |mut p: Pod, key: &str, value: &str| {
            p.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(key.to_owned(), value.to_owned());
            p
        };
        assert_eq!(mark(&plain_pod()), None, "an incoming cell has no mark");
        assert_eq!(
            mark(&with(plain_pod(), ANNOTATION_EPOCH, "9")),
            None,
            "nor does a stamp make one"
        );
        assert_eq!(mark(&active(1_000)), Some(1_000));
        assert_eq!(mark(&with(active(1_000), ANNOTATION_EPOCH, "1002")), Some(1_002));
        for garbage in ["", "-3", "soon", "1e3"] {
            assert_eq!(
                mark(&with(active(1_000), ANNOTATION_EPOCH, garbage)),
                Some(1_000),
                "{garbage:?}"
            );
        }
        let no_time = with(active(1_000), ANNOTATION_ACTIVE_SINCE, "soon");
        assert_eq!(mark(&no_time), None);
        assert_eq!(mark(&with(no_time, ANNOTATION_EPOCH, "7")), Some(7));
        let mut bare = active(1_000);
        bare.metadata.annotations = None;
        assert_eq!(mark(&bare), None);
    }

    #[test]
    fn missing_or_malformed_annotations_name_the_pod_and_key() {
        let keys = [
            ANNOTATION_CELL,
            ANNOTATION_INCARNATION,
            ANNOTATION_BOUNDS,
            ANNOTATION_LAYOUT,
            ANNOTATION_REVISION,
            ANNOTATION_ROLE,
        ];
        for key in keys {
            let mut p = plain_pod();
            p.metadata.annotations.as_mut().unwrap().remove(key);
            let err = observed_cell(&p).unwrap_err();
            assert_eq!(err.key, key);
            assert_eq!(err.pod, "games/meadow-c0");
            assert!(
                err.to_string().contains("games/meadow-c0") && err.to_string().contains(key),
                "{err}"
            );
        }
        let malformed = [
            (ANNOTATION_CELL, "c3-2"),
            (ANNOTATION_INCARNATION, "-1"),
            (ANNOTATION_BOUNDS, r#"{"x":{"min":2,"max":1}}"#),
            (ANNOTATION_BOUNDS, "not json"),
            (ANNOTATION_LAYOUT, "xyz"),
            (ANNOTATION_ROLE, "leader"),
        ];
        for (key, value) in malformed {
            let mut p = plain_pod();
            p.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(key.to_owned(), value.to_owned());
            assert_eq!(observed_cell(&p).unwrap_err().key, key, "{key}={value}");
        }
        // An active cell needs the time it became active.
        let mut p = plain_pod();
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_ROLE.to_owned(), "active".to_owned());
        assert_eq!(observed_cell(&p).unwrap_err().key, ANNOTATION_ACTIVE_SINCE);
        // No annotations at all, no creation time, no name.
        let mut p = plain_pod();
        p.metadata.annotations = None;
        assert_eq!(observed_cell(&p).unwrap_err().key, ANNOTATION_CELL);
        let mut p = plain_pod();
        p.metadata.creation_timestamp = None;
        assert_eq!(observed_cell(&p).unwrap_err().key, "metadata.creationTimestamp");
        let mut p = plain_pod();
        p.metadata.creation_timestamp = Some(at(-5));
        assert_eq!(observed_cell(&p).unwrap_err().key, "metadata.creationTimestamp");
        let mut p = Pod::default();
        p.metadata.name = None;
        assert_eq!(observed_cell(&p).unwrap_err().pod, "?/?");
    }

    /// A Pod in `phase` whose container started at `started` and whose Ready
    /// condition is `ready` since `changed`.
    fn status(phase: &str, started: Option<i64>, ready: Option<(&str, i64)>) -> PodStatus {
        PodStatus {
            phase: Some(phase.to_owned()),
            conditions: ready.map(|(status, changed)| {
                vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: status.to_owned(),
                    last_transition_time: Some(at(changed)),
                    ..PodCondition::default()
                }]
            }),
            container_statuses: started.map(|s| {
                vec![ContainerStatus {
                    name: "cell".to_owned(),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(at(s)),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]
            }),
            ..PodStatus::default()
        }
    }

    #[test]
    fn health_table() {
        let t = CREATED;
        let cases = [
            ("no status yet", None, Health::Starting),
            (
                "pending",
                Some(status("Pending", None, Some(("False", t)))),
                Health::Starting,
            ),
            (
                "running, no condition",
                Some(status("Running", Some(t + 1), None)),
                Health::Starting,
            ),
            (
                "running, never ready",
                Some(status("Running", Some(t + 1), Some(("False", t)))),
                Health::Starting,
            ),
            (
                "running, not ready in the start's second",
                Some(status("Running", Some(t + 1), Some(("False", t + 1)))),
                Health::Starting,
            ),
            (
                "ready",
                Some(status("Running", Some(t + 1), Some(("True", t + 3)))),
                Health::Ready,
            ),
            (
                "ready, then not",
                Some(status("Running", Some(t + 1), Some(("False", t + 60)))),
                Health::Unready,
            ),
            (
                "not ready, no container status",
                Some(status("Running", None, Some(("False", t + 60)))),
                Health::Starting,
            ),
            (
                "node lost",
                Some(status("Unknown", Some(t + 1), Some(("True", t + 3)))),
                Health::Unready,
            ),
            (
                "failed",
                Some(status("Failed", None, Some(("False", t + 60)))),
                Health::Failed,
            ),
            ("succeeded", Some(status("Succeeded", None, None)), Health::Failed),
            (
                "unheard-of phase",
                Some(status("Hibernating", None, None)),
                Health::Starting,
            ),
        ];
        for (what, st, want) in cases {
            let mut p = plain_pod();
            p.status = st;
            assert_eq!(health(&p), want, "{what}");
            assert_eq!(observed_cell(&p).unwrap().health, want, "{what}");
        }

        // Terminated container, phase still Running: failed for good (restartPolicy Never).
        let mut p = plain_pod();
        let mut st = status("Running", Some(t + 1), Some(("True", t + 3)));
        if let Some(cs) = st.container_statuses.as_mut() {
            cs[0].state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            });
        }
        p.status = Some(st);
        assert_eq!(health(&p), Health::Failed);

        // Being deleted while it runs: terminating, whatever the probes say (a
        // draining cell turns unready but still hands its sessions over).
        let mut p = plain_pod();
        p.status = Some(status("Running", Some(t + 1), Some(("True", t + 3))));
        assert_eq!(health(&p), Health::Ready);
        p.metadata.deletion_timestamp = Some(at(t + 100));
        assert_eq!(health(&p), Health::Terminating);
        p.status = Some(status("Running", Some(t + 1), Some(("False", t + 90))));
        assert_eq!(health(&p), Health::Terminating);
        // Being deleted before it ever ran, or after its process ended: failed.
        p.status = Some(status("Pending", None, None));
        assert_eq!(health(&p), Health::Failed);
        p.status = None;
        assert_eq!(health(&p), Health::Failed);
    }

    #[test]
    fn observe_world_skips_and_reports_bad_pods_and_sorts_cells() {
        let b = Bounds::rect((0.0, 500.0), (0.0, 500.0)).unwrap();
        let mut bad = pod("c2", 0, b, Role::Incoming);
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_LAYOUT.to_owned(), "zz".to_owned());
        // A hand-made copy of c1's Pod under another name.
        let mut copy = pod("c1", 0, b, Role::Incoming);
        copy.metadata.name = Some("meadow-c1-copy".to_owned());
        let pods = [
            pod("c3", 0, b, Role::Incoming),
            copy,
            bad,
            pod("c1", 1, b, Role::Incoming),
            pod("c1", 0, b, Role::Incoming),
        ];
        let (observed, errors) = observe_world(&pods);
        let cells: Vec<String> = observed.cells.iter().map(|c| c.cell.to_string()).collect();
        assert_eq!(cells, ["c1", "c1#1", "c3"]);
        assert!(observed.history.is_empty());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            (errors[0].pod.as_str(), errors[0].key),
            ("games/meadow-c2", ANNOTATION_LAYOUT)
        );
        assert_eq!(errors[1].pod, "games/meadow-c1-copy");
        assert!(errors[1].problem.contains("games/meadow-c1"), "{}", errors[1]);
        // The same Pods in another order give the same cells.
        let mut reversed = pods.to_vec();
        reversed.reverse();
        assert_eq!(observe_world(&reversed).0, observed);
    }

    #[test]
    fn a_deleted_cell_is_left_out_only_once_live_cells_cover_its_space() {
        let active = Role::Active { since: Timestamp(5) };
        let rect = |x0, x1, y0, y1| Bounds::rect((x0, x1), (y0, y1)).unwrap();
        let deleting = |mut p: Pod| {
            p.metadata.deletion_timestamp = Some(at(CREATED + 100));
            p
        };
        let pods = [
            // c0 was split: both children serve its space, its Pod is terminating.
            deleting(pod("c0", 0, rect(0.0, 500.0, 0.0, 500.0), active)),
            pod("c0-0", 0, rect(0.0, 250.0, 0.0, 500.0), active),
            pod("c0-1", 0, rect(250.0, 500.0, 0.0, 500.0), active),
            // c1 was deleted by accident: nothing covers its space.
            deleting(pod("c1", 0, rect(500.0, 1000.0, 0.0, 500.0), active)),
            // c2 is half covered by a live cell, and c3 by a failed one.
            deleting(pod("c2", 0, rect(0.0, 500.0, 500.0, 1000.0), active)),
            pod("c2-0", 0, rect(0.0, 250.0, 500.0, 1000.0), active),
            deleting(pod("c3", 0, rect(500.0, 1000.0, 500.0, 1000.0), active)),
            deleting(pod("c3", 1, rect(500.0, 1000.0, 500.0, 1000.0), active)),
            // An incoming cell being deleted (a rollback) stays for the planner.
            deleting(pod("c0-0", 1, rect(0.0, 250.0, 0.0, 500.0), Role::Incoming)),
        ];
        let (observed, errors) = observe_world(&pods);
        assert!(errors.is_empty(), "{errors:?}");
        let cells: Vec<(String, Health)> = observed
            .cells
            .iter()
            .map(|c| (c.cell.to_string(), c.health))
            .collect();
        let want = [
            ("c0-0", Health::Starting),
            ("c0-0#1", Health::Failed),
            ("c0-1", Health::Starting),
            ("c1", Health::Failed),
            ("c2", Health::Failed),
            ("c2-0", Health::Starting),
            ("c3", Health::Failed),
            ("c3#1", Health::Failed),
        ];
        assert_eq!(cells, want.map(|(c, h)| (c.to_owned(), h)),);
    }

    #[test]
    fn history_is_read_from_the_status_and_bad_entries_reported() {
        let rec = TransitionRecord {
            at: Timestamp::from_millis(1_700_000_000_123),
            kind: fleetforge_core::RecordKind::Split,
            cells: vec!["c0-0".parse().unwrap(), "c0-1".parse().unwrap()],
        };
        let mut bad = fleetforge_crd::TransitionStatus::from(&rec);
        bad.kind = "explode".into();
        let status = WorldSpecStatus {
            recent_transitions: vec![fleetforge_crd::TransitionStatus::from(&rec), bad],
            ..WorldSpecStatus::default()
        };
        let (records, errors) = history_from_status(Some(&status));
        assert_eq!(records, [rec]);
        assert_eq!(errors.len(), 1);
        assert_eq!(history_from_status(None), (vec![], vec![]));
    }
}

/// How the planner treats what [`health`] reports for a Pod being deleted.
#[cfg(test)]
mod planner_contract {
    use crate::testutil::world_spec;
    use fleetforge_core::{Action, Health, Observed, Timestamp, plan, sim};

    /// A retired cell whose Pod is still terminating reads as `Failed`; once its
    /// space is handed over, the planner must not replace it.
    #[test]
    fn a_terminating_retired_cell_is_not_replaced() {
        let (_, mut world) = world_spec("meadow");
        let t0 = Timestamp(1_700_000_000_000);
        let mut observed = Observed::default();
        let p = plan(&world, &observed, t0);
        sim::apply(&mut world, &mut observed, &p, t0);
        world.overrides.force_split.insert("c0".parse().unwrap());
        let t1 = t0 + std::time::Duration::from_secs(300);
        let split = plan(&world, &observed, t1);
        let parent = observed
            .cells
            .iter()
            .find(|c| c.cell.id.to_string() == "c0")
            .cloned()
            .unwrap();
        sim::apply(&mut world, &mut observed, &split, t1);
        assert!(
            observed.cells.iter().all(|c| c.cell != parent.cell),
            "c0 retired by the split"
        );
        // The retired parent's Pod is still terminating.
        let mut terminating = parent;
        terminating.health = Health::Failed;
        observed.cells.push(terminating.clone());
        let after = plan(&world, &observed, t1 + std::time::Duration::from_secs(1));
        let creates: Vec<_> = after
            .actions()
            .filter(|a| matches!(a, Action::Create { .. }))
            .collect();
        assert!(creates.is_empty(), "{after:#?}");
    }
}
