//! A staged executor: a cluster of cell processes holding real sessions, driven by
//! `plan` one step at a time the way the operator drives it, with the faults a
//! real cluster produces injected at random.
//!
//! The reference executor in `fleetforge_core::sim` makes every cell ready at once
//! and every hand-over succeed. This one does not: cells start slowly, never start,
//! fail on start or later, go unready and come back, are evicted (they turn
//! Terminating, still answer, and are gone when their grace period ends, with
//! whatever they still hold); the executor stops between
//! any two actions (an operator restart) and an export can stop half-way; the
//! planner is shown observations that miss a cell or list one twice, in any order.
//! Sessions are tracked one by one, so losing one, or holding one twice, is seen
//! the moment it happens.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetforge_core::handoff::target_for;
use fleetforge_core::observed::prune_history;
use fleetforge_core::sim::SplitMix;
use fleetforge_core::{
    Action, Axis, Bounds, CellId, CellRef, Health, LoadSample, Observed, ObservedCell, OverrideResult, Plan,
    Point, Role, Timestamp, TransitionKind, TransitionRecord, World, plan,
};

/// How often each fault strikes (probabilities per step, per cell or per action).
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// A new cell takes up to `max_start` seconds to become ready instead of one.
    pub slow_start: f64,
    /// Longest slow start, in seconds.
    pub max_start: u64,
    /// A new cell fails before it is ready.
    pub fail_start: f64,
    /// A new cell never becomes ready.
    pub hang: f64,
    /// A ready cell crashes, per step (its sessions are lost, as they must be).
    pub crash: f64,
    /// A ready cell goes unready for a few steps, per step.
    pub unready: f64,
    /// The executor stops before an action (the operator restarted).
    pub executor_stop: f64,
    /// An export moves only part of the sessions and reports itself incomplete.
    pub partial_export: f64,
    /// The observation misses one cell.
    pub omit: f64,
    /// The observation lists one cell twice.
    pub duplicate: f64,
    /// A live (starting or ready) cell is evicted, per step: it turns
    /// Terminating, still answers, and is gone `grace` seconds later.
    pub evict: f64,
    /// How long an evicted cell answers before it is gone, in seconds.
    pub grace: u64,
}

impl Faults {
    /// No fault at all: what the calm phase runs with.
    pub const NONE: Faults = Faults {
        slow_start: 0.0,
        max_start: 1,
        fail_start: 0.0,
        hang: 0.0,
        crash: 0.0,
        unready: 0.0,
        executor_stop: 0.0,
        partial_export: 0.0,
        omit: 0.0,
        duplicate: 0.0,
        evict: 0.0,
        grace: 60,
    };

    /// Every fault, often enough that a few hundred steps meet each of them many
    /// times.
    pub const HARSH: Faults = Faults {
        slow_start: 0.3,
        max_start: 40,
        fail_start: 0.05,
        hang: 0.05,
        crash: 0.004,
        unready: 0.01,
        executor_stop: 0.05,
        partial_export: 0.1,
        omit: 0.1,
        duplicate: 0.05,
        evict: 0.004,
        grace: 30,
    };

    /// Evictions, often, with a grace period far longer than a hand-over takes
    /// here, and only the faults that delay a hand-over by a bounded time: cells
    /// start within `max_start` seconds (shorter than any transition timeout the
    /// soak uses), the executor stops, exports stop half-way, observations miss
    /// or repeat cells. No cell fails, hangs, crashes or goes unready, so every
    /// drain completes within the grace period and no session may be lost.
    pub const EVICTIONS: Faults = Faults {
        slow_start: 0.3,
        max_start: 8,
        fail_start: 0.0,
        hang: 0.0,
        crash: 0.0,
        unready: 0.0,
        executor_stop: 0.05,
        partial_export: 0.1,
        omit: 0.1,
        duplicate: 0.05,
        evict: 0.01,
        grace: 60,
    };
}

/// One cell process as it really is.
#[derive(Debug, Clone)]
pub struct Proc {
    pub cell: CellRef,
    pub bounds: Bounds,
    pub layout: u64,
    pub revision: String,
    pub role: Role,
    pub health: Health,
    pub created_at: Timestamp,
    /// When it becomes ready; `None`: never (it hangs, or fails on start).
    pub ready_at: Option<Timestamp>,
    /// Whether it fails instead of becoming ready.
    pub fails_on_start: bool,
    /// While unready, when it comes back.
    pub back_at: Option<Timestamp>,
    /// Once evicted, when its grace period ends and it is gone.
    pub gone_at: Option<Timestamp>,
    /// The sessions it holds, by id.
    pub sessions: Vec<usize>,
    pub samples: Vec<LoadSample>,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// Not connected yet (or reconnecting after its cell crashed).
    Waiting,
    /// Connected to a cell.
    Held,
    /// The player left.
    Left,
}

/// A world, its cell processes and its players.
pub struct Cluster {
    pub world: World,
    pub procs: Vec<Proc>,
    pub history: Vec<TransitionRecord>,
    pub now: Timestamp,
    pub faults: Faults,
    /// Every session's position.
    pub positions: Vec<Point>,
    pub seats: Vec<Seat>,
    /// Sessions lost because their cell crashed (allowed: a crash loses what
    /// changed since the last checkpoint; here, everything).
    pub lost_to_crashes: usize,
    /// Cells evicted so far.
    pub evictions: usize,
    /// Drains the planner started.
    pub drains: usize,
    /// Sessions lost because an evicted cell still held them when its grace
    /// period ended.
    pub lost_to_evictions: usize,
    /// Evicted active cells whose grace period ended while no other active cell
    /// covered their space: the hole a drain exists to prevent.
    pub holes_left_by_evictions: usize,
    /// What went wrong: sessions dropped by a retire, sessions held twice or
    /// outside their cell, plans that depend on the input order.
    pub violations: Vec<String>,
    pub rng: SplitMix,
    /// Plans made, for the record of a failing seed.
    pub log: Vec<String>,
}

impl Cluster {
    /// An empty cluster for `world` with `players` players spread uniformly.
    pub fn new(world: World, players: usize, seed: u64, faults: Faults) -> Self {
        let mut c = Self {
            world,
            procs: Vec::new(),
            history: Vec::new(),
            now: Timestamp(0),
            faults,
            positions: Vec::new(),
            seats: Vec::new(),
            lost_to_crashes: 0,
            evictions: 0,
            drains: 0,
            lost_to_evictions: 0,
            holes_left_by_evictions: 0,
            violations: Vec::new(),
            rng: SplitMix::new(seed),
            log: Vec::new(),
        };
        let area = c.world.bounds;
        c.add_players(&area, players);
        c
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.next_f64() < p
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// Adds `n` players uniformly over `area` (clamped into the world).
    pub fn add_players(&mut self, area: &Bounds, n: usize) {
        let w = self.world.bounds;
        for _ in 0..n {
            let mut c = [0.0; 3];
            for a in w.axes() {
                let v = area.min(a) + self.rng.next_f64() * area.extent(a);
                c[a.index()] = v.clamp(w.min(a), w.max(a));
            }
            self.positions.push(Point::new(c[0], c[1], c[2]));
            self.seats.push(Seat::Waiting);
        }
    }

    /// Some players leave: each connected or waiting one with probability `p`.
    pub fn remove_players(&mut self, p: f64) {
        for s in 0..self.seats.len() {
            if self.seats[s] != Seat::Left && self.chance(p) {
                self.seats[s] = Seat::Left;
                for proc in &mut self.procs {
                    proc.sessions.retain(|&x| x != s);
                }
            }
        }
    }

    /// One second passes: evicted cells whose grace period ended are gone; cells
    /// start, fail, go unready and come back, are evicted; waiting players
    /// connect to the cell that serves their position.
    pub fn tick(&mut self) {
        self.now = self.now + Duration::from_secs(1);
        self.expire_evicted();
        let now = self.now;
        let f = self.faults;
        for k in 0..self.procs.len() {
            let crash = self.chance(f.crash);
            let unready = self.chance(f.unready);
            let back = 1 + self.below(8) as u64;
            let dies_unready = self.chance(0.2);
            let p = &mut self.procs[k];
            match p.health {
                Health::Starting if p.ready_at.is_some_and(|t| t <= now) => {
                    p.health = if p.fails_on_start {
                        Health::Failed
                    } else {
                        Health::Ready
                    };
                }
                Health::Ready if crash => p.health = Health::Failed,
                Health::Ready if unready => {
                    p.health = Health::Unready;
                    p.back_at = Some(now + Duration::from_secs(back));
                }
                Health::Unready if p.back_at.is_some_and(|t| t <= now) => {
                    p.health = if dies_unready {
                        Health::Failed
                    } else {
                        Health::Ready
                    };
                }
                _ => {}
            }
            if p.health == Health::Failed && !p.sessions.is_empty() {
                // The process died with its players: they reconnect as new sessions.
                let lost = std::mem::take(&mut p.sessions);
                self.lost_to_crashes += lost.len();
                for s in lost {
                    self.seats[s] = Seat::Waiting;
                }
            }
        }
        self.evict_some();
        self.connect_waiting();
    }

    /// Live cells are evicted now and then: they turn Terminating and keep
    /// answering until their grace period ends.
    fn evict_some(&mut self) {
        let grace = Duration::from_secs(self.faults.grace);
        for k in 0..self.procs.len() {
            let live = matches!(self.procs[k].health, Health::Starting | Health::Ready);
            if live && self.chance(self.faults.evict) {
                let p = &mut self.procs[k];
                p.health = Health::Terminating;
                p.gone_at = Some(self.now + grace);
                self.evictions += 1;
            }
        }
    }

    /// Evicted cells whose grace period has ended are gone, with what they held.
    fn expire_evicted(&mut self) {
        let now = self.now;
        let (gone, kept): (Vec<Proc>, Vec<Proc>) = std::mem::take(&mut self.procs)
            .into_iter()
            .partition(|p| p.gone_at.is_some_and(|t| t <= now));
        self.procs = kept;
        for p in gone {
            self.log.push(format!(
                "  grace period of {} ({:?}) ended holding {} sessions",
                p.cell,
                p.role,
                p.sessions.len()
            ));
            if matches!(p.role, Role::Active { .. }) && !self.covered_by_others(&p.bounds) {
                self.holes_left_by_evictions += 1;
            }
            self.lost_to_evictions += p.sessions.len();
            for s in p.sessions {
                self.seats[s] = Seat::Waiting;
            }
        }
    }

    /// Whether active cells that serve (not failed) cover `bounds`.
    fn covered_by_others(&self, bounds: &Bounds) -> bool {
        bounds.covered_by(
            self.procs
                .iter()
                .filter(|p| matches!(p.role, Role::Active { .. }) && p.health != Health::Failed)
                .map(|p| &p.bounds),
        )
    }

    /// Waiting players join the newest active, ready cell that contains them.
    fn connect_waiting(&mut self) {
        let world = self.world.bounds;
        for s in 0..self.seats.len() {
            if self.seats[s] != Seat::Waiting {
                continue;
            }
            let p = self.positions[s];
            let home = (0..self.procs.len())
                .filter(|&k| {
                    let c = &self.procs[k];
                    c.health == Health::Ready
                        && c.layout == self.world.layout_key()
                        && matches!(c.role, Role::Active { .. })
                        && contains(&world, &c.bounds, &p)
                })
                .max_by_key(|&k| match self.procs[k].role {
                    Role::Active { since } => (since, std::cmp::Reverse(k)),
                    Role::Incoming => (Timestamp(0), std::cmp::Reverse(k)),
                });
            if let Some(k) = home {
                self.procs[k].sessions.push(s);
                self.seats[s] = Seat::Held;
            }
        }
    }

    /// Every active cell that answers (ready, or terminating) records its players.
    pub fn sample(&mut self) {
        let now = self.now;
        for p in &mut self.procs {
            let answers = matches!(p.health, Health::Ready | Health::Terminating);
            if answers && matches!(p.role, Role::Active { .. }) {
                p.samples.push(LoadSample {
                    at: now,
                    players: p.sessions.len() as u32,
                    histogram: None,
                });
                if p.samples.len() > 40 {
                    p.samples.remove(0);
                }
            }
        }
    }

    /// What the cluster shows: every process, true to its state.
    pub fn truth(&self) -> Observed {
        Observed {
            cells: self.procs.iter().map(observed).collect(),
            history: self.history.clone(),
        }
    }

    /// What the planner is shown: the truth, with a cell missed or listed twice
    /// now and then, in a random order.
    pub fn observe(&mut self) -> Observed {
        let mut o = self.truth();
        if !o.cells.is_empty() && self.chance(self.faults.omit) {
            let k = self.below(o.cells.len());
            o.cells.remove(k);
        }
        if !o.cells.is_empty() && self.chance(self.faults.duplicate) {
            let k = self.below(o.cells.len());
            let copy = o.cells[k].clone();
            o.cells.push(copy);
        }
        self.shuffle(&mut o.cells);
        o
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Plans from an observation, checks that another order of the same cells
    /// gives the same plan, and carries the plan out.
    pub fn step(&mut self) -> Plan {
        self.tick();
        self.sample();
        let observed = self.observe();
        let p = plan(&self.world, &observed, self.now);
        self.check_terminating(&observed, &p);
        let mut again = observed.clone();
        self.shuffle(&mut again.cells);
        if plan(&self.world, &again, self.now) != p {
            self.violations.push(format!(
                "at {:?}: the plan depends on the order of the cells",
                self.now
            ));
        }
        self.log.push(format!(
            "t={} plan {:?}",
            self.now.as_millis() / 1000,
            p.transitions
                .iter()
                .map(|t| format!("{}: {}", t.kind, t.reason))
                .collect::<Vec<_>>()
        ));
        let completed = self.execute(&p);
        if completed {
            let mut history = self.history.clone();
            history.extend(p.started.iter().cloned());
            self.history = prune_history(&self.world, &history, self.now);
            for o in &p.overrides {
                if matches!(o.result, OverrideResult::Started | OverrideResult::Rejected(_)) {
                    match &o.request {
                        fleetforge_core::OverrideRequest::Split(id) => {
                            self.world.overrides.force_split.remove(id)
                        }
                        fleetforge_core::OverrideRequest::Merge(id) => {
                            self.world.overrides.force_merge.remove(id)
                        }
                    };
                }
            }
        }
        self.check();
        p
    }

    /// Carries `plan` out as the operator does. Returns `false` when the executor
    /// stopped part-way (the status, and so the history, is then not written).
    fn execute(&mut self, plan: &Plan) -> bool {
        for t in &plan.transitions {
            'actions: for action in &t.actions {
                if self.chance(self.faults.executor_stop) {
                    self.log.push("  executor stopped".into());
                    return false;
                }
                match action {
                    Action::Create { cell, bounds, active } => self.create(cell, *bounds, *active),
                    Action::HandOver { from, to } => match self.hand_over(from, to) {
                        Step::Done => {}
                        Step::Wait => break 'actions,
                        Step::Stop => return false,
                    },
                    Action::Retire { cell } => self.retire(cell),
                }
            }
        }
        true
    }

    fn find(&self, cell: &CellRef) -> Option<usize> {
        self.procs.iter().position(|p| &p.cell == cell)
    }

    fn create(&mut self, cell: &CellRef, bounds: Bounds, active: bool) {
        if self.find(cell).is_some() {
            // The Pod exists already: the operator leaves it as it is.
            return;
        }
        let f = self.faults;
        let hang = self.chance(f.hang);
        let fails_on_start = self.chance(f.fail_start);
        let start = if self.chance(f.slow_start) {
            1 + self.below(f.max_start as usize) as u64
        } else {
            1
        };
        self.procs.push(Proc {
            cell: cell.clone(),
            bounds,
            layout: self.world.layout_key(),
            revision: self.world.revision.clone(),
            role: if active {
                Role::Active { since: self.now }
            } else {
                Role::Incoming
            },
            health: Health::Starting,
            created_at: self.now,
            ready_at: (!hang).then(|| self.now + Duration::from_secs(start)),
            fails_on_start,
            back_at: None,
            gone_at: None,
            sessions: Vec::new(),
            samples: Vec::new(),
        });
    }

    fn hand_over(&mut self, from: &[CellRef], to: &[fleetforge_core::Target]) -> Step {
        let mut targets = Vec::new();
        for t in to {
            // A process of that name with other bounds (one the planner did not
            // see when it chose the name) is not the target the plan means.
            match self.find(&t.cell) {
                Some(k) if self.procs[k].health == Health::Ready && self.procs[k].bounds == t.bounds => {
                    targets.push(k)
                }
                _ => return Step::Wait,
            }
        }
        let bounds: Vec<Bounds> = to.iter().map(|t| t.bounds).collect();
        for source in from {
            if self.chance(self.faults.executor_stop) {
                self.log.push("  executor stopped during a hand-over".into());
                return Step::Stop;
            }
            let Some(k) = self.find(source) else { continue };
            match self.procs[k].health {
                // Still answering until its grace period ends: that is the point.
                Health::Ready | Health::Terminating => {}
                Health::Failed => continue,
                Health::Starting | Health::Unready => return Step::Wait,
            }
            let mut moving = std::mem::take(&mut self.procs[k].sessions);
            let partial = !moving.is_empty() && self.chance(self.faults.partial_export);
            if partial {
                let keep = moving.split_off(self.below(moving.len()));
                self.procs[k].sessions = keep;
            }
            for s in moving {
                let Some(t) = target_for(&self.positions[s], &bounds) else {
                    self.violations.push(format!("no target for session {s}"));
                    continue;
                };
                self.procs[targets[t]].sessions.push(s);
            }
            if partial {
                return Step::Wait;
            }
        }
        for &k in &targets {
            if self.chance(self.faults.executor_stop) {
                self.log.push("  executor stopped while activating".into());
                return Step::Stop;
            }
            self.procs[k].role = Role::Active { since: self.now };
        }
        Step::Done
    }

    fn retire(&mut self, cell: &CellRef) {
        let Some(k) = self.find(cell) else { return };
        let p = self.procs.remove(k);
        if p.gone_at.is_some() && matches!(p.role, Role::Active { .. }) && !self.covered_by_others(&p.bounds)
        {
            self.violations.push(format!(
                "at t={}: retired evicted {} while no other active cell covers its space",
                self.now.as_millis() / 1000,
                p.cell
            ));
        }
        self.log
            .push(format!("  retired {} ({:?}, {:?})", p.cell, p.role, p.health));
        if !p.sessions.is_empty() {
            self.violations.push(format!(
                "at t={}: retired {} ({:?}, {:?}) holding {} sessions",
                self.now.as_millis() / 1000,
                p.cell,
                p.role,
                p.health,
                p.sessions.len()
            ));
            for s in p.sessions {
                self.seats[s] = Seat::Waiting;
            }
        }
    }

    /// A terminating cell is neither a failure nor lost capacity: no replacement
    /// retires it, and no fill is started over space it serves alone. Counts
    /// the drains started. (A cell of an earlier partition serves no space of
    /// the current one: filling a new root that vanished is about the root.)
    fn check_terminating(&mut self, observed: &Observed, p: &Plan) {
        let active = |c: &&ObservedCell| c.is_active();
        let current = self.world.layout_key();
        let terminating: Vec<&ObservedCell> = observed
            .cells
            .iter()
            .filter(active)
            .filter(|c| c.health == Health::Terminating && c.layout == current)
            .collect();
        // Where it overlaps another active cell it is an overlap loser handing
        // its space to that one, and a fill of the rest is about the other's.
        let alone = |t: &ObservedCell| {
            !observed
                .cells
                .iter()
                .filter(active)
                .any(|c| c.cell != t.cell && c.bounds.overlaps(&t.bounds))
        };
        for t in &p.transitions {
            if t.kind == TransitionKind::Drain && !t.continues {
                self.drains += 1;
            }
            for a in &t.actions {
                let wrong = match (t.kind, a) {
                    (TransitionKind::Replace, Action::Retire { cell }) => {
                        terminating.iter().any(|c| &c.cell == cell)
                    }
                    (TransitionKind::Fill, Action::Create { bounds, .. }) => {
                        terminating.iter().any(|c| alone(c) && c.bounds.overlaps(bounds))
                    }
                    _ => false,
                };
                if wrong {
                    self.violations.push(format!(
                        "at t={}: {} ({}) treats a terminating cell as failed or missing",
                        self.now.as_millis() / 1000,
                        t.kind,
                        t.reason
                    ));
                }
            }
        }
    }

    /// Sessions are held once, by a cell whose space contains them.
    fn check(&mut self) {
        let world = self.world.bounds;
        let mut held: BTreeMap<usize, &CellRef> = BTreeMap::new();
        let mut problems = Vec::new();
        for p in &self.procs {
            for &s in &p.sessions {
                if let Some(other) = held.insert(s, &p.cell) {
                    problems.push(format!("session {s} held by {other} and {}", p.cell));
                }
                if self.seats[s] != Seat::Held {
                    problems.push(format!("session {s} held by {} but {:?}", p.cell, self.seats[s]));
                }
                if !contains(&world, &p.bounds, &self.positions[s]) {
                    problems.push(format!(
                        "session {s} held by {}, whose space does not contain it",
                        p.cell
                    ));
                }
            }
        }
        for (s, seat) in self.seats.iter().enumerate() {
            if *seat == Seat::Held && !held.contains_key(&s) {
                problems.push(format!("session {s} is connected but no cell holds it"));
            }
        }
        self.violations.extend(problems);
    }

    /// Active cells of the current partition.
    pub fn active(&self) -> Vec<&Proc> {
        self.procs
            .iter()
            .filter(|p| matches!(p.role, Role::Active { .. }) && p.layout == self.world.layout_key())
            .collect()
    }

    /// Whether the world is at rest: every process active, ready and of the
    /// current partition, every player connected, nothing left to plan and no
    /// problem reported.
    pub fn at_rest(&self) -> bool {
        !self.seats.contains(&Seat::Waiting)
            && self.procs.iter().all(|p| {
                p.health == Health::Ready
                    && matches!(p.role, Role::Active { .. })
                    && p.layout == self.world.layout_key()
            })
            && {
                let p = plan(&self.world, &self.truth(), self.now);
                p.is_empty() && p.summary.problems.is_empty()
            }
    }

    /// Checks a world at rest: its active cells tile it exactly, their count is
    /// within the limits, and every player is connected.
    pub fn check_at_rest(&self, points: &[[f64; 3]]) -> Result<(), String> {
        let w = &self.world.bounds;
        let active = self.active();
        let total: f64 = active.iter().map(|p| p.bounds.measure()).sum();
        if (total - w.measure()).abs() > 1e-9 * w.measure() {
            return Err(format!("active cells cover {total} of {}", w.measure()));
        }
        for (i, a) in active.iter().enumerate() {
            for b in &active[i + 1..] {
                if a.bounds.overlaps(&b.bounds) {
                    return Err(format!("{} overlaps {}", a.cell, b.cell));
                }
            }
        }
        for u in points {
            let p = Point::new(
                w.min(Axis::X) + w.extent(Axis::X) * u[0],
                w.min(Axis::Y) + w.extent(Axis::Y) * u[1],
                w.min(Axis::Z) + w.extent(Axis::Z) * u[2],
            );
            let n = active.iter().filter(|c| c.bounds.contains(&p)).count();
            if n != 1 {
                return Err(format!("{p:?} lies in {n} cells"));
            }
        }
        let (min, max) = (
            self.world.policy.min_cells as usize,
            self.world.policy.max_cells as usize,
        );
        if active.len() < min || active.len() > max {
            return Err(format!("{} cells, outside [{min}, {max}]", active.len()));
        }
        if let Some(s) = self.seats.iter().position(|s| *s == Seat::Waiting) {
            return Err(format!("session {s} is not connected at rest"));
        }
        Ok(())
    }

    /// A random id of an active cell, for overrides.
    pub fn random_active_id(&mut self) -> Option<CellId> {
        let ids: Vec<CellId> = self.active().iter().map(|p| p.cell.id.clone()).collect();
        (!ids.is_empty()).then(|| ids[self.below(ids.len())].clone())
    }

    /// A random number below `n`.
    pub fn pick(&mut self, n: usize) -> usize {
        self.below(n)
    }

    /// A random float in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.rng.next_f64()
    }
}

/// How far a hand-over got.
enum Step {
    Done,
    /// Not now: the transition waits, later transitions of the plan go on.
    Wait,
    /// The executor stopped.
    Stop,
}

/// Whether a cell's space holds `p`, counting the world's own upper faces.
fn contains(world: &Bounds, cell: &Bounds, p: &Point) -> bool {
    cell.contains(p)
        || (cell.contains_closed(p)
            && cell
                .axes()
                .all(|a| p.get(a) < cell.max(a) || cell.max(a) == world.max(a)))
}

fn observed(p: &Proc) -> ObservedCell {
    ObservedCell {
        cell: p.cell.clone(),
        bounds: p.bounds,
        layout: p.layout,
        revision: p.revision.clone(),
        role: p.role,
        health: p.health,
        created_at: p.created_at,
        samples: p.samples.clone(),
    }
}
