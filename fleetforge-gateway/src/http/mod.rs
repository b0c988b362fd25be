//! The player-facing HTTP API (documented in `docs/gateway.md`):
//!
//! - `GET /v1/worlds/{namespace}/{world}/locate?x=..&y=..[&z=..]`: the cell that
//!   owns a position ([`answers::Located`]);
//! - `GET /v1/worlds/{namespace}/{world}/topology`: every authoritative cell with
//!   its neighbours ([`answers::Topology`]), or with `Accept: text/event-stream`
//!   a server-sent event per change.
//!
//! Every answer that is not a success is JSON ([`answers::ErrorBody`]) with a
//! stable code. In front of the handlers, outermost first: request metrics, a
//! per-client rate limit (by peer IP, `tower_governor`), a bound on request
//! bodies, and a timeout.

pub mod answers;
pub mod routes;
pub mod shared;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetforge_obs::metrics::{GATEWAY_REQUEST_DURATION, GATEWAY_REQUESTS};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::http::answers::Failure;
use crate::http::shared::Api;
use crate::state::State;

/// The largest request body accepted: the API takes none.
const MAX_BODY_BYTES: usize = 1024;

/// How much one client (one peer IP) may ask, and how long anything may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Requests a client may make per second, sustained.
    pub rate_per_second: f64,
    /// Requests a client may make at once after being quiet.
    pub burst: u32,
    /// Time to answer a request (a stream: to start it).
    pub request_timeout: Duration,
    /// Topology streams open at once, across clients.
    pub max_streams: usize,
    /// Silence after which a stream sends a keep-alive comment.
    pub keep_alive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_second: 20.0,
            burst: 40,
            request_timeout: Duration::from_secs(2),
            max_streams: 10_000,
            keep_alive: routes::KEEP_ALIVE,
        }
    }
}

impl Limits {
    /// Whether the API can be set up with these limits.
    pub fn check(&self) -> Result<(), LimitsError> {
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0) {
            return Err(LimitsError::Rate(self.rate_per_second));
        }
        if self.burst == 0 {
            return Err(LimitsError::Burst);
        }
        Ok(())
    }
}

/// Why the API cannot be set up with the limits given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitsError {
    /// The rate is not a positive number of requests per second.
    #[error("--rate-per-second must be a positive number, not {0}")]
    Rate(f64),
    /// The burst is zero.
    #[error("--rate-burst must be at least 1")]
    Burst,
}

/// The API's routes and layers, serving `state` within `limits`. Serve it with
/// the peer's address ([`serve`] does): the rate limit keys on it.
pub fn router(state: Arc<State>, limits: &Limits) -> Result<Router, LimitsError> {
    limits.check()?;
    let governor = GovernorConfigBuilder::default()
        .period(Duration::from_secs_f64(1.0 / limits.rate_per_second))
        .burst_size(limits.burst)
        .key_extractor(PeerIpKeyExtractor)
        .finish()
        .ok_or(LimitsError::Burst)?;
    let limiter = governor.limiter().clone();
    // The limiter keeps a cell per client: forget the idle ones now and then, so
    // that many clients seen once do not grow the gateway's memory for ever.
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
    let api = Api {
        state,
        streams: Arc::new(Semaphore::new(limits.max_streams)),
        keep_alive: limits.keep_alive,
    };
    Ok(Router::new()
        .route("/v1/worlds/{namespace}/{world}/locate", get(routes::locate))
        .route("/v1/worlds/{namespace}/{world}/topology", get(routes::topology))
        .fallback(routes::not_found)
        .with_state(api)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(GovernorLayer::new(governor).error_handler(rate_limited))
        .layer(middleware::from_fn(record)))
}

/// The answer to a client over its rate.
fn rate_limited(error: tower_governor::GovernorError) -> Response {
    match error {
        tower_governor::GovernorError::TooManyRequests { wait_time, .. } => Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address",
        )
        .retry_after(u32::try_from(wait_time.max(1)).unwrap_or(u32::MAX))
        .into_response(),
        other => {
            Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()).into_response()
        }
    }
}

/// The `route` label of a request.
fn route_of(request: &Request) -> &'static str {
    let path = request.uri().path();
    if !path.starts_with("/v1/worlds/") {
        "other"
    } else if path.ends_with("/locate") {
        "locate"
    } else if path.ends_with("/topology") {
        if routes::wants_stream(request.headers()) {
            "topology_stream"
        } else {
            "topology"
        }
    } else {
        "other"
    }
}

/// Counts every answer by route and status, and times it.
async fn record(request: Request, next: Next) -> Response {
    let route = route_of(&request);
    let start = Instant::now();
    let response = next.run(request).await;
    metrics::counter!(GATEWAY_REQUESTS, "route" => route, "code" => response.status().as_str().to_owned())
        .increment(1);
    metrics::histogram!(GATEWAY_REQUEST_DURATION, "route" => route).record(start.elapsed().as_secs_f64());
    response
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
