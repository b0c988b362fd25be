//! Everything that talks to cell processes over the cell contract
//! ([`fleetforge_core::contract`]): the HTTP [`client`], the [`tokens`] that
//! protect a world's cells, the leader's load [`sampling`], and the
//! [`handover`] of sessions between cells.
//!
//! It imports the kernel ([`crate::runtime`]) for the clock and nothing of the
//! reconcile: a reconcile decides, this room carries the calls out.

pub mod client;
pub mod handover;
pub mod sampling;
pub mod tokens;
