//! FleetForge's player gateway: which cell owns a position of a world now.
//!
//! A player asks which cell serves its position, joins that cell, and asks again
//! when the answer goes stale. The answer changes with every split, merge,
//! roll-out and replacement, so the gateway must never send a player to a cell
//! that does not own the space yet, or no longer does.
//!
//! Its heart is pure, with no I/O, no clock and no Kubernetes types:
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
//! Around it, the process (with I/O):
//!
//! - [`cluster`]: cell Pods and WorldSpecs read into that plain data;
//! - [`worlds`]: what is known of every world, and the [`worlds::WorldView`]
//!   each request answers from; [`topology`]: face neighbours;
//! - [`watch`]: the watches that keep it current; [`state`]: what they share
//!   with the handlers;
//! - [`http`]: the player API (locate, topology and its stream) behind rate
//!   limits and timeouts;
//! - [`app`]: the command line and [`app::start`], the whole gateway.

pub mod app;
pub mod cluster;
pub mod directory;
pub mod http;
pub mod index;
pub mod query;
pub mod state;
pub mod topology;
pub mod watch;
pub mod worlds;

pub use directory::{CellEntry, Directory, Epoch, ExcludedCell, Exclusion, LocateError, precedence};
pub use index::{Index, owns};
pub use query::{Problem, QueryError, parse_locate};
