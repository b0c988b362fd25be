//! One world's reconcile as the data flow of the design: observe the world's cell
//! Pods from the reflector store, convert the spec, plan, execute, write status,
//! and decide when to look again.
//!
//! Each step writes only what differs from what the cluster already shows: the
//! Service is applied when it is missing or different, cell Pods are created once
//! and afterwards only have their role annotations changed, status is applied when
//! it changed, Events only when something happened. A steady world costs no write.

use fleetforge_core::pacing::next_look;
use fleetforge_crd::{WorldSpec, resolve_force_merge, to_world};
use fleetforge_obs::metrics as m;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{Instrument, debug, info_span, warn};

use crate::mapping::events::{self, event};
use crate::mapping::observe::{history_from_status, mark, observe_world};
use crate::mapping::status::{invalid_spec_status, world_status};
use crate::reconcile::context::{CACHE_WAIT, Context};
use crate::reconcile::executor::Executor;
use crate::reconcile::report;
use crate::reconcile::writes::{
    apply_budget, apply_service_and_token, apply_status, settle_overrides, settle_restore_layout,
};
use crate::runtime::error::Error;
use crate::runtime::expectations::{CachedPod, Expected};

/// How a reconcile that did not fail ended. The reconcile of an invalid spec
/// succeeds (it reports the problem) but is counted apart, so an alert can tell
/// it from a healthy world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Planned and applied (or nothing to do).
    Planned,
    /// The spec cannot be planned; the world was marked Degraded.
    InvalidSpec,
}

/// Reconciles `ws`: returns when to look at it again and how it ended.
pub async fn reconcile_world(ws: &WorldSpec, ctx: &Context) -> Result<(Action, Done), Error> {
    let (Some(namespace), Some(uid)) = (ws.namespace(), ws.uid()) else {
        // Objects from the API server always carry both; nothing to act on.
        return Ok((Action::await_change(), Done::Planned));
    };
    if ws.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes the cells through their owner references.
        ctx.books.expectations.forget(&uid);
        ctx.books.phases.set(&key_label(&namespace, &ws.name_any()), None);
        return Ok((Action::await_change(), Done::Planned));
    }
    let pods: Vec<Pod> = ctx
        .kube
        .pods
        .state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && p.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .into_iter()
        .map(|p| (*p).clone())
        .collect();
    let cached: Vec<CachedPod<'_>> = pods
        .iter()
        .map(|p| CachedPod {
            name: p.metadata.name.as_deref().unwrap_or_default(),
            uid: p.metadata.uid.as_deref().unwrap_or_default(),
            terminating: p.metadata.deletion_timestamp.is_some(),
            mark: mark(p),
        })
        .collect();
    if !ctx
        .books
        .expectations
        .ready(&uid, ws.metadata.resource_version.as_deref(), &cached)
    {
        debug!("caches predate the last reconcile's writes; waiting for them");
        return Ok((Action::requeue(CACHE_WAIT), Done::Planned));
    }
    let mut expected = Expected::default();
    let result = plan_and_apply(ws, ctx, &namespace, &pods, &mut expected).await;
    ctx.books.expectations.expect(&uid, expected);
    result
}

async fn plan_and_apply(
    ws: &WorldSpec,
    ctx: &Context,
    namespace: &str,
    pods: &[Pod],
    expected: &mut Expected,
) -> Result<(Action, Done), Error> {
    let now = ctx.clock.now();
    let name = ws.name_any();
    let generation = ws.metadata.generation.unwrap_or(0);

    let mut world = match to_world(ws) {
        Ok(world) => world,
        Err(error) => {
            let status = invalid_spec_status(ws.status.as_ref(), &error, generation, now);
            ctx.books
                .phases
                .set(&key_label(namespace, &name), status.phase.as_deref());
            if apply_status(ctx, ws, &status, expected).await? {
                warn!(%error, "invalid spec");
                report::publish(
                    ctx,
                    ws,
                    event(
                        EventType::Warning,
                        events::INVALID_SPEC,
                        "Validate",
                        error.to_string(),
                    ),
                )
                .await;
            }
            return Ok((Action::await_change(), Done::InvalidSpec));
        }
    };

    let (mut observed, unreadable) = observe_world(pods);
    for e in &unreadable {
        warn!(error = %e, "cell Pod cannot be read; it is left alone");
    }
    let mut uids = Vec::with_capacity(observed.cells.len());
    for cell in &mut observed.cells {
        let pod_name = cell.cell.process_name(&name);
        let uid = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod_name.as_str()))
            .and_then(|p| p.metadata.uid.clone());
        if let (Some(uid), Some(_)) = (&uid, &ctx.cells.client) {
            ctx.cells.samples.overlay(uid, cell, now);
        }
        uids.push(uid);
    }
    ctx.books
        .ready_timer
        .observe(&key_label(namespace, &name), &observed, &uids, now);
    let (history, bad_history) = history_from_status(ws.status.as_ref());
    for e in &bad_history {
        warn!(error = %e, "status.recentTransitions entry cannot be read; left out of the history");
    }
    observed.history = history;
    resolve_force_merge(&mut world.overrides, |id| {
        observed.cells.iter().any(|c| &c.cell.id == id && c.is_active())
    });

    let plan = info_span!("plan").in_scope(|| fleetforge_core::plan(&world, &observed, now));
    debug!(transitions = plan.transitions.len(), phase = %plan.summary.phase, "planned");

    apply_service_and_token(ctx, ws).await?;
    apply_budget(ctx, ws, pods).await?;
    let progress = Executor::new(ctx, ws, &world, &observed, pods, now, expected)
        .run(&plan)
        .instrument(info_span!("apply", transitions = plan.transitions.len()))
        .await?;
    settle_overrides(ctx, ws, &plan, expected).await?;
    settle_restore_layout(ctx, ws, &world, &observed, expected).await?;
    let status = world_status(ws.status.as_ref(), &world, &plan, &observed, generation, now);
    apply_status(ctx, ws, &status, expected).await?;
    ctx.books
        .phases
        .set(&key_label(namespace, &name), status.phase.as_deref());

    metrics::gauge!(m::ACTIVE_CELLS, "world" => key_label(namespace, &name))
        .set(f64::from(plan.summary.active_cells));
    metrics::gauge!(m::PLAYERS, "world" => key_label(namespace, &name)).set(plan.summary.players as f64);

    let wait = next_look(
        &world,
        &observed,
        &plan,
        progress.waiting,
        now,
        &ctx.timing.pacing,
    );
    Ok((Action::requeue(wait), Done::Planned))
}

fn key_label(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
