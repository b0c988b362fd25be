//! What the planner is told about a world's cells: everything it decides from.
//!
//! All of it can be reconstructed from the cluster (cell processes carry their id,
//! bounds, layout, revision and role; the history lives in the world's status), so
//! a restarted operator plans exactly as the one before it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cell::{CellId, CellRef};
use crate::geometry::Bounds;
use crate::load::LoadSample;
use crate::time::Timestamp;
use crate::world::World;

/// The observed state of one world.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Every cell process that exists, in any order.
    pub cells: Vec<ObservedCell>,
    /// Splits and merges started recently (for the rate limit and cooldowns).
    #[serde(default)]
    pub history: Vec<TransitionRecord>,
}

/// One cell process as observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedCell {
    /// Which cell and incarnation this process is.
    pub cell: CellRef,
    /// The space it covers.
    pub bounds: Bounds,
    /// The [`World::layout_key`] it was created under.
    pub layout: u64,
    /// The [`World::revision`] it was started with.
    #[serde(default)]
    pub revision: String,
    /// Whether it serves its space yet.
    pub role: Role,
    /// Whether its process is up.
    pub health: Health,
    /// When it was created.
    pub created_at: Timestamp,
    /// Recent load readings, oldest first. May be empty.
    #[serde(default)]
    pub samples: Vec<LoadSample>,
}

/// Whether a cell serves its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// It owns its space and the sessions in it, since the given time.
    Active {
        /// When it took over its space.
        since: Timestamp,
    },
    /// It was created to take over space from active cells (a split, merge,
    /// replacement or new layout) and holds no sessions until they are handed over.
    Incoming,
}

/// The health of a cell process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Health {
    /// Created, not ready yet.
    Starting,
    /// Ready and answering.
    Ready,
    /// Was ready, is not now (failing probes or not answering load samples). Its
    /// load is unknown: it is neither split nor merged, and not taken for empty.
    Unready,
    /// Gone for good (the process ended, or stayed silent past the deadline).
    Failed,
    /// Alive and answering, but being shut down by someone else (a Pod deleted by
    /// hand, evicted, drained off its node): it will be gone once its grace
    /// period ends. Until then it still holds its sessions and can hand them
    /// over, so it is neither lost capacity nor a failure: an active one keeps
    /// its space until a new incarnation has taken its sessions over (a drain,
    /// [`crate::plan::TransitionKind::Drain`]), and it is never split, merged,
    /// rolled out or handed sessions. An incoming one is as good as failed for
    /// the transition that created it.
    Terminating,
}

/// The kind of a split or merge, as kept in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordKind {
    /// A cell split into two.
    Split,
    /// Two siblings merged into their parent.
    Merge,
}

/// A split or merge the planner started, kept for rate limiting and cooldowns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// When it was started.
    pub at: Timestamp,
    /// Split or merge.
    pub kind: RecordKind,
    /// The cells it creates.
    pub cells: Vec<CellId>,
}

impl ObservedCell {
    /// When the cell took over its space, if it has.
    pub fn active_since(&self) -> Option<Timestamp> {
        match self.role {
            Role::Active { since } => Some(since),
            Role::Incoming => None,
        }
    }

    /// Whether the cell serves its space.
    pub fn is_active(&self) -> bool {
        matches!(self.role, Role::Active { .. })
    }

    /// Whether the process may hold sessions: it is ready, or was and may come
    /// back (`Unready`), or is answering until its grace period ends
    /// (`Terminating`). A cell that never became ready has had no player and no
    /// hand-over, and a failed one has lost what it held, so only these three need
    /// their sessions handed over before they are retired. (A terminating cell
    /// may never have been ready; nothing tells, so it counts as holding.)
    pub fn may_hold_sessions(&self) -> bool {
        matches!(self.health, Health::Ready | Health::Unready | Health::Terminating)
    }

    /// Whether the process is being shut down by someone else
    /// ([`Health::Terminating`]).
    pub fn is_terminating(&self) -> bool {
        self.health == Health::Terminating
    }

    /// Whether the cell can receive sessions in a hand-over once it is ready: it
    /// is neither dead nor about to be.
    pub fn can_take_sessions(&self) -> bool {
        !matches!(self.health, Health::Failed | Health::Terminating)
    }

    /// The latest load reading, if any.
    pub fn latest(&self) -> Option<&LoadSample> {
        self.samples.last()
    }
}

/// The history worth keeping at `now`: records inside the rate-limit period or a
/// cooldown, oldest first. The operator stores this back after adding new records.
pub fn prune_history(world: &World, history: &[TransitionRecord], now: Timestamp) -> Vec<TransitionRecord> {
    let keep: Duration = world.policy.rate_limit_period.max(world.policy.cooldown);
    let mut out: Vec<_> = history
        .iter()
        .filter(|r| now.since(r.at) < keep)
        .cloned()
        .collect();
    out.sort_by_key(|r| r.at);
    out
}
