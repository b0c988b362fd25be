//! FleetForge's pure planning core.
//!
//! A game world is partitioned into cells, each one process serving the players in
//! its box. This crate decides, from what is observed of a world's cells, what to do
//! next: create the initial cells, split a hot cell into two spatial children,
//! merge cold siblings back, replace failed or outdated cells, drain cells that
//! someone else is shutting down, and hand sessions over so that none is lost. It
//! is a library of plain data and pure functions: no I/O, no clock (time comes in
//! as a parameter), no Kubernetes types, so any controller or simulator can embed
//! it. [`pacing`] says when to look at a world
//! again.
//!
//! ```
//! use fleetforge_core::{plan, Bounds, Observed, Overrides, ScalingPolicy, Timestamp, World};
//!
//! let world = World {
//!     name: "arena".into(),
//!     bounds: Bounds::rect((0.0, 1000.0), (0.0, 1000.0)).unwrap(),
//!     initial_cells: 4,
//!     min_cell_extent: None,
//!     players_per_cell: 100,
//!     policy: ScalingPolicy::default(),
//!     revision: "v1".into(),
//!     overrides: Overrides::default(),
//! };
//! let p = plan(&world, &Observed::default(), Timestamp(0));
//! assert_eq!(p.actions().count(), 4); // the four initial cells
//! ```

pub mod cell;
pub mod contract;
pub mod geometry;
pub mod handoff;
pub mod load;
pub mod naming;
pub mod observed;
pub mod pacing;
pub mod partition;
pub mod plan;
pub mod sim;
pub mod time;
pub mod world;

pub use cell::{CellId, CellRef};
pub use geometry::{Axis, Bounds, Point, Range};
pub use load::{LoadSample, PositionHistogram};
pub use observed::{Health, Observed, ObservedCell, RecordKind, Role, TransitionRecord, prune_history};
pub use plan::{
    Action, OverrideOutcome, OverrideRequest, OverrideResult, Phase, Plan, Summary, Target, Transition,
    TransitionKind, plan,
};
pub use time::Timestamp;
pub use world::{InvalidWorld, LayoutCell, Overrides, Prediction, ScalingPolicy, World, WorldField};
