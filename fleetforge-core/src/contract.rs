//! The cell contract on the wire: what a cell process serves and what the operator
//! sends it, as plain serde types, so the operator, the example cell simulator and
//! any game server written in Rust agree on one definition.
//!
//! Every cell serves HTTP on one port. Unauthenticated: [`HEALTHZ`], [`READYZ`],
//! `/metrics` and [`LOAD`] (a [`LoadReport`]). Behind the world's shared token
//! (`Authorization: Bearer <token>`): the hand-over endpoints [`EXPORT`] (an
//! [`ExportRequest`] answered by an [`ExportReport`]) and [`IMPORT`] (an
//! [`ImportRequest`] answered by an [`ImportReport`]), and whatever admin
//! endpoints the game server has.
//!
//! A hand-over moves each session exactly once: the exporting cell sends a batch
//! to the importing cell and forgets it only once the importer acknowledged it;
//! an importer keeps sessions by id, so a batch sent twice (the first answer was
//! lost) is not duplicated.

use serde::{Deserialize, Serialize};

use crate::geometry::{Bounds, Point};
use crate::load::{LoadSample, PositionHistogram};
use crate::time::Timestamp;

/// Liveness: the process is up.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: the cell accepts players and imports.
pub const READYZ: &str = "/readyz";
/// The cell's load, a [`LoadReport`].
pub const LOAD: &str = "/v1/load";
/// Export the sessions a cell holds to the cells that will own their positions.
pub const EXPORT: &str = "/v1/handoff/export";
/// Take over sessions exported by another cell of the same world.
pub const IMPORT: &str = "/v1/handoff/import";

/// The port a cell serves the contract on. The operator sets it in [`env::HTTP_PORT`]
/// and calls cells there, so a cell that honours the variable may serve elsewhere
/// only if the operator is told too.
pub const HTTP_PORT: u16 = 8080;

/// File of the world's current token in the directory named by [`env::TOKEN_DIR`].
pub const TOKEN_FILE: &str = "token";
/// File of the world's previous token, present while its key is being rotated:
/// a cell accepts either, so calls signed before the rotation reached it succeed.
pub const PREVIOUS_TOKEN_FILE: &str = "previous";

/// The environment the operator gives every cell process: who it is, what space
/// it owns and where its credentials are. A cell reads these rather than calling
/// the API server, so it needs no Kubernetes permissions.
pub mod env {
    /// The full world name.
    pub const WORLD: &str = "FLEETFORGE_WORLD";
    /// The cell id (for example `c3-01`).
    pub const CELL_ID: &str = "FLEETFORGE_CELL_ID";
    /// The incarnation of the cell (0 for its first process).
    pub const INCARNATION: &str = "FLEETFORGE_CELL_INCARNATION";
    /// The cell's bounds, as the JSON of [`Bounds`](crate::Bounds).
    pub const BOUNDS: &str = "FLEETFORGE_CELL_BOUNDS";
    /// The port to serve the cell contract on ([`HTTP_PORT`](super::HTTP_PORT)).
    pub const HTTP_PORT: &str = "FLEETFORGE_HTTP_PORT";
    /// The cell's own IP, the address the operator reaches it at and the one a
    /// cell bound to one interface listens on.
    pub const POD_IP: &str = "FLEETFORGE_POD_IP";
    /// The name of the cell's process (its Pod), for logs and metrics.
    pub const POD_NAME: &str = "FLEETFORGE_POD_NAME";
    /// The namespace of the cell's world.
    pub const POD_NAMESPACE: &str = "FLEETFORGE_POD_NAMESPACE";
    /// Players per cell when the cell was created, which the cell reports as its
    /// capacity (the planner reads the world's current value).
    pub const CAPACITY: &str = "FLEETFORGE_CELL_CAPACITY";
    /// The directory holding the world's token: files
    /// [`TOKEN_FILE`](super::TOKEN_FILE) and, during a key rotation,
    /// [`PREVIOUS_TOKEN_FILE`](super::PREVIOUS_TOKEN_FILE).
    pub const TOKEN_DIR: &str = "FLEETFORGE_TOKEN_DIR";
}

/// What a cell reports about its load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Players connected to the cell.
    pub players: u32,
    /// Players the cell is sized for.
    pub capacity: u32,
    /// Where the players are, binned along each axis of the cell's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<PositionHistogram>,
    /// `true` once the cell is draining: it takes no new players.
    #[serde(default)]
    pub draining: bool,
}

impl LoadReport {
    /// The report as a planner sample taken at `at`.
    pub fn sample(self, at: Timestamp) -> LoadSample {
        LoadSample {
            at,
            players: self.players,
            histogram: self.histogram,
        }
    }
}

/// One player session: an id unique within the world, and where the player is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Unique within the world; the key that makes an import idempotent.
    pub id: String,
    /// The player's position.
    pub position: Point,
}

/// A cell that receives sessions in a hand-over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportTarget {
    /// Base URL of the receiving cell's contract port (`http://10.1.2.3:8080`).
    pub address: String,
    /// The space the receiving cell will own.
    pub bounds: Bounds,
}

/// Asks a cell to hand every session it holds to `targets`, each to the target
/// whose space contains it (see [`crate::handoff::assign`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRequest {
    /// The receiving cells; at least one.
    pub targets: Vec<ExportTarget>,
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    /// Sessions the cell held when the export began.
    pub total: u32,
    /// Sessions each target acknowledged, in the order of the request's targets.
    pub moved: Vec<u32>,
    /// Sessions still held: not acknowledged by their target (the export can be
    /// asked again).
    pub remaining: u32,
}

impl ExportReport {
    /// Sessions moved to all targets together.
    pub fn moved_total(&self) -> u32 {
        self.moved.iter().sum()
    }

    /// Whether every session the cell held reached a target and none was
    /// counted twice.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0 && self.moved_total() == self.total
    }
}

/// Sessions for a cell to take over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The sessions.
    pub sessions: Vec<Session>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// Sessions of the request the cell now holds (new ones and ones it already
    /// had from an earlier attempt).
    pub accepted: u32,
    /// Sessions the cell holds after the import.
    pub players: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_report_reads_the_documented_json() {
        let r: LoadReport =
            serde_json::from_str(r#"{"players":7,"capacity":100,"histogram":{"x":[3,4]}}"#).unwrap();
        assert_eq!(r.players, 7);
        assert!(!r.draining);
        let s = r.sample(Timestamp(5));
        assert_eq!((s.at, s.players), (Timestamp(5), 7));
        assert_eq!(s.histogram.unwrap().x, vec![3, 4]);
    }

    #[test]
    fn an_export_is_complete_only_when_every_session_landed_once() {
        let done = ExportReport {
            total: 5,
            moved: vec![2, 3],
            remaining: 0,
        };
        assert!(done.is_complete());
        let partial = ExportReport {
            remaining: 1,
            moved: vec![2, 2],
            ..done.clone()
        };
        assert!(!partial.is_complete());
        let doubled = ExportReport {
            moved: vec![3, 3],
            ..done
        };
        assert!(!doubled.is_complete());
    }
}
