//! The `WorldSpec` status the operator writes, computed from the plan.
//!
//! The status is a pure function of the previous status, the plan, what was
//! observed and the time, and it changes only when the world does: conditions keep
//! their `lastTransitionTime` while their status stays the same, and the cell
//! summary is sorted, so a steady world produces the very status it already has and
//! the operator writes nothing.

use fleetforge_core::{
    Health, Observed, ObservedCell, Phase, Plan, Role, Timestamp, TransitionKind, World, prune_history,
};
use fleetforge_crd::status::time;
use fleetforge_crd::{
    BoundsStatus, CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, CellSummary, SpecError,
    TransitionStatus, WorldSpecStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Reason: every active cell is ready.
pub const REASON_ALL_CELLS_READY: &str = "AllCellsReady";
/// Reason: cells are starting (none serves yet, or some active ones are not ready).
pub const REASON_CELLS_STARTING: &str = "CellsStarting";
/// Reason: a split or merge is in progress.
pub const REASON_SCALING: &str = "Scaling";
/// Reason: the initial cells are being created.
pub const REASON_INITIALIZING: &str = "Initializing";
/// Reason: failed cells are being replaced.
pub const REASON_REPLACING: &str = "ReplacingCells";
/// Reason: cells are being replaced by ones of a new revision.
pub const REASON_ROLLING_OUT: &str = "RollingOut";
/// Reason: the world is moving to a new root partition.
pub const REASON_REPARTITIONING: &str = "Repartitioning";
/// Reason: a transition that did not complete in time is being undone.
pub const REASON_ROLLING_BACK: &str = "RollingBack";
/// Reason: space no cell covers is getting a cell again.
pub const REASON_FILLING: &str = "FillingHoles";
/// Reason: cells left over from an interrupted transition are being retired.
pub const REASON_CLEANING_UP: &str = "CleaningUp";
/// Reason: nothing is in progress.
pub const REASON_STABLE: &str = "Stable";
/// Reason: an active cell failed.
pub const REASON_CELL_FAILED: &str = "CellFailed";
/// Reason: an active cell stopped being ready.
pub const REASON_CELL_UNREADY: &str = "CellUnready";
/// Reason: the planner found a problem it could not act on.
pub const REASON_LAYOUT_PROBLEM: &str = "LayoutProblem";
/// Reason: nothing is wrong.
pub const REASON_HEALTHY: &str = "Healthy";
/// Reason: the spec cannot be converted into a world.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// Longest condition message the API server accepts.
const MAX_MESSAGE: usize = 32_768;

/// The status of a world after planning it at `now`.
///
/// `world` is the converted spec (its policy says how much history to keep),
/// `observed` what the plan was made from (its `history` included), `generation`
/// the WorldSpec's `metadata.generation` the plan was made for.
///
/// - `phase`, `activeCells`, `readyCells`, `totalPlayers`: the plan's summary.
/// - `cells`: every observed cell, at most [`fleetforge_crd::MAX_CELL_SUMMARY`],
///   with `phase` `Incoming` for a cell waiting for sessions and its health
///   otherwise.
/// - `recentTransitions`: the observed history plus what this plan starts, pruned
///   to what the rate limit and cooldowns still need; the operator reads it back as
///   the history after a restart.
/// - conditions, see [`conditions`].
pub fn world_status(
    previous: Option<&WorldSpecStatus>,
    world: &World,
    plan: &Plan,
    observed: &Observed,
    generation: i64,
    now: Timestamp,
) -> WorldSpecStatus {
    let summary = &plan.summary;
    let mut history = observed.history.clone();
    history.extend(plan.started.iter().cloned());
    let history = prune_history(world, &history, now);

    let mut status = WorldSpecStatus {
        phase: Some(summary.phase.to_string()),
        observed_generation: Some(generation),
        conditions: conditions(previous, plan, observed, generation, now),
        active_cells: Some(summary.active_cells),
        ready_cells: Some(summary.ready_cells),
        total_players: Some(summary.players),
        recent_transitions: history.iter().map(TransitionStatus::from).collect(),
        // Moves only when this plan starts a split or merge.
        last_transition_time: match plan.started.iter().map(|r| r.at).max() {
            Some(at) => Some(time(at)),
            None => previous.and_then(|p| p.last_transition_time.clone()),
        },
        ..WorldSpecStatus::default()
    };
    // Sorted by cell then incarnation first, so the two incarnations of one cell
    // (same id in the summary) always come out in the same order.
    let mut cells: Vec<&ObservedCell> = observed.cells.iter().collect();
    cells.sort_by(|a, b| a.cell.cmp(&b.cell));
    status.set_cells(cells.into_iter().map(cell_summary));
    status
}

/// One cell in the status.
fn cell_summary(c: &ObservedCell) -> CellSummary {
    let phase = match (c.role, c.health) {
        (Role::Incoming, _) => "Incoming",
        (Role::Active { .. }, Health::Starting) => "Starting",
        // Still serving until its grace period ends; a phase of its own comes
        // with the operator's side of issue 17.
        (Role::Active { .. }, Health::Ready | Health::Terminating) => "Ready",
        (Role::Active { .. }, Health::Unready) => "Unready",
        (Role::Active { .. }, Health::Failed) => "Failed",
    };
    CellSummary {
        id: c.cell.id.to_string(),
        bounds: BoundsStatus::from(&c.bounds),
        players: c.latest().map(|s| s.players),
        phase: phase.to_owned(),
    }
}

/// The Ready, Progressing and Degraded conditions of a world after a plan.
///
/// - Ready: `True` (AllCellsReady) when some cell serves, every active cell is
///   ready and the world is not degraded. A split or merge in progress does not
///   make a world unready: its active cells keep serving while new cells start, and
///   Progressing tells that story. Otherwise `False`, with the Degraded reason, or
///   CellsStarting.
/// - Progressing: `True` while the plan has work or cells are starting or waiting
///   for a hand-over, with a reason from the first transition's kind (Initializing,
///   Scaling, ReplacingCells, RollingOut, ...) or CellsStarting; `False` (Stable)
///   otherwise.
/// - Degraded: `True` when the plan's phase is Degraded: CellFailed, CellUnready or
///   LayoutProblem (the planner's problems, listed in the message); `False`
///   (Healthy) otherwise.
///
/// Each condition keeps its previous `lastTransitionTime` when its status did not
/// change, so reasons and messages may be refined without claiming a transition.
pub fn conditions(
    previous: Option<&WorldSpecStatus>,
    plan: &Plan,
    observed: &Observed,
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    let s = &plan.summary;
    let active = || observed.cells.iter().filter(|c| c.is_active());
    let failed: Vec<String> = active()
        .filter(|c| c.health == Health::Failed)
        .map(|c| c.cell.to_string())
        .collect();
    let unready: Vec<String> = active()
        .filter(|c| c.health == Health::Unready)
        .map(|c| c.cell.to_string())
        .collect();
    let degraded = s.phase == Phase::Degraded;

    let (degraded_reason, degraded_message) = if !degraded {
        (REASON_HEALTHY, "no failed or unready cell".to_owned())
    } else {
        let mut parts = Vec::new();
        if !failed.is_empty() {
            parts.push(format!("failed cells: {}", failed.join(", ")));
        }
        if !unready.is_empty() {
            parts.push(format!("unready cells: {}", unready.join(", ")));
        }
        parts.extend(s.problems.iter().cloned());
        let reason = if !failed.is_empty() {
            REASON_CELL_FAILED
        } else if !unready.is_empty() {
            REASON_CELL_UNREADY
        } else {
            REASON_LAYOUT_PROBLEM
        };
        (reason, parts.join("; "))
    };

    let counts = format!("{} of {} active cells ready", s.ready_cells, s.active_cells);
    let all_ready = s.active_cells > 0 && s.ready_cells == s.active_cells && !degraded;
    let ready = if all_ready {
        (true, REASON_ALL_CELLS_READY, counts.clone())
    } else if degraded {
        (false, degraded_reason, format!("{counts}; {degraded_message}"))
    } else if s.active_cells == 0 {
        (false, REASON_CELLS_STARTING, "no cell serves yet".to_owned())
    } else {
        (false, REASON_CELLS_STARTING, counts.clone())
    };

    let starting = s.incoming_cells > 0 || s.ready_cells < s.active_cells || s.active_cells == 0;
    let progressing = match plan.transitions.first() {
        Some(t) => (
            true,
            progress_reason(t.kind),
            format!(
                "{} transition(s) in progress: {}",
                plan.transitions.len(),
                plan.transitions
                    .iter()
                    .map(|t| t.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        None if starting && !degraded => (
            true,
            REASON_CELLS_STARTING,
            format!("{counts}; {} incoming", s.incoming_cells),
        ),
        None => (false, REASON_STABLE, "nothing in progress".to_owned()),
    };

    let degraded_cond = (degraded, degraded_reason, degraded_message);
    [
        (CONDITION_READY, ready),
        (CONDITION_PROGRESSING, progressing),
        (CONDITION_DEGRADED, degraded_cond),
    ]
    .into_iter()
    .map(|(kind, (status, reason, message))| {
        condition(previous, kind, status, reason, message, generation, now)
    })
    .collect()
}

fn progress_reason(kind: TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Initialize => REASON_INITIALIZING,
        TransitionKind::Split | TransitionKind::Merge => REASON_SCALING,
        TransitionKind::Replace => REASON_REPLACING,
        // A drain takes a roll-out's steps; its own reason comes with the
        // operator's side of issue 17.
        TransitionKind::Rollout | TransitionKind::Drain => REASON_ROLLING_OUT,
        TransitionKind::Repartition => REASON_REPARTITIONING,
        TransitionKind::RollBack => REASON_ROLLING_BACK,
        TransitionKind::Fill => REASON_FILLING,
        TransitionKind::Cleanup => REASON_CLEANING_UP,
    }
}

/// One condition, its `lastTransitionTime` kept from `previous` when its status is
/// unchanged.
fn condition(
    previous: Option<&WorldSpecStatus>,
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .map_or_else(|| time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message),
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}

/// A message cut to what the API server accepts, on a character boundary.
fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// The status of a world whose spec cannot be converted ([`fleetforge_crd::to_world`]
/// failed): nothing can be planned, so the operator leaves its cells as they are.
///
/// Degraded turns `True` with reason InvalidSpec and the error (every field at
/// fault) as message; Progressing turns `False` with the same reason, since nothing
/// will change until the spec is fixed. The Ready condition is kept as it was (the
/// cells keep serving under the old spec; failing it would page someone for what
/// Degraded already says), or `False`/InvalidSpec when there was none. Everything
/// else (cells, counts, history) is kept from `previous`, so the history is not
/// lost while the spec is being fixed; `phase` becomes Degraded and
/// `observedGeneration` says the new generation was seen.
pub fn invalid_spec_status(
    previous: Option<&WorldSpecStatus>,
    error: &SpecError,
    generation: i64,
    now: Timestamp,
) -> WorldSpecStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.phase = Some(Phase::Degraded.to_string());
    status.observed_generation = Some(generation);
    let message = error.to_string();
    let ready = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == CONDITION_READY))
        .cloned()
        .unwrap_or_else(|| {
            condition(
                previous,
                CONDITION_READY,
                false,
                REASON_INVALID_SPEC,
                message.clone(),
                generation,
                now,
            )
        });
    status.conditions = vec![
        ready,
        condition(
            previous,
            CONDITION_PROGRESSING,
            false,
            REASON_INVALID_SPEC,
            "no change is made to the cells until the spec is fixed".to_owned(),
            generation,
            now,
        ),
        condition(
            previous,
            CONDITION_DEGRADED,
            true,
            REASON_INVALID_SPEC,
            message,
            generation,
            now,
        ),
    ];
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::world_spec;
    use fleetforge_core::{Bounds, CellId, CellRef, LoadSample, RecordKind, TransitionRecord, plan, sim};
    use fleetforge_crd::MAX_CELL_SUMMARY;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn cond<'a>(s: &'a WorldSpecStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    fn summary(s: &WorldSpecStatus) -> Vec<(&str, &str, &str)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect()
    }

    /// A world of four ready active cells with some players, as the simulator runs it.
    fn steady() -> (World, Observed) {
        let (_, mut world) = world_spec("meadow");
        let mut observed = Observed::default();
        let p = plan(&world, &observed, T0);
        sim::apply(&mut world, &mut observed, &p, T0);
        for (i, c) in observed.cells.iter_mut().enumerate() {
            c.samples.push(LoadSample {
                at: T0,
                players: 10 + u32::try_from(i).unwrap(),
                histogram: None,
            });
        }
        assert!(plan(&world, &observed, T0).is_empty());
        (world, observed)
    }

    #[test]
    fn a_new_world_is_initializing() {
        let (_, world) = world_spec("meadow");
        let observed = Observed::default();
        let p = plan(&world, &observed, T0);
        let s = world_status(None, &world, &p, &observed, 3, T0);
        assert_eq!(s.phase.as_deref(), Some("Initializing"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(
            (s.active_cells, s.ready_cells, s.total_players),
            (Some(0), Some(0), Some(0))
        );
        assert_eq!(
            summary(&s),
            [
                ("Ready", "False", REASON_CELLS_STARTING),
                ("Progressing", "True", REASON_INITIALIZING),
                ("Degraded", "False", REASON_HEALTHY),
            ]
        );
        for c in &s.conditions {
            assert_eq!(c.observed_generation, Some(3));
            assert_eq!(c.last_transition_time, time(T0));
        }
    }

    #[test]
    fn a_steady_world_is_ready_and_its_status_does_not_change() {
        let (world, observed) = steady();
        let p = plan(&world, &observed, T0);
        let first = world_status(None, &world, &p, &observed, 1, T0);
        assert_eq!(first.phase.as_deref(), Some("Running"));
        assert_eq!((first.active_cells, first.ready_cells), (Some(4), Some(4)));
        assert_eq!(first.total_players, Some(10 + 11 + 12 + 13));
        assert_eq!(
            summary(&first),
            [
                ("Ready", "True", REASON_ALL_CELLS_READY),
                ("Progressing", "False", REASON_STABLE),
                ("Degraded", "False", REASON_HEALTHY),
            ]
        );
        assert_eq!(first.cells.len(), 4);
        assert!(first.cells.iter().all(|c| c.phase == "Ready"));
        assert_eq!(first.cells[0].id, "c0");
        assert_eq!(first.cells[0].players, Some(10));
        // Later, nothing changed: the very same status (nothing to write).
        let later = T0 + std::time::Duration::from_secs(600);
        let again = world_status(
            Some(&first),
            &world,
            &plan(&world, &observed, later),
            &observed,
            1,
            later,
        );
        assert_eq!(again, first);
    }

    #[test]
    fn conditions_move_their_transition_time_only_when_their_status_changes() {
        let (world, mut observed) = steady();
        let first = world_status(None, &world, &plan(&world, &observed, T0), &observed, 1, T0);

        // A cell fails: Ready and Degraded flip (new time); Progressing turns True
        // as the failed cell is replaced.
        let t1 = T0 + std::time::Duration::from_secs(30);
        observed.cells[1].health = Health::Failed;
        let p = plan(&world, &observed, t1);
        let failed = world_status(Some(&first), &world, &p, &observed, 1, t1);
        assert_eq!(failed.phase.as_deref(), Some("Degraded"));
        assert_eq!(
            summary(&failed),
            [
                ("Ready", "False", REASON_CELL_FAILED),
                ("Progressing", "True", REASON_REPLACING),
                ("Degraded", "True", REASON_CELL_FAILED),
            ]
        );
        assert!(
            cond(&failed, "Degraded").message.contains("c1"),
            "{:?}",
            cond(&failed, "Degraded")
        );
        for kind in ["Ready", "Progressing", "Degraded"] {
            assert_eq!(cond(&failed, kind).last_transition_time, time(t1), "{kind}");
        }

        // Still failed later, with another generation: statuses unchanged, so the
        // times stay; the generation moves.
        let t2 = t1 + std::time::Duration::from_secs(30);
        let still = world_status(
            Some(&failed),
            &world,
            &plan(&world, &observed, t2),
            &observed,
            2,
            t2,
        );
        for kind in ["Ready", "Progressing", "Degraded"] {
            assert_eq!(cond(&still, kind).last_transition_time, time(t1), "{kind}");
            assert_eq!(cond(&still, kind).observed_generation, Some(2));
        }

        // Only the changed condition moves: the cell recovers Ready=True and
        // Degraded=False at t3, Progressing (False before `failed`, True since) too.
        let t3 = t2 + std::time::Duration::from_secs(30);
        observed.cells[1].health = Health::Ready;
        let healed = world_status(
            Some(&still),
            &world,
            &plan(&world, &observed, t3),
            &observed,
            2,
            t3,
        );
        assert_eq!(cond(&healed, "Ready").status, "True");
        assert_eq!(cond(&healed, "Ready").last_transition_time, time(t3));
        assert_eq!(cond(&healed, "Degraded").last_transition_time, time(t3));
        // A reason change alone does not move the time.
        let mut previous = healed.clone();
        for c in &mut previous.conditions {
            c.reason = "SomethingOlder".into();
        }
        let t4 = t3 + std::time::Duration::from_secs(30);
        let refined = world_status(
            Some(&previous),
            &world,
            &plan(&world, &observed, t4),
            &observed,
            2,
            t4,
        );
        assert_eq!(refined.conditions, healed.conditions);
    }

    #[test]
    fn history_is_pruned_and_extended_with_what_the_plan_starts() {
        let (world, mut observed) = steady();
        let old = TransitionRecord {
            at: Timestamp(T0.0 - 3_600_000),
            kind: RecordKind::Split,
            cells: vec!["c0-0".parse().unwrap()],
        };
        let recent = TransitionRecord {
            at: Timestamp(T0.0 - 10_000),
            kind: RecordKind::Merge,
            cells: vec!["c2".parse().unwrap()],
        };
        observed.history = vec![recent.clone(), old];
        let mut p = plan(&world, &observed, T0);
        let started = TransitionRecord {
            at: T0,
            kind: RecordKind::Split,
            cells: vec!["c1-0".parse().unwrap(), "c1-1".parse().unwrap()],
        };
        p.started.push(started.clone());
        let s = world_status(None, &world, &p, &observed, 1, T0);
        let back: Vec<TransitionRecord> = s
            .recent_transitions
            .iter()
            .map(|t| TransitionRecord::try_from(t).unwrap())
            .collect();
        assert_eq!(back, [recent, started]);
        assert_eq!(s.last_transition_time, Some(time(T0)));
        // Nothing started: the last transition time is kept from before.
        p.started.clear();
        let previous = s.clone();
        let s = world_status(
            Some(&previous),
            &world,
            &p,
            &observed,
            1,
            T0 + std::time::Duration::from_secs(5),
        );
        assert_eq!(s.last_transition_time, Some(time(T0)));
    }

    #[test]
    fn the_cell_summary_is_bounded_and_marks_incoming_cells() {
        let (world, _) = steady();
        let b = Bounds::line((0.0, 1.0)).unwrap();
        let cells: Vec<ObservedCell> = (0..MAX_CELL_SUMMARY as u32 + 20)
            .rev()
            .map(|i| ObservedCell {
                cell: CellRef::first(CellId::root(i)),
                bounds: b,
                layout: world.layout_key(),
                revision: world.revision.clone(),
                role: if i == 0 {
                    Role::Incoming
                } else {
                    Role::Active { since: T0 }
                },
                health: Health::Ready,
                created_at: T0,
                samples: Vec::new(),
            })
            .collect();
        let observed = Observed {
            cells,
            history: Vec::new(),
        };
        let p = plan(&world, &observed, T0);
        let s = world_status(None, &world, &p, &observed, 1, T0);
        assert_eq!(s.cells.len(), MAX_CELL_SUMMARY);
        assert!(s.cell_summary_truncated);
        assert_eq!(s.cells[0].id, "c0");
        assert_eq!(s.cells[0].phase, "Incoming");
        assert_eq!(s.cells[10].id, "c10");
        assert_eq!(s.cells[10].phase, "Ready");
        // The counts are not cut with the list.
        assert_eq!(s.active_cells, Some(MAX_CELL_SUMMARY as u32 + 19));
    }

    #[test]
    fn an_invalid_spec_degrades_the_world_and_keeps_the_rest() {
        let (world, observed) = steady();
        let good = world_status(None, &world, &plan(&world, &observed, T0), &observed, 1, T0);
        let (mut ws, _) = world_spec("meadow");
        ws.spec.scaling.scale_down_threshold = 0.9;
        let err = fleetforge_crd::to_world(&ws).unwrap_err();
        let t1 = T0 + std::time::Duration::from_secs(60);
        let s = invalid_spec_status(Some(&good), &err, 2, t1);
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(s.observed_generation, Some(2));
        let degraded = cond(&s, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", REASON_INVALID_SPEC)
        );
        assert!(
            degraded.message.contains("spec.scaling.scaleDownThreshold"),
            "{}",
            degraded.message
        );
        assert_eq!(degraded.last_transition_time, time(t1));
        assert_eq!(cond(&s, "Progressing").reason, REASON_INVALID_SPEC);
        // Ready is kept as it was, and so are the cells and counts.
        assert_eq!(cond(&s, "Ready"), cond(&good, "Ready"));
        assert_eq!(s.cells, good.cells);
        assert_eq!(s.active_cells, good.active_cells);
        // Invalid again later: nothing moves.
        let again = invalid_spec_status(Some(&s), &err, 2, t1 + std::time::Duration::from_secs(60));
        assert_eq!(again, s);
        // Without a previous status.
        let fresh = invalid_spec_status(None, &err, 1, t1);
        assert_eq!(
            summary(&fresh),
            [
                ("Ready", "False", REASON_INVALID_SPEC),
                ("Progressing", "False", REASON_INVALID_SPEC),
                ("Degraded", "True", REASON_INVALID_SPEC),
            ]
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let cut = truncate("é".repeat(MAX_MESSAGE));
        assert!(cut.len() <= MAX_MESSAGE);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short".into()), "short");
    }
}
