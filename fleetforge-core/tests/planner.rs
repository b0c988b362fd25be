//! Scenarios for the planner: each drives a world through the reference executor
//! (or hand-made observed states) and checks what the planner does.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use std::time::Duration;

use common::{Sim, at, world};
use fleetforge_core::sim::{Population, SplitMix};
use fleetforge_core::{
    Action, Bounds, CellId, CellRef, Health, LayoutCell, Observed, OverrideRequest, OverrideResult, Phase,
    Prediction, TransitionKind, plan,
};

fn quadrant(x: (f64, f64), y: (f64, f64)) -> Bounds {
    Bounds::rect(x, y).unwrap()
}

/// 4 cells of 500 x 500; `hot` players in the lower-left quadrant (c0), 20 in each
/// of the others.
fn hot_corner(hot: usize) -> Population {
    let mut rng = SplitMix::new(7);
    let mut p = Population::uniform(&quadrant((0.0, 500.0), (0.0, 500.0)), hot, &mut rng);
    for (x, y) in [
        ((500.0, 1000.0), (0.0, 500.0)),
        ((0.0, 500.0), (500.0, 1000.0)),
        ((500.0, 1000.0), (500.0, 1000.0)),
    ] {
        p.add_uniform(&quadrant(x, y), 20, &mut rng);
    }
    p
}

fn kinds(p: &fleetforge_core::Plan) -> Vec<TransitionKind> {
    p.transitions.iter().map(|t| t.kind).collect()
}

#[test]
fn a_new_world_gets_its_initial_cells_in_a_grid() {
    let w = world(4);
    let p = plan(&w, &Observed::default(), at(0));
    assert_eq!(kinds(&p), vec![TransitionKind::Initialize]);
    let created: Vec<(String, Bounds, bool)> = p
        .actions()
        .map(|a| match a {
            Action::Create { cell, bounds, active } => (cell.to_string(), *bounds, *active),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(created.len(), 4);
    assert_eq!(
        created[0],
        ("c0".into(), quadrant((0.0, 500.0), (0.0, 500.0)), true)
    );
    assert_eq!(
        created[3],
        ("c3".into(), quadrant((500.0, 1000.0), (500.0, 1000.0)), true)
    );
    assert_eq!(p.summary.phase, Phase::Initializing);
}

#[test]
fn a_hot_cell_splits_after_the_window_and_its_children_are_not_merged_back() {
    let mut sim = Sim::new(world(4), hot_corner(95));
    // Samples at t=1..5 do not yet cover a 5 s window; the one at t=6 does.
    assert!(sim.run(5).is_empty());
    let p = sim.tick();
    assert_eq!(kinds(&p), vec![TransitionKind::Split], "{p:#?}");
    let t = &p.transitions[0];
    assert!(!t.continues);
    // Children first, then the hand-over, then the parent retires.
    match t.actions.as_slice() {
        [
            Action::Create {
                cell: a,
                active: false,
                ..
            },
            Action::Create {
                cell: b,
                active: false,
                ..
            },
            Action::HandOver { from, to },
            Action::Retire { cell: retired },
        ] => {
            assert_eq!((a.to_string().as_str(), b.to_string().as_str()), ("c0-0", "c0-1"));
            assert_eq!(from, &vec![CellRef::first(CellId::root(0))]);
            assert_eq!(to.len(), 2);
            assert_eq!(retired, &CellRef::first(CellId::root(0)));
            assert_eq!(
                to[0].bounds.union(&to[1].bounds),
                quadrant((0.0, 500.0), (0.0, 500.0))
            );
        }
        other => panic!("unexpected actions {other:?}"),
    }
    assert_eq!(p.started.len(), 1);
    assert_eq!(sim.active_ids(), vec!["c0-0", "c0-1", "c1", "c2", "c3"]);
    // Constant load: nothing more happens, ever.
    assert!(sim.run(60).is_empty());
}

#[test]
fn the_cut_balances_players_reported_by_the_histogram() {
    let mut rng = SplitMix::new(3);
    // All players in the leftmost fifth of c0's x extent.
    let mut pop = Population::uniform(&quadrant((0.0, 100.0), (0.0, 500.0)), 95, &mut rng);
    pop.add_uniform(&quadrant((500.0, 1000.0), (0.0, 1000.0)), 10, &mut rng);
    let mut sim = Sim::new(world(4), pop);
    sim.run(6);
    let cut = sim
        .observed
        .cells
        .iter()
        .find(|c| c.cell.to_string() == "c0-0")
        .map(|c| c.bounds)
        .expect("c0 split");
    // Along x (c0 is square: the first axis wins the tie), well left of the middle,
    // but never a sliver under 10 % of the parent.
    assert_eq!(cut.min(fleetforge_core::Axis::X), 0.0);
    assert!(cut.max(fleetforge_core::Axis::X) <= 100.0, "{cut}");
    assert!(cut.max(fleetforge_core::Axis::X) >= 50.0, "{cut}");
}

#[test]
fn cold_siblings_merge_back_after_their_cooldown() {
    let mut sim = Sim::new(world(4), hot_corner(95));
    sim.run(6);
    assert_eq!(sim.active_ids().len(), 5);
    // The players leave c0's space.
    let keep = quadrant((500.0, 1000.0), (0.0, 1000.0));
    sim.population
        .players
        .retain(|p| keep.contains(p) || p.y >= 500.0);
    let plans = sim.run(30);
    let merges: Vec<_> = plans
        .iter()
        .flat_map(|p| &p.transitions)
        .filter(|t| t.kind == TransitionKind::Merge)
        .collect();
    assert_eq!(merges.len(), 1, "{plans:#?}");
    // The split was at t=6 and the cooldown is 10 s.
    let merged_at = sim
        .plans
        .iter()
        .position(|p| kinds(p).contains(&TransitionKind::Merge))
        .unwrap();
    assert!(merged_at >= 16, "merged at step {merged_at}");
    assert_eq!(sim.active_ids(), vec!["c0", "c1", "c2", "c3"]);
}

#[test]
fn an_interrupted_split_resumes_from_the_cluster_state() {
    let mut sim = Sim::new(world(4), hot_corner(95));
    sim.run(5);
    let p = sim.sample_and_plan();
    // The operator created the children and stopped: they are still starting.
    for a in p.actions() {
        if let Action::Create { cell, bounds, .. } = a {
            sim.push_incoming(cell.clone(), *bounds, Health::Starting);
        }
    }
    let mut history = sim.observed.history.clone();
    history.extend(p.started.clone());
    sim.observed.history = history;
    let resumed = plan(&sim.world, &sim.observed, sim.now + Duration::from_secs(2));
    assert_eq!(kinds(&resumed), vec![TransitionKind::Split]);
    assert!(resumed.transitions[0].continues);
    assert!(resumed.started.is_empty(), "a resumed split is not started again");
    assert!(matches!(
        resumed.transitions[0].actions[0],
        Action::HandOver { .. }
    ));
    assert_eq!(resumed.summary.phase, Phase::Scaling);

    // One child never becomes ready: after the timeout the split is rolled back.
    let late = plan(&sim.world, &sim.observed, sim.now + Duration::from_secs(31));
    assert_eq!(kinds(&late), vec![TransitionKind::RollBack]);
    assert_eq!(late.transitions[0].undoes, Some(TransitionKind::Split));
    let retired: Vec<String> = late
        .actions()
        .map(|a| match a {
            Action::Retire { cell } => cell.to_string(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(retired, vec!["c0-0", "c0-1"]);

    // A failed child rolls back at once.
    sim.observed.cells.last_mut().unwrap().health = Health::Failed;
    let failed = plan(&sim.world, &sim.observed, sim.now + Duration::from_secs(3));
    assert_eq!(kinds(&failed), vec![TransitionKind::RollBack]);
    assert!(
        failed.transitions[0].reason.contains("failed"),
        "{}",
        failed.transitions[0].reason
    );
}

#[test]
fn a_failed_cell_is_replaced_by_its_next_incarnation() {
    let mut sim = Sim::new(world(4), hot_corner(40));
    sim.run(2);
    sim.observed.cells[2].health = Health::Failed;
    let p = sim.tick();
    assert_eq!(kinds(&p), vec![TransitionKind::Replace]);
    assert_eq!(p.summary.phase, Phase::Degraded);
    assert_eq!(sim.active_ids(), vec!["c0", "c1", "c2#1", "c3"]);
    assert!(sim.run(10).is_empty());
}

#[test]
fn space_left_by_a_vanished_cell_is_filled_with_inferred_bounds() {
    let mut sim = Sim::new(world(4), hot_corner(95));
    sim.run(6);
    let child = sim
        .observed
        .cells
        .iter()
        .find(|c| c.cell.to_string() == "c0-1")
        .unwrap()
        .clone();
    sim.observed.cells.retain(|c| c.cell.to_string() != "c0-1");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Fill]);
    match p.actions().next() {
        Some(Action::Create {
            cell,
            bounds,
            active: true,
        }) => {
            assert_eq!(cell.id, child.cell.id);
            assert_eq!(*bounds, child.bounds);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_new_revision_rolls_out_one_cell_at_a_time_with_hand_over() {
    let mut sim = Sim::new(world(4), hot_corner(40));
    sim.run(2);
    sim.world.revision = "r2".into();
    let mut rolled = Vec::new();
    for _ in 0..6 {
        let p = sim.tick();
        if p.is_empty() {
            break;
        }
        assert_eq!(kinds(&p), vec![TransitionKind::Rollout], "one at a time");
        match p.transitions[0].actions.as_slice() {
            [
                Action::Create {
                    active: false, cell, ..
                },
                Action::HandOver { .. },
                Action::Retire { .. },
            ] => rolled.push(cell.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rolled, vec!["c0#1", "c1#1", "c2#1", "c3#1"]);
    assert!(sim.observed.cells.iter().all(|c| c.revision == "r2"));
}

#[test]
fn changing_the_initial_cells_moves_to_a_new_partition_without_dropping_capacity() {
    let mut sim = Sim::new(world(4), hot_corner(40));
    sim.run(2);
    sim.world.initial_cells = 6;
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Repartition]);
    let actions = &p.transitions[0].actions;
    let creates = actions
        .iter()
        .take_while(|a| matches!(a, Action::Create { active: false, .. }))
        .count();
    assert_eq!(creates, 6);
    assert!(matches!(&actions[6], Action::HandOver { from, to } if from.len() == 4 && to.len() == 6));
    assert!(actions[7..].iter().all(|a| matches!(a, Action::Retire { .. })));
    sim.step_plan();
    assert_eq!(sim.active_ids().len(), 6);
    assert!(sim.run(5).is_empty());
}

#[test]
fn overrides_force_a_split_and_a_merge_and_reject_unknown_cells() {
    let mut sim = Sim::new(world(4), hot_corner(40));
    sim.run(2);
    sim.world.overrides.force_split.insert(CellId::root(1));
    sim.world.overrides.force_split.insert("c9".parse().unwrap());
    let p = sim.tick();
    assert_eq!(kinds(&p), vec![TransitionKind::Split]);
    let outcome = |p: &fleetforge_core::Plan, r: OverrideRequest| {
        p.overrides
            .iter()
            .find(|o| o.request == r)
            .map(|o| o.result.clone())
    };
    assert_eq!(
        outcome(&p, OverrideRequest::Split(CellId::root(1))),
        Some(OverrideResult::Started)
    );
    assert!(matches!(
        outcome(&p, OverrideRequest::Split("c9".parse().unwrap())),
        Some(OverrideResult::Rejected(_))
    ));
    assert!(
        sim.world.overrides.force_split.is_empty(),
        "acted-on requests are dropped"
    );
    // Merge it straight back, cooldown or not.
    sim.world.overrides.force_merge.insert(CellId::root(1));
    let p = sim.tick();
    assert_eq!(kinds(&p), vec![TransitionKind::Merge]);
    assert_eq!(
        outcome(&p, OverrideRequest::Merge(CellId::root(1))),
        Some(OverrideResult::Started)
    );
}

#[test]
fn the_rate_limit_holds_back_splits_beyond_the_budget() {
    let mut w = world(16);
    w.policy.max_transitions = 3;
    // Every cell is hot.
    let mut rng = SplitMix::new(1);
    let pop = Population::uniform(&w.bounds, 16 * 95, &mut rng);
    let mut sim = Sim::new(w, pop);
    let plans = sim.run(6);
    let p = plans.last().unwrap();
    assert_eq!(
        p.transitions
            .iter()
            .filter(|t| t.kind == TransitionKind::Split)
            .count(),
        3
    );
    assert!(
        p.summary.held_back.iter().any(|h| h.contains("rate limit")),
        "{:?}",
        p.summary.held_back
    );
    // Nothing more until the period has passed.
    assert!(sim.run(50).is_empty());
    assert_eq!(sim.run(10).len(), 1);
}

#[test]
fn max_cells_caps_splits() {
    let mut w = world(4);
    w.policy.max_cells = 5;
    let mut rng = SplitMix::new(1);
    let pop = Population::uniform(&w.bounds, 4 * 95, &mut rng);
    let mut sim = Sim::new(w, pop);
    sim.run(30);
    assert_eq!(sim.active_ids().len(), 5);
}

#[test]
fn prediction_splits_a_rising_cell_before_the_threshold_is_held() {
    let mut w = world(4);
    w.policy.prediction = Some(Prediction {
        horizon: Duration::from_secs(10),
        min_samples: 4,
    });
    let mut sim = Sim::new(w, hot_corner(30));
    let c0 = quadrant((0.0, 500.0), (0.0, 500.0));
    let mut rng = SplitMix::new(9);
    let mut first_split = None;
    for step in 0..8 {
        // +6 players a second: 36, 42, ... never above 80 within these steps.
        sim.population.add_uniform(&c0, 6, &mut rng);
        let p = sim.tick();
        if kinds(&p).contains(&TransitionKind::Split) {
            first_split = Some(step);
            assert!(
                p.transitions[0].reason.contains("forecast"),
                "{}",
                p.transitions[0].reason
            );
            break;
        }
    }
    assert!(first_split.is_some(), "no predictive split");
}

#[test]
fn an_invalid_world_is_reported_not_planned() {
    let mut w = world(4);
    w.policy.scale_down_threshold = 0.9;
    let p = plan(&w, &Observed::default(), at(0));
    assert!(p.is_empty());
    assert_eq!(p.summary.phase, Phase::Degraded);
    assert!(
        p.summary.problems[0].contains("ScaleDownThreshold"),
        "{:?}",
        p.summary.problems
    );
}

#[test]
fn of_two_processes_for_one_incoming_cell_the_older_is_retired() {
    let mut sim = Sim::new(world(4), hot_corner(95));
    sim.run(5);
    let p = sim.sample_and_plan();
    // The operator created each child twice (a retry after a lost response
    // picked the next incarnation): four incoming processes for two cells.
    for a in p.actions() {
        if let Action::Create { cell, bounds, .. } = a {
            for incarnation in [cell.incarnation, cell.incarnation + 1] {
                let id = cell.id.clone();
                sim.push_incoming(CellRef { id, incarnation }, *bounds, Health::Ready);
            }
        }
    }
    let next = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(
        kinds(&next),
        vec![
            TransitionKind::Split,
            TransitionKind::Cleanup,
            TransitionKind::Cleanup
        ]
    );
    // Ready, the older processes may hold sessions (the planner cannot tell a
    // spare from a target that an interrupted hand-over reached): each hands
    // whatever it holds to the cell that owns its space, then retires.
    let retired: Vec<(String, Vec<String>)> = next.transitions[1..]
        .iter()
        .map(|t| match t.actions.as_slice() {
            [Action::HandOver { from, to }, Action::Retire { cell }] => {
                assert_eq!(from, std::slice::from_ref(cell));
                (cell.to_string(), to.iter().map(|t| t.cell.to_string()).collect())
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        retired,
        vec![
            ("c0-0".to_owned(), vec!["c0".to_owned()]),
            ("c0-1".to_owned(), vec!["c0".to_owned()])
        ]
    );
    match next.transitions[0].actions.as_slice() {
        [Action::HandOver { to, .. }, Action::Retire { .. }] => {
            let to: Vec<String> = to.iter().map(|t| t.cell.to_string()).collect();
            assert_eq!(to, vec!["c0-0#1", "c0-1#1"]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_restored_world_starts_from_its_backed_up_layout_and_keeps_scaling() {
    // The original world splits its hot corner; its active cells are the backup.
    let mut original = Sim::new(world(4), hot_corner(95));
    original.run(6);
    let layout: Vec<LayoutCell> = original
        .observed
        .cells
        .iter()
        .filter(|c| c.is_active())
        .map(|c| LayoutCell {
            id: c.cell.id.clone(),
            bounds: c.bounds,
        })
        .collect();
    assert_eq!(layout.len(), 5, "the fixture must have split once");

    let mut restored_world = world(4);
    restored_world.overrides.restore_layout = layout.clone();
    assert_eq!(restored_world.validate(), Ok(()));
    let first = plan(&restored_world, &Observed::default(), at(0));
    assert_eq!(kinds(&first), vec![TransitionKind::Initialize]);
    let mut created: Vec<(String, Bounds)> = first
        .actions()
        .map(|a| match a {
            Action::Create { cell, bounds, active } => {
                assert!(*active, "restored cells serve at once");
                assert_eq!(cell.incarnation, 0);
                (cell.id.to_string(), *bounds)
            }
            other => panic!("only creations expected, got {other:?}"),
        })
        .collect();
    created.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, Bounds)> = layout.iter().map(|c| (c.id.to_string(), c.bounds)).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(created, expected);

    // Once its cells exist the layout is ignored: the world scales from there,
    // and with the load gone the split halves merge back into c0.
    let mut sim = Sim::new(restored_world, Population::default());
    assert_eq!(sim.active_ids(), vec!["c0-0", "c0-1", "c1", "c2", "c3"]);
    sim.run(40);
    assert_eq!(sim.active_ids(), vec!["c0", "c1", "c2", "c3"]);
}
