//! One scenario per class of failure the staged executor found (docs/planner.md,
//! "Safety rules"): each builds the moment a transition is interrupted, or the
//! input a cluster can really produce, and checks that the plan keeps every
//! session. Every test here fails on the planner as it was before the fixes.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use std::time::Duration;

use common::{Sim, world};
use fleetforge_core::sim::{Population, SplitMix, apply};
use fleetforge_core::{
    Action, Axis, Bounds, CellId, CellRef, Health, LayoutCell, LoadSample, Observed, Plan, PositionHistogram,
    Role, TransitionKind, World, WorldField, plan,
};

/// The planner's first rule, checked on one plan: a cell that may hold sessions
/// is retired only after a hand-over from it earlier in the same transition, and
/// every hand-over's targets cover the space of its sources.
fn assert_keeps_sessions(observed: &Observed, p: &Plan) {
    let find = |cell: &CellRef| observed.cells.iter().find(|c| &c.cell == cell);
    for t in &p.transitions {
        let mut handed: Vec<&CellRef> = Vec::new();
        for a in &t.actions {
            match a {
                Action::HandOver { from, to } => {
                    for source in from {
                        if let Some(c) = find(source) {
                            assert!(
                                c.bounds.covered_by(to.iter().map(|t| &t.bounds)),
                                "{}: {source} hands over to {:?}, which do not cover its space",
                                t.reason,
                                to.iter().map(|t| t.cell.to_string()).collect::<Vec<_>>()
                            );
                        }
                    }
                    handed.extend(from);
                }
                Action::Retire { cell } => {
                    if let Some(c) = find(cell) {
                        assert!(
                            !c.may_hold_sessions() || handed.contains(&cell),
                            "{} ({}): retires {cell} ({:?}, {:?}) without handing its sessions over",
                            t.kind,
                            t.reason,
                            c.role,
                            c.health
                        );
                    }
                }
                Action::Create { .. } => {}
            }
        }
    }
}

/// The cells `p` retires, in order.
fn retired(p: &Plan) -> Vec<String> {
    p.actions()
        .filter_map(|a| match a {
            Action::Retire { cell } => Some(cell.to_string()),
            _ => None,
        })
        .collect()
}

/// `plan` on `sim`'s observed state at its time, checked by [`assert_keeps_sessions`].
fn checked_plan(sim: &Sim) -> Plan {
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_keeps_sessions(&sim.observed, &p);
    p
}

/// Applies `p` as an executor that stops before the first `Retire` of each
/// transition: cells are created and hand-overs done, nothing is retired.
fn apply_until_retire(sim: &mut Sim, p: &Plan) {
    let mut cut = p.clone();
    for t in &mut cut.transitions {
        if let Some(k) = t.actions.iter().position(|a| matches!(a, Action::Retire { .. })) {
            t.actions.truncate(k);
        }
    }
    apply(&mut sim.world, &mut sim.observed, &cut, sim.now);
}

/// The 4-cell world of `common::world` with `players` spread uniformly (placed by
/// `seed`), run for `seconds` through the reference executor.
fn running(players: usize, seed: u64, seconds: usize) -> Sim {
    let w = world(4);
    let population = Population::uniform(&w.bounds, players, &mut SplitMix::new(seed));
    let mut sim = Sim::new(w, population);
    sim.run(seconds);
    sim
}

fn cell<'a>(sim: &'a mut Sim, name: &str) -> &'a mut fleetforge_core::ObservedCell {
    sim.observed
        .cells
        .iter_mut()
        .find(|c| c.cell.to_string() == name)
        .unwrap_or_else(|| panic!("no cell {name}"))
}

/// Class 1: a repartition interrupted after its hand-over, before the old roots
/// were retired, then a new root fails. Rolling back would retire the new roots,
/// which hold the sessions; the planner goes forward instead.
#[test]
fn a_repartition_past_its_hand_over_goes_forward_when_a_new_root_fails() {
    let mut sim = running(120, 1, 3);
    sim.world.initial_cells = 2;
    sim.world.policy.min_cells = 1;
    let p = sim.sample_and_plan();
    assert_eq!(p.transitions[0].kind, TransitionKind::Repartition);
    apply_until_retire(&mut sim, &p);
    // Both new roots serve now; the four old ones linger. One new root dies.
    cell(&mut sim, "c1#1").health = Health::Failed;
    sim.now = sim.now + Duration::from_secs(1);
    let p = checked_plan(&sim);
    assert!(
        !p.transitions.iter().any(|t| t.kind == TransitionKind::RollBack),
        "{:#?}",
        p.transitions
    );
    // The dead root is replaced; the old cells wait for its replacement, then
    // hand over what they still hold and retire.
    assert!(p.transitions.iter().any(|t| t.kind == TransitionKind::Replace));
    let mut steps = 0;
    while !sim
        .observed
        .cells
        .iter()
        .all(|c| c.layout == sim.world.layout_key())
    {
        let p = checked_plan(&sim);
        apply(&mut sim.world, &mut sim.observed, &p, sim.now);
        sim.now = sim.now + Duration::from_secs(1);
        steps += 1;
        assert!(steps < 10, "the old partition never retires");
    }
    assert_eq!(sim.active_ids(), vec!["c0#1", "c1#2"]);
}

/// Class 2: a stray cell of an earlier layout shows up in a world whose new
/// partition has split since. The cells of the new partition are not "extra"
/// roots to retire: they serve, and the stray hands its sessions to them.
#[test]
fn a_stray_cell_of_an_earlier_partition_hands_over_to_the_cells_that_serve() {
    let mut sim = running(60, 2, 0);
    sim.world.overrides.force_split.insert(CellId::root(0));
    sim.run(2);
    assert!(
        sim.active_ids().contains(&"c0-0".to_owned()),
        "{:?}",
        sim.active_ids()
    );
    let mut stray = sim.observed.cells[0].clone();
    stray.cell = CellRef::first(CellId::root(7));
    stray.layout = 42;
    stray.bounds = Bounds::rect((0.0, 1000.0), (0.0, 400.0)).unwrap();
    sim.observed.cells.push(stray);
    let p = checked_plan(&sim);
    let retired = retired(&p);
    assert_eq!(retired, vec!["c7"], "{:#?}", p.transitions);
}

/// Class 3: the parent of a split in progress is missing from one observation.
/// Its children are activated; when the parent shows up again it still holds its
/// sessions, and hands them over before it retires.
#[test]
fn a_parent_missing_from_one_observation_hands_over_when_it_shows_up_again() {
    let mut sim = running(80, 3, 2);
    sim.world.overrides.force_split.insert(CellId::root(1));
    let p = sim.sample_and_plan();
    // The children are created and ready; the operator stopped before the hand-over.
    for a in p.actions() {
        if let Action::Create { cell, bounds, .. } = a {
            sim.push_incoming(cell.clone(), *bounds, Health::Ready);
        }
    }
    let parent = sim
        .observed
        .cells
        .iter()
        .position(|c| c.cell.to_string() == "c1")
        .unwrap();
    let parent = sim.observed.cells.remove(parent);
    let blind = checked_plan(&sim);
    apply(&mut sim.world, &mut sim.observed, &blind, sim.now);
    sim.observed.cells.push(parent);
    sim.now = sim.now + Duration::from_secs(1);
    let p = checked_plan(&sim);
    assert!(
        p.transitions.iter().any(|t| t.actions.iter().any(
            |a| matches!(a, Action::HandOver { from, .. } if from.iter().any(|c| c.to_string() == "c1"))
        )),
        "{:#?}",
        p.transitions
    );
}

/// Class 3, the other way round: an active cell missing once gets its space
/// filled; when it shows up again, it keeps its sessions or hands them over.
#[test]
fn an_active_cell_missing_once_is_not_taken_for_empty() {
    let mut sim = running(80, 4, 2);
    let k = sim
        .observed
        .cells
        .iter()
        .position(|c| c.cell.to_string() == "c2")
        .unwrap();
    let mut missing = sim.observed.cells.remove(k);
    let fill = checked_plan(&sim);
    assert_eq!(fill.transitions[0].kind, TransitionKind::Fill);
    apply(&mut sim.world, &mut sim.observed, &fill, sim.now);
    // The fill took the next incarnation only if the planner saw the old one;
    // here it did not, so give the reappearing cell a distinct one.
    missing.cell.incarnation = 5;
    sim.observed.cells.push(missing);
    sim.observed.cells.sort_by(|a, b| a.cell.cmp(&b.cell));
    sim.now = sim.now + Duration::from_secs(1);
    checked_plan(&sim);
    // And when the fill has not started yet, the cell that holds the sessions
    // keeps its space: the fill is the one retired.
    for c in &mut sim.observed.cells {
        if c.cell.to_string() == "c2" {
            c.health = Health::Starting;
        }
    }
    let p = checked_plan(&sim);
    let retired = retired(&p);
    assert_eq!(retired, vec!["c2"]);
}

/// Class 4: at maxCells, a merge does not make room for a split in the same
/// plan: if the merge's new cell failed and it rolled back, the world would be
/// left above its maximum.
#[test]
fn a_split_never_counts_on_room_a_merge_has_not_made_yet() {
    let mut w = world(4);
    w.policy.max_cells = 5;
    w.policy.cooldown = Duration::ZERO;
    // c0 is split; its children are nearly empty, c3 is hot.
    let mut pop = Population::default();
    let mut rng = SplitMix::new(5);
    pop.add_uniform(&Bounds::rect((0.0, 500.0), (0.0, 500.0)).unwrap(), 20, &mut rng);
    let mut sim = Sim::new(w, pop);
    sim.world.overrides.force_split.insert(CellId::root(0));
    sim.run(1);
    assert_eq!(sim.active_ids().len(), 5);
    sim.population.add_uniform(
        &Bounds::rect((500.0, 1000.0), (500.0, 1000.0)).unwrap(),
        95,
        &mut rng,
    );
    let mut merge_planned = false;
    for _ in 0..12 {
        let p = sim.sample_and_plan();
        let kinds: Vec<TransitionKind> = p.transitions.iter().map(|t| t.kind).collect();
        if kinds.contains(&TransitionKind::Merge) {
            merge_planned = true;
            assert!(!kinds.contains(&TransitionKind::Split), "{:#?}", p.transitions);
            assert!(
                p.summary.held_back.iter().any(|h| h.contains("split of c3")),
                "{:?}",
                p.summary.held_back
            );
            // The merged cell fails to start: the merge rolls back, and the world
            // is still within its limit.
            apply(&mut sim.world, &mut sim.observed, &p, sim.now);
            break;
        }
        apply(&mut sim.world, &mut sim.observed, &p, sim.now);
    }
    assert!(merge_planned, "the cold pair never merged");
}

/// Class 5: a restore layout whose siblings are not the two halves of one cut,
/// or that leaves a sliver of a gap, is refused.
#[test]
fn a_restore_layout_must_be_a_partition_tree_the_planner_could_have_built() {
    let problem = |layout: Vec<(&str, (f64, f64))>| {
        let mut w = world(1);
        w.bounds = Bounds::line((0.0, 100.0)).unwrap();
        w.overrides.restore_layout = layout
            .into_iter()
            .map(|(id, x)| LayoutCell {
                id: id.parse().unwrap(),
                bounds: Bounds::line(x).unwrap(),
            })
            .collect();
        w.validate().err().map(|e| {
            assert_eq!(e[0].field, WorldField::RestoreLayout);
            e[0].problem.clone()
        })
    };
    // c0-00 and c0-01 are not adjacent: merging them would cover c0-10 and c0-11.
    let apart = problem(vec![
        ("c0-00", (0.0, 10.0)),
        ("c0-01", (40.0, 50.0)),
        ("c0-10", (10.0, 25.0)),
        ("c0-11", (25.0, 40.0)),
        ("c0-1", (50.0, 100.0)),
    ]);
    assert!(apart.is_some(), "non-adjacent siblings accepted");
    let apart = problem(vec![
        ("c0-00", (0.0, 10.0)),
        ("c0-01", (40.0, 50.0)),
        ("c0-10", (10.0, 25.0)),
        ("c0-11", (25.0, 40.0)),
    ]);
    assert!(apart.unwrap().contains("not the two halves of one cut"));
    let gap = problem(vec![("c0-0", (0.0, 20.0)), ("c0-1", (20.000_000_001, 100.0))]);
    assert!(gap.unwrap().contains("overlap or leave a gap"));
    assert_eq!(
        problem(vec![("c0-0", (0.0, 20.0)), ("c0-1", (20.0, 100.0))]),
        None
    );
}

/// Class 6: a leftover incarnation of a cell with other bounds is not handed the
/// cell's space in a roll-out (it would leave a gap).
#[test]
fn a_leftover_incarnation_with_other_bounds_is_not_rolled_out_to() {
    let mut sim = running(40, 6, 2);
    let c0 = cell(&mut sim, "c0").bounds;
    let (half, _) = c0.split(Axis::X, 250.0).unwrap();
    sim.push_incoming(
        CellRef {
            id: CellId::root(0),
            incarnation: 1,
        },
        half,
        Health::Ready,
    );
    let p = checked_plan(&sim);
    assert!(
        !p.transitions.iter().any(|t| t.kind == TransitionKind::Rollout),
        "{:#?}",
        p.transitions
    );
}

fn samples(players: u32, now: u64) -> Vec<LoadSample> {
    (0..10)
        .map(|k| LoadSample {
            at: fleetforge_core::Timestamp((now - 9 + k) * 1000),
            players,
            histogram: None,
        })
        .collect()
}

/// Class 7: a load exactly at a threshold neither splits nor merges, although
/// 0.57 x 100 is 56.99999999999999 in floating point.
#[test]
fn a_load_exactly_at_a_threshold_neither_splits_nor_merges() {
    let mut w = world(2);
    w.bounds = Bounds::line((0.0, 100.0)).unwrap();
    w.policy.scale_up_threshold = 0.57;
    w.policy.scale_down_threshold = 0.29;
    w.policy.cooldown = Duration::ZERO;
    let mut sim = Sim::new(w, Population::default());
    sim.now = fleetforge_core::Timestamp(100_000);
    // The kinds planned with the named cells at these players, every other at 10.
    let kinds = |sim: &mut Sim, loads: [(&str, u32); 2]| {
        let now = sim.now.as_millis() / 1000;
        for c in &mut sim.observed.cells {
            let name = c.cell.to_string();
            let players = loads.iter().find(|(n, _)| *n == name).map_or(10, |l| l.1);
            c.samples = samples(players, now);
        }
        plan(&sim.world, &sim.observed, sim.now)
            .transitions
            .iter()
            .map(|t| t.kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&mut sim, [("c0", 57), ("c1", 10)]), vec![]);
    assert_eq!(
        kinds(&mut sim, [("c0", 58), ("c1", 10)]),
        vec![TransitionKind::Split]
    );
    // Split c0 into two siblings to test the merge boundary.
    sim.world.overrides.force_split.insert(CellId::root(0));
    sim.step_plan();
    assert_eq!(kinds(&mut sim, [("c0-0", 15), ("c0-1", 14)]), vec![]);
    assert_eq!(
        kinds(&mut sim, [("c0-0", 15), ("c0-1", 13)]),
        vec![TransitionKind::Merge]
    );
}

/// Class 8: two siblings reporting 2^31 players each are not cold.
#[test]
fn huge_player_counts_do_not_overflow_into_a_merge() {
    let mut w = world(1);
    w.bounds = Bounds::line((0.0, 100.0)).unwrap();
    w.policy.cooldown = Duration::ZERO;
    // At its maximum, so that neither hot cell is split and the pair is judged.
    w.policy.max_cells = 2;
    let mut sim = Sim::new(w, Population::default());
    sim.world.overrides.force_split.insert(CellId::root(0));
    sim.tick();
    assert_eq!(sim.active_ids(), vec!["c0-0", "c0-1"]);
    sim.now = fleetforge_core::Timestamp(100_000);
    for c in &mut sim.observed.cells {
        c.samples = samples(1 << 31, 100);
    }
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert!(
        !p.transitions.iter().any(|t| t.kind == TransitionKind::Merge),
        "{:#?}",
        p.transitions
    );
}

/// Class 9: worlds whose root partition floating point cannot make exactly are
/// refused, naming the axis; a split never makes a child under minCellExtent.
#[test]
fn worlds_floating_point_cannot_partition_are_refused_and_splits_keep_min_extent() {
    let fields = |w: &World| {
        w.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect::<Vec<_>>()
    };
    let mut huge = world(4);
    huge.bounds = Bounds::rect((-1e308, 1e308), (0.0, 10.0)).unwrap();
    assert_eq!(fields(&huge), vec![WorldField::Bounds(Axis::X)]);
    let mut far = world(1000);
    far.policy.max_cells = 1000;
    // Near 1e15 a float steps by 0.125: no 40 equal cells fit in one unit.
    far.bounds = Bounds::rect((1e15, 1e15 + 1.0), (0.0, 1.0)).unwrap();
    assert_eq!(fields(&far), vec![WorldField::Bounds(Axis::X)]);
    assert_eq!(fields(&world(1000)), vec![WorldField::MaxCells]);

    // Near 1e15 a float steps by 0.125: a cut at "min + 100.3" lands at 100.25.
    let mut w = world(1);
    w.bounds = Bounds::line((1e15, 1e15 + 4096.0)).unwrap();
    w.min_cell_extent = Some(100.3);
    assert_eq!(w.validate(), Ok(()));
    let mut sim = Sim::new(w, Population::default());
    sim.now = fleetforge_core::Timestamp(100_000);
    sim.observed.cells[0].samples = samples(95, 100)
        .into_iter()
        .map(|mut s| {
            s.histogram = Some(PositionHistogram {
                x: vec![95, 0, 0, 0, 0, 0, 0, 0],
                ..PositionHistogram::default()
            });
            s
        })
        .collect();
    let p = plan(&sim.world, &sim.observed, sim.now);
    for a in p.actions() {
        if let Action::Create { bounds, .. } = a {
            assert!(
                bounds.extent(Axis::X) >= 100.3,
                "a child of {} is under the minimum",
                bounds
            );
        }
    }
}

/// Class 10: one cell incarnation observed twice with different bounds is
/// reported, and nothing is done, whatever the order.
#[test]
fn a_cell_observed_twice_unalike_is_reported_not_resolved_by_order() {
    let mut sim = running(40, 10, 2);
    let mut twin = sim.observed.cells[1].clone();
    twin.bounds = Bounds::rect((0.0, 10.0), (0.0, 10.0)).unwrap();
    twin.role = Role::Incoming;
    sim.observed.cells.push(twin);
    let a = plan(&sim.world, &sim.observed, sim.now);
    sim.observed.cells.reverse();
    let b = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(a, b);
    assert!(a.transitions.is_empty());
    assert!(
        a.summary.problems[0].contains("observed twice"),
        "{:?}",
        a.summary.problems
    );
    // Listed twice alike, a cell is simply one cell.
    sim.observed
        .cells
        .retain(|c| c.bounds != Bounds::rect((0.0, 10.0), (0.0, 10.0)).unwrap());
    let same = sim.observed.cells[0].clone();
    sim.observed.cells.push(same);
    assert!(
        plan(&sim.world, &sim.observed, sim.now)
            .summary
            .problems
            .is_empty()
    );
}
