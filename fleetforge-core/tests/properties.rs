//! Property tests for the planner's invariants.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Sim;
use common::strategies::{any_bounds, any_population, any_world, point_in};
use fleetforge_core::handoff::assign;
use fleetforge_core::naming::{dns_label, is_dns1123_label, label_value};
use fleetforge_core::partition::initial_partition;
use fleetforge_core::sim::{SplitMix, apply};
use fleetforge_core::{
    Action, Axis, Bounds, CellId, CellRef, Health, Observed, Phase, Plan, Point, Target, TransitionKind, plan,
};
use proptest::prelude::*;

/// Splits random leaves of `root` `cuts` times at random fractions along random axes.
fn random_tree(root: Bounds, cuts: &[(usize, usize, f64)]) -> Vec<Bounds> {
    let mut leaves = vec![root];
    for &(pick, axis, frac) in cuts {
        let i = pick % leaves.len();
        let b = leaves[i];
        let axis = Axis::ALL[axis % b.dims()];
        let at = b.min(axis) + b.extent(axis) * frac;
        if let Ok((lo, hi)) = b.split(axis, at) {
            leaves.swap_remove(i);
            leaves.push(lo);
            leaves.push(hi);
        }
    }
    leaves
}

/// Checks that `leaves` tile `root`: measure conserved, no overlap, and every
/// sampled point in exactly one leaf.
fn assert_tiles(root: &Bounds, leaves: &[Bounds], points: &[[f64; 3]]) -> Result<(), TestCaseError> {
    let total: f64 = leaves.iter().map(Bounds::measure).sum();
    prop_assert!(
        (total - root.measure()).abs() <= 1e-9 * root.measure(),
        "measure {total} vs {}",
        root.measure()
    );
    for (i, a) in leaves.iter().enumerate() {
        for b in &leaves[i + 1..] {
            prop_assert!(!a.overlaps(b), "{a} overlaps {b}");
        }
    }
    for u in points {
        let p = point_in(root, *u);
        let n = leaves.iter().filter(|l| l.contains(&p)).count();
        prop_assert_eq!(n, 1, "point {:?} in {} cells", p, n);
    }
    Ok(())
}

/// What a plan does with the terminating cells of `observed` when nothing else
/// is in flight (the reference executor carries every plan out in full): it
/// drains each active one, once, into its next incarnation over the same space,
/// touches it in no other way, and neither replaces nor fills anything.
fn drains_every_terminating_cell(observed: &Observed, p: &Plan) -> Result<(), TestCaseError> {
    for t in &p.transitions {
        prop_assert!(
            !matches!(t.kind, TransitionKind::Replace | TransitionKind::Fill),
            "{}: {}",
            t.kind,
            t.reason
        );
    }
    let mentions = |a: &Action, cell: &CellRef| match a {
        Action::Create { cell: c, .. } | Action::Retire { cell: c } => c == cell,
        Action::HandOver { from, to } => from.contains(cell) || to.iter().any(|t| &t.cell == cell),
    };
    for c in observed
        .cells
        .iter()
        .filter(|c| c.is_active() && c.health == Health::Terminating)
    {
        let touching: Vec<_> = p
            .transitions
            .iter()
            .filter(|t| t.actions.iter().any(|a| mentions(a, &c.cell)))
            .collect();
        prop_assert_eq!(
            touching.len(),
            1,
            "{} is in {} transitions",
            c.cell,
            touching.len()
        );
        let t = touching[0];
        prop_assert_eq!(t.kind, TransitionKind::Drain);
        let [
            Action::Create {
                cell: new,
                bounds,
                active: false,
            },
            Action::HandOver { from, to },
            Action::Retire { cell: old },
        ] = t.actions.as_slice()
        else {
            return Err(TestCaseError::fail(format!(
                "a drain of {} as {:?}",
                c.cell, t.actions
            )));
        };
        prop_assert_eq!(&new.id, &c.cell.id);
        prop_assert!(new.incarnation > c.cell.incarnation);
        prop_assert_eq!(bounds, &c.bounds);
        prop_assert_eq!(from, &vec![c.cell.clone()]);
        prop_assert_eq!(
            to,
            &vec![Target {
                cell: new.clone(),
                bounds: c.bounds
            }]
        );
        prop_assert_eq!(old, &c.cell);
    }
    Ok(())
}

fn active_bounds(sim: &Sim) -> Vec<Bounds> {
    sim.observed
        .cells
        .iter()
        .filter(|c| c.is_active())
        .map(|c| c.bounds)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn children_tile_their_parent(
        root in any_bounds(),
        cuts in prop::collection::vec((0usize..64, 0usize..3, 0.01f64..0.99), 0..40),
        points in prop::collection::vec(prop::array::uniform3(0.0f64..1.0), 64),
    ) {
        let leaves = random_tree(root, &cuts);
        assert_tiles(&root, &leaves, &points)?;
    }

    #[test]
    fn the_initial_partition_tiles_the_world(
        root in any_bounds(),
        n in 1u32..=1000,
        points in prop::collection::vec(prop::array::uniform3(0.0f64..1.0), 32),
    ) {
        let cells: Vec<Bounds> = initial_partition(&root, n).into_iter().map(|(_, b)| b).collect();
        prop_assert_eq!(cells.len(), n as usize);
        // Pairwise overlap checks are quadratic: sample them on large partitions.
        let checked: Vec<Bounds> = cells.iter().step_by((cells.len() / 40).max(1)).copied().collect();
        for (i, a) in checked.iter().enumerate() {
            for b in &checked[i + 1..] {
                prop_assert!(!a.overlaps(b));
            }
        }
        let total: f64 = cells.iter().map(Bounds::measure).sum();
        prop_assert!((total - root.measure()).abs() <= 1e-9 * root.measure());
        for u in &points {
            let p = point_in(&root, *u);
            prop_assert_eq!(cells.iter().filter(|c| c.contains(&p)).count(), 1);
        }
    }

    #[test]
    fn every_generated_name_is_a_dns1123_label(
        world in "[a-z0-9.-]{1,253}",
        root in 0u32..1000,
        path in prop::collection::vec(0u8..2, 0..48),
        incarnation in 0u32..1000,
    ) {
        let mut id = CellId::root(root);
        for side in path {
            id = id.child(side);
        }
        let name = id.name(&world);
        prop_assert!(is_dns1123_label(&name), "{}", name);
        prop_assert_eq!(&name, &id.name(&world));
        let process = CellRef { id: id.clone(), incarnation }.process_name(&world);
        prop_assert!(is_dns1123_label(&process), "{}", process);
        let value = label_value(&world);
        prop_assert!(is_dns1123_label(&value), "{}", value);
        prop_assert_eq!(id.to_string().parse::<CellId>().unwrap(), id);
    }

    #[test]
    fn distinct_cells_get_distinct_names(
        world in "[a-z][a-z0-9-]{0,200}[a-z]",
        a in prop::collection::vec(0u8..2, 0..40),
        b in prop::collection::vec(0u8..2, 0..40),
    ) {
        prop_assume!(a != b);
        let name = |p: &[u8]| p.iter().fold(CellId::root(1), |id, s| id.child(*s)).name(&world);
        prop_assert_ne!(name(&a), name(&b));
        prop_assert_ne!(dns_label(&world, "x"), dns_label(&world, "y"));
    }

    #[test]
    fn hand_over_places_every_session_exactly_once(
        root in any_bounds(),
        cuts in prop::collection::vec((0usize..8, 0usize..3, 0.05f64..0.95), 1..6),
        sessions in prop::collection::vec(prop::array::uniform3(-0.2f64..1.2), 0..300),
    ) {
        let targets = random_tree(root, &cuts);
        let points: Vec<(usize, Point)> = sessions.iter().map(|u| point_in(&root, *u)).enumerate().collect();
        let out = assign(points.clone(), |s| s.1, &targets).unwrap();
        let mut seen: Vec<usize> = out.iter().flatten().map(|s| s.0).collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..points.len()).collect::<Vec<_>>());
        for (t, list) in targets.iter().zip(&out) {
            for (_, p) in list {
                if root.contains(p) {
                    prop_assert!(t.contains(p), "{:?} handed to {} which does not contain it", p, t);
                }
            }
        }
    }

    #[test]
    fn the_plan_is_deterministic_and_ignores_input_order(
        world in any_world(),
        seed in any::<u64>(),
        steps in 1usize..25,
    ) {
        let pop = any_population(&world, seed, 3, 250, 100);
        let mut sim = Sim::new(world, pop);
        sim.run(steps);
        sim.now = sim.now + Duration::from_secs(1);
        sim.population.sample(&sim.world, &mut sim.observed, sim.now);
        let a = plan(&sim.world, &sim.observed, sim.now);
        let b = plan(&sim.world, &sim.observed, sim.now);
        prop_assert_eq!(&a, &b);
        let mut shuffled = sim.observed.clone();
        shuffled.cells.reverse();
        let mut rng = SplitMix::new(seed);
        for i in (1..shuffled.cells.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            shuffled.cells.swap(i, j);
        }
        prop_assert_eq!(&a, &plan(&sim.world, &shuffled, sim.now));
    }

    #[test]
    fn applying_a_plan_and_replanning_gives_an_empty_plan(
        world in any_world(),
        seed in any::<u64>(),
        steps in 1usize..30,
        failed in prop::option::of(0usize..64),
        evicted in prop::option::of((0usize..64, 0u64..4)),
    ) {
        let pop = any_population(&world, seed, 4, 300, 150);
        let mut sim = Sim::new(world, pop);
        for step in 0..steps {
            if step == steps / 2
                && let Some(k) = failed
            {
                let n = sim.observed.cells.len();
                sim.observed.cells[k % n].health = fleetforge_core::Health::Failed;
            }
            // A grace period of zero: the cell is gone before the planner sees it.
            if step == steps / 3
                && let Some((k, grace)) = evicted
            {
                sim.evict(k, Duration::from_secs(grace));
            }
            sim.now = sim.now + Duration::from_secs(1);
            sim.evictions.expire(&mut sim.observed, sim.now);
            sim.population.sample(&sim.world, &mut sim.observed, sim.now);
            let before = sim.observed.clone();
            let p = sim.step_plan();
            let again = plan(&sim.world, &sim.observed, sim.now);
            prop_assert!(
                again.is_empty(),
                "after applying {:#?}\nfrom {:#?}\nthe plan was {:#?}",
                p.transitions, before.cells.iter().map(|c| (&c.cell, c.role, c.health)).collect::<Vec<_>>(),
                again.transitions
            );
        }
    }

    #[test]
    fn cell_count_stays_within_the_limits_and_cells_tile_the_world(
        world in any_world(),
        seed in any::<u64>(),
        spots in 0usize..6,
        per_spot in 0usize..600,
        steps in 1usize..40,
        points in prop::collection::vec(prop::array::uniform3(0.0f64..1.0), 32),
        // Grace periods longer than the second between two plans: the planner
        // sees each evicted cell, and the reference executor drains it at once.
        evictions in prop::collection::vec((0usize..40, 0usize..64, 2u64..30), 0..4),
    ) {
        let (min, max) = (world.policy.min_cells as usize, world.policy.max_cells as usize);
        let pop = any_population(&world, seed, spots, per_spot, 50);
        let mut sim = Sim::new(world, pop);
        for step in 0..steps {
            for &(at, k, grace) in &evictions {
                if at == step {
                    sim.evict(k, Duration::from_secs(grace));
                }
            }
            sim.now = sim.now + Duration::from_secs(1);
            sim.evictions.expire(&mut sim.observed, sim.now);
            sim.population.sample(&sim.world, &mut sim.observed, sim.now);
            let observed = sim.observed.clone();
            let p = sim.step_plan();
            drains_every_terminating_cell(&observed, &p)?;
            let n = active_bounds(&sim).len();
            prop_assert!(n >= min && n <= max, "{} cells outside [{}, {}]", n, min, max);
            // A drain never leaves a hole, nor two cells over one space.
            assert_tiles(&sim.world.bounds, &active_bounds(&sim), &points)?;
        }
    }

    #[test]
    fn a_node_drain_drains_every_cell_at_once_and_keeps_every_player(
        world in any_world(),
        seed in any::<u64>(),
        steps in 1usize..20,
        picks in prop::collection::vec(0usize..64, 1..6),
        grace in 2u64..120,
        points in prop::collection::vec(prop::array::uniform3(0.0f64..1.0), 32),
    ) {
        let pop = any_population(&world, seed, 3, 250, 100);
        let players = pop.players.len() as u64;
        let mut sim = Sim::new(world, pop);
        sim.run(steps);
        let evicted: Vec<CellRef> = picks
            .iter()
            .filter_map(|&k| sim.evict(k, Duration::from_secs(grace)))
            .collect();
        sim.now = sim.now + Duration::from_secs(1);
        sim.population.sample(&sim.world, &mut sim.observed, sim.now);
        let observed = sim.observed.clone();
        let p = plan(&sim.world, &observed, sim.now);
        // However many, whatever the rate limit: each evicted cell is drained now.
        drains_every_terminating_cell(&observed, &p)?;
        let drains = p.transitions.iter().filter(|t| t.kind == TransitionKind::Drain).count();
        prop_assert_eq!(drains, evicted.len());
        // Neither a failure nor lost capacity: their players still count.
        prop_assert_ne!(p.summary.phase, Phase::Degraded, "{:?}", p.summary);
        prop_assert_eq!(p.summary.players, players);
        apply(&mut sim.world, &mut sim.observed, &p, sim.now);
        for cell in &evicted {
            prop_assert!(!sim.observed.cells.iter().any(|c| &c.cell == cell), "{} not retired", cell);
        }
        assert_tiles(&sim.world.bounds, &active_bounds(&sim), &points)?;
        sim.now = sim.now + Duration::from_secs(1);
        sim.population.sample(&sim.world, &mut sim.observed, sim.now);
        let after = plan(&sim.world, &sim.observed, sim.now);
        prop_assert_eq!(after.summary.players, players);
        prop_assert!(!after.transitions.iter().any(|t| t.kind == TransitionKind::Drain));
    }

    #[test]
    fn constant_load_reaches_a_fixed_point_without_flapping(
        world in any_world(),
        seed in any::<u64>(),
        spots in 1usize..5,
        per_spot in 50usize..800,
    ) {
        let pop = any_population(&world, seed, spots, per_spot, 100);
        let mut sim = Sim::new(world, pop);
        // Worst case: up to 35 splits, one per 20 s rate-limit period, each after a
        // window: about 35 x 20 steps.
        let budget = 1500;
        let mut quiet = 0;
        let mut split_parents: BTreeSet<CellId> = BTreeSet::new();
        for _ in 0..budget {
            let p = sim.tick();
            for t in &p.transitions {
                match t.kind {
                    TransitionKind::Split => {
                        if let Some(fleetforge_core::Action::HandOver { from, .. }) =
                            t.actions.iter().find(|a| matches!(a, fleetforge_core::Action::HandOver { .. }))
                        {
                            split_parents.extend(from.iter().map(|c| c.id.clone()));
                        }
                    }
                    TransitionKind::Merge => {
                        let parent = t.actions.iter().find_map(|a| match a {
                            fleetforge_core::Action::Create { cell, .. } => Some(cell.id.clone()),
                            _ => None,
                        });
                        prop_assert!(
                            !parent.as_ref().is_some_and(|id| split_parents.contains(id)),
                            "{:?} was split and then merged back under constant load", parent
                        );
                    }
                    _ => {}
                }
            }
            quiet = if p.is_empty() { quiet + 1 } else { 0 };
            if quiet > 60 {
                break;
            }
        }
        prop_assert!(quiet > 60, "no fixed point within {} steps", budget);
    }
}
