//! A hand-over on the wire: every session of the source cells exported straight to
//! the target cells that own their positions.
//!
//! A hand-over that cannot complete now (a source or target not reachable yet, an
//! export that stopped half-way) is simply asked again by the next reconcile: the
//! sources keep serving meanwhile, an export only sends what remains and an import
//! keeps sessions by id, so asking twice moves nothing twice.

use std::time::Instant;

use fleetforge_core::contract::{ExportReport, ExportRequest, ExportTarget};
use fleetforge_core::{Bounds, CellRef, Health};
use fleetforge_obs::metrics as m;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::cells::client::{CellClient, cell_base_url};
use crate::cells::tokens::WorldTokens;

/// A cell that gives its sessions away, as the reconcile observed it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The cell.
    pub cell: &'a CellRef,
    /// Its health: only a Ready cell is asked; a Failed one has nothing left.
    pub health: Health,
    /// Its Pod IP, if it has one.
    pub ip: Option<&'a str>,
}

/// A cell that takes sessions over, with the space it will own.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The cell.
    pub cell: &'a CellRef,
    /// The space it owns once the hand-over completes.
    pub bounds: Bounds,
    /// Its Pod IP, if it has one.
    pub ip: Option<&'a str>,
}

/// What one source exported.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The source.
    pub source: CellRef,
    /// Its report: how many sessions went to each target.
    pub report: ExportReport,
}

/// How far a hand-over got.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The sources that exported everything they held, in order.
    pub exported: Vec<Exported>,
    /// Whether every source is done: only then may the targets take the space
    /// over and the sources be retired.
    pub complete: bool,
}

/// Moves every session of `sources` to `targets`, each source exporting straight
/// to the targets, one source after the other; stops at the first that cannot
/// complete now.
pub async fn hand_over(
    client: &CellClient,
    tokens: &WorldTokens,
    sources: &[Source<'_>],
    targets: &[Destination<'_>],
) -> Outcome {
    let mut outcome = Outcome::default();
    if sources.is_empty() {
        outcome.complete = true;
        return outcome;
    }
    let mut export_targets = Vec::with_capacity(targets.len());
    for t in targets {
        let Some(ip) = t.ip else {
            debug!(cell = %t.cell, "hand-over target has no IP yet");
            return outcome;
        };
        export_targets.push(ExportTarget {
            address: cell_base_url(ip),
            bounds: t.bounds,
        });
    }
    let request = ExportRequest {
        targets: export_targets,
    };
    for source in sources {
        match source.health {
            // A terminating cell still answers until its grace period ends: exporting
            // from it is what its drain is for (issue 17).
            Health::Ready | Health::Terminating => {}
            // A dead process has nothing left to give; what it held is counted as
            // lost when it is retired.
            Health::Failed => continue,
            Health::Starting | Health::Unready => {
                debug!(cell = %source.cell, health = ?source.health, "hand-over source not answering; waiting");
                return outcome;
            }
        }
        let Some(ip) = source.ip else {
            return outcome;
        };
        let started = Instant::now();
        let exported = client
            .export(ip, tokens, &request)
            .instrument(info_span!("handoff", cell = %source.cell, targets = targets.len()))
            .await;
        match exported {
            Ok(report) if report.is_complete() => {
                let took = started.elapsed().as_secs_f64();
                metrics::histogram!(m::HANDOFF_DURATION).record(took);
                metrics::counter!(m::SESSIONS_HANDED_OVER).increment(u64::from(report.total));
                info!(cell = %source.cell, sessions = report.total, moved = ?report.moved, seconds = took, "sessions handed over");
                outcome.exported.push(Exported {
                    source: source.cell.clone(),
                    report,
                });
            }
            Ok(report) => {
                warn!(cell = %source.cell, total = report.total, moved = ?report.moved, remaining = report.remaining,
                    "hand-over incomplete; the source keeps serving and is asked again");
                return outcome;
            }
            Err(e) => {
                warn!(cell = %source.cell, error = %e, "hand-over failed; the source keeps serving and is asked again");
                return outcome;
            }
        }
    }
    outcome.complete = true;
    outcome
}
