//! Property tests of the directory over layouts the planner produces, seen one
//! cluster write at a time: mid-split, mid-merge, mid-repartition, executors that
//! stop part-way, cells deleted under the planner's feet.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use std::collections::BTreeSet;

use common::{Cluster, Write, any_world, population, probes, visible};
use fleetforge_core::sim::{Population, SplitMix};
use fleetforge_core::{Axis, Bounds, CellRef, Point};
use fleetforge_gateway::{CellEntry, Directory, Epoch, LocateError, owns, precedence};
use proptest::prelude::*;

/// What one check of a state found wrong, if anything.
type Found = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The owner of `p` by brute force: every active cell of the world's dimensions,
/// most recently activated first, the first that owns `p`.
fn scan<'a>(world: &Bounds, by_precedence: &'a [CellEntry], p: &Point) -> Option<&'a CellEntry> {
    by_precedence.iter().find(|c| owns(world, &c.bounds, p))
}

fn refs(cells: &[CellEntry]) -> BTreeSet<CellRef> {
    cells.iter().map(|c| c.cell.clone()).collect()
}

/// Checks one state of the cluster; with `settled`, also that the world is
/// covered and owned once (a plan was carried out in full, nothing deleted).
fn check_state(cluster: &Cluster, random: &[[f64; 3]], seed: u64, settled: bool) -> Found {
    let world = cluster.world.bounds;
    let entries = cluster.entries();
    let d = Directory::build(world, entries.clone());

    // The same cluster state gives the same directory, whatever the order.
    let mut shuffled = entries.clone();
    let mut rng = SplitMix::new(seed);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let again = Directory::build(world, shuffled);
    ensure!(
        again.authoritative() == d.authoritative()
            && again.epoch() == d.epoch()
            && again.excluded() == d.excluded(),
        "the directory depends on the order of its input"
    );

    // Authoritative: exactly the active cells some of whose space in the world
    // no cell activated later covers (exact geometry, independent of the index).
    let mut active: Vec<CellEntry> = entries
        .iter()
        .filter(|c| c.active_since().is_some() && c.bounds.dims() == world.dims())
        .cloned()
        .collect();
    active.sort_by(precedence);
    let expected: BTreeSet<CellRef> = active
        .iter()
        .enumerate()
        .filter(|(k, c)| {
            let newer: Vec<Bounds> = active[..*k].iter().map(|n| n.bounds).collect();
            visible(&world, &c.bounds, &newer)
        })
        .map(|(_, c)| c.cell.clone())
        .collect();
    let got = refs(d.authoritative());
    ensure!(
        got == expected,
        "authoritative {got:?}, but the cells not wholly covered by newer ones are {expected:?}"
    );
    for c in d.authoritative() {
        ensure!(
            c.active_since().is_some(),
            "incoming cell {} is authoritative",
            c.cell
        );
    }

    let boxes: Vec<Bounds> = entries.iter().map(|c| c.bounds).collect();
    let authoritative = d.authoritative();
    for p in probes(&world, &boxes, random) {
        let want = scan(&world, &active, &p);
        let answer = d.locate(&p);
        match (answer, want) {
            (Ok(a), Some(w)) => {
                ensure!(
                    a.cell == w.cell,
                    "{p:?}: located to {}, the scan says {}",
                    a.cell,
                    w.cell
                );
                ensure!(
                    owns(&world, &a.bounds, &p),
                    "{p:?}: {} does not contain it",
                    a.cell
                );
                ensure!(a.active_since().is_some(), "{p:?}: answered incoming {}", a.cell);
                // The scan over the authoritative cells alone agrees too.
                let among = scan(&world, authoritative, &p).map(|c| &c.cell);
                ensure!(among == Some(&a.cell), "{p:?}: authoritative scan says {among:?}");
            }
            (Err(LocateError::Unowned), None) => {
                ensure!(!settled, "{p:?}: no owner after a plan was carried out in full");
            }
            (answer, want) => {
                return Err(format!(
                    "{p:?}: located {:?}, the scan says {:?}",
                    answer.map(|c| &c.cell),
                    want.map(|c| &c.cell)
                ));
            }
        }
        if settled {
            let owners = authoritative
                .iter()
                .filter(|c| owns(&world, &c.bounds, &p))
                .count();
            ensure!(owners == 1, "{p:?}: {owners} authoritative cells own it at rest");
        }
    }
    Ok(())
}

/// Follows the epoch across writes. With stamps: it never falls across a
/// planner's write and grows whenever the authoritative cells change. Without:
/// its highest mark never falls (the count can, when cells activated in one
/// millisecond cover one another; see the directory's docs). Writes the argument
/// does not cover (deletions by others, a new shape) start afresh. It starts from
/// an empty world.
struct EpochWatch {
    stamped: bool,
    last: Option<(Epoch, BTreeSet<CellRef>)>,
    changes: usize,
}

impl EpochWatch {
    fn new(stamped: bool) -> Self {
        Self {
            stamped,
            last: Some((Epoch::NONE, BTreeSet::new())),
            changes: 0,
        }
    }

    fn see(&mut self, cluster: &Cluster, write: Write) -> Found {
        let d = Directory::build(cluster.world.bounds, cluster.entries());
        let now = (d.epoch(), refs(d.authoritative()));
        if write == Write::Planner
            && let Some((epoch, set)) = &self.last
        {
            let context = || {
                format!(
                    "authoritative {set:?} became {:?}; cells {:?}",
                    now.1,
                    cluster
                        .entries()
                        .iter()
                        .map(|c| (c.cell.to_string(), c.role, c.stamped_epoch, c.bounds.to_string()))
                        .collect::<Vec<_>>()
                )
            };
            ensure!(
                now.0.mark >= epoch.mark,
                "the highest mark fell from {epoch:?} to {:?}; {}",
                now.0,
                context()
            );
            if now.1 != *set {
                self.changes += 1;
            }
            if self.stamped {
                ensure!(
                    now.0 >= *epoch,
                    "epoch fell from {epoch:?} to {:?}; {}",
                    now.0,
                    context()
                );
                ensure!(
                    now.1 == *set || now.0 > *epoch,
                    "the authoritative cells changed but the epoch stayed {epoch:?}; {}",
                    context()
                );
            }
        }
        self.last = Some(now);
        Ok(())
    }
}

/// One phase of a run: the population, how many ticks, and where executors stop.
struct Phase {
    population: Population,
    ticks: usize,
}

/// Runs `phases`, checking every state. `stops[k]` is how many writes the k-th
/// tick's executor makes before it stops (`None`: all). `deletions[k]` deletes a
/// cell before the k-th tick.
fn run(
    cluster: &mut Cluster,
    phases: Vec<Phase>,
    stops: &[Option<usize>],
    deletions: &[Option<usize>],
    reshape: Option<(Bounds, u32)>,
    random: &[[f64; 3]],
) -> Result<EpochWatch, String> {
    let mut watch = EpochWatch::new(cluster.stamping);
    let mut found: Found = Ok(());
    let mut tick = 0usize;
    let phase_count = phases.len();
    for (k, phase) in phases.into_iter().enumerate() {
        cluster.population = phase.population;
        if k + 1 == phase_count
            && let Some((bounds, initial)) = reshape
        {
            let mut visit = |c: &Cluster, w: Write| {
                if found.is_ok() {
                    found = watch
                        .see(c, w)
                        .and_then(|()| check_state(c, random, tick as u64, false));
                }
            };
            cluster.reshape(bounds, initial, &mut visit);
        }
        for _ in 0..phase.ticks {
            let stop = stops.get(tick % stops.len().max(1)).copied().flatten();
            let deletion = deletions.get(tick % deletions.len().max(1)).copied().flatten();
            let mut visit = |c: &Cluster, w: Write| {
                if found.is_ok() {
                    found = watch
                        .see(c, w)
                        .and_then(|()| check_state(c, random, tick as u64, false));
                }
            };
            if let Some(victim) = deletion {
                cluster.delete(victim, &mut visit);
            }
            cluster.tick(stop, &mut visit);
            found.clone()?;
            if stop.is_none() && deletions.iter().all(Option::is_none) {
                check_state(cluster, random, tick as u64, true)?;
            }
            tick += 1;
        }
    }
    found?;
    Ok(watch)
}

/// A hot phase, a cold one: splits, then merges back.
fn hot_then_cold(bounds: &Bounds, seed: u64, spots: usize, per_spot: usize) -> Vec<Phase> {
    vec![
        Phase {
            population: population(bounds, seed, spots, per_spot, 50),
            ticks: 25,
        },
        Phase {
            population: population(bounds, seed ^ 1, 0, 0, 5),
            ticks: 25,
        },
    ]
}

/// `bounds` stretched along x by `factor` from its lower edge.
fn stretched(bounds: &Bounds, factor: f64) -> Bounds {
    let x = (
        bounds.min(Axis::X),
        bounds.min(Axis::X) + bounds.extent(Axis::X) * factor,
    );
    let r = |a: Axis| (bounds.min(a), bounds.max(a));
    match bounds.dims() {
        1 => Bounds::line(x),
        2 => Bounds::rect(x, r(Axis::Y)),
        _ => Bounds::cuboid(x, r(Axis::Y), r(Axis::Z)),
    }
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For layouts the planner produces, complete and part-way: every probe point
    /// (random, on cell faces and corners, on the world's edges) is located to the
    /// cell a brute-force scan finds, which owns it and is authoritative; no
    /// incoming or wholly covered cell is ever authoritative; with operator
    /// stamps, the epoch never falls across a planner's write and grows whenever
    /// the authoritative cells change; without, its highest mark never falls.
    #[test]
    fn every_point_is_located_to_the_cell_a_scan_finds_and_the_epoch_grows(
        world in any_world(),
        seed in any::<u64>(),
        spots in 1usize..5,
        per_spot in 100usize..600,
        stops in prop::collection::vec(prop::option::weighted(0.3, 1usize..6), 1..8),
        stamping in any::<bool>(),
        reshape in prop::option::of((0.5f64..1.5, 1u32..=12)),
        random in prop::collection::vec(prop::array::uniform3(0.0f64..=1.0), 24),
    ) {
        let bounds = world.bounds;
        let phases = hot_then_cold(&bounds, seed, spots, per_spot);
        let reshape = reshape.map(|(f, n)| (stretched(&bounds, f), n));
        let mut cluster = Cluster::new(world, Population::default(), stamping);
        let watch = run(&mut cluster, phases, &stops, &[None], reshape, &random)
            .map_err(TestCaseError::fail)?;
        prop_assert!(watch.changes > 0);
    }

    /// With cells deleted under the planner (evictions, lost nodes): the
    /// directory still agrees with the scan everywhere, reports the holes as
    /// unowned, and the epoch still behaves across the planner's own writes.
    #[test]
    fn deleted_cells_leave_holes_and_the_directory_still_agrees_with_the_scan(
        world in any_world(),
        seed in any::<u64>(),
        per_spot in 100usize..600,
        stops in prop::collection::vec(prop::option::weighted(0.3, 1usize..6), 1..6),
        deletions in prop::collection::vec(prop::option::weighted(0.2, 0usize..64), 1..10),
        stamping in any::<bool>(),
        random in prop::collection::vec(prop::array::uniform3(0.0f64..=1.0), 24),
    ) {
        let phases = hot_then_cold(&world.bounds, seed, 3, per_spot);
        let mut cluster = Cluster::new(world, Population::default(), stamping);
        run(&mut cluster, phases, &stops, &deletions, None, &random).map_err(TestCaseError::fail)?;
    }
}

/// The scenario the epoch's argument is about, spelled out: a split completed
/// write by write in one millisecond, then its parent retired.
#[test]
fn a_split_seen_write_by_write_raises_the_epoch_at_each_activation() {
    let world = fleetforge_core::World {
        name: "arena".into(),
        bounds: Bounds::rect((0.0, 100.0), (0.0, 100.0)).unwrap(),
        initial_cells: 1,
        min_cell_extent: None,
        players_per_cell: 10,
        policy: fleetforge_core::ScalingPolicy {
            stabilization_window: std::time::Duration::ZERO,
            ..fleetforge_core::ScalingPolicy::default()
        },
        revision: "r1".into(),
        overrides: fleetforge_core::Overrides::default(),
    };
    let bounds = world.bounds;
    let players = population(&bounds, 7, 1, 50, 0);
    let mut cluster = Cluster::new(world, players, false);
    let mut epochs = Vec::new();
    let mut record = |c: &Cluster, _: Write| {
        let d = Directory::build(c.world.bounds, c.entries());
        epochs.push((d.epoch(), refs(d.authoritative()).len()));
    };
    for _ in 0..5 {
        cluster.tick(None, &mut record);
    }
    // Created active; then the split: two incoming children, two activations,
    // the parent retired.
    let split: Vec<(u32, usize)> = epochs.iter().skip(1).take(5).map(|(e, n)| (e.seq, *n)).collect();
    assert_eq!(split, vec![(1, 1), (1, 1), (1, 2), (2, 2), (2, 2)], "{epochs:?}");
    assert!(epochs.windows(2).all(|w| w[0].0 <= w[1].0));
}

/// A one-dimensional world that splits and merges back at every chance (no
/// window, no cooldown), with an executor that stops after three writes every
/// third tick: a cleanup then re-activates two siblings as owners and a merge
/// activates their parent in the same millisecond.
fn flapping_world(stamping: bool) -> Cluster {
    let world = fleetforge_core::World {
        name: "arena".into(),
        bounds: Bounds::line((0.0, 1.0)).unwrap(),
        initial_cells: 1,
        min_cell_extent: None,
        players_per_cell: 100,
        policy: fleetforge_core::ScalingPolicy {
            scale_up_threshold: 0.55,
            scale_down_threshold: 0.05,
            min_cells: 1,
            max_cells: 25,
            stabilization_window: std::time::Duration::ZERO,
            cooldown: std::time::Duration::ZERO,
            max_transitions: 6,
            rate_limit_period: std::time::Duration::from_secs(10),
            transition_timeout: std::time::Duration::from_secs(30),
            prediction: None,
        },
        revision: "r1".into(),
        overrides: fleetforge_core::Overrides::default(),
    };
    let players = population(&world.bounds, 1_581_976_095_128_473_199, 1, 100, 50);
    Cluster::new(world, players, stamping)
}

/// The case that needs stamps, found by the property test: without them the
/// epoch's count falls when the parent covers the siblings activated in its
/// millisecond; with them the epoch grows at every change of owner.
#[test]
fn activations_in_one_millisecond_that_cover_one_another_need_stamps() {
    let stops = [None, Some(3), None];
    let epochs = |stamping: bool| {
        let mut cluster = flapping_world(stamping);
        let mut seen: Vec<(Epoch, BTreeSet<CellRef>)> = Vec::new();
        for tick in 0..12 {
            let mut record = |c: &Cluster, _: Write| {
                let d = Directory::build(c.world.bounds, c.entries());
                seen.push((d.epoch(), refs(d.authoritative())));
            };
            cluster.tick(stops[tick % 3], &mut record);
        }
        seen
    };
    let plain = epochs(false);
    assert!(
        plain
            .windows(2)
            .any(|w| w[1].0 < w[0].0 && w[1].0.mark == w[0].0.mark),
        "expected the unstamped count to fall once: {plain:?}"
    );
    assert!(plain.windows(2).all(|w| w[1].0.mark >= w[0].0.mark));
    let stamped = epochs(true);
    for w in stamped.windows(2) {
        assert!(w[1].0 >= w[0].0, "{:?} then {:?}", w[0], w[1]);
        assert!(w[1].1 == w[0].1 || w[1].0 > w[0].0, "{:?} then {:?}", w[0], w[1]);
    }
}
