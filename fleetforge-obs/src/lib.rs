//! FleetForge observability, shared by the operator and the cell simulator.
//!
//! - [`metrics`]: every metric name, its help text and unit in one place, and the
//!   Prometheus recorder with buckets chosen per histogram.
//! - [`logging`]: `tracing` set-up, JSON or human-readable.
//! - [`admin`]: the admin HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).

pub mod admin;
pub mod logging;
pub mod metrics;

pub use admin::{AdminState, serve_admin};
pub use logging::{LogFormat, init_logging};
