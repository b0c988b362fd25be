//! Scenarios for drains: cells that someone else is shutting down (a Pod deleted
//! by hand, evicted, drained off its node) are observed `Terminating` while they
//! still answer, and hand their sessions to a new incarnation before they go. A
//! terminating cell is neither lost capacity nor a fresh failure.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use std::time::Duration;

use common::{Sim, world};
use fleetforge_core::pacing::is_busy;
use fleetforge_core::sim::{Population, SplitMix, apply};
use fleetforge_core::{
    Action, Bounds, CellId, CellRef, Health, OverrideRequest, OverrideResult, Phase, Plan, RecordKind,
    Target, TransitionKind, TransitionRecord, plan,
};

/// The 4-cell world of `common::world` with `players` spread uniformly (placed by
/// `seed`), run for `seconds` through the reference executor.
fn running(players: usize, seed: u64, seconds: usize) -> Sim {
    let w = world(4);
    let population = Population::uniform(&w.bounds, players, &mut SplitMix::new(seed));
    let mut sim = Sim::new(w, population);
    sim.run(seconds);
    sim
}

fn kinds(p: &Plan) -> Vec<TransitionKind> {
    p.transitions.iter().map(|t| t.kind).collect()
}

fn cell_ref(name: &str) -> CellRef {
    let (id, incarnation) = name.split_once('#').unwrap_or((name, "0"));
    CellRef {
        id: id.parse().unwrap(),
        incarnation: incarnation.parse().unwrap(),
    }
}

fn bounds_of(sim: &Sim, name: &str) -> Bounds {
    sim.observed
        .cells
        .iter()
        .find(|c| c.cell.to_string() == name)
        .unwrap_or_else(|| panic!("no cell {name}"))
        .bounds
}

/// A drain of `old` into `new` over `bounds`, as first planned.
fn drain_actions(old: &str, new: &str, bounds: Bounds) -> Vec<Action> {
    vec![
        Action::Create {
            cell: cell_ref(new),
            bounds,
            active: false,
        },
        Action::HandOver {
            from: vec![cell_ref(old)],
            to: vec![Target {
                cell: cell_ref(new),
                bounds,
            }],
        },
        Action::Retire { cell: cell_ref(old) },
    ]
}

/// Creates the cells `p` creates, as the operator does, with `health`, and stops.
fn create_only(sim: &mut Sim, p: &Plan, health: Health) {
    for a in p.actions() {
        if let Action::Create { cell, bounds, .. } = a {
            sim.push_incoming(cell.clone(), *bounds, health);
        }
    }
}

#[test]
fn a_terminating_cell_is_drained_into_its_next_incarnation_and_keeps_its_space_meanwhile() {
    let mut sim = running(80, 1, 3);
    let players = plan(&sim.world, &sim.observed, sim.now).summary.players;
    let c1 = bounds_of(&sim, "c1");
    sim.terminate("c1");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Drain]);
    assert!(!p.transitions[0].continues);
    assert_eq!(p.transitions[0].actions, drain_actions("c1", "c1#1", c1));
    // Not a failure, not lost capacity, not a split or merge for the rate limit.
    assert_eq!(p.summary.phase, Phase::Scaling);
    assert!(p.summary.problems.is_empty(), "{:?}", p.summary.problems);
    assert_eq!(p.summary.players, players, "its players still count");
    assert!(p.started.is_empty());
    assert!(is_busy(&sim.observed, &p, false));

    // The new incarnation is starting: the drain waits for it, and c1 keeps its
    // space: no fill, no replacement, up to the transition timeout.
    create_only(&mut sim, &p, Health::Starting);
    for later in [1, 10, 29] {
        let p = plan(&sim.world, &sim.observed, sim.now + Duration::from_secs(later));
        assert_eq!(kinds(&p), vec![TransitionKind::Drain]);
        assert!(p.transitions[0].continues);
        assert_eq!(p.transitions[0].actions, drain_actions("c1", "c1#1", c1)[1..]);
        assert!(p.summary.problems.is_empty(), "{:?}", p.summary.problems);
    }

    // Ready: the sessions move, c1 retires, and there is nothing left to do.
    sim.observed.cells.last_mut().unwrap().health = Health::Ready;
    sim.step_plan();
    assert_eq!(sim.active_ids(), vec!["c0", "c1#1", "c2", "c3"]);
    assert_eq!(bounds_of(&sim, "c1#1"), c1);
    assert!(sim.step_plan().is_empty());
}

#[test]
fn a_drain_whose_new_cell_never_becomes_ready_starts_over_with_another() {
    let mut sim = running(80, 2, 3);
    let c2 = bounds_of(&sim, "c2");
    sim.terminate("c2");
    let p = plan(&sim.world, &sim.observed, sim.now);
    create_only(&mut sim, &p, Health::Starting);
    let late = plan(&sim.world, &sim.observed, sim.now + Duration::from_secs(31));
    assert_eq!(
        kinds(&late),
        vec![TransitionKind::RollBack, TransitionKind::Drain]
    );
    assert_eq!(late.transitions[0].undoes, Some(TransitionKind::Drain));
    assert_eq!(
        late.transitions[0].actions,
        vec![Action::Retire {
            cell: cell_ref("c2#1")
        }]
    );
    assert_eq!(late.transitions[1].actions, drain_actions("c2", "c2#2", c2));
}

#[test]
fn several_cells_drain_at_once_whatever_the_rate_limit() {
    let mut sim = running(80, 3, 3);
    sim.world.policy.max_transitions = 1;
    sim.observed.history.push(TransitionRecord {
        at: sim.now,
        kind: RecordKind::Split,
        cells: vec![CellId::root(9)],
    });
    for name in ["c0", "c2", "c3"] {
        sim.terminate(name);
    }
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Drain; 3]);
    // While those hand over, the last cell of the node goes too.
    create_only(&mut sim, &p, Health::Starting);
    sim.terminate("c1");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Drain; 4]);
    assert_eq!(
        p.transitions.iter().filter(|t| !t.continues).count(),
        1,
        "{:#?}",
        p.transitions
    );
    for c in &mut sim.observed.cells {
        if c.health == Health::Starting {
            c.health = Health::Ready;
        }
    }
    sim.step_plan();
    assert_eq!(sim.active_ids(), vec!["c0#1", "c1#1", "c2#1", "c3#1"]);
}

#[test]
fn a_terminating_cell_is_never_split_nor_rolled_out_and_holds_roll_outs_back() {
    // 95 players in c0: hot enough to split once the window has passed.
    let mut rng = SplitMix::new(7);
    let mut w = world(4);
    w.revision = "r1".into();
    let pop = Population::uniform(&Bounds::rect((0.0, 500.0), (0.0, 500.0)).unwrap(), 95, &mut rng);
    let mut sim = Sim::new(w, pop);
    sim.run(3);
    sim.terminate("c0");
    sim.world.overrides.force_split.insert(CellId::root(0));
    sim.world.revision = "r2".into();
    for _ in 0..8 {
        let p = sim.sample_and_plan();
        assert_eq!(kinds(&p), vec![TransitionKind::Drain], "{:#?}", p.transitions);
        assert!(matches!(&p.overrides[0].result, OverrideResult::Deferred(_)));
    }
    // Once drained, its successor runs the new revision; the roll-out of the
    // others goes on, and the hot successor may split.
    let p = sim.tick();
    assert_eq!(kinds(&p), vec![TransitionKind::Drain]);
    assert_eq!(sim.active_ids(), vec!["c0#1", "c1", "c2", "c3"]);
    let next = sim.tick();
    assert!(next.transitions.iter().any(|t| t.kind == TransitionKind::Rollout));
    assert_eq!(
        next.overrides[0],
        fleetforge_core::OverrideOutcome {
            request: OverrideRequest::Split(CellId::root(0)),
            result: OverrideResult::Started
        }
    );
}

#[test]
fn a_terminating_sibling_is_never_merged() {
    let mut sim = running(0, 4, 1);
    sim.world.overrides.force_split.insert(CellId::root(0));
    sim.tick();
    assert!(sim.active_ids().contains(&"c0-1".to_owned()));
    sim.terminate("c0-1");
    sim.world.overrides.force_merge.insert(CellId::root(0));
    // Cold siblings, past the cooldown: without the drain they would merge.
    for _ in 0..15 {
        let p = sim.sample_and_plan();
        assert_eq!(kinds(&p), vec![TransitionKind::Drain], "{:#?}", p.transitions);
        assert!(matches!(&p.overrides[0].result, OverrideResult::Deferred(_)));
    }
}

#[test]
fn a_new_cell_being_shut_down_rolls_its_split_back_at_once() {
    let mut sim = running(80, 5, 3);
    sim.world.overrides.force_split.insert(CellId::root(0));
    let p = sim.sample_and_plan();
    create_only(&mut sim, &p, Health::Ready);
    sim.terminate("c0-1");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::RollBack; 2]);
    assert!(
        p.transitions
            .iter()
            .all(|t| t.undoes == Some(TransitionKind::Split) && t.reason.contains("c0-1 is being shut down")),
        "{:#?}",
        p.transitions
    );
    // Each child hands back whatever it got (an export may have begun) to c0,
    // which keeps serving; nothing is handed to the terminating child.
    for t in &p.transitions {
        match t.actions.as_slice() {
            [Action::HandOver { to, .. }, Action::Retire { .. }] => {
                assert_eq!(to.len(), 1);
                assert_eq!(to[0].cell.to_string(), "c0");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_terminating_source_finishes_its_split_or_roll_out_without_another_drain() {
    let mut sim = running(80, 6, 3);
    sim.world.overrides.force_split.insert(CellId::root(0));
    let p = sim.sample_and_plan();
    create_only(&mut sim, &p, Health::Starting);
    sim.terminate("c0");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Split]);
    assert!(p.transitions[0].continues);
    assert!(matches!(
        &p.transitions[0].actions[0],
        Action::HandOver { from, to } if from == &vec![cell_ref("c0")] && to.len() == 2
    ));

    // A roll-out whose source is being shut down goes on as a drain.
    let mut sim = running(80, 6, 3);
    sim.world.revision = "r2".into();
    let p = sim.sample_and_plan();
    assert_eq!(kinds(&p), vec![TransitionKind::Rollout]);
    create_only(&mut sim, &p, Health::Starting);
    sim.terminate("c0");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Drain]);
    assert!(p.transitions[0].continues);
    let c0 = bounds_of(&sim, "c0");
    assert_eq!(p.transitions[0].actions, drain_actions("c0", "c0#1", c0)[1..]);
}

#[test]
fn a_drained_cell_gone_before_its_hand_over_leaves_its_successor_to_serve() {
    let mut sim = running(80, 7, 3);
    sim.terminate("c3");
    let p = plan(&sim.world, &sim.observed, sim.now);
    create_only(&mut sim, &p, Health::Starting);
    // The grace period ends: c3 and what it held are gone.
    sim.observed.cells.retain(|c| c.cell.to_string() != "c3");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Fill]);
    assert_eq!(
        p.transitions[0].actions,
        vec![Action::HandOver {
            from: vec![],
            to: vec![Target {
                cell: cell_ref("c3#1"),
                bounds: bounds_of(&sim, "c3#1")
            }]
        }]
    );
    // Should it never start, it is replaced by a cell that serves at once.
    let late = plan(&sim.world, &sim.observed, sim.now + Duration::from_secs(31));
    assert_eq!(kinds(&late), vec![TransitionKind::RollBack, TransitionKind::Fill]);
    assert!(matches!(
        &late.transitions[1].actions[..],
        [Action::Create { cell, active: true, .. }] if cell.to_string() == "c3#2"
    ));
    // It starts: it is activated, and the world is at rest.
    sim.observed.cells.last_mut().unwrap().health = Health::Ready;
    sim.step_plan();
    assert_eq!(sim.active_ids(), vec!["c0", "c1", "c2", "c3#1"]);
    assert!(sim.step_plan().is_empty());
}

#[test]
fn a_drain_whose_successor_is_shut_down_too_starts_over_and_loses_nothing() {
    let mut sim = running(80, 8, 3);
    sim.terminate("c1");
    let p = plan(&sim.world, &sim.observed, sim.now);
    create_only(&mut sim, &p, Health::Ready);
    sim.terminate("c1#1");
    let p = plan(&sim.world, &sim.observed, sim.now);
    // c1#1 may hold part of c1's sessions (an export can stop half-way): it
    // waits for a cell to hand them to, and c1 drains into c1#2 meanwhile.
    let c1 = bounds_of(&sim, "c1");
    let drain = p
        .transitions
        .iter()
        .find(|t| t.kind == TransitionKind::Drain)
        .unwrap();
    assert_eq!(drain.actions, drain_actions("c1", "c1#2", c1));
    assert!(
        p.actions()
            .all(|a| !matches!(a, Action::Retire { cell } if cell.to_string() == "c1#1")),
        "{:#?}",
        p.transitions
    );
    apply(&mut sim.world, &mut sim.observed, &p, sim.now);
    // Now c1#1 hands whatever it holds to c1#2 and retires.
    let p = plan(&sim.world, &sim.observed, sim.now);
    match p.actions().collect::<Vec<_>>().as_slice() {
        [Action::HandOver { from, to }, Action::Retire { cell }] => {
            assert_eq!(from, &vec![cell_ref("c1#1")]);
            assert_eq!(to[0].cell, cell_ref("c1#2"));
            assert_eq!(cell, &cell_ref("c1#1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    apply(&mut sim.world, &mut sim.observed, &p, sim.now);
    assert_eq!(sim.active_ids(), vec!["c0", "c1#2", "c2", "c3"]);
    assert!(plan(&sim.world, &sim.observed, sim.now).is_empty());
}

#[test]
fn a_terminating_cell_left_active_after_its_hand_over_is_retired_not_drained_again() {
    let mut sim = running(80, 9, 3);
    sim.terminate("c2");
    let p = plan(&sim.world, &sim.observed, sim.now);
    // The operator handed over, then stopped before retiring c2.
    let mut cut = p.clone();
    cut.transitions[0].actions.truncate(2);
    apply(&mut sim.world, &mut sim.observed, &cut, sim.now);
    assert_eq!(sim.active_ids(), vec!["c0", "c1", "c2", "c2#1", "c3"]);
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Cleanup]);
    match p.transitions[0].actions.as_slice() {
        [Action::HandOver { from, to }, Action::Retire { cell }] => {
            assert_eq!(from, &vec![cell_ref("c2")]);
            assert_eq!(to[0].cell, cell_ref("c2#1"));
            assert_eq!(cell, &cell_ref("c2"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_terminating_new_root_of_a_repartition_is_replaced_and_hands_over() {
    let mut sim = running(80, 10, 3);
    sim.world.initial_cells = 2;
    let p = sim.sample_and_plan();
    assert_eq!(kinds(&p), vec![TransitionKind::Repartition]);
    create_only(&mut sim, &p, Health::Ready);
    sim.terminate("c1#1");
    let p = plan(&sim.world, &sim.observed, sim.now);
    assert_eq!(kinds(&p), vec![TransitionKind::Repartition]);
    let actions = &p.transitions[0].actions;
    assert!(actions.contains(&Action::Create {
        cell: cell_ref("c1#2"),
        bounds: bounds_of(&sim, "c1#1"),
        active: false
    }));
    let Some(Action::HandOver { from, to }) = actions.iter().find(|a| matches!(a, Action::HandOver { .. }))
    else {
        panic!("no hand-over in {actions:#?}");
    };
    assert!(from.contains(&cell_ref("c1#1")));
    let to: Vec<String> = to.iter().map(|t| t.cell.to_string()).collect();
    assert_eq!(to, vec!["c0#1", "c1#2"]);
}

#[test]
fn terminating_and_drain_have_stable_names() {
    assert_eq!(
        serde_json::to_string(&Health::Terminating).unwrap(),
        r#""terminating""#
    );
    assert_eq!(
        serde_json::from_str::<Health>(r#""terminating""#).unwrap(),
        Health::Terminating
    );
    assert_eq!(
        serde_json::to_string(&TransitionKind::Drain).unwrap(),
        r#""drain""#
    );
    assert_eq!(TransitionKind::Drain.to_string(), "Drain");
}
