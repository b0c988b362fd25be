//! The FleetForge operator: WorldSpecs in, cell Pods, Services, status and Events
//! out.
//!
//! The mapping layer is pure (no I/O, no clock: time comes in as a parameter, and
//! nothing read from the cluster can make it panic):
//!
//! - [`cell_pod`]: the cell Pod, the world's headless Service and token Secret,
//!   exactly as the operator server-side-applies them.
//! - [`observe`]: cell Pods read back as the core's [`fleetforge_core::Observed`]
//!   cells, so the layout is rebuilt from the cluster after any restart.
//! - [`status`]: the `WorldSpec` status (phase, counts, cell summary, history and
//!   the Ready/Progressing/Degraded conditions) from a plan.
//! - [`overrides`], [`diff`], [`events`]: manual override bookkeeping, "is this
//!   write needed", and the Event reasons.
//!
//! The runtime drives it:
//!
//! - [`controller`]: the reconcile (observe, convert, plan, apply) and its error
//!   policy, with per-world [`backoff`] and [`expectations`] (read-your-writes);
//!   [`apply`] carries a plan out.
//! - [`run`]: reflectors and one kube-runtime controller per watched namespace;
//!   [`queue`] counts the worlds waiting for a reconcile, [`gauges`] the worlds
//!   by phase and the cells' time to serve.
//! - [`sampling`]: the leader's load sampling of every cell, which wakes a world
//!   when a sample matters; [`cell_client`] speaks the cell contract, and
//!   [`cell_token`] derives the token that protects it.
//! - [`correlation`]: the reconcile's correlation id on log lines, Events and
//!   API calls (`Audit-ID`).
//! - [`audit`]: the operator's audit records, naming who changed the world.
//! - [`leader`]: Lease-based leader election.
//! - [`selfcheck`]: the startup permission check.
//! - [`backup`]: backup and restore of worlds with their cell layouts.
//! - [`operator`] and [`cli`]: the process and its command line.

pub mod apply;
pub mod audit;
pub mod backoff;
pub mod backup;
pub mod cell_client;
pub mod cell_pod;
pub mod cell_token;
pub mod cli;
pub mod controller;
pub mod correlation;
pub mod diff;
pub mod events;
pub mod expectations;
pub mod gauges;
pub mod leader;
pub mod observe;
pub mod operator;
pub mod overrides;
pub mod queue;
pub mod run;
pub mod sampling;
pub mod selfcheck;
pub mod status;

pub use cell_pod::{
    DesiredError, desired_pod, desired_service, desired_token_secret, service_name, token_secret_name,
};
pub use observe::{ObserveError, history_from_status, observe_world, observed_cell};
pub use status::{conditions, invalid_spec_status, world_status};

#[cfg(test)]
mod testutil;
