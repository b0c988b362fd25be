//! A reference executor and a synthetic player population, for testing the
//! planner, benchmarking it, and what-if runs of a policy without a cluster.
//!
//! [`apply`] carries a plan out the way the operator does when every cell is
//! healthy, instantly: new cells are ready at once and hand-overs succeed.
//! [`Evictions`] adds the one disruption a healthy cluster produces by itself:
//! cells deleted by someone else, gone once their grace period ends.

use std::time::Duration;

use crate::cell::CellRef;
use crate::geometry::{Bounds, Point};
use crate::handoff::target_for;
use crate::load::{LoadSample, PositionHistogram};
use crate::observed::{Health, Observed, ObservedCell, Role, prune_history};
use crate::plan::OverrideRequest;
use crate::plan::{Action, OverrideResult, Plan};
use crate::time::Timestamp;
use crate::world::World;

/// Bins per axis in the histograms [`Population::sample`] reports.
pub const HISTOGRAM_BINS: usize = 8;

/// Carries `plan` out on `observed` at `now`: creates cells (ready at once), hands
/// over (targets become active), retires cells, records the transitions started in
/// the history, and drops the overrides the plan acted on or rejected from `world`,
/// as the operator removes them from the world's annotations.
pub fn apply(world: &mut World, observed: &mut Observed, plan: &Plan, now: Timestamp) {
    let layout = world.layout_key();
    for action in plan.actions() {
        match action {
            Action::Create { cell, bounds, active } => observed.cells.push(ObservedCell {
                cell: cell.clone(),
                bounds: *bounds,
                layout,
                revision: world.revision.clone(),
                role: if *active {
                    Role::Active { since: now }
                } else {
                    Role::Incoming
                },
                health: Health::Ready,
                created_at: now,
                samples: Vec::new(),
            }),
            Action::HandOver { to, .. } => {
                for t in to {
                    if let Some(c) = observed.cells.iter_mut().find(|c| c.cell == t.cell) {
                        c.role = Role::Active { since: now };
                    }
                }
            }
            Action::Retire { cell } => observed.cells.retain(|c| &c.cell != cell),
        }
    }
    let mut history = observed.history.clone();
    history.extend(plan.started.iter().cloned());
    observed.history = prune_history(world, &history, now);
    for o in &plan.overrides {
        if matches!(o.result, OverrideResult::Started | OverrideResult::Rejected(_)) {
            match &o.request {
                OverrideRequest::Split(id) => world.overrides.force_split.remove(id),
                OverrideRequest::Merge(id) => world.overrides.force_merge.remove(id),
            };
        }
    }
}

/// Cells being shut down by someone else (deleted by hand, evicted, drained off
/// their node), in simulated time: an evicted cell turns [`Health::Terminating`]
/// at once and vanishes from what is observed when its grace period ends,
/// whatever it still holds, unless a plan retired it before.
#[derive(Debug, Clone, Default)]
pub struct Evictions {
    /// Each cell being shut down, with the end of its grace period.
    pub pending: Vec<(CellRef, Timestamp)>,
}

impl Evictions {
    /// Starts shutting `cell` down at `now`, for `grace`. Returns whether it was
    /// a live cell to evict: observed, neither failed nor terminating already.
    pub fn evict(
        &mut self,
        observed: &mut Observed,
        cell: &CellRef,
        now: Timestamp,
        grace: Duration,
    ) -> bool {
        let Some(c) = observed.cells.iter_mut().find(|c| &c.cell == cell) else {
            return false;
        };
        if matches!(c.health, Health::Failed | Health::Terminating) {
            return false;
        }
        c.health = Health::Terminating;
        self.pending.push((cell.clone(), now + grace));
        true
    }

    /// Removes from `observed` every evicted cell whose grace period has ended
    /// by `now`, and forgets those a plan retired already. Returns the cells
    /// removed, in the order they were evicted: whatever they held is lost.
    pub fn expire(&mut self, observed: &mut Observed, now: Timestamp) -> Vec<CellRef> {
        self.pending
            .retain(|(cell, _)| observed.cells.iter().any(|c| &c.cell == cell));
        let (gone, left): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, end)| *end <= now);
        self.pending = left;
        let gone: Vec<CellRef> = gone.into_iter().map(|(cell, _)| cell).collect();
        observed.cells.retain(|c| !gone.contains(&c.cell));
        gone
    }
}

/// A deterministic pseudo-random generator (SplitMix64): enough to place synthetic
/// players reproducibly without a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Synthetic players at fixed positions.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// Every player's position.
    pub players: Vec<Point>,
}

impl Population {
    /// `n` players spread uniformly over `area` (half-open, so none sits on an
    /// upper face).
    pub fn uniform(area: &Bounds, n: usize, rng: &mut SplitMix) -> Self {
        let mut p = Self::default();
        p.add_uniform(area, n, rng);
        p
    }

    /// Adds `n` players spread uniformly over `area`.
    pub fn add_uniform(&mut self, area: &Bounds, n: usize, rng: &mut SplitMix) {
        for _ in 0..n {
            let mut c = [0.0; 3];
            for a in area.axes() {
                c[a.index()] = area.min(a) + rng.next_f64() * area.extent(a);
            }
            self.players.push(Point::new(c[0], c[1], c[2]));
        }
    }

    /// Appends a load sample taken at `now` to every active cell: its players (each
    /// player counted in exactly one active cell, by [`target_for`]) and a histogram
    /// of their positions. Keeps samples that the policy can still look at.
    pub fn sample(&self, world: &World, observed: &mut Observed, now: Timestamp) {
        let active: Vec<usize> = (0..observed.cells.len())
            .filter(|&i| observed.cells[i].is_active())
            .collect();
        let bounds: Vec<Bounds> = active.iter().map(|&i| observed.cells[i].bounds).collect();
        let mut counts = vec![0u32; active.len()];
        let mut hists: Vec<PositionHistogram> = bounds.iter().map(|_| PositionHistogram::default()).collect();
        for (h, b) in hists.iter_mut().zip(&bounds) {
            for a in b.axes() {
                let bins = vec![0; HISTOGRAM_BINS];
                match a {
                    crate::geometry::Axis::X => h.x = bins,
                    crate::geometry::Axis::Y => h.y = bins,
                    crate::geometry::Axis::Z => h.z = bins,
                }
            }
        }
        for p in &self.players {
            let Some(k) = target_for(p, &bounds) else { continue };
            counts[k] += 1;
            let b = &bounds[k];
            for a in b.axes() {
                let rel = ((p.get(a) - b.min(a)) / b.extent(a) * HISTOGRAM_BINS as f64).floor();
                let bin = (rel.max(0.0) as usize).min(HISTOGRAM_BINS - 1);
                let bins = match a {
                    crate::geometry::Axis::X => &mut hists[k].x,
                    crate::geometry::Axis::Y => &mut hists[k].y,
                    crate::geometry::Axis::Z => &mut hists[k].z,
                };
                bins[bin] += 1;
            }
        }
        let keep = retention(world);
        for (k, &i) in active.iter().enumerate() {
            let c = &mut observed.cells[i];
            c.samples.push(LoadSample {
                at: now,
                players: counts[k],
                histogram: Some(std::mem::take(&mut hists[k])),
            });
            // Keep one sample older than the retention so the window stays covered.
            let cutoff = now - keep;
            let old = c.samples.iter().filter(|s| s.at < cutoff).count();
            if old > 1 {
                c.samples.drain(..old - 1);
            }
        }
    }
}

/// How far back samples matter to the policy.
pub fn retention(world: &World) -> Duration {
    let p = &world.policy;
    p.stabilization_window
        .max(p.prediction.map_or(Duration::ZERO, |x| x.horizon))
}
