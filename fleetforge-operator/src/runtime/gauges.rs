//! Process-wide bookkeeping behind two metrics that no single reconcile can set
//! alone: worlds by phase, and how long new cells take to serve.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use fleetforge_core::{Health, Observed, Timestamp};
use fleetforge_obs::metrics as m;

/// The phases a world can report; each gets a series, zero included, so an alert
/// on one has a series to read before the first world enters it.
const PHASES: &[&str] = &["Initializing", "Running", "Scaling", "Degraded"];

/// Publishes every phase at zero worlds, before any world reports one.
pub fn zero_phases() {
    for phase in PHASES {
        metrics::gauge!(m::WORLDS, "phase" => *phase).set(0.0);
    }
}

/// Each world's last phase, counted into `fleetforge_worlds{phase}`.
#[derive(Debug, Default)]
pub struct Phases {
    worlds: Mutex<HashMap<String, String>>,
}

impl Phases {
    /// Records `world`'s phase (`None`: the world is gone) and updates the gauge.
    pub fn set(&self, world: &str, phase: Option<&str>) {
        let counts = {
            let mut worlds = self.worlds.lock().unwrap_or_else(|e| e.into_inner());
            match phase {
                Some(p) => worlds.insert(world.to_owned(), p.to_owned()),
                None => worlds.remove(world),
            };
            let mut counts: BTreeMap<String, usize> = PHASES.iter().map(|p| ((*p).to_owned(), 0)).collect();
            for p in worlds.values() {
                *counts.entry(p.clone()).or_default() += 1;
            }
            counts
        };
        for (phase, n) in counts {
            metrics::gauge!(m::WORLDS, "phase" => phase).set(n as f64);
        }
    }
}

/// Cells seen starting by this process, per world, so that the time to serve is
/// recorded once per cell and never for a cell that was already serving when the
/// operator started (its age is not a start-up time).
#[derive(Debug, Default)]
pub struct ReadyTimer {
    starting: Mutex<HashMap<String, HashSet<String>>>,
}

impl ReadyTimer {
    /// Looks at `world`'s cells (`uids[i]` is the Pod uid of `observed.cells[i]`)
    /// at `now`: records the time to serve of each cell that was starting at the
    /// last look and serves now. Returns how many it recorded.
    pub fn observe(
        &self,
        world: &str,
        observed: &Observed,
        uids: &[Option<String>],
        now: Timestamp,
    ) -> usize {
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        let before = starting.remove(world).unwrap_or_default();
        let mut still = HashSet::new();
        let mut recorded = 0;
        for (cell, uid) in observed.cells.iter().zip(uids) {
            let Some(uid) = uid else { continue };
            match cell.health {
                Health::Ready if before.contains(uid) => {
                    metrics::histogram!(m::CELL_READY_DURATION)
                        .record(now.since(cell.created_at).as_secs_f64());
                    recorded += 1;
                }
                Health::Starting => {
                    still.insert(uid.clone());
                }
                _ => {}
            }
        }
        if !still.is_empty() {
            starting.insert(world.to_owned(), still);
        }
        recorded
    }
}

#[cfg(test)]
mod tests {
    use fleetforge_core::{Bounds, CellId, CellRef, ObservedCell, Role};

    use super::*;

    fn cell(health: Health) -> ObservedCell {
        ObservedCell {
            cell: CellRef::first(CellId::root(0)),
            bounds: Bounds::line((0.0, 1.0)).unwrap(),
            layout: 0,
            revision: String::new(),
            role: Role::Incoming,
            health,
            created_at: Timestamp(1_000),
            samples: vec![],
        }
    }

    #[test]
    fn only_cells_seen_starting_are_timed_and_only_once() {
        let timer = ReadyTimer::default();
        let uid = vec![Some("u1".to_owned())];
        // Serving at the first look (an operator restart): not timed.
        let mut observed = Observed {
            cells: vec![cell(Health::Ready)],
            ..Observed::default()
        };
        assert_eq!(timer.observe("w", &observed, &uid, Timestamp(5_000)), 0);
        observed.cells = vec![cell(Health::Starting)];
        assert_eq!(timer.observe("w", &observed, &uid, Timestamp(5_000)), 0);
        observed.cells = vec![cell(Health::Ready)];
        assert_eq!(timer.observe("w", &observed, &uid, Timestamp(6_000)), 1);
        assert_eq!(timer.observe("w", &observed, &uid, Timestamp(7_000)), 0);
    }
}
