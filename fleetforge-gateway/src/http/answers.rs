//! The JSON bodies the gateway answers with, as a game client reads them
//! (`docs/gateway.md` shows each one). They are also what a Rust client
//! deserializes, so they derive both directions.

use std::net::IpAddr;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetforge_core::Bounds;
use serde::{Deserialize, Serialize};

use crate::directory::{CellEntry, Epoch};
use crate::worlds::WorldView;

/// Where a player connects to a cell: its Pod IP and the world's game port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The cell Pod's IP.
    pub ip: IpAddr,
    /// The world's game port (`spec.gateway.gamePort`).
    pub port: u16,
}

/// The answer to a locate: the cell that owns the position now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Located {
    /// The cell's id.
    pub cell: String,
    /// Which process of the cell (0 for the first; a replacement counts up).
    pub incarnation: u32,
    /// Where to connect.
    pub address: Address,
    /// The space the cell serves: the player may move within it without asking
    /// again.
    pub bounds: Bounds,
    /// The world's layout epoch: an answer with a lower epoch is stale.
    pub epoch: Epoch,
}

/// One authoritative cell in a topology answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyCell {
    /// The cell's id.
    pub cell: String,
    /// Which process of the cell.
    pub incarnation: u32,
    /// The space it owns (where a newer cell overlaps it, the newer one owns the
    /// overlap).
    pub bounds: Bounds,
    /// Where to connect, once the cell has an address.
    pub address: Option<Address>,
    /// Whether it takes players now (ready, and not shutting down).
    pub serving: bool,
    /// The ids of its face neighbours.
    pub neighbours: Vec<String>,
}

/// The answer to a topology request, and each event of a topology stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// The world's bounds.
    pub bounds: Bounds,
    /// The layout epoch.
    pub epoch: Epoch,
    /// Every authoritative cell, newest activation first.
    pub cells: Vec<TopologyCell>,
}

/// The body of every answer that is not a success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`invalid_parameter`, `outside_world`,
    /// `unknown_world`, `not_serving`, `unowned`, `starting`, ...).
    pub code: String,
    /// What a person reads.
    pub message: String,
    /// The query parameter at fault, for `invalid_parameter` and `outside_world`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// The cell that owns the position, for `not_serving`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    /// The layout epoch the answer was made at, where a world was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
}

/// An error answer under construction.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    status: StatusCode,
    retry_after: Option<u32>,
    // Boxed: failures travel in `Result`s whose success is small.
    detail: Box<ErrorDetail>,
}

impl Failure {
    /// An answer of `status` with `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            retry_after: None,
            detail: Box::new(ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                parameter: None,
                cell: None,
                epoch: None,
            }),
        }
    }

    /// Names the query parameter at fault.
    pub fn parameter(mut self, parameter: &str) -> Self {
        self.detail.parameter = Some(parameter.to_owned());
        self
    }

    /// Names the cell concerned.
    pub fn cell(mut self, cell: &str) -> Self {
        self.detail.cell = Some(cell.to_owned());
        self
    }

    /// Says at which epoch the answer was made.
    pub fn epoch(mut self, epoch: Epoch) -> Self {
        self.detail.epoch = Some(epoch);
        self
    }

    /// Asks the client to retry after `seconds` (`Retry-After`).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(ErrorBody { error: *self.detail })).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The locate answer for `cell` of `view`, if the cell can take the player.
pub fn located(view: &WorldView, cell: &CellEntry) -> Option<Located> {
    let ip = cell.address.filter(|_| cell.serving())?;
    Some(Located {
        cell: cell.cell.id.to_string(),
        incarnation: cell.cell.incarnation,
        address: Address {
            ip,
            port: view.publication.game_port,
        },
        bounds: cell.bounds,
        epoch: view.directory.epoch(),
    })
}

/// The topology answer of `view`.
pub fn topology(view: &WorldView) -> Topology {
    let cells = view.directory.authoritative();
    let neighbours = view.neighbours();
    Topology {
        bounds: *view.directory.world(),
        epoch: view.directory.epoch(),
        cells: cells
            .iter()
            .zip(neighbours)
            .map(|(c, near)| TopologyCell {
                cell: c.cell.id.to_string(),
                incarnation: c.cell.incarnation,
                bounds: c.bounds,
                address: c.address.map(|ip| Address {
                    ip,
                    port: view.publication.game_port,
                }),
                serving: c.serving(),
                neighbours: near.iter().map(|&k| cells[k].cell.id.to_string()).collect(),
            })
            .collect(),
    }
}
