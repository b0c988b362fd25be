//! FleetForge's player gateway: which cell owns a position of a world now.
//!
//! A player asks which cell serves its position, joins that cell, and asks again
//! when the answer goes stale. The answer changes with every split, merge,
//! roll-out and replacement, so the gateway must never send a player to a cell
//! that does not own the space yet, or no longer does.
//!
//! What exists so far is the pure heart of it, with no I/O, no clock and no
//! Kubernetes types:
//!
//! - [`directory`]: from plain data describing a world's cell processes
//!   ([`CellEntry`]: id, incarnation, bounds, role, readiness, termination,
//!   address), the cells that are authoritative now, the world's layout
//!   [`Epoch`], and [`Directory::locate`];
//! - [`index`]: the spatial index behind it, a binary space partition built from
//!   the cells' bounds, and the rule ([`index::owns`]) for points on cell faces
//!   and on the world's edges;
//! - [`query`]: the query string of a locate request read into a position, with
//!   an error naming the parameter at fault.
//!
//! ```
//! use fleetforge_core::{Bounds, CellRef, Role, Timestamp};
//! use fleetforge_gateway::{CellEntry, Directory, parse_locate};
//!
//! let world = Bounds::rect((0.0, 1000.0), (0.0, 1000.0)).unwrap();
//! let cell = CellEntry {
//!     cell: CellRef::first("c0".parse().unwrap()),
//!     bounds: world,
//!     role: Role::Active { since: Timestamp(1_700_000_000_000) },
//!     ready: true,
//!     terminating: false,
//!     address: Some("10.0.0.7".parse().unwrap()),
//!     stamped_epoch: None,
//! };
//! let directory = Directory::build(world, [cell]);
//! let position = parse_locate("x=250&y=1000", directory.world()).unwrap();
//! let owner = directory.locate(&position).unwrap();
//! assert_eq!(owner.cell.to_string(), "c0");
//! assert!(owner.serving());
//! ```
//!
//! Still to come (issue 15): reading cell Pods and WorldSpecs through watches into
//! directories, the HTTP API (`locate`, `topology` and its stream of changes),
//! hardening for the internet, metrics, and the deployment.

pub mod directory;
pub mod index;
pub mod query;

pub use directory::{CellEntry, Directory, Epoch, ExcludedCell, Exclusion, LocateError, precedence};
pub use index::{Index, owns};
pub use query::{Problem, QueryError, parse_locate};
