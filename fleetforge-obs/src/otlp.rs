//! OTLP trace export (feature `otlp`): spans go to an OTLP/HTTP receiver as
//! protobuf, batched on a thread of their own.
//!
//! The SDK's batch processor exports from a dedicated thread, with a blocking HTTP
//! client: the export never runs on, waits for, or needs the async runtime, so it
//! cannot stall reconciles and works before the runtime starts and after it stops.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};

use crate::error::TelemetryError;

/// The time one export may take, connection included: bounds the wait at shutdown
/// when the receiver is down.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response body read from the receiver; it answers a few bytes.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// The path of the trace export under an OTLP/HTTP receiver's base address.
const TRACES_PATH: &str = "/v1/traces";

/// The tracer provider exporting to `endpoint`, and the tracer for the tracing layer.
pub(crate) fn tracer_provider(
    endpoint: &str,
    service_name: &str,
    service_instance: Option<&str>,
) -> Result<(SdkTracerProvider, SdkTracer), TelemetryError> {
    let failed = |reason: String| TelemetryError::Otlp {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient::new().map_err(failed)?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| failed(e.to_string()))?;

    // `builder()` rather than `builder_empty()`: OTEL_RESOURCE_ATTRIBUTES still adds
    // attributes (a cluster name, say); the service identity given here wins.
    let mut resource = Resource::builder().with_service_name(service_name.to_owned());
    if let Some(instance) = service_instance {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", instance.to_owned()));
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    Ok((provider, tracer))
}

/// `endpoint` with the trace path: OTLP endpoints are configured by their base
/// address (as `OTEL_EXPORTER_OTLP_ENDPOINT` is), the exporter wants the full URL.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

/// The workspace's reqwest, blocking, as the exporter's HTTP client: opentelemetry
/// ships an implementation only for a newer reqwest, which would be built twice.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

impl BlockingClient {
    fn new() -> Result<Self, String> {
        // A blocking client starts a runtime of its own, which panics inside an
        // async context: build it on a plain thread.
        std::thread::spawn(|| {
            reqwest::blocking::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
        })
        .join()
        .map_err(|_| "building the HTTP client panicked".to_owned())?
        .map(Self)
        .map_err(|e| format!("building the HTTP client: {e}"))
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        use std::io::Read as _;

        // Called on the batch processor's thread, never on the runtime: blocking
        // here is what that thread is for.
        let request = reqwest::blocking::Request::try_from(request.map(Vec::from))?;
        let response = self.0.execute(request)?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        response.take(MAX_RESPONSE_BYTES).read_to_end(&mut body)?;
        let mut answer = Response::new(Bytes::from(body));
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_path_is_added_once() {
        for endpoint in [
            "http://collector:4318",
            "http://collector:4318/",
            "http://collector:4318/v1/traces",
        ] {
            assert_eq!(traces_url(endpoint), "http://collector:4318/v1/traces");
        }
    }
}
