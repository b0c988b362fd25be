//! Telling people what a reconcile did: Events on the world, audit records and the
//! transition metrics. Nothing here may fail a reconcile that already did its
//! work: an Event that cannot be written is logged and dropped.

use fleetforge_core::plan::{Action as PlanAction, Target, Transition, TransitionKind};
use fleetforge_core::{CellRef, Timestamp};
use fleetforge_crd::WorldSpec;
use fleetforge_obs::metrics as m;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::{info, warn};

use crate::cells::handover::Exported;
use crate::mapping::events::{self, event, started_reason};
use crate::reconcile::audit;
use crate::reconcile::context::Context;
use crate::runtime::correlation;

/// Publishes an Event on the world. An Event that cannot be written is logged and
/// dropped: it must never fail the reconcile that already did the work.
///
/// The note ends with the reconcile's correlation id, so `kubectl describe`
/// leads to the log lines and audit events of the reconcile that recorded it.
pub async fn publish(ctx: &Context, ws: &WorldSpec, mut ev: Event) {
    ev.note = ev.note.map(correlation::annotate_note);
    let reference = ws.object_ref(&());
    if let Err(e) = ctx.kube.recorder.publish(&ev, &reference).await {
        warn!(error = %e, reason = %ev.reason, "could not record Event");
    }
}

/// Counts, logs, audits and tells (an Event) a transition that begins; `world`
/// names the world's cell processes.
pub async fn transition_started(ctx: &Context, ws: &WorldSpec, world: &str, transition: &Transition) {
    info!(kind = %transition.kind, reason = %transition.reason, "transition started");
    let cells: Vec<String> = transition
        .actions
        .iter()
        .filter_map(|a| match a {
            PlanAction::Create { cell, .. } | PlanAction::Retire { cell } => Some(cell.process_name(world)),
            PlanAction::HandOver { .. } => None,
        })
        .collect();
    audit::record(
        ws,
        audit::Action::StartTransition,
        &cells,
        &ctx.identity,
        &format!("{}: {}", transition.kind, transition.reason),
    );
    metrics::counter!(m::TRANSITIONS, "kind" => transition.kind.to_string()).increment(1);
    let ev = event(
        EventType::Normal,
        started_reason(transition),
        &transition.kind.to_string(),
        transition.reason.clone(),
    );
    publish(ctx, ws, ev).await;
}

/// Records a split or merge whose old cells are now retired: its count and how
/// long it took since `started` (when the plan started it), if known.
pub fn transition_completed(kind: TransitionKind, started: Option<Timestamp>, now: Timestamp) {
    let (counter, histogram) = match kind {
        TransitionKind::Split => (m::SPLITS, m::SPLIT_DURATION),
        TransitionKind::Merge => (m::MERGES, m::MERGE_DURATION),
        _ => return,
    };
    metrics::counter!(counter).increment(1);
    if let Some(at) = started {
        let took = now.since(at).as_secs_f64();
        metrics::histogram!(histogram).record(took);
        info!(%kind, seconds = took, "transition completed");
    }
}

/// Counts, audits and (with `per_cell_events`) tells the cell Pods just created.
pub async fn cells_created(ctx: &Context, ws: &WorldSpec, created: &[String], per_cell_events: bool) {
    metrics::counter!(m::CELLS_CREATED).increment(created.len() as u64);
    for name in created {
        info!(pod = %name, "cell created");
    }
    if created.is_empty() {
        return;
    }
    audit::record(
        ws,
        audit::Action::CreateCells,
        created,
        &ctx.identity,
        "cell Pods created",
    );
    if per_cell_events {
        let note = format!("created cell Pod {}", created.join(", "));
        publish(
            ctx,
            ws,
            event(EventType::Normal, events::CELL_CREATED, "Create", note),
        )
        .await;
    }
}

/// Counts, audits and (with `per_cell_event`) tells a cell Pod just deleted.
pub async fn cell_retired(ctx: &Context, ws: &WorldSpec, name: &str, per_cell_event: bool) {
    metrics::counter!(m::CELLS_RETIRED).increment(1);
    info!(pod = %name, "cell retired");
    audit::record(
        ws,
        audit::Action::RetireCells,
        &[name.to_owned()],
        &ctx.identity,
        "cell Pod deleted",
    );
    if per_cell_event {
        let note = format!("retired cell Pod {name}");
        publish(
            ctx,
            ws,
            event(EventType::Normal, events::CELL_RETIRED, "Retire", note),
        )
        .await;
    }
}

/// Tells the sessions a source handed over to `targets`.
pub async fn handed_over(ctx: &Context, ws: &WorldSpec, exported: &Exported, targets: &[Target]) {
    let report = &exported.report;
    if report.total == 0 {
        return;
    }
    let targets: Vec<String> = targets.iter().map(|t| t.cell.to_string()).collect();
    let note = format!(
        "{} handed {} sessions over to {} ({:?} each)",
        exported.source,
        report.total,
        targets.join(", "),
        report.moved
    );
    publish(
        ctx,
        ws,
        event(EventType::Normal, events::SESSIONS_HANDED_OVER, "HandOver", note),
    )
    .await;
}

/// Counts and tells the `lost` sessions of a cell that died while serving.
pub async fn sessions_lost(ctx: &Context, ws: &WorldSpec, cell: &CellRef, lost: u32) {
    metrics::counter!(m::SESSIONS_LOST).increment(u64::from(lost));
    warn!(cell = %cell, sessions = lost, "cell died before handing its sessions over");
    let note = format!("cell {cell} died holding {lost} sessions; they are lost");
    publish(
        ctx,
        ws,
        event(EventType::Warning, events::SESSIONS_LOST, "Replace", note),
    )
    .await;
}

/// Tells the world's users that its reconcile failed with an error of `kind`
/// (see [`Error::kind`](crate::runtime::error::Error::kind)), and why: called once per kind of failure in a row, not
/// once per retry.
pub async fn reconcile_failed(ctx: &Context, ws: &WorldSpec, kind: &str, error: &str) {
    let note = format!("reconcile failed ({kind}), retrying with backoff: {error}");
    // The kind is the Event's action: the recorder folds repeats of one
    // (reason, action) into a series, so each kind stays an Event of its own.
    publish(
        ctx,
        ws,
        event(EventType::Warning, events::RECONCILE_FAILED, kind, note),
    )
    .await;
}
