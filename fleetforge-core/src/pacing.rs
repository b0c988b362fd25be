//! When to look at a world again: the pacing of reconciles.
//!
//! The planner is level-triggered, so a world only needs a look when something it
//! decides from has changed. Most changes wake the world by themselves (a cell
//! process appears or goes, the spec changes, a load sample crosses a threshold).
//! What no event announces is the passing of time itself: a cooldown or the rate
//! limit ending, or a threshold that has now held for the whole stabilisation
//! window. [`next_look`] says how long to wait: briefly while work is in progress,
//! until just after the next such deadline when the world is steady, and never
//! longer than the resync, the backstop for a wake-up that was lost.
//!
//! Like the planner, this reads no clock: `now` is a parameter.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cell::CellId;
use crate::load::LoadSample;
use crate::observed::{Health, Observed, ObservedCell};
use crate::plan::Plan;
use crate::plan::scaling::{Extreme, halves, window_extreme};
use crate::time::Timestamp;
use crate::world::World;

/// How long after a deadline a steady world is looked at.
///
/// The look must come when the deadline has passed on the planner's clock, not
/// on the timer's: the requeue timer and the `now` a reconcile reads come from
/// different clocks, `now` is cut to whole milliseconds, and a duration finer than
/// a millisecond ends up to one millisecond after the instant computed here. A
/// look that came a hair early would find the world unchanged and wait for the
/// resync; 100 ms is far more than these differences and far less than anything a
/// player notices.
pub const MARGIN: Duration = Duration::from_millis(100);

/// How often a world is looked at, besides the changes that wake it.
///
/// The defaults are the operator's: a resync every 300 s and a look every 2 s
/// while work is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// A steady world is looked at again after at most this long, even if nothing
    /// is due: the backstop for a wake-up that was lost. Must be longer than zero.
    pub resync: Duration,
    /// A world with work in progress is looked at again after this long: cells
    /// starting, a hand-over waiting for its targets, a transition started now.
    /// It is not capped by `resync`; keep it shorter. Must be longer than zero.
    pub busy: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            busy: Duration::from_secs(2),
        }
    }
}

/// How long to wait before looking at `world` again, after planning `plan` from
/// `observed` at `now` and running it; `waiting` says that the executor left a
/// step waiting for something the API server will report (a Pod becoming ready, a
/// deletion going through).
///
/// - A busy world ([`is_busy`]) is looked at after exactly `pacing.busy`.
/// - A steady one just after its next deadline ([`next_deadline`] plus
///   [`MARGIN`]), or after `pacing.resync` when that comes first or nothing is due.
pub fn next_look(
    world: &World,
    observed: &Observed,
    plan: &Plan,
    waiting: bool,
    now: Timestamp,
    pacing: &Pacing,
) -> Duration {
    if is_busy(observed, plan, waiting) {
        return pacing.busy;
    }
    next_deadline(world, observed, now)
        .map_or(pacing.resync, |end| (end.since(now) + MARGIN).min(pacing.resync))
}

/// Whether the world has work in progress: the plan has something to do, the
/// executor is waiting on the API server, or a cell is not both ready and active
/// (starting, unready, failed or waiting for a hand-over). Such a world changes
/// in ways that wake nothing, such as a transition timing out, so it is looked at
/// often.
pub fn is_busy(observed: &Observed, plan: &Plan, waiting: bool) -> bool {
    !plan.is_empty()
        || waiting
        || observed
            .cells
            .iter()
            .any(|c| c.health != Health::Ready || !c.is_active())
}

/// The first instant after `now` at which the passing of time alone may let the
/// planner act on what is `observed`, if any:
///
/// - a split or merge in the history ends its cooldown or leaves the rate-limit
///   period (a cell that stayed hot or cold through it may scale then);
/// - a ready, active cell's load has stayed above the split threshold, or two
///   ready, active sibling halves' loads below the merge threshold, for the whole
///   stabilisation window, as the planner reads the window, counting only samples
///   taken up to `now`.
///
/// A deadline is where the planner may act, not where it will: a split due then
/// can still be held back, for example by the cell limits. A threshold already
/// held at `now` gives no deadline: the planner saw it at `now`, so what holds it
/// back is a cooldown or the rate limit (deadlines of their own) or something
/// time does not change, and a look at every sample leaving the window would
/// only repeat the same plan.
///
/// Not covered: predictive splits and merges. Their forecast moves with `now`
/// and with every new sample rather than falling due at an instant; a world that
/// predicts is looked at for them when sampling wakes it or at the resync.
pub fn next_deadline(world: &World, observed: &Observed, now: Timestamp) -> Option<Timestamp> {
    let p = &world.policy;
    let pacing_ends = observed
        .history
        .iter()
        .flat_map(|r| [r.at + p.cooldown, r.at + p.rate_limit_period])
        .filter(|&end| end > now)
        .min();
    [pacing_ends, window_deadline(world, observed, now)]
        .into_iter()
        .flatten()
        .min()
}

/// The first instant after `now` at which a threshold has held over the
/// stabilisation window on the samples taken so far, for some cell or sibling
/// pair for which it does not hold at `now`.
///
/// Load samples wake the world when one cell crosses a threshold and when it has
/// stayed past it for the window, but a merge is decided on two siblings together:
/// two cold cells whose sum sinks below the merge threshold cross nothing, and
/// without this deadline would wait for the resync.
fn window_deadline(world: &World, observed: &Observed, now: Timestamp) -> Option<Timestamp> {
    // Only these cells can be split or merged; in a steady world that is all.
    let steady: BTreeMap<&CellId, &ObservedCell> = observed
        .cells
        .iter()
        .filter(|c| c.health == Health::Ready && c.is_active())
        .map(|c| (&c.cell.id, c))
        .collect();
    let splits = steady.values().filter_map(|c| split_due(world, c, now));
    let merges = steady.iter().filter_map(|(id, a)| {
        let sibling = id.sibling().filter(|_| id.side() == Some(0))?;
        let b = steady.get(&sibling)?;
        merge_due(world, a, b, now)
    });
    splits.chain(merges).min()
}

/// When `c` will have been above the split threshold over the whole window, if
/// that is after `now`.
fn split_due(world: &World, c: &ObservedCell, now: Timestamp) -> Option<Timestamp> {
    let up = world.split_above_players();
    let window = world.policy.stabilization_window;
    let samples = taken_by(c, now);
    // Samples leaving the window only raise its lowest reading up to the latest:
    // with the latest not above the threshold, no later instant is either. Most
    // cells stop here, before their older samples are read.
    if samples.last().is_none_or(|s| f64::from(s.players) <= up) {
        return None;
    }
    let hot = |t: Timestamp| {
        window_extreme(samples, t, window, Extreme::Min).is_some_and(|low| f64::from(low) > up)
    };
    if hot(now) {
        return None;
    }
    first_holding(&leave_times(samples, window, now), hot)
}

/// When sibling halves `a` and `b` will together have been below the merge
/// threshold over the whole window, if that is after `now`.
fn merge_due(world: &World, a: &ObservedCell, b: &ObservedCell, now: Timestamp) -> Option<Timestamp> {
    if !halves(a, b) {
        return None; // the planner never merges them
    }
    let down = world.merge_below_players();
    let window = world.policy.stabilization_window;
    let (sa, sb) = (taken_by(a, now), taken_by(b, now));
    // As for splits: the highest readings sink at most to the latest ones.
    let (Some(la), Some(lb)) = (sa.last(), sb.last()) else {
        return None;
    };
    if (u64::from(la.players) + u64::from(lb.players)) as f64 >= down {
        return None;
    }
    let cold = |t: Timestamp| match (
        window_extreme(sa, t, window, Extreme::Max),
        window_extreme(sb, t, window, Extreme::Max),
    ) {
        // Summed in 64 bits as the planner does: each may report up to u32::MAX.
        (Some(x), Some(y)) => ((u64::from(x) + u64::from(y)) as f64) < down,
        _ => false,
    };
    if cold(now) {
        return None;
    }
    let mut times = leave_times(sa, window, now);
    times.extend(leave_times(sb, window, now));
    times.sort_unstable();
    first_holding(&times, cold)
}

/// The samples of `c` taken at or before `now` (samples are kept oldest first).
/// Later ones are not what the planner saw; sampling wakes the world for them.
fn taken_by(c: &ObservedCell, now: Timestamp) -> &[LoadSample] {
    &c.samples[..c.samples.partition_point(|s| s.at <= now)]
}

/// The instants after `now`, in order, at which the window's reading changes:
/// when each sample becomes the oldest one the window reads, dropping the ones
/// before it.
fn leave_times(samples: &[LoadSample], window: Duration, now: Timestamp) -> Vec<Timestamp> {
    samples
        .iter()
        .map(|s| s.at + window)
        .filter(|&t| t > now)
        .collect()
}

/// The first of `times` (in order) at which `holds` is true. Once a condition on
/// the window holds it keeps holding as samples leave it (its lowest reading only
/// rises, its highest only sinks), so a binary search finds the first.
fn first_holding(times: &[Timestamp], holds: impl Fn(Timestamp) -> bool) -> Option<Timestamp> {
    times.get(times.partition_point(|&t| !holds(t))).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cell::CellRef;
    use crate::geometry::Bounds;
    use crate::observed::{RecordKind, Role, TransitionRecord};
    use crate::plan::plan;
    use crate::world::{Overrides, ScalingPolicy};

    fn secs(s: u64) -> Timestamp {
        Timestamp(s * 1000)
    }

    /// One root cell over 100 x 100, 100 players per cell: split above 80, merge
    /// below 30, a 5 s window, a 10 s cooldown, a 60 s rate-limit period.
    fn world() -> World {
        World {
            name: "w".into(),
            bounds: Bounds::rect((0.0, 100.0), (0.0, 100.0)).expect("a valid box"),
            initial_cells: 1,
            min_cell_extent: None,
            players_per_cell: 100,
            policy: ScalingPolicy {
                stabilization_window: Duration::from_secs(5),
                cooldown: Duration::from_secs(10),
                rate_limit_period: Duration::from_secs(60),
                ..ScalingPolicy::default()
            },
            revision: "r1".into(),
            overrides: Overrides::default(),
        }
    }

    /// A ready, active cell with one sample a second from 0 s to `until`, of
    /// `players(t)` players.
    fn cell(
        world: &World,
        id: &str,
        bounds: Bounds,
        until: u64,
        players: impl Fn(u64) -> u32,
    ) -> ObservedCell {
        ObservedCell {
            cell: CellRef::first(id.parse().expect("a valid id")),
            bounds,
            layout: world.layout_key(),
            revision: world.revision.clone(),
            role: Role::Active { since: secs(0) },
            health: Health::Ready,
            created_at: secs(0),
            samples: (0..=until)
                .map(|t| LoadSample {
                    at: secs(t),
                    players: players(t),
                    histogram: None,
                })
                .collect(),
        }
    }

    /// The two halves of [`world`]'s root, their loads given by the second.
    fn siblings(world: &World, until: u64, a: impl Fn(u64) -> u32, b: impl Fn(u64) -> u32) -> Observed {
        let lower = Bounds::rect((0.0, 50.0), (0.0, 100.0)).expect("a valid box");
        let upper = Bounds::rect((50.0, 100.0), (0.0, 100.0)).expect("a valid box");
        Observed {
            cells: vec![
                cell(world, "c0-0", lower, until, a),
                cell(world, "c0-1", upper, until, b),
            ],
            history: Vec::new(),
        }
    }

    fn record(at: Timestamp) -> TransitionRecord {
        TransitionRecord {
            at,
            kind: RecordKind::Split,
            cells: vec![
                "c0-0".parse().expect("a valid id"),
                "c0-1".parse().expect("a valid id"),
            ],
        }
    }

    fn look(world: &World, observed: &Observed, now: Timestamp) -> Duration {
        let p = plan(world, observed, now);
        next_look(world, observed, &p, false, now, &Pacing::default())
    }

    #[test]
    fn a_steady_world_with_nothing_due_waits_for_the_resync() {
        let w = world();
        let o = siblings(&w, 100, |_| 50, |_| 50);
        assert_eq!(look(&w, &o, secs(100)), Duration::from_secs(300));
    }

    #[test]
    fn any_work_in_progress_is_looked_at_after_busy() {
        let w = world();
        let o = siblings(&w, 100, |_| 50, |_| 50);
        let now = secs(100);
        let p = plan(&w, &o, now);
        let pacing = Pacing {
            resync: Duration::from_secs(40),
            busy: Duration::from_secs(3),
        };
        assert_eq!(next_look(&w, &o, &p, true, now, &pacing), pacing.busy);
        let unsteady: [fn(&mut ObservedCell); 3] = [
            |c| c.health = Health::Starting,
            |c| c.health = Health::Unready,
            |c| c.role = Role::Incoming,
        ];
        for unsteady in unsteady {
            let mut o = o.clone();
            unsteady(&mut o.cells[1]);
            assert_eq!(next_look(&w, &o, &p, false, now, &pacing), pacing.busy);
        }
        // A failed cell is replaced: the plan itself has work.
        let mut failed = o.clone();
        failed.cells[0].health = Health::Failed;
        let p = plan(&w, &failed, now);
        assert!(!p.is_empty());
        assert_eq!(next_look(&w, &failed, &p, false, now, &pacing), pacing.busy);
    }

    #[test]
    fn the_first_cooldown_or_rate_limit_end_brings_the_look_forward() {
        let mut w = world();
        w.policy.rate_limit_period = Duration::from_secs(20);
        let mut o = siblings(&w, 100, |_| 50, |_| 50);
        // Cooldown ends at 94 s (past), rate limit at 104 s; the other record's
        // cooldown ends at 107 s.
        o.history = vec![record(secs(84)), record(secs(97))];
        assert_eq!(look(&w, &o, secs(100)), Duration::from_millis(4_100));
        assert_eq!(next_deadline(&w, &o, secs(100)), Some(secs(104)));
        // Once every end has passed, nothing is due.
        assert_eq!(look(&w, &o, secs(117)), Duration::from_secs(300));
        // Deadlines beyond the resync wait only for the resync.
        w.policy.cooldown = Duration::from_secs(1_000);
        w.policy.rate_limit_period = Duration::from_secs(1_000);
        assert_eq!(look(&w, &o, secs(100)), Duration::from_secs(300));
    }

    /// The case the pacing before this module missed: two cold siblings whose sum
    /// sinks below the merge threshold cross no threshold of their own, so no
    /// sample wakes the world when the merge falls due.
    #[test]
    fn siblings_whose_sum_turns_cold_are_looked_at_when_the_window_has_held() {
        let w = world();
        // 25 + 25 = 50 players, not below 30, until c0-0 drops to 2 at 91 s.
        let o = siblings(&w, 92, |t| if t < 91 { 25 } else { 2 }, |_| 25);
        let now = secs(92);
        // The window reads back to the last sample at or before now - 5 s: the 25
        // taken at 90 s leaves it at 96 s.
        assert_eq!(next_deadline(&w, &o, now), Some(secs(96)));
        assert_eq!(look(&w, &o, now), Duration::from_millis(4_100));
        assert!(plan(&w, &o, secs(96) - Duration::from_millis(1)).is_empty());
        let due = plan(&w, &o, secs(96));
        assert_eq!(due.started.len(), 1, "{:#?}", due.transitions);
        assert_eq!(due.started[0].kind, RecordKind::Merge);
    }

    #[test]
    fn a_cell_turning_hot_is_looked_at_when_the_window_has_held() {
        let w = world();
        let root = Bounds::rect((0.0, 100.0), (0.0, 100.0)).expect("a valid box");
        let o = Observed {
            cells: vec![cell(&w, "c0", root, 93, |t| if t < 91 { 50 } else { 90 })],
            history: Vec::new(),
        };
        let now = secs(93);
        assert_eq!(next_deadline(&w, &o, now), Some(secs(96)));
        assert!(plan(&w, &o, secs(96) - Duration::from_millis(1)).is_empty());
        assert_eq!(plan(&w, &o, secs(96)).started[0].kind, RecordKind::Split);
        // Held already at now yet not split: something else holds it back, and
        // time alone changes nothing.
        let mut capped = w.clone();
        capped.policy.max_cells = 1;
        assert!(plan(&capped, &o, secs(97)).is_empty());
        assert_eq!(next_deadline(&capped, &o, secs(97)), None);
    }

    #[test]
    fn siblings_cold_over_the_window_wait_for_what_holds_them_back() {
        let w = world();
        // 10 + 10 players, cold all along, but the two were made at 90 s and cool
        // down until 100 s: that, not the window, is the deadline.
        let mut o = siblings(&w, 93, |_| 10, |_| 10);
        o.history = vec![record(secs(90))];
        assert!(plan(&w, &o, secs(93)).is_empty());
        assert_eq!(next_deadline(&w, &o, secs(93)), Some(secs(100)));
        assert_eq!(plan(&w, &o, secs(100)).started[0].kind, RecordKind::Merge);
    }

    #[test]
    fn loads_that_cannot_cross_give_no_deadline() {
        let w = world();
        // Hot until 91 s, normal since: the window's lowest reading never rises
        // above the latest.
        let cooled = siblings(&w, 93, |t| if t < 91 { 90 } else { 50 }, |_| 50);
        assert_eq!(next_deadline(&w, &cooled, secs(93)), None);
        // Siblings that are each cold but together are not stay unmerged.
        let warm = siblings(&w, 93, |t| if t < 91 { 10 } else { 20 }, |_| 20);
        assert_eq!(next_deadline(&w, &warm, secs(93)), None);
        // Two cold cells that are not siblings never merge.
        let mut cousins = siblings(&w, 93, |t| if t < 91 { 25 } else { 2 }, |_| 25);
        cousins.cells[1].cell = CellRef::first("c0-10".parse().expect("a valid id"));
        assert_eq!(next_deadline(&w, &cousins, secs(93)), None);
    }

    #[test]
    fn samples_taken_after_now_are_not_read() {
        let w = world();
        let root = Bounds::rect((0.0, 100.0), (0.0, 100.0)).expect("a valid box");
        // Hot from 91 s, but only the samples up to 90 s were taken by now.
        let o = Observed {
            cells: vec![cell(&w, "c0", root, 99, |t| if t < 91 { 50 } else { 90 })],
            history: Vec::new(),
        };
        assert_eq!(next_deadline(&w, &o, secs(90)), None);
        assert_eq!(next_deadline(&w, &o, secs(91)), Some(secs(96)));
    }
}
