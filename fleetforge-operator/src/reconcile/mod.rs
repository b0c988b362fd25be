//! The reconcile of a world and its error policy, the kube-runtime entry points.
//!
//! - [`world`]: one reconcile as the design's data flow (observe, convert, plan,
//!   execute, write status, decide when to look again);
//! - [`executor`]: carries a plan out (cell Pods: create, activate, retire; the
//!   hand-over is the cells room's);
//! - [`writes`]: the other writes (Service, token Secret, status, annotations);
//! - [`report`] and [`audit`]: Events, audit records and transition metrics;
//! - [`context`]: what the reconciles share.

pub mod audit;
pub mod context;
pub mod executor;
pub mod report;
pub mod world;
pub mod writes;

use std::sync::Arc;
use std::time::Instant;

use fleetforge_crd::WorldSpec;
use fleetforge_obs::metrics as m;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, info_span, warn};

use crate::reconcile::context::Context;
use crate::reconcile::world::{Done, reconcile_world};
use crate::runtime::correlation;
use crate::runtime::error::Error;

/// Reconciles one world (see [`world`]), with its span, correlation id and
/// metrics.
pub async fn reconcile(ws: Arc<WorldSpec>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*ws);
    ctx.books.queue.started(&key);
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
        ctx.books.backoff.succeeded(&key);
    }
    result.map(|(action, _)| action)
}

/// How long to wait before retrying a world whose reconcile failed: exponential
/// per world, with jitter, reset by its next success. The failure is counted by
/// kind, and the world's users get a Warning Event when its kind differs from the
/// previous failure in a row (not one per retry).
pub fn error_policy(ws: Arc<WorldSpec>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*ws);
    let kind = error.kind();
    metrics::counter!(m::RECONCILE_ERRORS, "kind" => kind).increment(1);
    let retry = ctx.books.backoff.failed(&key, kind);
    warn!(world = %key, error = %error, kind, retry_in = ?retry.delay, failures = ctx.books.backoff.failures(&key), "reconcile failed");
    if retry.new_kind {
        let note = error.to_string();
        // The policy is synchronous; the Event must not hold the retry up.
        tokio::spawn(async move { report::reconcile_failed(&ctx, &ws, kind, &note).await });
    }
    Action::requeue(retry.delay)
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

    use std::time::Duration;

    use k8s_openapi::api::core::v1::{Pod, Service};
    use kube::Client;
    use kube::runtime::events::Recorder;
    use serde_json::json;

    use super::*;
    use crate::cells::sampling::Samples;
    use crate::cells::tokens::TokenKeys;
    use crate::reconcile::context::{Books, Cells, Identity, Kube, Timing};
    use crate::runtime::backoff::Backoff;
    use crate::runtime::clock::Clock;
    use crate::runtime::expectations::Expectations;

    /// Answers the API calls of a reconcile: writes echo the world (for world
    /// paths) or the request body, except the ones `fail` says, which get the
    /// status code it returns.
    fn mock_client(
        ws: WorldSpec,
        fail: impl Fn(&str, &str, &Value) -> Option<u16> + Send + Sync + 'static,
    ) -> Client {
        let fail = Arc::new(fail);
        let service = tower::service_fn(move |req: Request<Body>| {
            let (ws, fail) = (ws.clone(), fail.clone());
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let body = serde_json::from_slice::<Value>(&body).unwrap_or(json!({}));
                let (code, json) = match fail(&method, &path, &body) {
                    Some(code) => (
                        code,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                               "reason": "Mocked", "message": format!("mocked {code} for {method} {path}")}),
                    ),
                    None if path.contains("/worldspecs/") => (200, serde_json::to_value(&ws).unwrap()),
                    None => (200, body),
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
        let (budgets, _) = reflector::store::<k8s_openapi::api::policy::v1::PodDisruptionBudget>();
        Arc::new(Context {
            kube: Kube {
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
                budgets,
            },
            books: Books {
                backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
                expectations: Expectations::new(Duration::ZERO, Clock::system()),
                queue: Arc::default(),
                phases: Arc::default(),
                ready_timer: Arc::default(),
            },
            cells: Cells {
                samples: Arc::new(Samples::new(Duration::from_secs(5))),
                client: None,
                tokens: Arc::new(TokenKeys::ephemeral().unwrap()),
            },
            timing: Timing::default(),
            clock: Clock::system(),
            identity: Identity::default(),
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
        // The first attempt meets a 429 on the Service, the next two a 409 on a Pod.
        let attempt = Arc::new(Mutex::new(0u32));
        let seen = attempt.clone();
        let events = Arc::new(Mutex::new(Vec::<Value>::new()));
        let posted = events.clone();
        let client = mock_client((*ws).clone(), move |method, path, body| {
            if path.contains("/events") {
                posted.lock().unwrap().push(body.clone());
            }
            let n = *seen.lock().unwrap();
            match (n, method, path) {
                (0, "PATCH", p) if p.contains("/services/") => Some(429),
                (1 | 2, "PATCH", p) if p.contains("/pods/") => Some(409),
                _ => None,
            }
        });
        let ctx = context(client);
        let key = ObjectRef::from_obj(&*ws);

        for (failures, expected_code) in [(1, 429), (2, 409), (3, 409)] {
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
            assert_eq!(ctx.books.backoff.failures(&key), failures);
            *attempt.lock().unwrap() += 1;
        }

        reconcile(ws.clone(), ctx.clone()).await.unwrap();
        assert_eq!(
            ctx.books.backoff.failures(&key),
            0,
            "a success resets the world's backoff"
        );

        // Users were told once per kind of failure: a Warning for the throttling,
        // one for the conflict, none for the conflict's retry (the backoff's own
        // test shows a repeat is not news).
        let told = fleetforge_testenv::eventually(
            "a ReconcileFailed Event per kind of failure",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                let events = events.clone();
                async move {
                    let actions: Vec<String> = events
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|e| e["reason"] == "ReconcileFailed")
                        .map(|e| {
                            format!(
                                "{} {}",
                                e["type"].as_str().unwrap_or(""),
                                e["action"].as_str().unwrap_or("")
                            )
                        })
                        .collect();
                    Ok((actions.len() >= 2).then_some(actions))
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(told, ["Warning throttled", "Warning conflict"]);
    }

    #[tokio::test]
    async fn a_world_without_a_uid_is_left_alone_without_a_call() {
        let mut ws = (*world()).clone();
        ws.metadata.uid = None;
        let client = mock_client(ws.clone(), |method, path, _| {
            panic!("unexpected call {method} {path}")
        });
        let action = reconcile(Arc::new(ws), context(client)).await.unwrap();
        assert_eq!(action, Action::await_change());
    }
}
