//! What a plan is made of: the plan, its transitions and actions, the outcome of
//! override requests and the world's summary. Plain data, shared by the parts of
//! the planner that build it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cell::{CellId, CellRef};
use crate::geometry::Bounds;
use crate::observed::TransitionRecord;

/// A manual request to split or merge, from the world's overrides.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OverrideRequest {
    /// Split this cell.
    Split(CellId),
    /// Merge this cell's two children back into it.
    Merge(CellId),
}

impl fmt::Display for OverrideRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverrideRequest::Split(id) => write!(f, "split of {id}"),
            OverrideRequest::Merge(id) => write!(f, "merge into {id}"),
        }
    }
}

/// Everything the planner decided for one world at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Work to do, in a deterministic order. Transitions are independent of one
    /// another; the actions inside one are ordered.
    pub transitions: Vec<Transition>,
    /// Splits and merges this plan starts, to add to the world's history.
    pub started: Vec<TransitionRecord>,
    /// What became of each manual override.
    pub overrides: Vec<OverrideOutcome>,
    /// The world at a glance, for its status.
    pub summary: Summary,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty()
    }

    /// All actions of all transitions, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.transitions.iter().flat_map(|t| &t.actions)
    }
}

/// A unit of work: one cell split, one merge, one replacement, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// What kind of change this is.
    pub kind: TransitionKind,
    /// For a [`TransitionKind::RollBack`], the kind of transition it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<TransitionKind>,
    /// `true` when an earlier plan started it and this one only carries it on.
    pub continues: bool,
    /// Why, in words for an Event or a log line.
    pub reason: String,
    /// What remains to be done, in order.
    pub actions: Vec<Action>,
}

/// The kinds of transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TransitionKind {
    /// Create the initial cells of a world that has none.
    Initialize,
    /// Create a cell for space that no cell covers (its process vanished).
    Fill,
    /// Split a hot cell into two children.
    Split,
    /// Merge two cold siblings into their parent.
    Merge,
    /// Replace a failed cell with a new incarnation.
    Replace,
    /// Replace a healthy cell whose revision is out of date, sessions handed over.
    Rollout,
    /// Replace a cell that someone else is shutting down ([`Health::Terminating`]:
    /// deleted by hand, evicted, drained off its node) while it still answers:
    /// its next incarnation is created for the same space, takes its sessions
    /// over once ready, and the terminating cell is retired. The actions are a
    /// roll-out's, but a drain is never held back: not by the rate limit, not by
    /// another drain or roll-out in progress, since the grace period will not
    /// wait.
    ///
    /// [`Health::Terminating`]: crate::observed::Health::Terminating
    Drain,
    /// Move to a new root partition after the world's bounds or initial cell count
    /// changed.
    Repartition,
    /// Undo a split, merge, roll-out or drain (or the activation of a cell whose
    /// sources are gone) whose new cells failed, are being shut down, or did not
    /// become ready in time.
    RollBack,
    /// Retire cells that no transition needs (left over from an interrupted one).
    Cleanup,
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One step of a transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Start a cell process covering `bounds`.
    Create {
        /// The cell and incarnation to start.
        cell: CellRef,
        /// The space it will cover.
        bounds: Bounds,
        /// `true`: it serves its space at once (nothing to hand over).
        /// `false`: it waits for a hand-over.
        active: bool,
    },
    /// Once every target is ready: move the sessions of every source to the target
    /// that contains each session's position (see [`crate::handoff`]), then make
    /// the targets active.
    HandOver {
        /// Cells giving their sessions away (may be empty: then the targets are
        /// only activated).
        from: Vec<CellRef>,
        /// Cells receiving them, with the space each will own.
        to: Vec<Target>,
    },
    /// Stop a cell process.
    Retire {
        /// The cell incarnation to stop.
        cell: CellRef,
    },
}

/// A cell receiving sessions, with the space it will own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// The receiving cell.
    pub cell: CellRef,
    /// Its space.
    pub bounds: Bounds,
}

/// A manual override and what the planner did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideOutcome {
    /// The request.
    pub request: OverrideRequest,
    /// What happened.
    pub result: OverrideResult,
}

/// What became of a manual override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OverrideResult {
    /// The transition was started by this plan: remove the request.
    Started,
    /// Cannot be done now, may be later (the cell is busy): keep the request.
    Deferred(String),
    /// Can never be done as asked: remove the request and tell the user why.
    Rejected(String),
}

/// The world's phase, for its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No cell serves yet.
    Initializing,
    /// Every cell is ready and nothing is in progress.
    Running,
    /// Cells are being created, split, merged or replaced.
    Scaling,
    /// A cell is failed or unready, or the layout could not be repaired.
    Degraded,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The world at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The phase.
    pub phase: Phase,
    /// Cells serving their space.
    pub active_cells: u32,
    /// Active cells that are ready.
    pub ready_cells: u32,
    /// Cells waiting for a hand-over.
    pub incoming_cells: u32,
    /// Players on active cells, by their latest samples.
    pub players: u64,
    /// Problems the planner could not act on, in words. Any makes the world
    /// degraded.
    pub problems: Vec<String>,
    /// Scaling the policy called for but held back for now (rate limit, cooldown,
    /// cell limits, ...), in words.
    pub held_back: Vec<String>,
}
