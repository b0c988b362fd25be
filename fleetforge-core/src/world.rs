//! The validated model of one world: what the planner plans for.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cell::CellId;
use crate::geometry::{Axis, Bounds};
use crate::naming::stable_hash;

/// Most initial cells a world may start with.
pub const MAX_INITIAL_CELLS: u32 = 1000;
/// Most players one cell may be sized for.
pub const MAX_PLAYERS_PER_CELL: u32 = 10_000;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    /// Cells to split now.
    #[serde(default)]
    pub force_split: BTreeSet<CellId>,
    /// Parents whose two children are to merge back now.
    #[serde(default)]
    pub force_merge: BTreeSet<CellId>,
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
        if errs.is_empty() { Ok(()) } else { Err(errs) }
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
