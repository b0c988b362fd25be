//! The validated model of one world: what the planner plans for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cell::CellId;
use crate::geometry::{Axis, Bounds};
use crate::naming::stable_hash;
use crate::partition::{grid_shape, initial_partition};

/// Most initial cells a world may start with.
pub const MAX_INITIAL_CELLS: u32 = 1000;
/// Most players one cell may be sized for.
pub const MAX_PLAYERS_PER_CELL: u32 = 10_000;

/// Largest relative difference between the extents of the root partition's slabs
/// along one axis: more means the coordinates are too large for their extent.
const PARTITION_TOLERANCE: f64 = 1e-6;

/// A threshold (a fraction) times a capacity (players), as the decimal product
/// the user meant: `0.57 x 100` is 57 players, where binary floating point says
/// 56.99999999999999. A product within 1e-9 (relative) of a whole number is that
/// number. Comparisons against it are strict on both sides, so a load exactly at a
/// threshold neither splits nor merges.
pub fn decimal_product(threshold: f64, capacity: u32) -> f64 {
    let x = threshold * f64::from(capacity);
    let whole = x.round();
    if (x - whole).abs() <= 1e-9 * whole.abs().max(1.0) {
        whole
    } else {
        x
    }
}

/// A game world: its space, its cells' size and how it scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct World {
    /// The world's name, unique in its namespace; names of its cells derive from it.
    pub name: String,
    /// The world's space. Cells tile it exactly.
    pub bounds: Bounds,
    /// How many cells the world starts with (a balanced grid over its axes).
    pub initial_cells: u32,
    /// Smallest extent a cell may have along any axis; a split that would make a
    /// narrower child is not made. `None`: no floor beyond floating-point sense.
    #[serde(default)]
    pub min_cell_extent: Option<f64>,
    /// Players one cell is sized for; occupancy is players divided by this.
    pub players_per_cell: u32,
    /// When and how fast to split and merge.
    pub policy: ScalingPolicy,
    /// Opaque digest of everything a cell process is started with (image,
    /// resources, ...). Cells of another revision are replaced one at a time.
    #[serde(default)]
    pub revision: String,
    /// Operator requests that bypass the thresholds.
    #[serde(default)]
    pub overrides: Overrides,
}

/// Thresholds, pacing and limits for splitting and merging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// Occupancy above which a cell is hot (0..1, above `scale_down_threshold`).
    pub scale_up_threshold: f64,
    /// Combined occupancy of two siblings below which they merge (0..1).
    pub scale_down_threshold: f64,
    /// Fewest active cells the world may have.
    pub min_cells: u32,
    /// Most active cells the world may have.
    pub max_cells: u32,
    /// How long a threshold must hold, on every sample, before the planner acts.
    pub stabilization_window: Duration,
    /// How long a cell is left alone after it was created by a split or merge.
    pub cooldown: Duration,
    /// Most splits and merges the world may start within `rate_limit_period`.
    pub max_transitions: u32,
    /// The sliding period of the transition rate limit.
    pub rate_limit_period: Duration,
    /// How long new cells may take to become ready before a split or merge is
    /// rolled back.
    pub transition_timeout: Duration,
    /// Split ahead of the threshold when the load trend says it will be crossed.
    #[serde(default)]
    pub prediction: Option<Prediction>,
}

/// Predictive scaling settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// How far ahead the load trend is projected.
    pub horizon: Duration,
    /// Fewest samples the trend is fitted on.
    pub min_samples: usize,
}

impl Default for Prediction {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(60),
            min_samples: 5,
        }
    }
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        Self {
            scale_up_threshold: 0.8,
            scale_down_threshold: 0.3,
            min_cells: 1,
            max_cells: 100,
            stabilization_window: Duration::from_secs(30),
            cooldown: Duration::from_secs(60),
            max_transitions: 10,
            rate_limit_period: Duration::from_secs(60),
            transition_timeout: Duration::from_secs(120),
            prediction: None,
        }
    }
}

/// Manual requests from the world's owner, honoured regardless of load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    /// Cells to split now.
    #[serde(default)]
    pub force_split: BTreeSet<CellId>,
    /// Parents whose two children are to merge back now.
    #[serde(default)]
    pub force_merge: BTreeSet<CellId>,
    /// The layout a world with no cells starts from instead of its root
    /// partition: a restored backup brings back the cells its world had split
    /// into, not just the initial ones. Ignored once the world has cells.
    #[serde(default)]
    pub restore_layout: Vec<LayoutCell>,
}

/// One cell of a layout given from outside the planner (a restored backup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutCell {
    /// The cell's place in the partition tree.
    pub id: CellId,
    /// The space it serves.
    pub bounds: Bounds,
}

/// A field of the world model, named so errors can point at it; the API layer maps
/// each to its own spelling (for example `spec.scaling.scaleUpThreshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // each variant is the field of the same name
pub enum WorldField {
    Name,
    Bounds(Axis),
    InitialCells,
    MinCellExtent,
    PlayersPerCell,
    ScaleUpThreshold,
    ScaleDownThreshold,
    MinCells,
    MaxCells,
    StabilizationWindow,
    Cooldown,
    MaxTransitions,
    RateLimitPeriod,
    TransitionTimeout,
    PredictionHorizon,
    PredictionMinSamples,
    RestoreLayout,
}

impl fmt::Display for WorldField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorldField::Bounds(a) => write!(f, "bounds.{a}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A world that breaks one of the model's rules.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{field}: {problem}")]
pub struct InvalidWorld {
    /// The field at fault.
    pub field: WorldField,
    /// What is wrong with it, in words that stand alone.
    pub problem: String,
}

impl InvalidWorld {
    fn new(field: WorldField, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl World {
    /// Checks every rule of the model and returns all violations, in field order.
    ///
    /// The planner assumes a valid world; the API layer calls this after mapping its
    /// own object, so the rules live in one place.
    pub fn validate(&self) -> Result<(), Vec<InvalidWorld>> {
        use WorldField as F;
        let mut errs = Vec::new();
        let p = &self.policy;
        if self.name.is_empty() {
            errs.push(InvalidWorld::new(F::Name, "must not be empty"));
        }
        errs.extend(self.check_bounds_precision());
        if !(1..=MAX_INITIAL_CELLS).contains(&self.initial_cells) {
            errs.push(InvalidWorld::new(
                F::InitialCells,
                format!(
                    "must be between 1 and {MAX_INITIAL_CELLS}, got {}",
                    self.initial_cells
                ),
            ));
        }
        if let Some(e) = self.min_cell_extent
            && !(e.is_finite() && e > 0.0)
        {
            errs.push(InvalidWorld::new(
                F::MinCellExtent,
                format!("must be a positive number, got {e}"),
            ));
        }
        if !(1..=MAX_PLAYERS_PER_CELL).contains(&self.players_per_cell) {
            errs.push(InvalidWorld::new(
                F::PlayersPerCell,
                format!(
                    "must be between 1 and {MAX_PLAYERS_PER_CELL}, got {}",
                    self.players_per_cell
                ),
            ));
        }
        let unit = |v: f64| v.is_finite() && v > 0.0 && v < 1.0;
        if !unit(p.scale_up_threshold) {
            errs.push(InvalidWorld::new(
                F::ScaleUpThreshold,
                format!(
                    "must be between 0 and 1 (exclusive), got {}",
                    p.scale_up_threshold
                ),
            ));
        }
        if !unit(p.scale_down_threshold) {
            errs.push(InvalidWorld::new(
                F::ScaleDownThreshold,
                format!(
                    "must be between 0 and 1 (exclusive), got {}",
                    p.scale_down_threshold
                ),
            ));
        } else if unit(p.scale_up_threshold) && p.scale_down_threshold >= p.scale_up_threshold {
            errs.push(InvalidWorld::new(
                F::ScaleDownThreshold,
                format!(
                    "must be less than the scale-up threshold ({}), got {}",
                    p.scale_up_threshold, p.scale_down_threshold
                ),
            ));
        }
        if p.min_cells < 1 {
            errs.push(InvalidWorld::new(F::MinCells, "must be at least 1"));
        }
        if p.min_cells > self.initial_cells {
            errs.push(InvalidWorld::new(
                F::MinCells,
                format!(
                    "must not exceed initial cells ({}), got {}",
                    self.initial_cells, p.min_cells
                ),
            ));
        }
        if p.max_cells < self.initial_cells {
            errs.push(InvalidWorld::new(
                F::MaxCells,
                format!(
                    "must be at least initial cells ({}), got {}",
                    self.initial_cells, p.max_cells
                ),
            ));
        }
        if p.max_transitions < 1 {
            errs.push(InvalidWorld::new(F::MaxTransitions, "must be at least 1"));
        }
        if p.rate_limit_period.is_zero() {
            errs.push(InvalidWorld::new(F::RateLimitPeriod, "must be longer than zero"));
        }
        if p.transition_timeout.is_zero() {
            errs.push(InvalidWorld::new(
                F::TransitionTimeout,
                "must be longer than zero",
            ));
        }
        if let Some(pred) = &p.prediction {
            if pred.horizon.is_zero() {
                errs.push(InvalidWorld::new(
                    F::PredictionHorizon,
                    "must be longer than zero",
                ));
            }
            if pred.min_samples < 2 {
                errs.push(InvalidWorld::new(
                    F::PredictionMinSamples,
                    "must be at least 2 to fit a trend",
                ));
            }
        }
        if let Err(problem) = self.check_restore_layout() {
            errs.push(InvalidWorld::new(F::RestoreLayout, problem));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// The world's extent must be a finite number on every axis, and its root
    /// partition exact: `initialCells` slabs per axis whose edges strictly increase
    /// and whose extents agree with one another. Far from zero a float cannot hold
    /// a fine cut (near 1e15 its step is 0.125), so such a world would get empty or
    /// uneven roots and splits that miss `minCellExtent`; it is refused instead.
    fn check_bounds_precision(&self) -> Vec<InvalidWorld> {
        let mut errs = Vec::new();
        if !(1..=MAX_INITIAL_CELLS).contains(&self.initial_cells) {
            return errs;
        }
        let shape = grid_shape(&self.bounds, self.initial_cells);
        for axis in self.bounds.axes() {
            let (min, max) = (self.bounds.min(axis), self.bounds.max(axis));
            let extent = self.bounds.extent(axis);
            if !extent.is_finite() {
                errs.push(InvalidWorld::new(
                    WorldField::Bounds(axis),
                    format!(
                        "the extent from {min} to {max} is too large to compute with; keep max - min finite"
                    ),
                ));
                continue;
            }
            let n = shape[axis.index()] as usize;
            let slabs = self.bounds.slabs(axis, n);
            let step = extent / n as f64;
            let uneven = slabs.iter().any(|b| {
                b.extent(axis).is_nan()
                    || b.extent(axis) <= 0.0
                    || (b.extent(axis) - step).abs() > step * PARTITION_TOLERANCE
            });
            if uneven {
                errs.push(InvalidWorld::new(
                    WorldField::Bounds(axis),
                    format!(
                        "from {min} to {max} cannot be cut into {n} equal cells in floating point: \
                         the coordinates are too large for the extent; move the world closer to zero"
                    ),
                ));
            }
        }
        errs
    }

    /// A restore layout must be one the planner could have built: under each root
    /// a full binary partition tree, in which both halves of every split are
    /// present, are the two halves of one cut, and build their parent back up to
    /// the root's exact space. Anything else (siblings that are not adjacent, a
    /// sliver of a gap, a cell missing) would leave space no cell owns or make a
    /// later merge overlap another cell.
    fn check_restore_layout(&self) -> Result<(), String> {
        let layout = &self.overrides.restore_layout;
        if layout.is_empty() {
            return Ok(());
        }
        if layout.len() > self.policy.max_cells as usize {
            return Err(format!(
                "has {} cells, more than max cells ({})",
                layout.len(),
                self.policy.max_cells
            ));
        }
        let roots = initial_partition(&self.bounds, self.initial_cells);
        let mut built: BTreeMap<CellId, Bounds> = BTreeMap::new();
        for cell in layout {
            let id = &cell.id;
            let Some((_, root)) = roots.get(id.root_index() as usize) else {
                return Err(format!(
                    "cell {id} belongs to no root of this world ({} initial cells)",
                    self.initial_cells
                ));
            };
            if cell.bounds.dims() != self.bounds.dims() || !root.contains_bounds(&cell.bounds) {
                return Err(format!("cell {id} is not inside its root cell's space"));
            }
            if built.insert(id.clone(), cell.bounds).is_some() {
                return Err(format!("cell {id} is listed twice"));
            }
        }
        for id in built.keys() {
            let mut up = id.parent();
            while let Some(a) = up {
                if built.contains_key(&a) {
                    return Err(format!("cells {a} and {id} are one inside the other"));
                }
                up = a.parent();
            }
        }
        // Build every parent from its two halves, deepest first.
        let mut frontier: Vec<CellId> = built.keys().cloned().collect();
        frontier.sort_by_key(|id| std::cmp::Reverse(id.depth()));
        while let Some(id) = frontier.first().cloned() {
            let depth = id.depth();
            if depth == 0 {
                break;
            }
            let level: Vec<CellId> = frontier
                .iter()
                .take_while(|c| c.depth() == depth)
                .cloned()
                .collect();
            frontier.drain(..level.len());
            for id in level {
                let (Some(parent), Some(sibling)) = (id.parent(), id.sibling()) else {
                    continue;
                };
                if built.contains_key(&parent) {
                    continue; // built from the sibling already
                }
                let Some(&b) = built.get(&sibling) else {
                    return Err(format!(
                        "cell {id} has no sibling {sibling}: some space has no cell (the layout of a \
                         split world has both halves of every split)"
                    ));
                };
                let a = built[&id];
                let hull = a.union(&b);
                if hull.complement(&a) != Some(b) {
                    return Err(format!(
                        "cells {id} and {sibling} overlap or leave a gap: they are not the two halves \
                         of one cut of {parent}"
                    ));
                }
                built.insert(parent.clone(), hull);
                frontier.push(parent);
            }
            frontier.sort_by_key(|id| std::cmp::Reverse(id.depth()));
        }
        for (id, bounds) in &roots {
            match built.get(id) {
                Some(b) if b == bounds => {}
                Some(_) => {
                    return Err(format!(
                        "the cells under {id} do not tile its space exactly: some space has no cell \
                         or lies outside it"
                    ));
                }
                None => return Err(format!("no cell covers root {id}: some space has no cell")),
            }
        }
        Ok(())
    }

    /// Players above which one cell is hot: `scaleUpThreshold x playersPerCell`.
    /// See [`decimal_product`] for how the product is rounded: a load exactly at
    /// the threshold is not above it.
    pub fn split_above_players(&self) -> f64 {
        decimal_product(self.policy.scale_up_threshold, self.players_per_cell)
    }

    /// Players below which two siblings together are cold:
    /// `scaleDownThreshold x playersPerCell`, rounded as [`decimal_product`] does;
    /// a load exactly at the threshold is not below it.
    pub fn merge_below_players(&self) -> f64 {
        decimal_product(self.policy.scale_down_threshold, self.players_per_cell)
    }

    /// Digest of what fixes the root partition (bounds and initial cell count).
    /// Cells of another layout belong to an older partition and are migrated.
    pub fn layout_key(&self) -> u64 {
        let mut s = format!("{}", self.initial_cells);
        for a in self.bounds.axes() {
            s.push_str(&format!(
                ";{a}:{:016x}:{:016x}",
                self.bounds.min(a).to_bits(),
                self.bounds.max(a).to_bits()
            ));
        }
        stable_hash(s.as_bytes())
    }

    /// Occupancy of `players` in one cell's capacity.
    pub fn occupancy(&self, players: u32) -> f64 {
        f64::from(players) / f64::from(self.players_per_cell.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World {
            name: "w".into(),
            bounds: Bounds::rect((0.0, 100.0), (0.0, 100.0)).unwrap(),
            initial_cells: 4,
            min_cell_extent: None,
            players_per_cell: 100,
            policy: ScalingPolicy::default(),
            revision: String::new(),
            overrides: Overrides::default(),
        }
    }

    #[test]
    fn default_world_is_valid() {
        assert_eq!(world().validate(), Ok(()));
    }

    #[test]
    fn every_violation_is_reported_with_its_field() {
        let mut w = world();
        w.policy.scale_down_threshold = 0.9;
        w.policy.min_cells = 5;
        w.policy.max_cells = 3;
        let fields: Vec<_> = w.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                WorldField::ScaleDownThreshold,
                WorldField::MinCells,
                WorldField::MaxCells
            ]
        );
    }

    /// c0 split along x, plus the other three roots of [`world`].
    fn restored() -> Vec<LayoutCell> {
        let cell = |id: &str, x: (f64, f64), y: (f64, f64)| LayoutCell {
            id: id.parse().unwrap(),
            bounds: Bounds::rect(x, y).unwrap(),
        };
        vec![
            cell("c0-0", (0.0, 20.0), (0.0, 50.0)),
            cell("c0-1", (20.0, 50.0), (0.0, 50.0)),
            cell("c1", (50.0, 100.0), (0.0, 50.0)),
            cell("c2", (0.0, 50.0), (50.0, 100.0)),
            cell("c3", (50.0, 100.0), (50.0, 100.0)),
        ]
    }

    fn layout_problem(layout: Vec<LayoutCell>) -> Option<String> {
        let mut w = world();
        w.overrides.restore_layout = layout;
        w.validate().err().map(|errs| {
            assert_eq!(errs.len(), 1);
            assert_eq!(errs[0].field, WorldField::RestoreLayout);
            errs[0].problem.clone()
        })
    }

    #[test]
    fn a_restore_layout_must_tile_the_world_with_cells_of_its_roots() {
        assert_eq!(layout_problem(restored()), None);

        let mut gap = restored();
        gap.remove(1);
        assert!(layout_problem(gap).unwrap().contains("some space has no cell"));

        let mut overlap = restored();
        overlap[0].bounds = Bounds::rect((0.0, 30.0), (0.0, 50.0)).unwrap();
        assert!(layout_problem(overlap).unwrap().contains("overlap"));

        let mut nested = restored();
        nested.push(LayoutCell {
            id: "c0".parse().unwrap(),
            bounds: Bounds::rect((0.0, 50.0), (0.0, 50.0)).unwrap(),
        });
        assert!(layout_problem(nested).unwrap().contains("one inside the other"));

        let mut foreign = restored();
        foreign[4].id = "c7".parse().unwrap();
        assert!(layout_problem(foreign).unwrap().contains("belongs to no root"));

        let mut outside = restored();
        outside[2].id = "c2".parse().unwrap();
        outside[3].id = "c1".parse().unwrap();
        assert!(layout_problem(outside).unwrap().contains("not inside its root"));

        let mut twice = restored();
        twice[4] = twice[3].clone();
        assert!(layout_problem(twice).unwrap().contains("listed twice"));
    }

    #[test]
    fn a_restore_layout_may_not_exceed_max_cells() {
        let mut w = world();
        w.policy.max_cells = 4;
        w.overrides.restore_layout = restored();
        let errs = w.validate().unwrap_err();
        assert!(errs[0].problem.contains("more than max cells (4)"), "{errs:?}");
    }

    #[test]
    fn layout_key_follows_bounds_and_initial_cells_only() {
        let a = world();
        let mut b = world();
        b.players_per_cell = 7;
        assert_eq!(a.layout_key(), b.layout_key());
        b.initial_cells = 5;
        assert_ne!(a.layout_key(), b.layout_key());
    }
}
