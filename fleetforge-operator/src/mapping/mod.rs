//! The pure translation between Kubernetes objects and the core's model: no I/O,
//! no clock (time comes in as a parameter), and nothing read from the cluster can
//! make it panic.
//!
//! - [`cell_pod`]: the cell Pod, the world's headless Service and token Secret,
//!   exactly as the operator server-side-applies them.
//! - [`budget`]: the world's PodDisruptionBudget, one cell at a time and only
//!   at rest.
//! - [`observe`]: cell Pods read back as the core's observed cells, so the layout
//!   is rebuilt from the cluster after any restart.
//! - [`status`]: the `WorldSpec` status (phase, counts, cell summary, history and
//!   the Ready/Progressing/Degraded conditions) from a plan.
//! - [`overrides`], [`diff`], [`events`]: manual override bookkeeping, "is this
//!   write needed", and the Event reasons.

pub mod budget;
pub mod cell_pod;
pub mod diff;
pub mod events;
pub mod observe;
pub mod overrides;
pub mod status;
