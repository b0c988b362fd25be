//! The admin HTTP endpoints on their own port: `/healthz` (the process is alive),
//! `/readyz` (the process can do its job), `/metrics` (Prometheus text) and
//! `/v1/log-filter` (the log filter, see below).
//!
//! # The log filter
//!
//! `GET /v1/log-filter` answers the `EnvFilter` directive in force, as text.
//! `PUT /v1/log-filter` with a directive as the body (`curl -X PUT --data-binary
//! 'info,fleetforge_operator=debug' …`) replaces it and answers the new one; a
//! directive that does not parse gets `400`, naming it, and the filter stays. Both
//! answer `404` when the process gave the admin server no [`LogControl`].
//!
//! The admin port is open to whatever scrapes the metrics, so `PUT` is accepted
//! only from a loopback peer and answered `403` otherwise: change the filter through
//! `kubectl port-forward`, whose connections reach the Pod on loopback. A sidecar
//! proxy that intercepts inbound traffic (a service mesh) also connects from
//! loopback: keep the admin port out of its interception. Serving needs the peer
//! address, which [`serve_admin`] provides; a router served without it refuses
//! every `PUT`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::logging::{LogControl, LoggingError};

/// The longest filter `PUT /v1/log-filter` reads; real ones are a line.
const MAX_FILTER_BYTES: usize = 16 * 1024;

/// What the admin endpoints report; cheap to clone and shared with the code that
/// flips readiness.
#[derive(Clone)]
pub struct AdminState {
    ready: Arc<AtomicBool>,
    metrics: Option<PrometheusHandle>,
    log: Option<LogControl>,
}

impl AdminState {
    /// Not ready yet; `/metrics` renders `metrics` (or is empty without one).
    pub fn new(metrics: Option<PrometheusHandle>) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            metrics,
            log: None,
        }
    }

    /// Serves `log` on `/v1/log-filter`; without it that endpoint answers `404`.
    pub fn with_log_control(mut self, log: LogControl) -> Self {
        self.log = Some(log);
        self
    }

    /// Sets what `/readyz` answers.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// What `/readyz` answers.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The admin routes, for serving or for testing without a socket.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/log-filter", get(log_filter).put(set_log_filter))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn log_filter(State(state): State<AdminState>) -> Response {
    match &state.log {
        Some(log) => (StatusCode::OK, format!("{}\n", log.filter())).into_response(),
        None => no_log_control(),
    }
}

async fn set_log_filter(State(state): State<AdminState>, request: Request) -> Response {
    let Some(log) = &state.log else {
        return no_log_control();
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    if !may_change_log_filter(peer) {
        return (
            StatusCode::FORBIDDEN,
            "the log filter can be changed only from loopback, e.g. through kubectl port-forward\n",
        )
            .into_response();
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_FILTER_BYTES).await else {
        return (
            StatusCode::BAD_REQUEST,
            format!("could not read a log filter of at most {MAX_FILTER_BYTES} bytes\n"),
        )
            .into_response();
    };
    let Ok(filter) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the log filter is not UTF-8\n").into_response();
    };
    match log.set_filter(filter) {
        Ok(()) => (StatusCode::OK, format!("{}\n", log.filter())).into_response(),
        Err(e @ (LoggingError::Filter { .. } | LoggingError::EmptyFilter)) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn no_log_control() -> Response {
    (
        StatusCode::NOT_FOUND,
        "this process does not change its log filter at run time\n",
    )
        .into_response()
}

/// Whether a request from `peer` may change the log filter: only from loopback
/// (IPv4, IPv6, or IPv4 loopback mapped into IPv6 by a dual-stack socket). An
/// unknown peer (a router served without connection info) may not.
fn may_change_log_filter(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|peer| match peer.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback()),
    })
}

/// Binds `addr` and serves the admin endpoints until `shutdown` completes. Returns
/// the bound address through `bound` (useful with port 0) before serving.
pub async fn serve_admin(
    addr: SocketAddr,
    state: AdminState,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    bound(listener.local_addr()?);
    // With the peer address: `PUT /v1/log-filter` is for loopback peers only.
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use tokio::sync::oneshot;

    use super::*;
    use crate::logging::LogFormat;
    use crate::telemetry::{Telemetry, TelemetryConfig};

    #[test]
    fn only_loopback_peers_change_the_log_filter() {
        let peer = |ip: IpAddr| Some(SocketAddr::new(ip, 40_000));
        assert!(may_change_log_filter(peer(Ipv4Addr::LOCALHOST.into())));
        assert!(may_change_log_filter(peer(Ipv4Addr::new(127, 0, 0, 6).into())));
        assert!(may_change_log_filter(peer(Ipv6Addr::LOCALHOST.into())));
        assert!(may_change_log_filter(peer(
            Ipv4Addr::LOCALHOST.to_ipv6_mapped().into()
        )));
        assert!(!may_change_log_filter(peer(Ipv4Addr::new(10, 0, 3, 7).into())));
        assert!(!may_change_log_filter(peer(
            Ipv4Addr::new(10, 0, 3, 7).to_ipv6_mapped().into()
        )));
        assert!(!may_change_log_filter(peer(Ipv6Addr::UNSPECIFIED.into())));
        assert!(!may_change_log_filter(None));
    }

    /// Serves `state` on an ephemeral loopback port until the returned sender drops.
    async fn serve(state: AdminState) -> (String, oneshot::Sender<()>) {
        let (bound_tx, bound_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(serve_admin(
            (Ipv4Addr::LOCALHOST, 0).into(),
            state,
            move |addr| {
                let _ = bound_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let addr = bound_rx.await.expect("the server binds");
        (format!("http://{addr}/v1/log-filter"), stop_tx)
    }

    async fn call(client: &reqwest::Client, request: reqwest::RequestBuilder) -> (StatusCode, String) {
        let response = client
            .execute(request.build().expect("a request"))
            .await
            .expect("an answer");
        let status = response.status();
        (status, response.text().await.expect("a body"))
    }

    #[tokio::test]
    async fn the_log_filter_is_read_and_changed_over_http() {
        let config = TelemetryConfig {
            format: LogFormat::Json,
            ..TelemetryConfig::new("test")
        };
        // The subscriber is never installed: the filter only has to be held.
        let (telemetry, _dispatch) = Telemetry::build(config, std::io::sink).expect("telemetry");
        let control = telemetry.log_control();
        let state = AdminState::new(None).with_log_control(control.clone());
        let (url, _stop) = serve(state).await;
        let client = reqwest::Client::new();

        assert_eq!(
            call(&client, client.get(&url)).await,
            (StatusCode::OK, "info\n".to_owned())
        );
        let (status, body) = call(&client, client.put(&url).body("info,fleetforge_operator=debug\n")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "info,fleetforge_operator=debug\n")
        );
        assert_eq!(control.filter(), "info,fleetforge_operator=debug");

        let (status, body) = call(&client, client.put(&url).body("warn,kube=loud")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("\"kube=loud\""), "{body}");
        let (status, body) = call(&client, client.get(&url)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "info,fleetforge_operator=debug\n")
        );
    }

    #[tokio::test]
    async fn without_a_log_control_the_filter_is_not_found() {
        let (url, _stop) = serve(AdminState::new(None)).await;
        let client = reqwest::Client::new();
        assert_eq!(call(&client, client.get(&url)).await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            call(&client, client.put(&url).body("debug")).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn without_the_peer_address_the_filter_cannot_change() {
        let (telemetry, _dispatch) =
            Telemetry::build(TelemetryConfig::new("test"), std::io::sink).expect("telemetry");
        let state = AdminState::new(None).with_log_control(telemetry.log_control());
        // Served as an embedding program might: without connection info.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("a port");
        let url = format!(
            "http://{}/v1/log-filter",
            listener.local_addr().expect("an address")
        );
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let client = reqwest::Client::new();
        assert_eq!(
            call(&client, client.put(&url).body("debug")).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(telemetry.log_control().filter(), "info");
        server.abort();
    }
}
