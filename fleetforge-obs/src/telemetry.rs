//! One set-up for logs and, with the `otlp` feature, traces: [`Telemetry::init`]
//! installs the global subscriber and returns the guard that changes the log filter
//! and flushes the trace export at shutdown.
//!
//! Spans and events pass one filter (the [`LogControl`] one): a span the filter
//! drops is neither logged nor exported, so the spans worth tracing are created at
//! `info`.

use std::fmt;

use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
#[cfg(feature = "otlp")]
use tracing_subscriber::layer::SubscriberExt as _;

pub use crate::error::TelemetryError;
use crate::logging::{self, LogControl, LogFormat};

/// What [`Telemetry::init`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// How log lines are written.
    pub format: LogFormat,
    /// The initial `EnvFilter` directive, such as `info` or
    /// `fleetforge_operator=debug,kube=warn`.
    pub filter: String,
    /// Base address of an OTLP/HTTP receiver, such as
    /// `http://otel-collector.observability:4318` (`/v1/traces` is added). `None`
    /// or empty: no traces. Needs the `otlp` feature.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported traces.
    pub service_name: String,
    /// The `service.instance.id` of the exported traces, such as the Pod name.
    pub service_instance: Option<String>,
}

impl TelemetryConfig {
    /// JSON logs at `info`, no trace export.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".to_owned(),
            otlp_endpoint: None,
            service_name: service_name.into(),
            service_instance: None,
        }
    }
}

/// The installed logging and tracing: changes the log filter, and flushes and stops
/// the trace export on [`shutdown`](Self::shutdown) or drop. Keep it until the end
/// of `main`.
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    log: LogControl,
    #[cfg(feature = "otlp")]
    tracer_provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("log", &self.log)
            .field("exports_traces", &self.exports_traces())
            .finish()
    }
}

impl Telemetry {
    /// Installs the global subscriber, writing to standard error, and starts the
    /// trace export when `config` names an endpoint. Fails if a global subscriber
    /// is already installed.
    pub fn init(config: TelemetryConfig) -> Result<Self, TelemetryError> {
        let (telemetry, dispatch) = Self::build(config, std::io::stderr)?;
        logging::install(dispatch)?;
        Ok(telemetry)
    }

    /// What [`init`](Self::init) does, without installing anything: the subscriber
    /// writes to `make_writer`, and the caller installs the returned dispatcher,
    /// globally or for a scope (`tracing::dispatcher::with_default`). For tests and
    /// programs that capture their own logs.
    pub fn build<W>(config: TelemetryConfig, make_writer: W) -> Result<(Self, Dispatch), TelemetryError>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let (filter, log) = LogControl::new(&config.filter)?;
        let endpoint = config
            .otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());

        #[cfg(feature = "otlp")]
        let (tracer_provider, tracer) = match endpoint {
            Some(endpoint) => {
                let (provider, tracer) = crate::otlp::tracer_provider(
                    endpoint,
                    &config.service_name,
                    config.service_instance.as_deref(),
                )?;
                (Some(provider), Some(tracer))
            }
            None => (None, None),
        };
        #[cfg(not(feature = "otlp"))]
        if let Some(endpoint) = endpoint {
            return Err(TelemetryError::OtlpNotBuilt {
                endpoint: endpoint.to_owned(),
            });
        }

        #[cfg(feature = "otlp")]
        let dispatch = {
            let subscriber = logging::subscriber(config.format, filter, make_writer, tracer.is_some());
            Dispatch::new(subscriber.with(tracer.map(|tracer| {
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    // Thread ids say nothing about work that hops between runtime workers.
                    .with_threads(false)
            })))
        };
        #[cfg(not(feature = "otlp"))]
        let dispatch = Dispatch::new(logging::subscriber(config.format, filter, make_writer, false));
        let telemetry = Self {
            log,
            #[cfg(feature = "otlp")]
            tracer_provider,
        };
        Ok((telemetry, dispatch))
    }

    /// The handle that reads and changes the log filter, for the admin server.
    pub fn log_control(&self) -> LogControl {
        self.log.clone()
    }

    /// Whether spans are exported as OTLP traces.
    pub fn exports_traces(&self) -> bool {
        #[cfg(feature = "otlp")]
        return self.tracer_provider.is_some();
        #[cfg(not(feature = "otlp"))]
        false
    }

    /// Sends the spans not exported yet and stops the export. Blocks the calling
    /// thread for up to a few seconds when the receiver is slow or down, but never
    /// waits for the async runtime: it may be called from async code, at the end.
    /// Spans ended afterwards are dropped. A batch the receiver did not take is
    /// logged (target `opentelemetry_sdk`, level `ERROR`), not returned: the error
    /// here means the export could not be stopped in time.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TelemetryError> {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.tracer_provider.take() {
            provider
                .shutdown()
                .map_err(|e| TelemetryError::Flush(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Reached without `shutdown` only on an early return or a panic, where
        // there is no one left to tell.
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing::{debug, dispatcher, info, info_span};

    use super::*;
    use crate::error::LoggingError;

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

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("buffer lock").clone()).expect("UTF-8 logs")
        }

        fn json_lines(&self) -> Vec<Value> {
            self.text()
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect()
        }
    }

    fn build(format: LogFormat, filter: &str) -> (Telemetry, Dispatch, Buffer) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let config = TelemetryConfig {
            format,
            filter: filter.to_owned(),
            ..TelemetryConfig::new("test")
        };
        let (telemetry, dispatch) = Telemetry::build(config, move || writer.clone()).expect("telemetry");
        (telemetry, dispatch, buffer)
    }

    #[test]
    fn a_json_line_has_the_fields_of_every_enclosing_span() {
        let (telemetry, dispatch, buffer) = build(LogFormat::Json, "info");
        dispatcher::with_default(&dispatch, || {
            let reconcile = info_span!(
                "reconcile",
                correlation_id = "c0ffee",
                world = "w/one",
                generation = 4_i64,
                cells = tracing::field::Empty,
            );
            let _entered = reconcile.enter();
            reconcile.record("cells", 2_u64);
            info_span!("apply", world = "w/inner", phase = "create").in_scope(|| {
                info!(phase = "event", span = "not the span", "cell created");
            });
            info!("outside the child span");
        });
        let lines = buffer.json_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");

        let nested = &lines[0];
        assert_eq!(nested["message"], "cell created");
        assert_eq!(nested["level"], "INFO");
        assert_eq!(nested["correlation_id"], "c0ffee");
        assert_eq!(nested["generation"], 4);
        assert_eq!(nested["cells"], 2);
        // Innermost wins: the child span over the outer one, the event over both,
        // and the logger's own keys over everyone.
        assert_eq!(nested["world"], "w/inner");
        assert_eq!(nested["phase"], "event");
        assert_eq!(nested["span"], "apply");
        assert_eq!(nested["target"], module_path!());
        assert!(nested["timestamp"].is_string());
        assert!(nested.get("trace_id").is_none());

        let outer = &lines[1];
        assert_eq!(outer["span"], "reconcile");
        assert_eq!(outer["world"], "w/one");
        assert!(outer.get("phase").is_none());
        drop(telemetry);
    }

    #[test]
    fn a_json_line_outside_spans_has_no_span() {
        let (_telemetry, dispatch, buffer) = build(LogFormat::Json, "info");
        dispatcher::with_default(&dispatch, || info!(answer = 42, ok = true, "hello"));
        let line = &buffer.json_lines()[0];
        assert_eq!(line["answer"], 42);
        assert_eq!(line["ok"], true);
        assert!(line.get("span").is_none(), "{line}");
    }

    #[test]
    fn text_lines_show_the_span_chain() {
        let (_telemetry, dispatch, buffer) = build(LogFormat::Text, "info");
        dispatcher::with_default(&dispatch, || {
            info_span!("reconcile", correlation_id = "c0ffee").in_scope(|| {
                info_span!("plan").in_scope(|| info!("planned"));
            });
        });
        let text = buffer.text();
        for part in ["reconcile", "correlation_id", "c0ffee", "plan", "planned"] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
    }

    #[test]
    fn the_filter_changes_at_run_time() {
        let (telemetry, dispatch, buffer) = build(LogFormat::Json, "info");
        let control = telemetry.log_control();
        dispatcher::with_default(&dispatch, || {
            debug!("hidden");
            control.set_filter(" debug\n").expect("a valid filter");
            debug!("shown");
            let err = control.set_filter("debug,kube=loud").unwrap_err();
            assert!(err.to_string().contains("\"kube=loud\""), "{err}");
            assert!(matches!(control.set_filter(""), Err(LoggingError::EmptyFilter)));
            control.set_filter("warn").expect("a valid filter");
            info!("hidden again");
        });
        assert_eq!(control.filter(), "warn");
        let messages: Vec<_> = buffer
            .json_lines()
            .into_iter()
            .map(|line| line["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            messages,
            ["changing the log filter", "shown", "changing the log filter"]
        );
    }

    #[test]
    fn the_filter_of_a_dropped_subscriber_cannot_change() {
        let (telemetry, dispatch, _buffer) = build(LogFormat::Json, "info");
        drop(dispatch);
        let control = telemetry.log_control();
        assert!(matches!(
            control.set_filter("debug"),
            Err(LoggingError::SubscriberGone)
        ));
        assert_eq!(control.filter(), "info");
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn an_endpoint_needs_the_feature() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318".to_owned()),
            ..TelemetryConfig::new("test")
        };
        let err = Telemetry::build(config, io::sink).unwrap_err();
        assert!(matches!(err, TelemetryError::OtlpNotBuilt { .. }), "{err}");
        let blank = TelemetryConfig {
            otlp_endpoint: Some(" ".to_owned()),
            ..TelemetryConfig::new("test")
        };
        let (telemetry, _dispatch) = Telemetry::build(blank, io::sink).expect("no export");
        assert!(!telemetry.exports_traces());
    }
}
