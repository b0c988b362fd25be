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
mod model;
// Crate-visible for the pacing of reconciles, which reads the window as scaling does.
pub(crate) mod scaling;

use crate::observed::{Health, Observed};
use crate::time::Timestamp;
use crate::world::World;

pub use model::{
    Action, OverrideOutcome, OverrideRequest, OverrideResult, Phase, Plan, Summary, Target, Transition,
    TransitionKind,
};

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
                // A terminating cell is being drained, not failing: the world is
                // changing (Scaling), not degraded.
                Health::Starting | Health::Terminating => {}
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
