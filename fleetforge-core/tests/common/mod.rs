//! Shared fixtures for the planner's integration and property tests.
#![allow(dead_code, missing_docs)]

use std::time::Duration;

use fleetforge_core::sim::{Evictions, Population, apply};
use fleetforge_core::{
    Bounds, CellRef, Health, Observed, ObservedCell, Overrides, Plan, Role, ScalingPolicy, Timestamp, World,
    plan,
};

/// A 2-D world of `initial` cells over 1000 x 1000, 100 players per cell, with a
/// short window and cooldown so scenarios need few steps.
pub fn world(initial: u32) -> World {
    World {
        name: "arena".into(),
        bounds: Bounds::rect((0.0, 1000.0), (0.0, 1000.0)).unwrap(),
        initial_cells: initial,
        min_cell_extent: None,
        players_per_cell: 100,
        policy: ScalingPolicy {
            scale_up_threshold: 0.8,
            scale_down_threshold: 0.3,
            min_cells: 1,
            max_cells: 64,
            stabilization_window: Duration::from_secs(5),
            cooldown: Duration::from_secs(10),
            max_transitions: 10,
            rate_limit_period: Duration::from_secs(60),
            transition_timeout: Duration::from_secs(30),
            prediction: None,
        },
        revision: "r1".into(),
        overrides: Overrides::default(),
    }
}

/// Seconds as a timestamp.
pub fn at(secs: u64) -> Timestamp {
    Timestamp(secs * 1000)
}

/// A world simulated with the reference executor.
pub struct Sim {
    pub world: World,
    pub observed: Observed,
    pub population: Population,
    pub now: Timestamp,
    /// Every plan made, in order.
    pub plans: Vec<Plan>,
    /// Cells being shut down by someone else, gone when their grace period ends.
    pub evictions: Evictions,
}

impl Sim {
    /// A world whose initial cells were created at time 0.
    pub fn new(world: World, population: Population) -> Self {
        let mut s = Self {
            world,
            observed: Observed::default(),
            population,
            now: Timestamp(0),
            plans: Vec::new(),
            evictions: Evictions::default(),
        };
        s.step_plan();
        s
    }

    /// Plans at `now` and applies the plan; returns it.
    pub fn step_plan(&mut self) -> Plan {
        let p = plan(&self.world, &self.observed, self.now);
        apply(&mut self.world, &mut self.observed, &p, self.now);
        self.plans.push(p.clone());
        p
    }

    /// Advances one second and samples every active cell; returns the plan for
    /// that instant without applying it.
    pub fn sample_and_plan(&mut self) -> Plan {
        self.now = self.now + Duration::from_secs(1);
        self.population.sample(&self.world, &mut self.observed, self.now);
        plan(&self.world, &self.observed, self.now)
    }

    /// Advances one second (evicted cells whose grace period ended are gone),
    /// samples every active cell, plans and applies.
    pub fn tick(&mut self) -> Plan {
        self.now = self.now + Duration::from_secs(1);
        self.evictions.expire(&mut self.observed, self.now);
        self.population.sample(&self.world, &mut self.observed, self.now);
        self.step_plan()
    }

    /// Evicts the `k`-th cell (modulo their number) now, for `grace`; returns it,
    /// or `None` when it is failed or terminating already.
    pub fn evict(&mut self, k: usize, grace: Duration) -> Option<CellRef> {
        let n = self.observed.cells.len();
        let cell = self.observed.cells.get(k % n.max(1))?.cell.clone();
        self.evictions
            .evict(&mut self.observed, &cell, self.now, grace)
            .then_some(cell)
    }

    /// Marks the named cell terminating, as the operator observes a cell Pod
    /// being deleted while its process still answers.
    pub fn terminate(&mut self, name: &str) {
        let c = self
            .observed
            .cells
            .iter_mut()
            .find(|c| c.cell.to_string() == name)
            .unwrap_or_else(|| panic!("no cell {name}"));
        c.health = Health::Terminating;
    }

    /// Ticks `n` times; returns the plans that had work.
    pub fn run(&mut self, n: usize) -> Vec<Plan> {
        (0..n).map(|_| self.tick()).filter(|p| !p.is_empty()).collect()
    }

    /// Adds a cell process as the operator creates one for a transition: incoming,
    /// created now, with no samples.
    pub fn push_incoming(&mut self, cell: CellRef, bounds: Bounds, health: Health) {
        self.observed.cells.push(ObservedCell {
            cell,
            bounds,
            layout: self.world.layout_key(),
            revision: self.world.revision.clone(),
            role: Role::Incoming,
            health,
            created_at: self.now,
            samples: vec![],
        });
    }

    /// Ids of the active cells, sorted.
    pub fn active_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .observed
            .cells
            .iter()
            .filter(|c| c.is_active())
            .map(|c| c.cell.to_string())
            .collect();
        v.sort();
        v
    }
}

pub mod staged;
pub mod strategies;
