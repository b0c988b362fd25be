//! FleetForge observability, shared by the operator and the cell simulator.
//!
//! - [`metrics`]: every metric name, its help text and unit in one place, and the
//!   Prometheus recorder with buckets chosen per histogram.
//! - [`logging`]: `tracing` output as JSON lines that carry the fields of every
//!   enclosing span (a line logged deep in a reconcile has its `correlation_id`), or
//!   as text; the filter can be changed while the process runs ([`LogControl`]).
//! - [`telemetry`]: the one set-up of logs and traces, [`Telemetry::init`]. With the
//!   `otlp` feature, spans are also exported as OTLP traces over HTTP, and JSON
//!   lines carry the `trace_id` and `span_id` that join them to the traces.
//! - [`admin`]: the admin HTTP endpoints (`/healthz`, `/readyz`, `/metrics`, and
//!   `/v1/log-filter` to read or, from loopback only, change the log filter).
//!
//! # Features
//!
//! - `otlp` (off by default): OTLP trace export. Without it nothing of
//!   OpenTelemetry is built, and asking for an endpoint is an error.

// Modules import only downward, so that each can be read and tested without the
// ones above it (`cargo xtask modules` fails on a circle): `error` and `trace_ids`
// import no module of the crate; `json` imports the ids, `logging` the JSON writer,
// `otlp` the errors, `telemetry` logging and `otlp`, `admin` logging.
pub mod admin;
mod error;
mod json;
pub mod logging;
pub mod metrics;
#[cfg(feature = "otlp")]
mod otlp;
pub mod telemetry;
#[cfg(feature = "otlp")]
mod trace_ids;

pub use admin::{AdminState, serve_admin};
pub use logging::{LogControl, LogFormat, LoggingError, init_logging};
pub use telemetry::{Telemetry, TelemetryConfig, TelemetryError};
