//! The soak: worlds driven by `plan` through the staged executor, with every fault
//! of a real cluster injected, then left to settle. Over many seeds it checks the
//! planner's safety rules (docs/planner.md):
//! - no session is lost or held twice: a cell is retired only once what it holds
//!   has been handed over, or after it crashed; every session is held by a cell
//!   whose space contains it;
//! - the plan is the same for any order of the observed cells;
//! - once the faults stop, the world comes to rest (no transition stuck), its
//!   active cells tile it exactly and their count is within [minCells, maxCells];
//! - an evicted cell is drained, never replaced as failed or filled as missing,
//!   and never retired while no other active cell covers its space; with a grace
//!   period longer than a hand-over takes, no eviction costs a session or leaves
//!   a hole; with one too short, sessions are lost but nothing wedges.
//!
//! `FLEETFORGE_SOAK_SEEDS` and `FLEETFORGE_SOAK_STEPS` set its size (`cargo xtask
//! soak` runs a long one); a failing seed prints its plans and can be rerun alone
//! with `FLEETFORGE_SOAK_SEED` (`FLEETFORGE_SOAK_LOG` sets how many of its last
//! plans it prints).
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use std::time::Duration;

use common::staged::{Cluster, Faults};
use common::world;
use fleetforge_core::sim::SplitMix;
use fleetforge_core::{Bounds, World};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random world for seed `seed`: 1 to 3 dimensions, up to 6 initial cells, a
/// policy quick enough that a few hundred steps see many splits and merges.
fn random_world(seed: u64) -> World {
    let mut rng = SplitMix::new(seed ^ 0x5eed);
    let mut pick = |n: u64| rng.next_u64() % n;
    let dims = [1, 2, 2, 2, 3][pick(5) as usize];
    let bounds = match dims {
        1 => Bounds::line((-500.0, 500.0)),
        2 => Bounds::rect((0.0, 1000.0), (-200.0, 600.0)),
        _ => Bounds::cuboid((0.0, 100.0), (0.0, 100.0), (0.0, 50.0)),
    }
    .unwrap();
    let initial = 1 + pick(6) as u32;
    let mut w = world(initial);
    w.bounds = bounds;
    w.players_per_cell = 20 + pick(40) as u32;
    w.policy.min_cells = 1 + pick(u64::from(initial)) as u32;
    w.policy.max_cells = initial + pick(14) as u32;
    w.policy.stabilization_window = Duration::from_secs(pick(5));
    w.policy.cooldown = Duration::from_secs(pick(10));
    w.policy.max_transitions = 2 + pick(5) as u32;
    w.policy.rate_limit_period = Duration::from_secs(20);
    w.policy.transition_timeout = Duration::from_secs(10 + pick(20));
    w
}

/// Changes the world as its owner might: overrides, a new revision, a new
/// partition, players arriving in a crowd or leaving.
fn disturb(c: &mut Cluster) {
    let r = c.uniform();
    if r < 0.02 {
        if let Some(id) = c.random_active_id() {
            c.world.overrides.force_split.insert(id);
        }
    } else if r < 0.04 {
        if let Some(parent) = c.random_active_id().and_then(|id| id.parent()) {
            c.world.overrides.force_merge.insert(parent);
        }
    } else if r < 0.045 {
        c.world.revision = format!("r{}", c.pick(1000));
    } else if r < 0.048 {
        let p = &c.world.policy;
        let (lo, hi) = (p.min_cells, p.max_cells.min(8));
        let n = lo + c.pick((hi - lo + 1) as usize) as u32;
        c.world.initial_cells = n;
    } else if r < 0.10 {
        let w = c.world.bounds;
        let mut spot = w;
        for a in w.axes() {
            let at = w.min(a) + c.uniform() * w.extent(a) * 0.9;
            spot = spot
                .intersection(
                    &match a {
                        fleetforge_core::Axis::X => Bounds::new(
                            fleetforge_core::Range::new(at, at + w.extent(a) * 0.1),
                            w.range(fleetforge_core::Axis::Y),
                            w.range(fleetforge_core::Axis::Z),
                        ),
                        fleetforge_core::Axis::Y => Bounds::new(
                            w.range(fleetforge_core::Axis::X).unwrap(),
                            Some(fleetforge_core::Range::new(at, at + w.extent(a) * 0.1)),
                            w.range(fleetforge_core::Axis::Z),
                        ),
                        fleetforge_core::Axis::Z => Bounds::new(
                            w.range(fleetforge_core::Axis::X).unwrap(),
                            w.range(fleetforge_core::Axis::Y),
                            Some(fleetforge_core::Range::new(at, at + w.extent(a) * 0.1)),
                        ),
                    }
                    .unwrap(),
                )
                .unwrap_or(spot);
        }
        let n = 20 + c.pick(80);
        c.add_players(&spot, n);
    } else if r < 0.15 {
        c.remove_players(0.3);
    }
    assert!(c.world.validate().is_ok(), "the soak made an invalid world");
}

/// What a run asserts about evictions, besides the safety rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evictions {
    /// A grace period may end before the hand-over does (other faults delayed
    /// it without bound): the sessions are lost, as in a crash.
    Tolerated,
    /// Every drain can finish within the grace period: an eviction that costs a
    /// session or leaves its space uncovered is a failure.
    Lossless,
}

/// Runs one seed under `faults`; `Err` carries the story of a failure, `Ok` the
/// cluster at rest.
fn soak(seed: u64, steps: u64, faults: Faults, evictions: Evictions) -> Result<Cluster, String> {
    let world = random_world(seed);
    let players = (world.players_per_cell * world.initial_cells) as usize / 2;
    let mut c = Cluster::new(world, players, seed, faults);
    let fail = |c: &Cluster, what: String| {
        let tail: Vec<&String> = c
            .log
            .iter()
            .rev()
            .take(env("FLEETFORGE_SOAK_LOG", 40) as usize)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(format!(
            "seed {seed}: {what}\nworld: {:?}\nevictions: {}, drains: {}, sessions lost to them: {}, holes: {}\nlast plans:\n{}",
            c.world,
            c.evictions,
            c.drains,
            c.lost_to_evictions,
            c.holes_left_by_evictions,
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        ))
    };
    let lossless = |c: &Cluster| {
        evictions == Evictions::Lossless && (c.lost_to_evictions > 0 || c.holes_left_by_evictions > 0)
    };
    for _ in 0..steps {
        disturb(&mut c);
        c.step();
        if !c.violations.is_empty() {
            return fail(&c, c.violations.join("\n"));
        }
        if lossless(&c) {
            return fail(&c, "an eviction cost sessions or left a hole".into());
        }
    }
    // Calm: no more faults or changes; the world must come to rest.
    c.faults = Faults::NONE;
    let calm = 1500;
    let mut rested = false;
    for k in 0..calm {
        c.step();
        if !c.violations.is_empty() {
            return fail(&c, c.violations.join("\n"));
        }
        if lossless(&c) {
            return fail(&c, "an eviction cost sessions or left a hole".into());
        }
        if k % 5 == 4 && c.at_rest() {
            rested = true;
            break;
        }
    }
    if !rested {
        let cells: Vec<String> = c
            .procs
            .iter()
            .map(|p| format!("{} {:?} {:?} {}", p.cell, p.role, p.health, p.bounds))
            .collect();
        let p = fleetforge_core::plan(&c.world, &c.truth(), c.now);
        return fail(
            &c,
            format!(
                "no rest within {calm} calm steps; cells:\n{}\nsummary: {:?}\nwaiting: {}",
                cells.join("\n"),
                p.summary,
                c.seats
                    .iter()
                    .filter(|s| **s == common::staged::Seat::Waiting)
                    .count()
            ),
        );
    }
    let mut rng = SplitMix::new(seed);
    let points: Vec<[f64; 3]> = (0..64)
        .map(|_| [rng.next_f64(), rng.next_f64(), rng.next_f64()])
        .collect();
    let Err(e) = c.check_at_rest(&points) else {
        return Ok(c);
    };
    let cells: Vec<String> = c
        .procs
        .iter()
        .map(|p| {
            format!(
                "{} {:?} {:?} {} {:?}",
                p.cell, p.role, p.health, p.bounds, p.sessions
            )
        })
        .collect();
    let waiting: Vec<String> = c
        .seats
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == common::staged::Seat::Waiting)
        .take(10)
        .map(|(k, _)| format!("{k} at {:?}", c.positions[k]))
        .collect();
    fail(
        &c,
        format!(
            "{e}\ncells:\n{}\nwaiting: {}",
            cells.join("\n"),
            waiting.join(", ")
        ),
    )
}

/// What the seeds of one soak went through, summed.
#[derive(Debug, Default)]
struct Totals {
    seeds: u64,
    evictions: usize,
    drains: usize,
    lost_to_evictions: usize,
}

/// Runs the soak under `faults(seed)` over `FLEETFORGE_SOAK_SEEDS` seeds
/// (`default_seeds` unless set) from `FLEETFORGE_SOAK_FIRST_SEED`, or over the
/// one seed `FLEETFORGE_SOAK_SEED` names; panics with the first failure's story.
fn soak_seeds(default_seeds: u64, faults: impl Fn(u64) -> Faults, evictions: Evictions) -> Totals {
    let steps = env("FLEETFORGE_SOAK_STEPS", 200);
    let seeds = match std::env::var("FLEETFORGE_SOAK_SEED") {
        Ok(seed) => {
            let seed: u64 = seed.parse().unwrap();
            seed..seed + 1
        }
        Err(_) => {
            let first = env("FLEETFORGE_SOAK_FIRST_SEED", 0);
            first..first + env("FLEETFORGE_SOAK_SEEDS", default_seeds)
        }
    };
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for seed in seeds {
        match soak(seed, steps, faults(seed), evictions) {
            Ok(c) => {
                totals.seeds += 1;
                totals.evictions += c.evictions;
                totals.drains += c.drains;
                totals.lost_to_evictions += c.lost_to_evictions;
            }
            Err(e) => {
                failures.push(e);
                if failures.len() >= 10 {
                    break;
                }
            }
        }
    }
    let names: Vec<&str> = failures.iter().filter_map(|f| f.split(':').next()).collect();
    assert!(
        failures.is_empty(),
        "failing: {}; the first:\n{}",
        names.join(", "),
        failures[0]
    );
    println!("{totals:?}");
    totals
}

#[test]
fn no_session_is_lost_and_the_world_comes_to_rest_whatever_faults_strike() {
    let totals = soak_seeds(1000, |_| Faults::HARSH, Evictions::Tolerated);
    // Over enough seeds every fault strikes; a replay of one seed proves less.
    assert!(totals.seeds < 100 || totals.drains > 0, "{totals:?}");
}

/// Evictions with a grace period (60 s) far longer than a drain takes here (a
/// new cell ready within 8 s, then the hand-over, delayed a few steps at most by
/// executor stops, half-done exports and missed observations): not one session
/// is lost to them, and no evicted cell's space is left uncovered.
#[test]
fn no_session_is_lost_to_an_eviction_whose_grace_period_outlasts_the_hand_over() {
    let totals = soak_seeds(400, |_| Faults::EVICTIONS, Evictions::Lossless);
    assert!(totals.seeds < 100 || totals.drains > 0, "{totals:?}");
    assert_eq!(totals.lost_to_evictions, 0);
}

/// Evictions whose grace period (1 to 6 s) ends before the drain's hand-over,
/// or during it: the sessions the evicted cells still hold are lost, but the
/// replacements are activated from nothing and the world comes to rest.
#[test]
fn a_grace_period_too_short_loses_sessions_but_the_world_comes_to_rest() {
    let short = |seed: u64| Faults {
        grace: 1 + seed % 6,
        ..Faults::EVICTIONS
    };
    let totals = soak_seeds(400, short, Evictions::Tolerated);
    assert!(totals.seeds < 100 || totals.lost_to_evictions > 0, "{totals:?}");
}
