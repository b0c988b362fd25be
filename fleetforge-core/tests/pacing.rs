//! Property tests for the pacing of reconciles: when a world is looked at again.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use std::time::Duration;

use common::Sim;
use common::strategies::{any_population, any_world};
use fleetforge_core::pacing::{MARGIN, Pacing, next_look};
use fleetforge_core::sim::apply;
use fleetforge_core::{Health, Observed, Plan, Role, Timestamp, World, plan};
use proptest::prelude::*;

/// One instant a reconcile planned at: the world, what it observed, its plan.
struct Instant {
    world: World,
    observed: Observed,
    plan: Plan,
    now: Timestamp,
}

/// Every instant of `steps` seconds of a world run by the reference executor,
/// each taken before its plan was applied. Half-way the players are replaced by
/// `later`, so that thresholds are crossed mid-run and windows, cooldowns and
/// the rate limit are running when the world is looked at.
fn instants(world: World, seed: u64, steps: usize, later: (usize, usize, usize)) -> Vec<Instant> {
    let first = any_population(&world, seed, 3, 250, 100);
    let second = any_population(&world, seed.wrapping_add(1), later.0, later.1, later.2);
    let mut sim = Sim::new(world, first);
    let mut out = Vec::with_capacity(steps);
    for step in 0..steps {
        if step == steps / 2 {
            sim.population = second.clone();
        }
        let p = sim.sample_and_plan();
        out.push(Instant {
            world: sim.world.clone(),
            observed: sim.observed.clone(),
            plan: p.clone(),
            now: sim.now,
        });
        apply(&mut sim.world, &mut sim.observed, &p, sim.now);
    }
    out
}

/// Resync and busy durations to the millisecond, each longer than zero.
fn any_pacing() -> impl Strategy<Value = Pacing> {
    (1u64..=600_000, 1u64..=20_000).prop_map(|(resync, busy)| Pacing {
        resync: Duration::from_millis(resync),
        busy: Duration::from_millis(busy),
    })
}

/// How the operator paced a world before `fleetforge_core::pacing` (its
/// controller's `plan_and_apply`, verbatim but for the names), the oracle for
/// what must not change.
fn before(
    world: &World,
    observed: &Observed,
    plan: &Plan,
    waiting: bool,
    now: Timestamp,
    t: &Pacing,
) -> Duration {
    let busy = !plan.is_empty()
        || waiting
        || observed
            .cells
            .iter()
            .any(|c| c.health != Health::Ready || !c.is_active());
    if busy {
        return t.busy;
    }
    let pacing_ends = observed
        .history
        .iter()
        .flat_map(|r| {
            [
                r.at + world.policy.cooldown,
                r.at + world.policy.rate_limit_period,
            ]
        })
        .filter(|&end| end > now)
        .min();
    pacing_ends.map_or(t.resync, |end| {
        (end.since(now) + Duration::from_millis(100)).min(t.resync)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A world with work is looked at after exactly `busy`, whatever makes it busy;
    /// a steady one after some time in (0, resync].
    #[test]
    fn the_look_is_busy_or_within_the_resync(
        world in any_world(),
        pacing in any_pacing(),
        seed in any::<u64>(),
        steps in 1usize..80,
        later in (0usize..4, 0usize..300, 0usize..100),
        disturb in (any::<usize>(), 0u8..5),
    ) {
        for i in instants(world, seed, steps, later) {
            let wait = next_look(&i.world, &i.observed, &i.plan, false, i.now, &pacing);
            // The reference executor leaves every cell ready and active, so only
            // the plan makes these worlds busy.
            if i.plan.is_empty() {
                prop_assert!(wait > Duration::ZERO && wait <= pacing.resync, "{:?} of {:?}", wait, pacing);
            } else {
                prop_assert_eq!(wait, pacing.busy);
            }
            // The same world with one thing in progress.
            let (mut observed, mut waiting) = (i.observed.clone(), false);
            let n = observed.cells.len();
            let c = &mut observed.cells[disturb.0 % n];
            match disturb.1 {
                0 => waiting = true,
                1 => c.health = Health::Starting,
                2 => c.health = Health::Unready,
                3 => c.health = Health::Failed,
                _ => c.role = Role::Incoming,
            }
            prop_assert_eq!(next_look(&i.world, &observed, &i.plan, waiting, i.now, &pacing), pacing.busy);
        }
    }

    /// The pacing this module replaced is kept as a bound: a look never comes
    /// later than it did, so no cooldown or rate-limit end is looked at late.
    /// Without a stabilisation window (nothing can fall due on one), it is the
    /// same look for every input.
    #[test]
    fn the_look_is_never_later_than_before_and_the_same_without_a_window(
        mut world in any_world(),
        pacing in any_pacing(),
        seed in any::<u64>(),
        steps in 1usize..80,
        later in (0usize..4, 0usize..300, 0usize..100),
        windowless in any::<bool>(),
        waiting in any::<bool>(),
    ) {
        if windowless {
            world.policy.stabilization_window = Duration::ZERO;
        }
        for i in instants(world, seed, steps, later) {
            let now = next_look(&i.world, &i.observed, &i.plan, waiting, i.now, &pacing);
            let then = before(&i.world, &i.observed, &i.plan, waiting, i.now, &pacing);
            if windowless {
                prop_assert_eq!(now, then);
            } else {
                prop_assert!(now <= then, "{:?} is later than {:?}", now, then);
            }
        }
    }

    /// Looking at the same observation at any instant before the look finds
    /// nothing to do: whatever the planner does on this observation, it does no
    /// earlier than the look. This is what makes the look sound; predictive scaling
    /// is left out because its forecast moves with every instant (see
    /// `next_deadline`). And as time passes toward a deadline, the look stays where
    /// it is: it neither runs ahead of the deadline nor slips behind it.
    #[test]
    fn nothing_falls_due_before_the_look_and_the_look_stays_put(
        mut world in any_world(),
        pacing in any_pacing(),
        seed in any::<u64>(),
        steps in 1usize..80,
        later in (0usize..4, 0usize..300, 0usize..100),
        frac in 0.0f64..1.0,
    ) {
        world.policy.prediction = None;
        for i in instants(world, seed, steps, later).into_iter().filter(|i| i.plan.is_empty()) {
            let wait = next_look(&i.world, &i.observed, &i.plan, false, i.now, &pacing);
            let look = i.now + wait;
            // The deadline itself, or the resync when that comes first.
            let due = look - MARGIN;
            if due <= i.now + Duration::from_millis(1) {
                continue;
            }
            let span = due.since(i.now).as_millis() as f64;
            let inside = i.now + Duration::from_millis((span * frac) as u64);
            for t in [i.now + Duration::from_millis(1), inside, due - Duration::from_millis(1)] {
                let p = plan(&i.world, &i.observed, t);
                prop_assert!(
                    p.is_empty(),
                    "planned {:?} at {:?}, before the look at {:?} (now {:?})",
                    p.transitions.iter().map(|t| &t.reason).collect::<Vec<_>>(), t, look, i.now
                );
                if wait < pacing.resync {
                    let again = next_look(&i.world, &i.observed, &p, false, t, &pacing);
                    prop_assert_eq!(t + again, look, "looked at again from {:?}", t);
                }
            }
        }
    }
}
