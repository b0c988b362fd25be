//! OTLP trace export against a receiver in the test: span names, parent links,
//! attributes, the service resource, and the trace id on the log lines.
#![cfg(feature = "otlp")]

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use fleetforge_obs::{LogFormat, Telemetry, TelemetryConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::{info, info_span};

/// What the receiver was sent.
type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn receive(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            received.lock().expect("receiver lock").push(request);
            // An empty ExportTraceServiceResponse: everything accepted.
            (
                StatusCode::OK,
                [(CONTENT_TYPE, "application/x-protobuf")],
                Vec::new(),
            )
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(CONTENT_TYPE, "text/plain")],
            e.to_string().into_bytes(),
        ),
    }
}

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

// Multi-threaded: the receiver has to answer while `shutdown` blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_receiver_and_log_lines_carry_their_trace() {
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let logs = Buffer::default();
    let writer = logs.clone();
    let config = TelemetryConfig {
        format: LogFormat::Json,
        filter: "info".to_owned(),
        otlp_endpoint: Some(format!("http://{addr}")),
        service_name: "fleetforge-test".to_owned(),
        service_instance: Some("operator-0".to_owned()),
    };
    let (telemetry, dispatch) = Telemetry::build(config, move || writer.clone()).expect("telemetry");
    assert!(telemetry.exports_traces());

    tracing::dispatcher::with_default(&dispatch, || {
        info_span!("reconcile", correlation_id = "c0ffee", world = "w/one").in_scope(|| {
            info_span!("plan").in_scope(|| info!("planned"));
            info_span!("apply").in_scope(|| {
                info_span!("handoff", cell = "c-1").in_scope(|| info!("handed over"));
            });
        });
    });
    telemetry.shutdown().expect("the last spans are sent");
    server.abort();

    let requests = received.lock().expect("receiver lock").clone();
    let mut spans: HashMap<String, Span> = HashMap::new();
    for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
        let resource = resource_spans.resource.as_ref().expect("a resource");
        assert_eq!(
            string_attribute(&resource.attributes, "service.name"),
            Some("fleetforge-test")
        );
        assert_eq!(
            string_attribute(&resource.attributes, "service.instance.id"),
            Some("operator-0")
        );
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            spans.insert(span.name.clone(), span.clone());
        }
    }
    let span = |name: &str| {
        spans
            .get(name)
            .unwrap_or_else(|| panic!("no span {name:?} in {:?}", spans.keys()))
    };
    let (reconcile, plan, apply, handoff) = (span("reconcile"), span("plan"), span("apply"), span("handoff"));

    assert!(reconcile.parent_span_id.is_empty(), "reconcile is a root");
    assert_eq!(plan.parent_span_id, reconcile.span_id);
    assert_eq!(apply.parent_span_id, reconcile.span_id);
    assert_eq!(handoff.parent_span_id, apply.span_id);
    for child in [plan, apply, handoff] {
        assert_eq!(child.trace_id, reconcile.trace_id, "{}", child.name);
    }
    assert_eq!(
        string_attribute(&reconcile.attributes, "correlation_id"),
        Some("c0ffee")
    );
    assert_eq!(string_attribute(&handoff.attributes, "cell"), Some("c-1"));

    let text = String::from_utf8(logs.0.lock().expect("buffer lock").clone()).expect("UTF-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let line = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no line {message:?} in {text}"))
    };
    let handed_over = line("handed over");
    assert_eq!(handed_over["trace_id"], hex(&reconcile.trace_id));
    assert_eq!(handed_over["span_id"], hex(&handoff.span_id));
    assert_eq!(handed_over["correlation_id"], "c0ffee");
    assert_eq!(handed_over["span"], "handoff");
    let planned = line("planned");
    assert_eq!(planned["trace_id"], hex(&reconcile.trace_id));
    assert_eq!(planned["span_id"], hex(&plan.span_id));
}

#[test]
fn without_an_endpoint_lines_have_no_trace_id() {
    let logs = Buffer::default();
    let writer = logs.clone();
    let (telemetry, dispatch) =
        Telemetry::build(TelemetryConfig::new("test"), move || writer.clone()).expect("telemetry");
    assert!(!telemetry.exports_traces());
    tracing::dispatcher::with_default(&dispatch, || {
        info_span!("reconcile", correlation_id = "c0ffee").in_scope(|| info!("planned"));
    });
    let text = String::from_utf8(logs.0.lock().expect("buffer lock").clone()).expect("UTF-8");
    let line: Value = serde_json::from_str(text.trim()).expect("a JSON line");
    assert_eq!(line["correlation_id"], "c0ffee");
    assert!(line.get("trace_id").is_none(), "{line}");
}

#[test]
fn shutdown_returns_soon_when_the_receiver_is_down() {
    // A port nothing listens on: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let config = TelemetryConfig {
        otlp_endpoint: Some(format!("http://{addr}")),
        ..TelemetryConfig::new("test")
    };
    let (telemetry, dispatch) = Telemetry::build(config, io::sink).expect("telemetry");
    tracing::dispatcher::with_default(&dispatch, || {
        info_span!("reconcile").in_scope(|| info!("lost"));
    });
    let started = std::time::Instant::now();
    // A failed send is logged by the exporter; shutdown itself only has to end.
    let _ = telemetry.shutdown();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}
