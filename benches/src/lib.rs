//! Fixtures for the planner benchmarks: fleets of worlds in a steady state, or
//! with a share of their cells over the scale-up threshold.

use std::time::Duration;

use fleetforge_core::sim::apply;
use fleetforge_core::{
    Bounds, LoadSample, Observed, Overrides, PositionHistogram, ScalingPolicy, Timestamp, World, plan,
};

/// Seconds between the load samples of the fixtures.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The instant every fixture is planned at.
pub const NOW: Timestamp = Timestamp(600_000);

/// One world and what is observed of it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The world.
    pub world: World,
    /// Its cells, each with a window of samples.
    pub observed: Observed,
}

/// A 2-D world named `world-<index>` with `cells` initial cells and the default
/// policy (a 30 s window), every cell active and ready.
pub fn world(index: usize, cells: u32) -> World {
    World {
        name: format!("world-{index}"),
        bounds: Bounds::rect((0.0, 10_000.0), (0.0, 10_000.0)).expect("valid bounds"),
        initial_cells: cells,
        min_cell_extent: None,
        players_per_cell: 100,
        policy: ScalingPolicy {
            max_cells: cells * 4,
            ..ScalingPolicy::default()
        },
        revision: "bench".into(),
        overrides: Overrides::default(),
    }
}

/// `worlds` worlds of `cells` cells each, observed at [`NOW`] with a full window of
/// samples per cell. Half-loaded cells (occupancy 0.5: neither hot nor cold) make a
/// steady state; `hot_per_world` cells of each world are at 0.95, so each of those
/// crosses the scale-up threshold and the plan splits it.
pub fn fleet(worlds: usize, cells: u32, hot_per_world: usize) -> Vec<Case> {
    (0..worlds)
        .map(|i| {
            let mut world = world(i, cells);
            let mut observed = Observed::default();
            let created = NOW - Duration::from_secs(3600);
            let init = plan(&world, &observed, created);
            apply(&mut world, &mut observed, &init, created);
            let window = world.policy.stabilization_window;
            let samples = (window.as_secs() / SAMPLE_INTERVAL.as_secs() + 1) as u32;
            for (k, c) in observed.cells.iter_mut().enumerate() {
                let players = if k < hot_per_world { 95 } else { 50 };
                c.samples = (0..samples)
                    .map(|s| LoadSample {
                        at: NOW - SAMPLE_INTERVAL * (samples - 1 - s),
                        players,
                        histogram: Some(PositionHistogram {
                            x: vec![players / 8; 8],
                            y: vec![players / 8; 8],
                            z: Vec::new(),
                        }),
                    })
                    .collect();
            }
            Case { world, observed }
        })
        .collect()
}

/// Plans every case once; returns how many transitions were planned, so the work
/// cannot be optimised away and the fixture's intent can be checked.
pub fn plan_all(cases: &[Case]) -> usize {
    cases
        .iter()
        .map(|c| plan(&c.world, &c.observed, NOW).transitions.len())
        .sum()
}
