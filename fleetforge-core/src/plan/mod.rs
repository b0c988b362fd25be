//! `plan(world, observed, now)`: what to do next, as data.
//!
//! The planner is level-triggered: it reads the whole observed state and says what
//! remains to be done, so a transition interrupted at any step (operator restart,
//! API error) is picked up from what the cluster shows. Every transition is a list
//! of actions in an order that never drops capacity: new cells are created first,
//! sessions are handed over once they are ready, and only then are the old cells
//! retired. An executor runs each transition's actions in order and stops at a
//! hand-over whose targets are not ready yet; the next plan resumes there.

mod layout;
mod scaling;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cell::CellRef;
use crate::geometry::Bounds;
use crate::observed::{Health, Observed, TransitionRecord};
use crate::time::Timestamp;
use crate::world::World;

pub use scaling::OverrideRequest;

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
    /// Move to a new root partition after the world's bounds or initial cell count
    /// changed.
    Repartition,
    /// Undo a split, merge, replacement or repartition whose new cells did not
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

/// Plans the next steps for `world` given what is `observed` at `now`.
///
/// Pure and deterministic: the same arguments always give the same plan. The world
/// must be valid ([`World::validate`]); an invalid one yields a plan that only
/// reports the problem.
pub fn plan(world: &World, observed: &Observed, now: Timestamp) -> Plan {
    if let Err(errs) = world.validate() {
        let mut summary = summarize(world.layout_key(), observed, &[]);
        summary.phase = Phase::Degraded;
        summary.problems = errs.iter().map(ToString::to_string).collect();
        return Plan {
            transitions: Vec::new(),
            started: Vec::new(),
            overrides: Vec::new(),
            summary,
        };
    }
    // Same input, same plan, whatever order the cells were listed in.
    let sorted;
    let observed = if observed.cells.is_sorted_by(|a, b| a.cell < b.cell) {
        observed
    } else {
        let mut o = observed.clone();
        o.cells.sort_by(|a, b| a.cell.cmp(&b.cell));
        // A cell listed twice alike is one cell. Listed twice unalike, the input
        // contradicts itself, and no order of reading it is more right than another.
        o.cells.dedup_by(|a, b| a == b);
        let contradictions: Vec<String> = o
            .cells
            .windows(2)
            .filter(|w| w[0].cell == w[1].cell)
            .map(|w| {
                format!(
                    "cell {} is observed twice with different bounds, role, health or samples; \
                     nothing is done until the observation is consistent",
                    w[0].cell
                )
            })
            .collect();
        if !contradictions.is_empty() {
            let mut summary = summarize(world.layout_key(), &o, &contradictions);
            summary.phase = Phase::Degraded;
            return Plan {
                transitions: Vec::new(),
                started: Vec::new(),
                overrides: Vec::new(),
                summary,
            };
        }
        sorted = o;
        &sorted
    };
    let current = world.layout_key();
    let repaired = layout::repair(world, current, observed, now);
    let decided = scaling::decide(world, observed, &repaired, now);
    let mut summary = summarize(current, observed, &repaired.problems);
    summary.held_back = decided.held_back;
    let mut transitions = repaired.transitions;
    transitions.extend(decided.transitions);
    if summary.phase == Phase::Running && !transitions.is_empty() {
        summary.phase = Phase::Scaling;
    }
    Plan {
        transitions,
        started: decided.started,
        overrides: decided.overrides,
        summary,
    }
}

/// Counts cells and players, and picks the phase as if nothing were planned.
fn summarize(current: u64, observed: &Observed, problems: &[String]) -> Summary {
    let mut s = Summary {
        phase: Phase::Running,
        active_cells: 0,
        ready_cells: 0,
        incoming_cells: 0,
        players: 0,
        problems: problems.to_vec(),
        held_back: Vec::new(),
    };
    let mut unhealthy = false;
    for c in &observed.cells {
        if c.is_active() {
            s.active_cells += 1;
            s.players += c.latest().map_or(0, |l| u64::from(l.players));
            match c.health {
                Health::Ready => s.ready_cells += 1,
                Health::Unready | Health::Failed => unhealthy = true,
                Health::Starting => {}
            }
        } else {
            s.incoming_cells += 1;
        }
    }
    let stale = observed.cells.iter().any(|c| c.layout != current);
    s.phase = if s.active_cells == 0 {
        Phase::Initializing
    } else if unhealthy || !s.problems.is_empty() {
        Phase::Degraded
    } else if s.incoming_cells > 0 || stale || s.ready_cells < s.active_cells {
        Phase::Scaling
    } else {
        Phase::Running
    };
    s
}
