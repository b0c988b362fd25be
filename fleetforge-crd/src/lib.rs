//! The FleetForge `WorldSpec` v1 API.
//!
//! - [`WorldSpec`] (spec [`WorldSpecSpec`], status [`WorldSpecStatus`]): the
//!   custom resource, with schema bounds and CEL `x-kubernetes-validations` that
//!   the API server enforces; `WorldSpec::crd()` (from [`kube::CustomResourceExt`])
//!   gives the CustomResourceDefinition.
//! - [`to_world`]: the object as the validated core [`fleetforge_core::World`], or
//!   a [`SpecError`] naming every bad field by its path.
//! - [`keys`]: the labels and annotations the operator reads and writes.
//! - [`Capacity::resources`]: the requests and limits a cell gets, read from the
//!   current or the deprecated field names (`docs/api.md`) with their defaults.
//!
//! ```
//! use fleetforge_crd::{to_world, WorldSpec};
//!
//! let ws: WorldSpec = serde_json::from_value(serde_json::json!({
//!     "apiVersion": "fleetforge.io/v1",
//!     "kind": "WorldSpec",
//!     "metadata": {"name": "arena", "namespace": "games"},
//!     "spec": {
//!         "topology": {"initialCells": 4, "worldBoundaries": {"xMin": 0, "xMax": 100, "yMin": 0, "yMax": 100}},
//!         "gameServerImage": "game/server:1.0"
//!     }
//! }))?;
//! let world = to_world(&ws)?;
//! assert_eq!(world.initial_cells, 4);
//! assert_eq!(world.policy.max_cells, 100); // the default
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod convert;
pub mod keys;
pub mod quantity;
pub mod spec;
pub mod status;

pub use convert::{SpecError, Violation, field_path, resolve_force_merge, to_world};
/// Gives `WorldSpec::crd()` and the resource's names without importing kube.
pub use kube::CustomResourceExt;
pub use spec::{
    Capacity, CellResources, CellSize, CellSizeBox, Gateway, Persistence, Resolved, Scaling, Topology,
    WorldBoundaries, WorldSpec, WorldSpecSpec,
};
pub use status::{
    AxisRange, BoundsStatus, CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, CellSummary,
    MAX_CELL_SUMMARY, TransitionStatus, TransitionStatusError, WorldSpecStatus,
};
