//! The FleetForge operator: WorldSpecs in, cell Pods, Services, status and Events
//! out.
//!
//! The crate is a house of rooms, each with one purpose, and every room imports
//! only the rooms below it (`cargo xtask modules` checks that no module imports
//! form a cycle):
//!
//! | room | purpose | imports |
//! |------|---------|---------|
//! | [`app`] | the process: `main`, the operator's lifecycle, controller wiring | everything below |
//! | [`commands`] | one-off commands: backup and restore | `config`, `mapping` |
//! | [`config`] | the command line and the API client | `cells`, `runtime` |
//! | [`reconcile`] | the reconcile, its executor, writes and reports | `cells`, `runtime`, `mapping` |
//! | [`ha`] | leader election and the permission self-check | `runtime`, `mapping` |
//! | [`cells`] | talking to cell processes: client, tokens, sampling, hand-over | `runtime` |
//! | [`runtime`] | the kernel: clock, error, backoff, expectations, queue, gauges, correlation | `mapping` |
//! | [`mapping`] | pure Kubernetes ⇄ core translation | only other crates |
//!
//! One reconcile flows down through them: [`app::controllers`] hands a world to
//! [`reconcile::reconcile`], which reads cell Pods from the caches, turns them
//! into the core's observation ([`mapping::observe`]), plans with
//! [`fleetforge_core::plan`], carries the plan out ([`reconcile::executor`],
//! with the hand-over in [`cells::handover`]), writes the status
//! ([`reconcile::writes`], built by [`mapping::status`]), tells people
//! ([`reconcile::report`]) and asks [`fleetforge_core::pacing`] when to look
//! again.

pub mod app;
pub mod cells;
pub mod commands;
pub mod config;
pub mod ha;
pub mod mapping;
pub mod reconcile;
pub mod runtime;

#[cfg(test)]
mod testutil;
