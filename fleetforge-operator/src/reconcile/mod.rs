//! The WorldSpec reconcile, as the data flow of the design: observe the world's
//! cell Pods from the reflector store, convert the spec, plan, apply.
//!
//! Each step writes only what differs from what the cluster already shows: the
//! Service is applied when it is missing or different, cell Pods are created once
//! and afterwards only have their role annotations changed, status is applied when
//! it changed, Events only when something happened. A steady world costs no write.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetforge_core::plan::{OverrideRequest, OverrideResult, Plan};
use fleetforge_core::{Health, Observed, Timestamp, World};
use fleetforge_crd::keys::{
    ANNOTATION_FORCE_MERGE, ANNOTATION_FORCE_SPLIT, ANNOTATION_RESTORE_LAYOUT, ANNOTATION_ROLE, ROLE_ACTIVE,
};
use fleetforge_crd::{WorldSpec, WorldSpecStatus, resolve_force_merge, to_world};
use fleetforge_obs::metrics as m;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::apply::Executor;
use crate::audit;
use crate::backoff::Backoff;
use crate::cell_client::CellClient;
use crate::cell_pod::{DesiredError, desired_service, desired_token_secret, token_secret_name};
use crate::cell_token::{TokenKeys, WorldTokens};
use crate::correlation;
use crate::diff::covers;
use crate::events::{self, event};
use crate::expectations::{CachedPod, Expectations, Expected};
use crate::gauges::{Phases, ReadyTimer};
use crate::observe::{history_from_status, observe_world};
use crate::overrides::{removal_patch, requester, settled};
use crate::queue::Queue;
use crate::sampling::Samples;
use crate::status::{invalid_spec_status, world_status};

/// The one field manager every write of the operator goes under.
pub const FIELD_MANAGER: &str = "fleetforge";

/// How often reconciles come, besides the changes that wake them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// A steady world is looked at again after this long (the resync).
    pub resync: Duration,
    /// A world with work in progress (cells starting, a transition waiting for a
    /// deadline) is looked at again after this long.
    pub busy: Duration,
    /// How many cell Pods one reconcile creates at once.
    pub create_concurrency: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            busy: Duration::from_secs(2),
            create_concurrency: 16,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events on WorldSpecs.
    pub recorder: Recorder,
    /// The cell Pods the operator manages, in the namespaces it watches.
    pub pods: Store<Pod>,
    /// The worlds' headless Services.
    pub services: Store<Service>,
    /// Failure counts per world, for `error_policy`.
    pub backoff: Backoff<ObjectRef<WorldSpec>>,
    /// What each world's last reconcile wrote and expects the caches to show.
    pub expectations: Expectations,
    /// Resync and requeue intervals.
    pub timing: Timing,
    /// Recent load samples of every cell process.
    pub samples: Arc<Samples>,
    /// Calls to cells; `None` when cells do not speak the cell contract (no
    /// sampling, nothing to hand over).
    pub cells: Option<CellClient>,
    /// Where the worlds' cell tokens come from.
    pub tokens: Arc<TokenKeys>,
    /// This instance's name (its Pod), named in audit records.
    pub instance: String,
    /// Worlds waiting for a reconcile (the queue-depth gauge).
    pub queue: Arc<Queue>,
    /// Each world's phase, for the worlds-by-phase gauge.
    pub phases: Arc<Phases>,
    /// Cells seen starting, for the time-to-serve histogram.
    pub ready_timer: Arc<ReadyTimer>,
}

impl Context {
    /// The cell tokens of `ws`. A key that can no longer be read is reported and
    /// the last good one kept.
    pub fn world_tokens(&self, ws: &WorldSpec) -> WorldTokens {
        let (tokens, error) = self
            .tokens
            .world_tokens(ws.metadata.uid.as_deref().unwrap_or_default());
        if let Some(error) = error {
            warn!(%error, "cell token key unreadable; keeping the last good key");
        }
        tokens
    }
}

/// Why a reconcile failed; it is retried with the world's backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{verb} {object}: {source}")]
    Api {
        /// The verb (`apply`, `delete`, `patch`, ...).
        verb: &'static str,
        /// What it was called on.
        object: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The desired objects could not be built.
    #[error(transparent)]
    Desired(#[from] DesiredError),
}

impl Error {
    pub(crate) fn api(verb: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        let code = match &source {
            kube::Error::Api(s) => s.code.to_string(),
            _ => "none".to_owned(),
        };
        metrics::counter!(m::API_ERRORS, "verb" => verb, "code" => code).increment(1);
        Self::Api {
            verb,
            object: object.into(),
            source,
        }
    }
}

/// The current wall-clock time; the one place the operator reads the clock for
/// the planner.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Timestamp(ms)
}

/// Reconciles one world: see the module documentation.
pub async fn reconcile(ws: Arc<WorldSpec>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*ws);
    ctx.queue.started(&key);
    let id = correlation::new_id();
    let span = info_span!(
        "reconcile",
        world = %key,
        generation = ws.metadata.generation.unwrap_or(0),
        correlation_id = %id,
    );
    let started = Instant::now();
    correlation::attach(&span, &id);
    let result = reconcile_world(&ws, &ctx).instrument(span).await;
    metrics::histogram!(m::RECONCILE_DURATION).record(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok((_, Done::Planned)) => "ok",
        Ok((_, Done::InvalidSpec)) => "invalid_spec",
        Err(_) => "error",
    };
    metrics::counter!(m::RECONCILES, "result" => label).increment(1);
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result.map(|(action, _)| action)
}

/// How a reconcile that did not fail ended. The reconcile of an invalid spec
/// succeeds (it reports the problem) but is counted apart, so an alert can tell
/// it from a healthy world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Planned and applied (or nothing to do).
    Planned,
    /// The spec cannot be planned; the world was marked Degraded.
    InvalidSpec,
}

/// How long to wait before retrying a world whose reconcile failed: exponential
/// per world, with jitter, reset by its next success.
pub fn error_policy(ws: Arc<WorldSpec>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*ws);
    let delay = ctx.backoff.failed(&key);
    warn!(world = %key, error = %error, retry_in = ?delay, failures = ctx.backoff.failures(&key), "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_world(ws: &WorldSpec, ctx: &Context) -> Result<(Action, Done), Error> {
    let (Some(namespace), Some(uid)) = (ws.namespace(), ws.uid()) else {
        // Objects from the API server always carry both; nothing to act on.
        return Ok((Action::await_change(), Done::Planned));
    };
    if ws.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes the cells through their owner references.
        ctx.expectations.forget(&uid);
        ctx.phases.set(&key_label(&namespace, &ws.name_any()), None);
        return Ok((Action::await_change(), Done::Planned));
    }
    let pods: Vec<Pod> = ctx
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
            active: p.annotations().get(ANNOTATION_ROLE).map(String::as_str) == Some(ROLE_ACTIVE),
        })
        .collect();
    if !ctx
        .expectations
        .ready(&uid, ws.metadata.resource_version.as_deref(), &cached)
    {
        debug!("caches predate the last reconcile's writes; waiting for them");
        return Ok((Action::requeue(Duration::from_millis(200)), Done::Planned));
    }
    let mut expected = Expected::default();
    let result = plan_and_apply(ws, ctx, &namespace, &pods, &mut expected).await;
    ctx.expectations.expect(&uid, expected);
    result
}

async fn plan_and_apply(
    ws: &WorldSpec,
    ctx: &Context,
    namespace: &str,
    pods: &[Pod],
    expected: &mut Expected,
) -> Result<(Action, Done), Error> {
    let now = now();
    let name = ws.name_any();
    let generation = ws.metadata.generation.unwrap_or(0);

    let mut world = match to_world(ws) {
        Ok(world) => world,
        Err(error) => {
            let status = invalid_spec_status(ws.status.as_ref(), &error, generation, now);
            ctx.phases
                .set(&key_label(namespace, &name), status.phase.as_deref());
            if apply_status(ctx, ws, &status, expected).await? {
                warn!(%error, "invalid spec");
                publish(
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
        if let (Some(uid), Some(_)) = (&uid, &ctx.cells) {
            ctx.samples.overlay(uid, cell, now);
        }
        uids.push(uid);
    }
    ctx.ready_timer
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
    let progress = Executor::new(ctx, ws, &world, &observed, pods, now, expected)
        .run(&plan)
        .instrument(info_span!("apply", transitions = plan.transitions.len()))
        .await?;
    settle_overrides(ctx, ws, &plan, expected).await?;
    settle_restore_layout(ctx, ws, &world, &observed, expected).await?;
    let status = world_status(ws.status.as_ref(), &world, &plan, &observed, generation, now);
    apply_status(ctx, ws, &status, expected).await?;
    ctx.phases
        .set(&key_label(namespace, &name), status.phase.as_deref());

    metrics::gauge!(m::ACTIVE_CELLS, "world" => key_label(namespace, &name))
        .set(f64::from(plan.summary.active_cells));
    metrics::gauge!(m::PLAYERS, "world" => key_label(namespace, &name)).set(plan.summary.players as f64);

    let busy = !plan.is_empty()
        || progress.waiting
        || observed
            .cells
            .iter()
            .any(|c| c.health != Health::Ready || !c.is_active());
    if busy {
        return Ok((Action::requeue(ctx.timing.busy), Done::Planned));
    }
    // Load samples wake the world when a threshold is crossed or has held, but a
    // cell that stayed hot through a cooldown or the rate limit needs a look when
    // those end.
    let pacing_ends = observed
        .history
        .iter()
        .flat_map(|r| {
            [
                r.at + world.policy.cooldown,
                r.at + world.policy.rate_limit_period,
            ]
        })
        .filter(|&end| end > now)
        .min();
    let wait = pacing_ends.map_or(ctx.timing.resync, |end| {
        (end.since(now) + Duration::from_millis(100)).min(ctx.timing.resync)
    });
    Ok((Action::requeue(wait), Done::Planned))
}

fn key_label(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Publishes an Event on the world. An Event that cannot be written is logged and
/// dropped: it must never fail the reconcile that already did the work.
///
/// The note ends with the reconcile's correlation id, so `kubectl describe`
/// leads to the log lines and audit events of the reconcile that recorded it.
pub(crate) async fn publish(ctx: &Context, ws: &WorldSpec, mut ev: kube::runtime::events::Event) {
    ev.note = ev.note.map(correlation::annotate_note);
    let reference = ws.object_ref(&());
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        warn!(error = %e, reason = %ev.reason, "could not record Event");
    }
}

/// Applies the world's token Secret and headless Service when the Service is
/// missing or differs. The Service carries the fingerprint of the tokens, so a
/// new master key shows as a Service that differs: the Secret is written first,
/// then the Service records that it was. The operator never reads the Secret.
async fn apply_service_and_token(ctx: &Context, ws: &WorldSpec) -> Result<(), Error> {
    let tokens = ctx.world_tokens(ws);
    let desired = desired_service(ws, &tokens.fingerprint())?;
    let namespace = desired.metadata.namespace.clone().unwrap_or_default();
    let name = desired.metadata.name.clone().unwrap_or_default();
    let live = ctx.services.get(&ObjectRef::new(&name).within(&namespace));
    if let Some(live) = live
        && let (Ok(l), Ok(d)) = (serde_json::to_value(&*live), serde_json::to_value(&desired))
        && covers(&l, &d)
    {
        return Ok(());
    }
    let secret = desired_token_secret(ws, &tokens)?;
    let secret_name = token_secret_name(&ws.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    secrets
        .patch(
            &secret_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| Error::api("apply", format!("secret {namespace}/{secret_name}"), e))?;
    info!(secret = %secret_name, "applied the world's cell token Secret");
    audit::record(
        ws,
        audit::Action::WriteToken,
        &[],
        &ctx.instance,
        &format!(
            "cell token Secret {secret_name} written (fingerprint {})",
            tokens.fingerprint()
        ),
    );
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|e| Error::api("apply", format!("service {namespace}/{name}"), e))?;
    info!(service = %name, "applied the world's headless Service");
    Ok(())
}

/// Applies `status` to the world's status subresource unless it already has it.
/// Returns whether it wrote.
async fn apply_status(
    ctx: &Context,
    ws: &WorldSpec,
    status: &WorldSpecStatus,
    expected: &mut Expected,
) -> Result<bool, Error> {
    let desired = serde_json::to_value(status).unwrap_or_default();
    let live = ws.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
    if live.as_ref() == Some(&desired) {
        return Ok(false);
    }
    let namespace = ws.namespace().unwrap_or_default();
    let name = ws.name_any();
    let api: Api<WorldSpec> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": WorldSpec::api_version(&()),
        "kind": WorldSpec::kind(&()),
        "status": desired,
    });
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::api("apply", format!("worldspec {namespace}/{name} status"), e))?;
    expected.wrote_world(
        ws.metadata.resource_version.as_deref(),
        written.metadata.resource_version.as_deref(),
    );
    Ok(true)
}

/// Applies a JSON patch of the world's annotations (one whose `test` operations
/// guard what the plan saw).
async fn patch_annotations(
    ctx: &Context,
    ws: &WorldSpec,
    patch: Value,
    expected: &mut Expected,
) -> Result<(), Error> {
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap_or_default();
    let namespace = ws.namespace().unwrap_or_default();
    let name = ws.name_any();
    let api: Api<WorldSpec> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = api
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(|e| Error::api("patch", format!("worldspec {namespace}/{name} annotations"), e))?;
    expected.wrote_world(
        ws.metadata.resource_version.as_deref(),
        written.metadata.resource_version.as_deref(),
    );
    Ok(())
}

/// Removes the restore layout once the world has cells of its partition: from
/// then on it only matters if every cell vanished, and a layout that old should
/// not come back.
async fn settle_restore_layout(
    ctx: &Context,
    ws: &WorldSpec,
    world: &World,
    observed: &Observed,
    expected: &mut Expected,
) -> Result<(), Error> {
    let Some(value) = ws.annotations().get(ANNOTATION_RESTORE_LAYOUT) else {
        return Ok(());
    };
    let key = world.layout_key();
    if !observed.cells.iter().any(|c| c.layout == key) {
        return Ok(());
    }
    let path = format!(
        "/metadata/annotations/{}",
        ANNOTATION_RESTORE_LAYOUT.replace('/', "~1")
    );
    let patch = json!([
        {"op": "test", "path": path, "value": value},
        {"op": "remove", "path": path},
    ]);
    patch_annotations(ctx, ws, patch, expected).await?;
    info!(
        cells = world.overrides.restore_layout.len(),
        "restore layout in place; annotation removed"
    );
    Ok(())
}

/// Removes the override requests the plan is done with from the world's
/// annotations and records an Event naming who asked.
async fn settle_overrides(
    ctx: &Context,
    ws: &WorldSpec,
    plan: &Plan,
    expected: &mut Expected,
) -> Result<(), Error> {
    let done = settled(&plan.overrides);
    let Some(patch) = removal_patch(ws, &done) else {
        return Ok(());
    };
    patch_annotations(ctx, ws, patch, expected).await?;
    for outcome in done {
        let (key, what) = match &outcome.request {
            OverrideRequest::Split(id) => (ANNOTATION_FORCE_SPLIT, format!("force-split of {id}")),
            OverrideRequest::Merge(id) => (ANNOTATION_FORCE_MERGE, format!("force-merge into {id}")),
        };
        let who = requester(ws, key).unwrap_or_else(|| "an unknown field manager".to_owned());
        let ev = match &outcome.result {
            OverrideResult::Rejected(why) => event(
                EventType::Warning,
                events::OVERRIDE_REJECTED,
                "Override",
                format!("{what} requested by {who} rejected: {why}"),
            ),
            _ => event(
                EventType::Normal,
                events::OVERRIDE_APPLIED,
                "Override",
                format!("{what} requested by {who} started"),
            ),
        };
        info!(requester = %who, "{}", ev.note.as_deref().unwrap_or_default());
        audit::record(
            ws,
            audit::Action::Override,
            &[],
            &ctx.instance,
            &format!("{what} requested by field manager {who}: {:?}", outcome.result),
        );
        publish(ctx, ws, ev).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Error paths the real API server cannot be made to produce on demand: a
    //! mock answers every call, failing the ones a test names.

    use std::sync::Mutex;

    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use kube::runtime::events::Reporter;
    use kube::runtime::reflector;
    use serde_json::Value;

    use super::*;

    /// Answers the API calls of a reconcile: writes echo the world (for world
    /// paths) or the request body, except the ones `fail` says, which get the
    /// status code it returns.
    fn mock_client(
        ws: WorldSpec,
        fail: impl Fn(&str, &str) -> Option<u16> + Send + Sync + 'static,
    ) -> Client {
        let fail = Arc::new(fail);
        let service = tower::service_fn(move |req: Request<Body>| {
            let (ws, fail) = (ws.clone(), fail.clone());
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let (code, json) = match fail(&method, &path) {
                    Some(code) => (
                        code,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                               "reason": "Mocked", "message": format!("mocked {code} for {method} {path}")}),
                    ),
                    None if path.contains("/worldspecs/") => (200, serde_json::to_value(&ws).unwrap()),
                    None => (200, serde_json::from_slice::<Value>(&body).unwrap_or(json!({}))),
                };
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&json).unwrap()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "games")
    }

    fn context(client: Client) -> Arc<Context> {
        let (pods, _) = reflector::store::<Pod>();
        let (services, _) = reflector::store::<Service>();
        Arc::new(Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "test".into(),
                    instance: None,
                },
            ),
            client,
            pods,
            services,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            expectations: Expectations::new(Duration::ZERO),
            timing: Timing::default(),
            samples: Arc::new(Samples::new(Duration::from_secs(5))),
            cells: None,
            tokens: Arc::new(TokenKeys::ephemeral().unwrap()),
            instance: "test".into(),
            queue: Arc::default(),
            phases: Arc::default(),
            ready_timer: Arc::default(),
        })
    }

    fn world() -> Arc<WorldSpec> {
        let (mut ws, _) = crate::testutil::world_spec("meadow");
        ws.metadata.resource_version = Some("1".into());
        ws.metadata.generation = Some(1);
        Arc::new(ws)
    }

    #[tokio::test]
    async fn throttling_and_conflicts_are_retried_with_growing_backoff_reset_by_success() {
        let ws = world();
        // The first two attempts meet a 429 on the Service, then a 409 on a Pod.
        let attempt = Arc::new(Mutex::new(0u32));
        let seen = attempt.clone();
        let client = mock_client((*ws).clone(), move |method, path| {
            let n = *seen.lock().unwrap();
            match (n, method, path) {
                (0, "PATCH", p) if p.contains("/services/") => Some(429),
                (1, "PATCH", p) if p.contains("/pods/") => Some(409),
                _ => None,
            }
        });
        let ctx = context(client);
        let key = ObjectRef::from_obj(&*ws);

        for (failures, expected_code) in [(1, 429), (2, 409)] {
            let err = reconcile(ws.clone(), ctx.clone()).await.unwrap_err();
            match &err {
                Error::Api {
                    source: kube::Error::Api(s),
                    ..
                } => assert_eq!(s.code, expected_code, "{err}"),
                other => panic!("expected an API error, got {other}"),
            }
            // The retry is scheduled, not a crash, and the world's count grows.
            assert_ne!(
                error_policy(ws.clone(), &err, ctx.clone()),
                Action::await_change()
            );
            assert_eq!(ctx.backoff.failures(&key), failures);
            *attempt.lock().unwrap() += 1;
        }

        reconcile(ws.clone(), ctx.clone()).await.unwrap();
        assert_eq!(
            ctx.backoff.failures(&key),
            0,
            "a success resets the world's backoff"
        );
    }

    #[tokio::test]
    async fn a_world_without_a_uid_is_left_alone_without_a_call() {
        let mut ws = (*world()).clone();
        ws.metadata.uid = None;
        let client = mock_client(ws.clone(), |method, path| {
            panic!("unexpected call {method} {path}")
        });
        let action = reconcile(Arc::new(ws), context(client)).await.unwrap();
        assert_eq!(action, Action::await_change());
    }
}
