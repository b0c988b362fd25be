//! The FleetForge operator's mapping layer: between the core model and the
//! Kubernetes objects the operator reads and writes.
//!
//! - [`cell_pod`]: the cell Pod and the world's headless Service, exactly as the
//!   operator server-side-applies them.
//! - [`observe`]: cell Pods read back as the core's [`fleetforge_core::Observed`]
//!   cells, so the layout is rebuilt from the cluster after any restart.
//! - [`status`]: the `WorldSpec` status (phase, counts, cell summary, history and
//!   the Ready/Progressing/Degraded conditions) from a plan.
//!
//! Everything here is a pure function: no I/O, no clock (time comes in as a
//! parameter), and no panic on anything read from the cluster. The controller that
//! drives these functions builds on top of them.

pub mod cell_pod;
pub mod observe;
pub mod status;

pub use cell_pod::{DesiredError, desired_pod, desired_service, service_name};
pub use observe::{ObserveError, history_from_status, observe_world, observed_cell};
pub use status::{conditions, invalid_spec_status, world_status};

#[cfg(test)]
mod testutil;
