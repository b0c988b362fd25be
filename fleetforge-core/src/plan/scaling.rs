//! Policy-driven splits and merges: thresholds held over the stabilisation window,
//! predictive splits, cooldowns, the transition rate limit, cell limits, and the
//! manual overrides.
//!
//! Why this never flaps under constant load: a split needs a cell's players above
//! `up x capacity` on every sample of the window, a merge needs the two siblings'
//! players together below `down x capacity`, and `down < up`. The children of a
//! split together hold what their parent held, so they are never cold enough to
//! merge back; a merged cell holds less than `down x capacity`, so it is never hot
//! enough to split again.

use std::collections::BTreeSet;

use crate::cell::{CellId, MAX_DEPTH};
use crate::geometry::{Axis, Bounds};
use crate::load::{LoadSample, forecast};
use crate::observed::{Observed, ObservedCell, RecordKind, TransitionRecord};
use crate::plan::layout::{Repaired, next_ref};
use crate::plan::model::{
    Action, OverrideOutcome, OverrideRequest, OverrideResult, Target, Transition, TransitionKind,
};
use crate::time::Timestamp;
use crate::world::World;

/// No child of a split is narrower than this share of its parent, so a histogram
/// with every player on one edge cannot produce a sliver.
const MIN_SPLIT_SHARE: f64 = 0.1;

/// What [`decide`] adds to the plan.
#[derive(Debug, Default)]
pub(super) struct Decided {
    pub transitions: Vec<Transition>,
    pub started: Vec<TransitionRecord>,
    pub overrides: Vec<OverrideOutcome>,
    pub held_back: Vec<String>,
}

/// Decides splits and merges among the cells `repaired` left free.
pub(super) fn decide(world: &World, observed: &Observed, repaired: &Repaired, now: Timestamp) -> Decided {
    let mut s = Scaler::new(world, observed, repaired, now);
    if !repaired.settled {
        for request in s.requests() {
            s.outcome(
                request,
                OverrideResult::Deferred("the world is moving to a new partition".into()),
            );
        }
        return s.d;
    }
    s.overrides();
    s.enforce_limits();
    s.threshold_splits();
    s.threshold_merges();
    s.d
}

/// A split chosen for a cell: the children's bounds.
struct Cut {
    lower: Bounds,
    upper: Bounds,
    axis: Axis,
    at: f64,
}

struct Scaler<'a> {
    world: &'a World,
    cells: &'a [ObservedCell],
    now: Timestamp,
    /// Free active cells by id.
    /// Sorted by id (the order `repaired.free` is in).
    free: Vec<(&'a CellId, usize)>,
    /// Ids this plan already splits or merges.
    used: BTreeSet<CellId>,
    /// Cells the world will have once everything planned completes.
    count: u32,
    /// The most cells the world can be left with: every split planned or in
    /// flight completes and every merge rolls back. Splits are held to maxCells
    /// by this, so a merge whose new cell fails cannot leave the world above it.
    grow: u32,
    /// The fewest cells the world can be left with: every merge completes and
    /// every split rolls back. Merges are held to minCells by this.
    shrink: u32,
    /// Splits and merges the rate limit still allows.
    budget: u32,
    /// Ids created by a split or merge within the cooldown.
    cooling: BTreeSet<&'a CellId>,
    d: Decided,
}

impl<'a> Scaler<'a> {
    fn new(world: &'a World, observed: &'a Observed, repaired: &'a Repaired, now: Timestamp) -> Self {
        let p = &world.policy;
        let recent = observed
            .history
            .iter()
            .filter(|r| now.since(r.at) < p.rate_limit_period)
            .count() as u32;
        let cooling = observed
            .history
            .iter()
            .filter(|r| now.since(r.at) < p.cooldown)
            .flat_map(|r| &r.cells)
            .collect();
        let cells = &observed.cells;
        Self {
            world,
            cells,
            now,
            free: repaired.free.iter().map(|&i| (&cells[i].cell.id, i)).collect(),
            used: BTreeSet::new(),
            count: repaired.projected_cells,
            grow: repaired.projected_cells + repaired.merging_away + repaired.lingering,
            shrink: repaired.projected_cells.saturating_sub(repaired.splitting_in),
            budget: p.max_transitions.saturating_sub(recent),
            cooling,
            d: Decided::default(),
        }
    }

    fn requests(&self) -> Vec<OverrideRequest> {
        let o = &self.world.overrides;
        o.force_split
            .iter()
            .cloned()
            .map(OverrideRequest::Split)
            .chain(o.force_merge.iter().cloned().map(OverrideRequest::Merge))
            .collect()
    }

    fn outcome(&mut self, request: OverrideRequest, result: OverrideResult) {
        self.d.overrides.push(OverrideOutcome { request, result });
    }

    fn exists(&self, id: &CellId) -> bool {
        self.cells.iter().any(|c| &c.cell.id == id)
    }

    fn idle(&self, id: &CellId) -> Option<usize> {
        let k = self.free.binary_search_by(|(f, _)| (*f).cmp(id)).ok()?;
        Some(self.free[k].1).filter(|_| !self.used.contains(id))
    }

    /// Manual requests bypass thresholds, the window, cooldowns and the rate limit,
    /// but not the cell limits or the geometry.
    fn overrides(&mut self) {
        for request in self.requests() {
            let result = match &request {
                OverrideRequest::Split(id) => self.forced_split(id),
                OverrideRequest::Merge(id) => self.forced_merge(id),
            };
            self.outcome(request, result);
        }
    }

    fn forced_split(&mut self, id: &CellId) -> OverrideResult {
        let Some(i) = self.idle(id) else {
            return if self.exists(id) {
                OverrideResult::Deferred(format!("{id} is not ready or is already changing"))
            } else {
                OverrideResult::Rejected(format!("there is no cell {id}"))
            };
        };
        let max = self.world.policy.max_cells;
        if self.count >= max {
            return OverrideResult::Rejected(format!("the world already has its maximum of {max} cells"));
        }
        if self.grow >= max {
            return OverrideResult::Deferred(format!(
                "a merge in progress must finish before the world has room under its maximum of {max} cells"
            ));
        }
        match self.cut(&self.cells[i]) {
            Some(cut) => {
                self.split(i, cut, "forced by override".into());
                OverrideResult::Started
            }
            None => OverrideResult::Rejected(format!("{id} is too small to split")),
        }
    }

    fn forced_merge(&mut self, parent: &CellId) -> OverrideResult {
        let [lo, hi] = parent.children();
        if let (Some(a), Some(b)) = (self.idle(&lo), self.idle(&hi)) {
            if !halves(&self.cells[a], &self.cells[b]) {
                return OverrideResult::Rejected(format!(
                    "{lo} and {hi} are not the two halves of one cut: their merged cell would not be a box"
                ));
            }
            let min = self.world.policy.min_cells;
            if self.count <= min {
                return OverrideResult::Rejected(format!("the world already has its minimum of {min} cells"));
            }
            if self.shrink <= min {
                return OverrideResult::Deferred(format!(
                    "a split in progress must finish before the world has cells to spare above its minimum of {min}"
                ));
            }
            self.merge(parent, a, b, "forced by override".into());
            return OverrideResult::Started;
        }
        let split_further = self
            .cells
            .iter()
            .any(|c| lo.is_ancestor_of(&c.cell.id) || hi.is_ancestor_of(&c.cell.id));
        if split_further {
            OverrideResult::Rejected(format!("{lo} or {hi} is split further; merge its children first"))
        } else if self.exists(&lo) || self.exists(&hi) {
            OverrideResult::Deferred(format!("{lo} and {hi} are not both ready and idle"))
        } else {
            OverrideResult::Rejected(format!("{parent} has no children to merge"))
        }
    }

    /// Brings the cell count back within [minCells, maxCells] after the limits
    /// changed, ignoring thresholds but not the rate limit.
    fn enforce_limits(&mut self) {
        let p = &self.world.policy;
        if self.count < p.min_cells {
            let mut order: Vec<usize> = self.free.iter().map(|&(_, i)| i).collect();
            order.sort_by(|&a, &b| {
                players(&self.cells[b])
                    .cmp(&players(&self.cells[a]))
                    .then(self.cells[a].cell.id.cmp(&self.cells[b].cell.id))
            });
            for i in order {
                if self.count >= p.min_cells || self.budget == 0 {
                    break;
                }
                if let Some(cut) = self.cut(&self.cells[i]) {
                    let reason = format!("below the minimum of {} cells", p.min_cells);
                    self.split(i, cut, reason);
                    self.budget -= 1;
                }
            }
        }
        if self.count > p.max_cells {
            for (parent, a, b) in self.sibling_pairs(false) {
                if self.count <= p.max_cells || self.budget == 0 {
                    break;
                }
                let reason = format!("above the maximum of {} cells", p.max_cells);
                self.merge(&parent, a, b, reason);
                self.budget -= 1;
            }
        }
    }

    fn threshold_splits(&mut self) {
        let p = &self.world.policy;
        let up = self.world.split_above_players();
        let mut hot: Vec<(usize, String)> = Vec::new();
        for &(id, i) in &self.free {
            if self.used.contains(id) || self.cooling.contains(id) {
                continue;
            }
            let c = &self.cells[i];
            // The window's lowest reading is at most the latest: a cell not hot
            // now is not hot over the window, and its older samples need not be
            // read (most cells of a fleet, most of the time).
            if p.prediction.is_none() && current(c, self.now).is_some_and(|n| f64::from(n) <= up) {
                continue;
            }
            if let Some(low) = window_extreme(&c.samples, self.now, p.stabilization_window, Extreme::Min)
                && f64::from(low) > up
            {
                let reason = format!(
                    "occupancy at least {:.2} for {}s (threshold {:.2})",
                    self.world.occupancy(low),
                    p.stabilization_window.as_secs(),
                    p.scale_up_threshold
                );
                hot.push((i, reason));
            } else if let Some(pred) = &p.prediction
                && c.samples.len() >= pred.min_samples
                && let Some(f) = forecast(&c.samples, self.now, pred.horizon.as_secs_f64())
                && f > up
                && players(c) < f.floor() as u32
            {
                let reason = format!(
                    "occupancy forecast {:.2} in {}s (threshold {:.2})",
                    f / f64::from(self.world.players_per_cell),
                    pred.horizon.as_secs(),
                    p.scale_up_threshold
                );
                hot.push((i, reason));
            }
        }
        hot.sort_by(|a, b| {
            players(&self.cells[b.0])
                .cmp(&players(&self.cells[a.0]))
                .then(self.cells[a.0].cell.id.cmp(&self.cells[b.0].cell.id))
        });
        for (i, reason) in hot {
            let id = &self.cells[i].cell.id;
            if self.budget == 0 {
                self.d
                    .held_back
                    .push(format!("split of {id} held back by the rate limit ({reason})"));
            } else if self.grow >= p.max_cells {
                self.d.held_back.push(format!(
                    "split of {id} held back: the world has its maximum of {} cells ({reason})",
                    p.max_cells
                ));
            } else if let Some(cut) = self.cut(&self.cells[i]) {
                self.split(i, cut, reason);
                self.budget -= 1;
            } else {
                self.d.held_back.push(format!(
                    "split of {id} held back: the cell is too small ({reason})"
                ));
            }
        }
    }

    fn threshold_merges(&mut self) {
        let p = &self.world.policy;
        for (parent, a, b) in self.sibling_pairs(true) {
            if self.budget == 0 {
                self.d
                    .held_back
                    .push(format!("merge into {parent} held back by the rate limit"));
            } else if self.shrink <= p.min_cells {
                self.d.held_back.push(format!(
                    "merge into {parent} held back: the world has its minimum of {} cells",
                    p.min_cells
                ));
            } else {
                let reason = format!(
                    "combined occupancy below {:.2} for {}s",
                    p.scale_down_threshold,
                    p.stabilization_window.as_secs()
                );
                self.merge(&parent, a, b, reason);
                self.budget -= 1;
            }
        }
    }

    /// Idle sibling pairs, coldest first. With `cold_only`, only pairs whose
    /// combined players stayed below the scale-down threshold over the window (and
    /// are not forecast to rise above it) and that are not cooling down.
    fn sibling_pairs(&self, cold_only: bool) -> Vec<(CellId, usize, usize)> {
        let p = &self.world.policy;
        let down = self.world.merge_below_players();
        let mut pairs = Vec::new();
        // Free cells never contain one another, so a lower child's sibling, when
        // free, is the very next free id: one pass over neighbours finds every pair.
        for w in self.free.windows(2) {
            let ((id, a), (sib, b)) = (w[0], w[1]);
            if id.side() != Some(0) || id.sibling().as_ref() != Some(sib) {
                continue;
            }
            let Some(parent) = id.parent() else { continue };
            if self.used.contains(id) || self.used.contains(sib) {
                continue;
            }
            let (ca, cb) = (&self.cells[a], &self.cells[b]);
            if !halves(ca, cb) {
                continue;
            }
            if cold_only {
                if self.cooling.contains(id) || self.cooling.contains(sib) {
                    continue;
                }
                // Likewise the window's highest reading is at least the latest.
                if let (Some(na), Some(nb)) = (current(ca, self.now), current(cb, self.now))
                    && (u64::from(na) + u64::from(nb)) as f64 >= down
                {
                    continue;
                }
                let window = p.stabilization_window;
                let (Some(ma), Some(mb)) = (
                    window_extreme(&ca.samples, self.now, window, Extreme::Max),
                    window_extreme(&cb.samples, self.now, window, Extreme::Max),
                ) else {
                    continue;
                };
                // Summed in 64 bits: two cells may each report up to u32::MAX.
                if (u64::from(ma) + u64::from(mb)) as f64 >= down {
                    continue;
                }
                if let Some(pred) = &p.prediction {
                    let ahead = pred.horizon.as_secs_f64();
                    let fa = forecast(&ca.samples, self.now, ahead).unwrap_or(f64::from(ma));
                    let fb = forecast(&cb.samples, self.now, ahead).unwrap_or(f64::from(mb));
                    if fa + fb >= down {
                        continue;
                    }
                }
            }
            pairs.push((u64::from(players(ca)) + u64::from(players(cb)), parent, a, b));
        }
        pairs.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        pairs.into_iter().map(|(_, p, a, b)| (p, a, b)).collect()
    }

    /// Where to cut a cell: across its longest axis that can be cut, at the point
    /// that balances its players when it reports their positions, else the middle;
    /// never leaving a child narrower than the world's minimum cell extent or
    /// `MIN_SPLIT_SHARE` of the parent.
    fn cut(&self, c: &ObservedCell) -> Option<Cut> {
        if c.cell.id.depth() >= MAX_DEPTH {
            return None;
        }
        let b = &c.bounds;
        let mut axes: Vec<Axis> = b.axes().collect();
        axes.sort_by(|x, y| b.extent(*y).total_cmp(&b.extent(*x)));
        let histogram = c.samples.iter().rev().find_map(|s| s.histogram.as_ref());
        for axis in axes {
            let ext = b.extent(axis);
            let margin = (ext * MIN_SPLIT_SHARE).max(self.world.min_cell_extent.unwrap_or(0.0));
            let (lo, hi) = (b.min(axis) + margin, b.max(axis) - margin);
            if lo >= hi {
                continue;
            }
            let at = histogram
                .and_then(|h| h.median(b, axis))
                .unwrap_or((b.min(axis) + b.max(axis)) / 2.0)
                .clamp(lo, hi);
            // Far from zero the cut rounds: check the halves, not the arithmetic.
            if let Ok((lower, upper)) = b.split(axis, at)
                && lower.extent(axis) >= margin
                && upper.extent(axis) >= margin
            {
                return Some(Cut {
                    lower,
                    upper,
                    axis,
                    at,
                });
            }
        }
        None
    }

    fn split(&mut self, i: usize, cut: Cut, why: String) {
        let parent = &self.cells[i];
        let [lo, hi] = parent.cell.id.children();
        let targets = [
            Target {
                cell: next_ref(self.cells, &lo),
                bounds: cut.lower,
            },
            Target {
                cell: next_ref(self.cells, &hi),
                bounds: cut.upper,
            },
        ];
        let mut actions: Vec<Action> = targets
            .iter()
            .map(|t| Action::Create {
                cell: t.cell.clone(),
                bounds: t.bounds,
                active: false,
            })
            .collect();
        actions.push(Action::HandOver {
            from: vec![parent.cell.clone()],
            to: targets.to_vec(),
        });
        actions.push(Action::Retire {
            cell: parent.cell.clone(),
        });
        self.d.transitions.push(Transition {
            undoes: None,
            kind: TransitionKind::Split,
            continues: false,
            reason: format!(
                "splitting {} at {}={:.3}: {why}",
                parent.cell.id, cut.axis, cut.at
            ),
            actions,
        });
        self.d.started.push(TransitionRecord {
            at: self.now,
            kind: RecordKind::Split,
            cells: vec![lo, hi],
        });
        self.used.insert(parent.cell.id.clone());
        self.count += 1;
        self.grow += 1;
    }

    fn merge(&mut self, parent: &CellId, a: usize, b: usize, why: String) {
        let (ca, cb) = (&self.cells[a], &self.cells[b]);
        let target = Target {
            cell: next_ref(self.cells, parent),
            bounds: ca.bounds.union(&cb.bounds),
        };
        let actions = vec![
            Action::Create {
                cell: target.cell.clone(),
                bounds: target.bounds,
                active: false,
            },
            Action::HandOver {
                from: vec![ca.cell.clone(), cb.cell.clone()],
                to: vec![target],
            },
            Action::Retire {
                cell: ca.cell.clone(),
            },
            Action::Retire {
                cell: cb.cell.clone(),
            },
        ];
        self.d.transitions.push(Transition {
            undoes: None,
            kind: TransitionKind::Merge,
            continues: false,
            reason: format!("merging {} and {} into {parent}: {why}", ca.cell.id, cb.cell.id),
            actions,
        });
        self.d.started.push(TransitionRecord {
            at: self.now,
            kind: RecordKind::Merge,
            cells: vec![parent.clone()],
        });
        self.used.insert(ca.cell.id.clone());
        self.used.insert(cb.cell.id.clone());
        self.count = self.count.saturating_sub(1);
        self.shrink = self.shrink.saturating_sub(1);
    }
}

/// Whether two siblings are the two halves of one cut, so that the box they
/// span is exactly their space. Ids can outlive the cuts that made them (a hole
/// filled with what was left of its space), and merging two cells that are not
/// would build a cell overlapping its neighbours.
pub(crate) fn halves(a: &ObservedCell, b: &ObservedCell) -> bool {
    a.bounds.union(&b.bounds).complement(&a.bounds) == Some(b.bounds)
}

/// Players of a cell by its latest sample taken at or before `now`, the last one
/// the stabilisation window looks at.
fn current(c: &ObservedCell, now: Timestamp) -> Option<u32> {
    c.samples.iter().rev().find(|s| s.at <= now).map(|s| s.players)
}

/// Latest player count of a cell (0 without samples).
fn players(c: &ObservedCell) -> u32 {
    c.latest().map_or(0, |s| s.players)
}

/// Which end of the readings over the stabilisation window: the lowest (a split
/// needs it above the threshold) or the highest (a merge needs it below).
#[derive(Clone, Copy)]
pub(crate) enum Extreme {
    Min,
    Max,
}

/// The smallest or largest player count over the stabilisation window: over the
/// last sample taken at or before `now - window` and every sample since. `None`
/// until the samples reach back that far, so a threshold counts as held only once
/// it has been observed for the whole window.
pub(crate) fn window_extreme(
    samples: &[LoadSample],
    now: Timestamp,
    window: std::time::Duration,
    e: Extreme,
) -> Option<u32> {
    let start = now - window;
    let first = samples.iter().rposition(|s| s.at <= start)?;
    let players = samples[first..].iter().filter(|s| s.at <= now).map(|s| s.players);
    match e {
        Extreme::Min => players.min(),
        Extreme::Max => players.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn s(ms: u64, players: u32) -> LoadSample {
        LoadSample {
            at: Timestamp(ms),
            players,
            histogram: None,
        }
    }

    #[test]
    fn window_needs_samples_reaching_back_far_enough() {
        let samples = [s(1_000, 90), s(2_000, 95), s(3_000, 85)];
        let w = Duration::from_secs(2);
        assert_eq!(
            window_extreme(&samples, Timestamp(3_000), w, Extreme::Min),
            Some(85)
        );
        assert_eq!(
            window_extreme(&samples, Timestamp(3_500), w, Extreme::Min),
            Some(85)
        );
        assert_eq!(window_extreme(&samples, Timestamp(2_500), w, Extreme::Max), None);
        // The sample just before the window opens still counts: it held until the next.
        assert_eq!(
            window_extreme(&samples, Timestamp(3_500), w, Extreme::Max),
            Some(95)
        );
    }
}
