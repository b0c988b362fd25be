//! The `WorldSpec` status: what the operator reports.
//!
//! Every field is optional (or defaults to empty) and phases are plain strings,
//! so a status written by an older or newer operator always parses: a world whose
//! status cannot be read could not be reconciled at all.

use fleetforge_core::{Axis, Bounds, CellId, RecordKind, TransitionRecord};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most entries [`WorldSpecStatus::cells`] holds; beyond it the list is cut and
/// [`WorldSpecStatus::cell_summary_truncated`] set, which keeps the status of a
/// large world well below the object size limit.
pub const MAX_CELL_SUMMARY: usize = 100;

/// Condition type: every cell serves and nothing is in progress.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: cells are being created, split, merged or replaced.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the spec is invalid, a cell failed, or the layout could not be repaired.
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Observed state of a world, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorldSpecStatus {
    /// Initializing, Running, Scaling or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded, following the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Cells serving their space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_cells: Option<u32>,
    /// Active cells that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cells: Option<u32>,
    /// Players on active cells, from their latest load samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_players: Option<u64>,
    /// Up to 100 cells, ordered by cell id; see `cellSummaryTruncated`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "readable_cells"
    )]
    #[schemars(length(max = 100))]
    pub cells: Vec<CellSummary>,
    /// True when the world has more cells than `cells` lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cell_summary_truncated: bool,
    /// Splits and merges started within the rate-limit period or a cooldown,
    /// oldest first. The operator plans from this history after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_transitions: Vec<TransitionStatus>,
    /// When the world last started a split or merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// The entries of `cells` that parse, leaving out the others. A status written
/// by the original FleetForge, whose cell entries say `boundaries` (pruned on
/// read, so they come without `bounds`), must not make the whole world
/// unreadable: the list is a summary the operator rewrites anyway.
fn readable_cells<'de, D>(de: D) -> Result<Vec<CellSummary>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let entries = Vec::<serde_json::Value>::deserialize(de)?;
    Ok(entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e).ok())
        .collect())
}

/// One cell at a glance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellSummary {
    /// The cell id: its path in the partition tree, such as `c3-01`.
    pub id: String,
    /// The space the cell covers, in world units.
    pub bounds: BoundsStatus,
    /// Players on the cell at its latest load sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub players: Option<u32>,
    /// Starting, Ready, Unready, Failed, or Incoming (waiting for sessions).
    #[serde(default)]
    pub phase: String,
}

/// A box in world units; y and z are present for 2-D and 3-D worlds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
pub struct BoundsStatus {
    /// Extent along x.
    pub x: AxisRange,
    /// Extent along y.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<AxisRange>,
    /// Extent along z.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z: Option<AxisRange>,
}

/// The interval of one axis.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
pub struct AxisRange {
    /// Lower edge.
    pub min: f64,
    /// Upper edge.
    pub max: f64,
}

impl WorldSpecStatus {
    /// Sets [`Self::cells`] from any number of cells: sorted by id, cut to
    /// [`MAX_CELL_SUMMARY`] entries, with [`Self::cell_summary_truncated`] telling
    /// whether any were left out.
    pub fn set_cells(&mut self, cells: impl IntoIterator<Item = CellSummary>) {
        let mut all: Vec<CellSummary> = cells.into_iter().collect();
        // Parsed ids sort c2 before c10; a key (rather than a comparator that mixes
        // parsed and raw ids) keeps the order total, which `sort` requires.
        all.sort_by_cached_key(|c| {
            let parsed = c.id.parse::<CellId>().ok();
            (parsed.is_none(), parsed, c.id.clone())
        });
        self.cell_summary_truncated = all.len() > MAX_CELL_SUMMARY;
        all.truncate(MAX_CELL_SUMMARY);
        self.cells = all;
    }
}

impl From<&Bounds> for BoundsStatus {
    fn from(b: &Bounds) -> Self {
        let range = |a| {
            b.range(a).map(|r| AxisRange {
                min: r.min,
                max: r.max,
            })
        };
        Self {
            x: range(Axis::X).unwrap_or(AxisRange { min: 0.0, max: 0.0 }),
            y: range(Axis::Y),
            z: range(Axis::Z),
        }
    }
}

/// A split or merge in the status history (the core's transition record).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionStatus {
    /// When it started, with microsecond precision (so cooldowns and the rate
    /// limit are computed from the same instant after a restart).
    pub at: MicroTime,
    /// `split` or `merge`.
    pub kind: String,
    /// The cells it creates.
    #[serde(default)]
    pub cells: Vec<String>,
}

/// Why a status history entry could not be read back as a core record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransitionStatusError {
    /// The kind is neither `split` nor `merge`.
    #[error("status.recentTransitions: unknown kind {0:?} (expected split or merge)")]
    UnknownKind(String),
    /// A cell id does not parse.
    #[error("status.recentTransitions: {0}")]
    BadCell(#[from] fleetforge_core::cell::ParseCellIdError),
    /// The time lies before the Unix epoch.
    #[error("status.recentTransitions: time {0} is before 1970")]
    BeforeEpoch(String),
}

impl From<&TransitionRecord> for TransitionStatus {
    fn from(r: &TransitionRecord) -> Self {
        Self {
            at: micro_time(r.at),
            kind: match r.kind {
                RecordKind::Split => "split",
                RecordKind::Merge => "merge",
            }
            .into(),
            cells: r.cells.iter().map(ToString::to_string).collect(),
        }
    }
}

impl TryFrom<&TransitionStatus> for TransitionRecord {
    type Error = TransitionStatusError;

    fn try_from(s: &TransitionStatus) -> Result<Self, Self::Error> {
        let kind = match s.kind.as_str() {
            "split" => RecordKind::Split,
            "merge" => RecordKind::Merge,
            other => return Err(TransitionStatusError::UnknownKind(other.into())),
        };
        let millis = u64::try_from(s.at.0.as_millisecond())
            .map_err(|_| TransitionStatusError::BeforeEpoch(s.at.0.to_string()))?;
        let cells = s
            .cells
            .iter()
            .map(|c| c.parse::<CellId>())
            .collect::<Result<_, _>>()?;
        Ok(TransitionRecord {
            at: fleetforge_core::Timestamp::from_millis(millis),
            kind,
            cells,
        })
    }
}

/// A core timestamp (milliseconds since the Unix epoch) as a Kubernetes
/// `MicroTime`. Times past the year 9999 are clamped to the largest one
/// Kubernetes can print.
pub fn micro_time(t: fleetforge_core::Timestamp) -> MicroTime {
    MicroTime(to_jiff(t))
}

/// A core timestamp as a Kubernetes `Time` (second precision when serialized).
pub fn time(t: fleetforge_core::Timestamp) -> Time {
    Time(to_jiff(t))
}

fn to_jiff(t: fleetforge_core::Timestamp) -> jiff::Timestamp {
    let millis = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
    jiff::Timestamp::from_millisecond(millis).unwrap_or(jiff::Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetforge_core::Timestamp;

    #[test]
    fn empty_status_parses() {
        let s: WorldSpecStatus = serde_json::from_str("{}").unwrap();
        assert_eq!(s, WorldSpecStatus::default());
        assert_eq!(serde_json::to_string(&s).unwrap(), "{}");
    }

    #[test]
    fn unknown_phase_and_fields_still_parse() {
        let s: WorldSpecStatus =
            serde_json::from_str(r#"{"phase":"Hibernating","somethingNew":1,"activeCells":3}"#).unwrap();
        assert_eq!(s.phase.as_deref(), Some("Hibernating"));
        assert_eq!(s.active_cells, Some(3));
    }

    #[test]
    fn a_status_of_the_original_fleetforge_parses() {
        // Its cell entries as the API server returns them under this CRD: their
        // `boundaries`, `podName` and `health` pruned, `id` kept.
        let s: WorldSpecStatus = serde_json::from_str(
            r#"{"phase":"Running","activeCells":2,"totalPlayers":0,
                "cells":[{"id":"worldspec-sample-cell-0"},{"id":"c1","bounds":{"x":{"min":0,"max":1}}}]}"#,
        )
        .unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.active_cells, Some(2));
        assert_eq!(s.cells.len(), 1, "the unreadable entry is left out");
        assert_eq!(s.cells[0].id, "c1");
    }

    #[test]
    fn transition_history_round_trips_to_the_millisecond() {
        let rec = TransitionRecord {
            at: Timestamp::from_millis(1_700_000_000_123),
            kind: RecordKind::Merge,
            cells: vec!["c3-01".parse().unwrap()],
        };
        let status = TransitionStatus::from(&rec);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["at"], "2023-11-14T22:13:20.123000Z");
        assert_eq!(json["kind"], "merge");
        let back: TransitionStatus = serde_json::from_value(json).unwrap();
        assert_eq!(TransitionRecord::try_from(&back).unwrap(), rec);
    }

    #[test]
    fn bad_history_entries_are_errors_not_panics() {
        let mut s = TransitionStatus::from(&TransitionRecord {
            at: Timestamp::from_millis(0),
            kind: RecordKind::Split,
            cells: vec![],
        });
        s.kind = "explode".into();
        assert!(matches!(
            TransitionRecord::try_from(&s),
            Err(TransitionStatusError::UnknownKind(_))
        ));
        s.kind = "split".into();
        s.cells = vec!["nope".into()];
        assert!(matches!(
            TransitionRecord::try_from(&s),
            Err(TransitionStatusError::BadCell(_))
        ));
        s.cells.clear();
        s.at = MicroTime(jiff::Timestamp::from_second(-10).unwrap());
        assert!(matches!(
            TransitionRecord::try_from(&s),
            Err(TransitionStatusError::BeforeEpoch(_))
        ));
    }

    #[test]
    fn cell_summary_is_sorted_and_capped() {
        let b = BoundsStatus::from(&Bounds::line((0.0, 1.0)).unwrap());
        let cell = |i: usize| CellSummary {
            id: CellId::root(u32::try_from(i).unwrap()).to_string(),
            bounds: b,
            players: Some(1),
            phase: "Ready".into(),
        };
        let mut s = WorldSpecStatus::default();
        s.set_cells((0..12).rev().map(cell));
        assert!(!s.cell_summary_truncated);
        assert_eq!(s.cells[2].id, "c2");
        assert_eq!(s.cells[10].id, "c10");
        s.set_cells((0..MAX_CELL_SUMMARY + 1).map(cell));
        assert!(s.cell_summary_truncated);
        assert_eq!(s.cells.len(), MAX_CELL_SUMMARY);
        assert_eq!(s.cells.last().unwrap().id, format!("c{}", MAX_CELL_SUMMARY - 1));
    }

    #[test]
    fn bounds_status_mirrors_core_bounds() {
        let b = Bounds::rect((0.0, 10.0), (-5.0, 5.0)).unwrap();
        let s = BoundsStatus::from(&b);
        assert_eq!(s.x, AxisRange { min: 0.0, max: 10.0 });
        assert_eq!(s.y, Some(AxisRange { min: -5.0, max: 5.0 }));
        assert_eq!(s.z, None);
    }
}
