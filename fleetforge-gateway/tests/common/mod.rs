//! Worlds and layouts for the gateway's property tests: the planner's own
//! executor, run one cluster write at a time, so that the directory sees every
//! state the gateway can see, mid-transition ones included.
//!
//! The generators follow `fleetforge-core/tests/common/strategies.rs` (test
//! support is not shared between crates).
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use fleetforge_core::observed::prune_history;
use fleetforge_core::sim::{Population, SplitMix};
use fleetforge_core::{
    Action, Axis, Bounds, CellRef, Health, Observed, ObservedCell, Overrides, Plan, Point, Role,
    ScalingPolicy, Timestamp, World, plan,
};
use fleetforge_gateway::CellEntry;
use proptest::prelude::*;

/// A box of 1 to 3 dimensions with edges in [-1000, 1000].
pub fn any_bounds() -> impl Strategy<Value = Bounds> {
    (
        1usize..=3,
        prop::array::uniform3((-1000.0f64..0.0, 1.0f64..1000.0)),
    )
        .prop_map(|(dims, r)| {
            let (x, y, z) = ((r[0].0, r[0].1), (r[1].0, r[1].1), (r[2].0, r[2].1));
            match dims {
                1 => Bounds::line(x),
                2 => Bounds::rect(x, y),
                _ => Bounds::cuboid(x, y, z),
            }
            .unwrap()
        })
}

/// The point at fractions `u` of `b` along each axis.
pub fn point_in(b: &Bounds, u: [f64; 3]) -> Point {
    let c = |a: Axis| b.min(a) + b.extent(a) * u[a.index()];
    Point::new(c(Axis::X), c(Axis::Y), c(Axis::Z))
}

/// A world that scales quickly: short window, cooldown and rate-limit period.
pub fn any_world() -> impl Strategy<Value = World> {
    (
        any_bounds(),
        1u32..=12,
        (0.55f64..0.95, 0.05f64..0.5),
        (0u64..4, 0u64..8),
    )
        .prop_map(|(bounds, initial, (up, down), (window, cooldown))| World {
            name: "arena".into(),
            bounds,
            initial_cells: initial,
            min_cell_extent: None,
            players_per_cell: 100,
            policy: ScalingPolicy {
                scale_up_threshold: up,
                scale_down_threshold: down,
                min_cells: 1,
                max_cells: initial + 24,
                stabilization_window: Duration::from_secs(window),
                cooldown: Duration::from_secs(cooldown),
                max_transitions: 6,
                rate_limit_period: Duration::from_secs(10),
                transition_timeout: Duration::from_secs(30),
                prediction: None,
            },
            revision: "r1".into(),
            overrides: Overrides::default(),
        })
}

/// Players in a few hot spots plus a uniform background, all inside `bounds`.
pub fn population(
    bounds: &Bounds,
    seed: u64,
    spots: usize,
    per_spot: usize,
    background: usize,
) -> Population {
    let mut rng = SplitMix::new(seed);
    let mut p = Population::uniform(bounds, background, &mut rng);
    for _ in 0..spots {
        let c = point_in(bounds, [rng.next_f64(), rng.next_f64(), rng.next_f64()]);
        let edge = |a: Axis| {
            let lo = c.get(a).min(bounds.max(a) - bounds.extent(a) * 0.05);
            (lo, lo + bounds.extent(a) * 0.05)
        };
        let area = match bounds.dims() {
            1 => Bounds::line(edge(Axis::X)),
            2 => Bounds::rect(edge(Axis::X), edge(Axis::Y)),
            _ => Bounds::cuboid(edge(Axis::X), edge(Axis::Y), edge(Axis::Z)),
        }
        .unwrap();
        p.add_uniform(&area, per_spot, &mut rng);
    }
    p
}

/// The address every simulated cell has.
pub const ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

/// One visible change of the cluster, as the gateway's watches would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A cell Pod was created, or its role turned active.
    Planner,
    /// Something the argument for the epoch does not cover: a cell deleted by
    /// someone other than the planner, or the world's bounds changed.
    Outside,
}

/// A world run by the planner, whose plans are carried out one write at a time
/// (as the operator does: each Pod created, activated or deleted on its own).
pub struct Cluster {
    pub world: World,
    pub observed: Observed,
    pub population: Population,
    pub now: Timestamp,
    /// Whether activations are stamped with an epoch, as an operator would:
    /// `max(now, highest mark in the world + 1)`.
    pub stamping: bool,
    pub stamps: BTreeMap<CellRef, u64>,
}

impl Cluster {
    pub fn new(world: World, population: Population, stamping: bool) -> Self {
        Self {
            world,
            observed: Observed::default(),
            population,
            // Real activation times are milliseconds since 1970.
            now: Timestamp(1_700_000_000_000),
            stamping,
            stamps: BTreeMap::new(),
        }
    }

    /// The directory's view of the cells.
    pub fn entries(&self) -> Vec<CellEntry> {
        self.observed
            .cells
            .iter()
            .map(|c| CellEntry {
                cell: c.cell.clone(),
                bounds: c.bounds,
                role: c.role,
                ready: c.health == Health::Ready,
                terminating: false,
                address: Some(ADDRESS),
                stamped_epoch: self.stamps.get(&c.cell).copied(),
            })
            .collect()
    }

    fn activate(&mut self, cell: &CellRef) {
        let now = self.now;
        let highest = self
            .entries()
            .iter()
            .filter_map(CellEntry::mark)
            .max()
            .unwrap_or(0);
        if let Some(c) = self.observed.cells.iter_mut().find(|c| &c.cell == cell) {
            c.role = Role::Active { since: now };
            if self.stamping {
                self.stamps.insert(cell.clone(), now.as_millis().max(highest + 1));
            }
        }
    }

    /// Advances a second, samples the load and plans; then carries out the
    /// plan's first `limit` writes (all of them when `None`), calling `visit`
    /// after each one. An executor that stops part-way leaves the rest to the
    /// next plan, as the operator's does. Returns the plan.
    pub fn tick(&mut self, limit: Option<usize>, visit: &mut impl FnMut(&Self, Write)) -> Plan {
        self.now = self.now + Duration::from_secs(1);
        self.population.sample(&self.world, &mut self.observed, self.now);
        let p = plan(&self.world, &self.observed, self.now);
        let mut left = limit.unwrap_or(usize::MAX);
        let layout = self.world.layout_key();
        'actions: for action in p.actions() {
            match action {
                Action::Create { cell, bounds, active } => {
                    if left == 0 {
                        break 'actions;
                    }
                    left -= 1;
                    self.observed.cells.push(ObservedCell {
                        cell: cell.clone(),
                        bounds: *bounds,
                        layout,
                        revision: self.world.revision.clone(),
                        role: Role::Incoming,
                        health: Health::Ready,
                        created_at: self.now,
                        samples: Vec::new(),
                    });
                    if *active {
                        self.activate(cell);
                    }
                    visit(self, Write::Planner);
                }
                Action::HandOver { to, .. } => {
                    for t in to {
                        if left == 0 {
                            break 'actions;
                        }
                        left -= 1;
                        self.activate(&t.cell);
                        visit(self, Write::Planner);
                    }
                }
                Action::Retire { cell } => {
                    if left == 0 {
                        break 'actions;
                    }
                    left -= 1;
                    self.observed.cells.retain(|c| &c.cell != cell);
                    self.stamps.remove(cell);
                    visit(self, Write::Planner);
                }
            }
        }
        let mut history = self.observed.history.clone();
        history.extend(p.started.iter().cloned());
        self.observed.history = prune_history(&self.world, &history, self.now);
        p
    }

    /// Deletes the `k`-th cell process (modulo their number), as an eviction or a
    /// lost node would.
    pub fn delete(&mut self, k: usize, visit: &mut impl FnMut(&Self, Write)) {
        if self.observed.cells.is_empty() {
            return;
        }
        let gone = self.observed.cells.remove(k % self.observed.cells.len());
        self.stamps.remove(&gone.cell);
        visit(self, Write::Outside);
    }

    /// Changes the world's bounds or initial cells (a repartition follows).
    pub fn reshape(&mut self, bounds: Bounds, initial: u32, visit: &mut impl FnMut(&Self, Write)) {
        self.world.bounds = bounds;
        self.world.initial_cells = initial;
        self.world.policy.max_cells = self.world.policy.max_cells.max(initial + 24);
        visit(self, Write::Outside);
    }
}

/// What is left of `r` once `h` is taken out of it, as disjoint boxes.
pub fn subtract(r: Bounds, h: &Bounds) -> Vec<Bounds> {
    if !r.overlaps(h) {
        return vec![r];
    }
    let mut out = Vec::new();
    let mut rest = r;
    for a in r.axes() {
        if h.min(a) > rest.min(a) {
            let (lo, hi) = rest.split(a, h.min(a)).unwrap();
            out.push(lo);
            rest = hi;
        }
        if h.max(a) < rest.max(a) {
            let (lo, hi) = rest.split(a, h.max(a)).unwrap();
            out.push(hi);
            rest = lo;
        }
    }
    out
}

/// Whether any of `b`'s space inside `world` is left once every box of `over`
/// is taken out of it: exact, by cutting boxes, with no sampling.
pub fn visible(world: &Bounds, b: &Bounds, over: &[Bounds]) -> bool {
    let Some(inside) = b.intersection(world) else {
        return false;
    };
    let mut left = vec![inside];
    for h in over {
        left = left.into_iter().flat_map(|r| subtract(r, h)).collect();
        if left.is_empty() {
            return false;
        }
    }
    true
}

/// Points worth probing in `world`: `random` ones, its corners, and the corners
/// and face centres of the boxes in `boxes` (clamped into the world), where the
/// half-open rule decides.
pub fn probes(world: &Bounds, boxes: &[Bounds], random: &[[f64; 3]]) -> Vec<Point> {
    let mut out: Vec<Point> = random.iter().map(|u| point_in(world, *u)).collect();
    let mut around = |b: &Bounds| {
        let choices = |a: Axis| {
            if a.index() < b.dims() {
                let (lo, hi) = (b.min(a), b.max(a));
                vec![lo, (lo + hi) / 2.0, hi]
                    .into_iter()
                    .map(|v| v.clamp(world.min(a), world.max(a)))
                    .collect()
            } else {
                vec![0.0]
            }
        };
        for x in choices(Axis::X) {
            for y in choices(Axis::Y) {
                for z in choices(Axis::Z) {
                    out.push(Point::new(x, y, z));
                }
            }
        }
    };
    around(world);
    for b in boxes.iter().filter(|b| b.dims() == world.dims()) {
        around(b);
    }
    out
}
