//! Bringing the observed cells back to a sound layout: resuming transitions in
//! flight, rolling back the ones that stalled, draining cells that someone else is
//! shutting down, replacing failed cells, filling space no cell covers, moving to
//! a new partition, and rolling out a new revision.
//!
//! One rule runs through all of it: a cell that may hold sessions (it is ready, or
//! was and may come back) is only ever retired after handing its sessions to the
//! cells that own its space ([`Layout::retire_unneeded`]). An observation can miss
//! a cell, a hand-over can stop half-way, a roll-back can come after a partial
//! export: none of that is proof that a cell is empty, so the planner never takes
//! it for one.
//!
//! A terminating cell ([`Health::Terminating`]) still answers until its grace
//! period ends, so it is treated as what it is, a cell about to leave: it keeps
//! its space (no fill, no replacement) until a new incarnation has taken its
//! sessions over (a drain), it never receives sessions, and a new cell that is
//! terminating has stalled its transition as surely as a failed one.
//!
//! Policy-driven splits and merges are decided afterwards, in `scaling`, on the
//! cells this leaves free.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

use crate::cell::{CellId, CellRef, MAX_DEPTH};
use crate::geometry::Bounds;
use crate::observed::{Health, Observed, ObservedCell};
use crate::partition::initial_partition;
use crate::plan::model::{Action, Target, Transition, TransitionKind};
use crate::time::Timestamp;
use crate::world::World;

/// The outcome of [`repair`], and what scaling decisions build on.
#[derive(Debug, Default)]
pub(super) struct Repaired {
    /// Transitions carried on or needed to repair the layout.
    pub transitions: Vec<Transition>,
    /// Problems that could not be repaired.
    pub problems: Vec<String>,
    /// `false` while the world moves to a new partition: no scaling until it is done.
    pub settled: bool,
    /// Active cells that no transition touches: what scaling may split or merge.
    pub free: Vec<usize>,
    /// Cells the world will have once every transition here completes.
    pub projected_cells: u32,
    /// Cells more than `projected_cells` the world keeps if every merge in flight
    /// is rolled back: a split may not count on room a merge has not made yet.
    pub merging_away: u32,
    /// Cells fewer than `projected_cells` the world keeps if every split in flight
    /// is rolled back: a merge may not count on cells a split has not made yet.
    pub splitting_in: u32,
    /// Cells that should retire but stay, holding sessions, until cells cover
    /// their space: each may yet come back as a cell of its own (a rolled-back
    /// child whose split resumes), so splits leave room for them.
    pub lingering: u32,
}

/// The reference for a new process of `id`: the incarnation after the newest one
/// observed. `cells` must be sorted by [`CellRef`], as `plan` sorts them.
pub(super) fn next_ref(cells: &[ObservedCell], id: &CellId) -> CellRef {
    let end = cells.partition_point(|c| c.cell.id <= *id);
    let incarnation = match end.checked_sub(1).map(|k| &cells[k].cell) {
        Some(last) if last.id == *id => last.incarnation.saturating_add(1),
        _ => 0,
    };
    CellRef {
        id: id.clone(),
        incarnation,
    }
}

/// Resumes, repairs and rolls out; see the module docs.
pub(super) fn repair(world: &World, current: u64, observed: &Observed, now: Timestamp) -> Repaired {
    let mut r = Repaired {
        settled: true,
        ..Repaired::default()
    };
    let cells = &observed.cells;
    let (mine, stale): (Vec<usize>, Vec<usize>) = (0..cells.len()).partition(|&i| cells[i].layout == current);
    let (holding, empty): (Vec<usize>, Vec<usize>) =
        stale.into_iter().partition(|&i| cells[i].may_hold_sessions());
    let retire_empty = |r: &mut Repaired| {
        if !empty.is_empty() {
            r.transitions.push(plain_retire(
                cells,
                &empty,
                TransitionKind::Cleanup,
                None,
                "cells of an earlier partition that hold no sessions",
            ));
        }
    };
    if holding.is_empty() {
        retire_empty(&mut r);
        let mut layout = Layout::new(world, current, cells, now, &mut r);
        layout.run(&mine);
        layout.finish();
        return r;
    }
    // Cells of an earlier partition still serve: no scaling until they are gone.
    r.settled = false;
    // The new partition has taken over when its cells were activated after the
    // old ones. Cells of the current layout that are older than the old cells'
    // activation are leftovers of a partition the world is returning to (the
    // spec changed back before they were all retired): a tree with parts missing,
    // so the move starts afresh from the roots and they are handed over too.
    let newest = |idx: &[usize]| idx.iter().filter_map(|&i| cells[i].active_since()).max();
    let taken_over = match (newest(&mine), newest(&holding)) {
        (Some(new), Some(old)) => new > old,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if taken_over {
        // The new partition has taken over already: keep it sound, and hand what
        // the old cells still hold to the new cells that own their space.
        retire_empty(&mut r);
        let mut layout = Layout::new(world, current, cells, now, &mut r);
        layout.run(&mine);
        layout.retire_unneeded(
            holding,
            TransitionKind::Repartition,
            None,
            "cells of an earlier partition",
        );
        layout.finish();
    } else {
        // The old cells that hold nothing (failed, never started) stay until the
        // move completes: should the spec change back, they are still there to
        // say where their space is.
        repartition(world, cells, &holding, &empty, &mine, now, &mut r);
    }
    r
}

/// One transition retiring `idx`, cells that hold no sessions.
fn plain_retire(
    cells: &[ObservedCell],
    idx: &[usize],
    kind: TransitionKind,
    undoes: Option<TransitionKind>,
    reason: &str,
) -> Transition {
    Transition {
        undoes,
        kind,
        continues: true,
        reason: reason.to_owned(),
        actions: idx
            .iter()
            .map(|&i| Action::Retire {
                cell: cells[i].cell.clone(),
            })
            .collect(),
    }
}

/// The replacement of `old` by `new`, a new incarnation for the same space
/// (a roll-out or a drain): `new` is created waiting for the hand-over, takes
/// `old`'s sessions once ready, and `old` retires.
fn successor(old: &ObservedCell, new: CellRef, kind: TransitionKind, reason: String) -> Transition {
    Transition {
        undoes: None,
        kind,
        continues: false,
        reason,
        actions: vec![
            Action::Create {
                cell: new.clone(),
                bounds: old.bounds,
                active: false,
            },
            Action::HandOver {
                from: vec![old.cell.clone()],
                to: vec![Target {
                    cell: new,
                    bounds: old.bounds,
                }],
            },
            Action::Retire {
                cell: old.cell.clone(),
            },
        ],
    }
}

/// The newest incarnation among `members` for each cell id; the older ones are
/// pushed to `older` (a cell id needs one process at a time).
fn newest_per_id<'c>(
    cells: &'c [ObservedCell],
    members: impl IntoIterator<Item = usize>,
    older: &mut Vec<usize>,
) -> BTreeMap<&'c CellId, usize> {
    let mut newest: BTreeMap<&CellId, usize> = BTreeMap::new();
    for i in members {
        let id = &cells[i].cell.id;
        match newest.insert(id, i) {
            Some(j) if cells[j].cell.incarnation > cells[i].cell.incarnation => {
                newest.insert(id, j);
                older.push(i);
            }
            Some(j) => older.push(j),
            None => {}
        }
    }
    newest
}

/// Whether a new cell has waited past the transition timeout without ever
/// becoming ready.
fn hung(world: &World, c: &ObservedCell, now: Timestamp) -> bool {
    c.health == Health::Starting && now.since(c.created_at) >= world.policy.transition_timeout
}

/// Whether targets that exist have stalled: any failed or being shut down, or
/// not all ready by the deadline counted from the oldest.
fn stalled(world: &World, targets: &[&ObservedCell], now: Timestamp) -> Option<String> {
    if let Some(f) = targets.iter().find(|t| t.health == Health::Failed) {
        return Some(format!("new cell {} failed", f.cell));
    }
    // It will be gone within its grace period, whatever it holds by then.
    if let Some(t) = targets.iter().find(|t| t.is_terminating()) {
        return Some(format!("new cell {} is being shut down", t.cell));
    }
    let oldest = targets.iter().map(|t| t.created_at).min()?;
    let all_ready = targets.iter().all(|t| t.health == Health::Ready);
    let waited = now.since(oldest);
    (!all_ready && waited >= world.policy.transition_timeout).then(|| {
        format!(
            "new cells not ready after {}s (timeout {}s)",
            waited.as_secs(),
            world.policy.transition_timeout.as_secs()
        )
    })
}

/// Moves the world onto its new root partition while none of the new cells has
/// taken over yet: creates the new roots as incoming, hands every old cell's
/// sessions over by position, retires the old cells.
///
/// It never rolls back: retiring new roots that may already hold part of the
/// sessions (an export can stop half-way) could lose them, and a world whose spec
/// changed has nowhere else to go. A new root that failed, hangs, is being shut
/// down, or has bounds the partition does not give it is replaced by its next
/// incarnation instead (a terminating one hands what it holds to it).
fn repartition(
    world: &World,
    cells: &[ObservedCell],
    holding: &[usize],
    empty: &[usize],
    mine: &[usize],
    now: Timestamp,
    r: &mut Repaired,
) {
    let roots = initial_partition(&world.bounds, world.initial_cells);
    let root_ids: BTreeSet<&CellId> = roots.iter().map(|(id, _)| id).collect();
    let (roots_seen, mut extra): (Vec<usize>, Vec<usize>) =
        mine.iter().partition(|&&i| root_ids.contains(&cells[i].cell.id));
    let newest = newest_per_id(cells, roots_seen, &mut extra);
    let mut creates = Vec::new();
    let mut to = Vec::new();
    for (id, bounds) in &roots {
        let usable = newest.get(id).copied().filter(|&i| {
            let c = &cells[i];
            c.can_take_sessions() && !hung(world, c, now) && c.bounds == *bounds
        });
        let cell = match usable {
            Some(i) => cells[i].cell.clone(),
            None => {
                if let Some(&i) = newest.get(id) {
                    extra.push(i);
                }
                let cell = next_ref(cells, id);
                creates.push(Action::Create {
                    cell: cell.clone(),
                    bounds: *bounds,
                    active: false,
                });
                cell
            }
        };
        to.push(Target {
            cell,
            bounds: *bounds,
        });
    }
    extra.sort_unstable();
    let (extra_holding, extra_empty): (Vec<usize>, Vec<usize>) =
        extra.into_iter().partition(|&i| cells[i].may_hold_sessions());
    let from: Vec<usize> = holding.iter().copied().chain(extra_holding).collect();
    let mut actions: Vec<Action> = extra_empty
        .iter()
        .map(|&i| Action::Retire {
            cell: cells[i].cell.clone(),
        })
        .collect();
    actions.extend(creates);
    actions.push(Action::HandOver {
        from: from.iter().map(|&i| cells[i].cell.clone()).collect(),
        to,
    });
    actions.extend(from.iter().chain(empty).map(|&i| Action::Retire {
        cell: cells[i].cell.clone(),
    }));
    r.transitions.push(Transition {
        undoes: None,
        kind: TransitionKind::Repartition,
        continues: !mine.is_empty(),
        reason: format!(
            "bounds or initial cells changed: moving {} cells onto a new partition of {}",
            holding.len(),
            roots.len()
        ),
        actions,
    });
    r.projected_cells = roots.len() as u32;
}

/// What of a hole's inferred space no cell serves.
enum Uncovered {
    /// Cells serve all of it: there is no hole.
    Nothing,
    /// This box.
    Box(Bounds),
    /// More than one box: the tree and the cells disagree too much to fill it.
    NotABox,
}

/// A transition in flight, keyed by what it changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    /// A new incarnation of this cell is coming in.
    Replace(CellId),
    /// This cell is splitting into its children.
    Split(CellId),
    /// This cell's descendants are merging into it.
    Merge(CellId),
    /// Incoming cell whose sources are not observed: it is activated when ready.
    Orphan(CellId),
}

/// Layout repair within the current partition.
struct Layout<'a> {
    world: &'a World,
    /// The world's [`World::layout_key`].
    current: u64,
    cells: &'a [ObservedCell],
    now: Timestamp,
    r: &'a mut Repaired,
    /// Active cells that keep their space, by id.
    accepted: BTreeMap<CellId, usize>,
    /// Cells some transition already uses.
    busy: BTreeSet<usize>,
    /// Ids that will cover space once every transition completes.
    present: BTreeSet<CellId>,
    /// Ids whose space transitions give away.
    leaving: BTreeSet<CellId>,
}

impl<'a> Layout<'a> {
    fn new(
        world: &'a World,
        current: u64,
        cells: &'a [ObservedCell],
        now: Timestamp,
        r: &'a mut Repaired,
    ) -> Self {
        Self {
            world,
            current,
            cells,
            now,
            r,
            accepted: BTreeMap::new(),
            busy: BTreeSet::new(),
            present: BTreeSet::new(),
            leaving: BTreeSet::new(),
        }
    }

    /// Repairs the cells of the current partition, `mine`.
    fn run(&mut self, mine: &[usize]) {
        if mine.is_empty() {
            self.initialize();
            return;
        }
        self.resolve_overlaps(mine);
        self.resume_groups(mine);
        self.drain_terminating();
        self.replace_failed();
        let holes = self.fill_holes();
        if holes == 0 {
            self.roll_out();
        }
    }

    /// Records what scaling may work with and how many cells the world will have.
    fn finish(self) {
        self.r.free = self
            .accepted
            .values()
            .copied()
            .filter(|i| !self.busy.contains(i) && self.cells[*i].health == Health::Ready)
            .collect();
        let staying = if self.leaving.is_empty() {
            self.present.len()
        } else {
            self.present
                .iter()
                .filter(|id| !self.leaving.contains(*id))
                .count()
        };
        self.r.projected_cells = staying as u32;
    }

    /// A world with no cell of its partition gets all its root cells at once, or
    /// the cells of its restore layout when one is given.
    fn initialize(&mut self) {
        let restore = &self.world.overrides.restore_layout;
        let (roots, reason) = if restore.is_empty() {
            let roots = initial_partition(&self.world.bounds, self.world.initial_cells);
            let reason = format!("world created with {} cells", roots.len());
            (roots, reason)
        } else {
            let cells: Vec<(CellId, Bounds)> = restore.iter().map(|c| (c.id.clone(), c.bounds)).collect();
            let reason = format!("world restored with {} cells", cells.len());
            (cells, reason)
        };
        let actions = roots
            .iter()
            .map(|(id, bounds)| Action::Create {
                cell: next_ref(self.cells, id),
                bounds: *bounds,
                active: true,
            })
            .collect();
        self.r.transitions.push(Transition {
            undoes: None,
            kind: TransitionKind::Initialize,
            continues: false,
            reason,
            actions,
        });
        self.present.extend(roots.into_iter().map(|(id, _)| id));
    }

    /// When active cells overlap (a hand-over finished but its sources were not
    /// retired, or a cell missing from one observation had its space filled), the
    /// one that took over last owns the space; the others hand it whatever they
    /// still hold before they retire.
    fn resolve_overlaps(&mut self, mine: &[usize]) {
        let mut active: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&i| self.cells[i].is_active())
            .collect();
        // The usual case, in linear time: `mine` is sorted by id, and descendants
        // sort right after their ancestor, so when no id repeats or is the
        // ancestor of the next one, no two ids claim the same space. Ids can
        // outlive the cuts that made them, though (a cell merged and split again
        // elsewhere), so the space is checked too: cells that together measure
        // more than the world overlap somewhere.
        let ids = |w: &[usize]| (&self.cells[w[0]].cell.id, &self.cells[w[1]].cell.id);
        let measure: f64 = active.iter().map(|&i| self.cells[i].bounds.measure()).sum();
        let geometric = measure > self.world.bounds.measure() * (1.0 + 1e-9);
        if !geometric
            && active.windows(2).all(|w| {
                let (a, b) = ids(w);
                a != b && !a.is_ancestor_of(b)
            })
        {
            self.accepted = active
                .iter()
                .map(|&i| (self.cells[i].cell.id.clone(), i))
                .collect();
            self.present = self.accepted.keys().cloned().collect();
            return;
        }
        // A cell that may hold sessions beats one that cannot (a cell started to
        // fill space whose owner was only missing from one observation loses to
        // that owner, and nothing moves); among those alike, the newest wins. A
        // terminating cell gives way to one that stays (its space would have to
        // be drained again), but not to one that holds nothing yet.
        let rank = |c: &ObservedCell| match c.health {
            Health::Ready | Health::Unready => 3,
            Health::Terminating => 2,
            Health::Starting => 1,
            Health::Failed => 0,
        };
        active.sort_by(|&a, &b| {
            let (ca, cb) = (&self.cells[a], &self.cells[b]);
            rank(cb)
                .cmp(&rank(ca))
                .then(cb.active_since().cmp(&ca.active_since()))
                .then(cb.cell.incarnation.cmp(&ca.cell.incarnation))
                .then(cb.cell.id.depth().cmp(&ca.cell.id.depth()))
                .then(ca.cell.id.cmp(&cb.cell.id))
        });
        let mut losers = Vec::new();
        for i in active {
            let id = &self.cells[i].cell.id;
            if self.conflicts(id) || (geometric && self.overlaps_accepted(&self.cells[i].bounds)) {
                losers.push(i);
            } else {
                self.accepted.insert(id.clone(), i);
                self.present.insert(id.clone());
            }
        }
        self.retire_unneeded(
            losers,
            TransitionKind::Cleanup,
            None,
            "cells whose space a newer cell already serves",
        );
    }

    /// Whether an accepted cell is `id`, an ancestor or a descendant of it.
    fn conflicts(&self, id: &CellId) -> bool {
        self.accepted.contains_key(id)
            || self.accepted_ancestor(id).is_some()
            || self.has_accepted_descendant(id)
    }

    /// The accepted strict ancestor of `id`, if any.
    fn accepted_ancestor(&self, id: &CellId) -> Option<CellId> {
        let mut up = id.parent();
        while let Some(a) = up {
            if self.accepted.contains_key(&a) {
                return Some(a);
            }
            up = a.parent();
        }
        None
    }

    /// Whether some accepted cell descends from `id`. Descendants sort right after
    /// their ancestor, so the next accepted id tells.
    fn has_accepted_descendant(&self, id: &CellId) -> bool {
        self.accepted
            .range((Excluded(id), Unbounded))
            .next()
            .is_some_and(|(k, _)| id.is_ancestor_of(k))
    }

    /// Accepted strict descendants of `id`.
    fn accepted_descendants(&self, id: &CellId) -> Vec<usize> {
        self.accepted
            .range((Excluded(id), Unbounded))
            .take_while(|(k, _)| id.is_ancestor_of(k))
            .map(|(_, &i)| i)
            .collect()
    }

    /// Groups incoming cells into the transitions they belong to and carries each
    /// forward, or rolls it back when it stalled.
    fn resume_groups(&mut self, mine: &[usize]) {
        let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
        let mut junk = Vec::new();
        for &i in mine {
            let c = &self.cells[i];
            if c.is_active() {
                continue;
            }
            let id = &c.cell.id;
            let key = if self.accepted.contains_key(id) {
                GroupKey::Replace(id.clone())
            } else if let Some(a) = self.accepted_ancestor(id) {
                if id.parent().as_ref() == Some(&a) {
                    GroupKey::Split(a)
                } else {
                    junk.push(i);
                    continue;
                }
            } else if self.has_accepted_descendant(id) {
                GroupKey::Merge(id.clone())
            } else {
                GroupKey::Orphan(id.clone())
            };
            groups.entry(key).or_default().push(i);
        }
        for (key, members) in groups {
            let targets: Vec<usize> = newest_per_id(self.cells, members, &mut junk)
                .into_values()
                .collect();
            self.resume(key, targets, &mut junk);
        }
        self.retire_unneeded(
            junk,
            TransitionKind::Cleanup,
            None,
            "incoming cells that no transition in progress needs",
        );
    }

    /// The cells that will own the space of cell `i` once it is retired: accepted
    /// cells, neither failed nor terminating, that overlap it. `None` until together they cover it.
    /// Within a partition whose cells match their ids, only the cell's own id, its
    /// ancestors and its descendants can overlap it, and those are tried first.
    /// Ids can outlive their bounds (a cell merged and split again elsewhere
    /// leaves an old incarnation whose space is now another id's), and a cell of
    /// an earlier partition has no ids in common with this one: those are
    /// compared with every accepted cell.
    fn owners(&self, i: usize) -> Option<Vec<usize>> {
        let c = &self.cells[i];
        let covering = |candidates: Vec<usize>| {
            let owners: Vec<usize> = candidates
                .into_iter()
                .filter(|&o| {
                    let oc = &self.cells[o];
                    o != i && oc.can_take_sessions() && oc.bounds.overlaps(&c.bounds)
                })
                .collect();
            c.bounds
                .covered_by(owners.iter().map(|&o| &self.cells[o].bounds))
                .then_some(owners)
        };
        if c.layout == self.current {
            let id = &c.cell.id;
            let mut related: Vec<usize> = self.accepted.get(id).copied().into_iter().collect();
            related.extend(
                self.accepted_ancestor(id)
                    .and_then(|a| self.accepted.get(&a).copied()),
            );
            related.extend(self.accepted_descendants(id));
            if let Some(owners) = covering(related) {
                return Some(owners);
            }
        }
        covering(self.accepted.values().copied().collect())
    }

    /// Retires cells nothing needs and keeps them out of every other transition.
    /// Cells that hold nothing (never ready, or failed) go at once, in one
    /// transition. A cell that may hold sessions first hands them to the cells
    /// that own its space, in a transition of its own so that one waiting
    /// hand-over holds up no other; while no cells cover its space yet (a failed
    /// owner being replaced, a hole being filled) it stays, and the plan says so.
    fn retire_unneeded(
        &mut self,
        mut idx: Vec<usize>,
        kind: TransitionKind,
        undoes: Option<TransitionKind>,
        reason: &str,
    ) {
        if idx.is_empty() {
            return;
        }
        idx.sort_unstable();
        self.busy.extend(idx.iter().copied());
        let (holding, empty): (Vec<usize>, Vec<usize>) =
            idx.into_iter().partition(|&i| self.cells[i].may_hold_sessions());
        if !empty.is_empty() {
            self.r
                .transitions
                .push(plain_retire(self.cells, &empty, kind, undoes, reason));
        }
        for i in holding {
            let cell = &self.cells[i].cell;
            let Some(owners) = self.owners(i) else {
                self.r.lingering += 1;
                self.r.problems.push(format!(
                    "{cell} may still hold sessions and no ready cell covers its space yet; it stays until one does"
                ));
                continue;
            };
            let to: Vec<Target> = owners
                .iter()
                .map(|&o| Target {
                    cell: self.cells[o].cell.clone(),
                    bounds: self.cells[o].bounds,
                })
                .collect();
            let names: Vec<String> = to.iter().map(|t| t.cell.to_string()).collect();
            self.r.transitions.push(Transition {
                undoes,
                kind,
                continues: true,
                reason: format!(
                    "{reason}: {cell} hands its sessions to {} first",
                    names.join(", ")
                ),
                actions: vec![
                    Action::HandOver {
                        from: vec![cell.clone()],
                        to,
                    },
                    Action::Retire { cell: cell.clone() },
                ],
            });
        }
    }

    /// Whether the incoming `targets` of a group can take over from `sources` as
    /// the group's kind requires: a new incarnation has its predecessor's bounds;
    /// a merged cell is exactly its two children's space.
    fn fits(&self, key: &GroupKey, sources: &[usize], targets: &[usize]) -> bool {
        let cells = self.cells;
        match (key, sources, targets) {
            (GroupKey::Replace(_), [s], [t]) => cells[*s].bounds == cells[*t].bounds,
            (GroupKey::Merge(id), [a, b], [t]) => {
                let (ca, cb) = (&cells[*a], &cells[*b]);
                let children = id.children();
                ca.cell.id == children[0]
                    && cb.cell.id == children[1]
                    && cells[*t].bounds.complement(&ca.bounds) == Some(cb.bounds)
            }
            (GroupKey::Replace(_) | GroupKey::Merge(_), _, _) => false,
            (GroupKey::Split(_) | GroupKey::Orphan(_), _, _) => true,
        }
    }

    /// Carries one group forward.
    fn resume(&mut self, key: GroupKey, targets: Vec<usize>, junk: &mut Vec<usize>) {
        let cells = self.cells;
        let (kind, sources): (TransitionKind, Vec<usize>) = match &key {
            GroupKey::Replace(id) => {
                let source = self.accepted[id];
                // A roll-out whose source is now being shut down goes on as a
                // drain: the same steps, and no longer a choice.
                let kind = if cells[source].is_terminating() {
                    TransitionKind::Drain
                } else {
                    TransitionKind::Rollout
                };
                (kind, vec![source])
            }
            GroupKey::Split(parent) => (TransitionKind::Split, vec![self.accepted[parent]]),
            GroupKey::Merge(id) => (TransitionKind::Merge, self.accepted_descendants(id)),
            GroupKey::Orphan(_) => (TransitionKind::Fill, Vec::new()),
        };
        if sources.iter().any(|s| self.busy.contains(s)) || !self.fits(&key, &sources, &targets) {
            junk.extend(targets);
            return;
        }
        // The full set of targets, with the space each will own.
        let mut wanted: Vec<(CellRef, Bounds, Option<usize>)> = targets
            .iter()
            .map(|&t| (cells[t].cell.clone(), cells[t].bounds, Some(t)))
            .collect();
        if let GroupKey::Split(parent) = &key {
            let pb = cells[self.accepted[parent]].bounds;
            let sound = match wanted.as_slice() {
                [(_, b, _)] => pb.complement(b).map(|other| {
                    let id = wanted[0].0.id.sibling().unwrap_or_else(|| parent.child(0));
                    let cell = next_ref(cells, &id);
                    wanted.push((cell, other, None));
                }),
                [(_, a, _), (_, b, _)] => (pb.complement(a) == Some(*b)).then_some(()),
                _ => None,
            };
            if sound.is_none() {
                self.r.problems.push(format!(
                    "children of {parent} do not tile it; rolling the split back"
                ));
                self.roll_back(
                    kind,
                    &sources,
                    targets,
                    "children's bounds do not tile the parent".into(),
                );
                return;
            }
            wanted.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let existing: Vec<&ObservedCell> = targets.iter().map(|&t| &cells[t]).collect();
        if let Some(why) = stalled(self.world, &existing, self.now) {
            self.roll_back(kind, &sources, targets, why);
            return;
        }
        let mut actions = Vec::new();
        for (cell, bounds, seen) in &wanted {
            if seen.is_none() {
                actions.push(Action::Create {
                    cell: cell.clone(),
                    bounds: *bounds,
                    active: false,
                });
            }
        }
        // A source that never became ready has nothing to give, and waiting for
        // it to answer an export would hold the transition up for ever.
        let givers = sources
            .iter()
            .filter(|&&s| !hung(self.world, &cells[s], self.now));
        actions.push(Action::HandOver {
            from: givers.map(|&s| cells[s].cell.clone()).collect(),
            to: wanted
                .iter()
                .map(|(cell, bounds, _)| Target {
                    cell: cell.clone(),
                    bounds: *bounds,
                })
                .collect(),
        });
        actions.extend(sources.iter().map(|&s| Action::Retire {
            cell: cells[s].cell.clone(),
        }));
        let names: Vec<String> = wanted.iter().map(|(c, _, _)| c.to_string()).collect();
        let reason = match &key {
            GroupKey::Replace(id) if kind == TransitionKind::Drain => {
                format!(
                    "draining {id}, which is being shut down, into {}",
                    names.join(", ")
                )
            }
            GroupKey::Replace(id) => format!("replacing {id} with {}", names.join(", ")),
            GroupKey::Split(p) => format!("splitting {p} into {}", names.join(" and ")),
            GroupKey::Merge(id) => format!("merging into {id}"),
            GroupKey::Orphan(id) => format!("activating {id}, whose source cells are not observed"),
        };
        self.r.transitions.push(Transition {
            undoes: None,
            kind,
            continues: true,
            reason,
            actions,
        });
        match kind {
            TransitionKind::Split => self.r.splitting_in += 1,
            TransitionKind::Merge => self.r.merging_away += (sources.len() as u32).saturating_sub(1),
            _ => {}
        }
        for &s in &sources {
            self.busy.insert(s);
            self.leaving.insert(cells[s].cell.id.clone());
        }
        for (cell, _, seen) in &wanted {
            if let Some(t) = seen {
                self.busy.insert(*t);
            }
            self.present.insert(cell.id.clone());
            self.leaving.remove(&cell.id);
        }
    }

    /// Undoes a stalled group: its targets hand back whatever they received and
    /// retire; its sources keep serving. A failed source is left free, so that it
    /// is replaced and the hand-back has somewhere to go; so is a terminating one,
    /// so that it is drained at once (its targets hand back to its successor).
    fn roll_back(&mut self, kind: TransitionKind, sources: &[usize], targets: Vec<usize>, why: String) {
        self.busy.extend(
            sources
                .iter()
                .copied()
                .filter(|&s| self.cells[s].can_take_sessions()),
        );
        self.retire_unneeded(
            targets,
            TransitionKind::RollBack,
            Some(kind),
            &format!("{kind} rolled back: {why}"),
        );
    }

    /// Every active cell being shut down that no transition uses yet hands its
    /// sessions to its next incarnation, started now for the same space. Not
    /// rate-limited, and several at once: a node drain takes all its cells, and
    /// each grace period runs whether the planner is ready or not.
    fn drain_terminating(&mut self) {
        let terminating: Vec<usize> = self
            .accepted
            .values()
            .copied()
            .filter(|&i| !self.busy.contains(&i) && self.cells[i].is_terminating())
            .collect();
        for i in terminating {
            self.busy.insert(i);
            let old = &self.cells[i];
            let new = next_ref(self.cells, &old.cell.id);
            let reason = format!(
                "{} is being shut down; handing its sessions to {new} before it goes",
                old.cell
            );
            self.r
                .transitions
                .push(successor(old, new, TransitionKind::Drain, reason));
        }
    }

    /// A failed active cell, or one that never became ready within the
    /// transition timeout, is retired and a new incarnation serves its space at
    /// once: a dead process has nothing left to hand over, and one that never
    /// started never had anything.
    fn replace_failed(&mut self) {
        let failed: Vec<usize> = self
            .accepted
            .values()
            .copied()
            .filter(|&i| {
                let c = &self.cells[i];
                !self.busy.contains(&i) && (c.health == Health::Failed || hung(self.world, c, self.now))
            })
            .collect();
        for i in failed {
            let old = &self.cells[i];
            let new = next_ref(self.cells, &old.cell.id);
            let what = if old.health == Health::Failed {
                "failed"
            } else {
                "never became ready"
            };
            self.busy.insert(i);
            self.r.transitions.push(Transition {
                undoes: None,
                kind: TransitionKind::Replace,
                continues: false,
                reason: format!("cell {} {what}; starting {}", old.cell, new),
                actions: vec![
                    Action::Retire {
                        cell: old.cell.clone(),
                    },
                    Action::Create {
                        cell: new,
                        bounds: old.bounds,
                        active: true,
                    },
                ],
            });
        }
    }

    /// Creates a cell for every part of the world that nothing covers or will
    /// cover. Returns how many it creates.
    fn fill_holes(&mut self) -> usize {
        let mut holes = Vec::new();
        let suspects = self.roots_with_holes();
        if suspects.is_empty() {
            return 0;
        }
        // The tree can miss ids whose space cells serve all the same (ids can
        // outlive the cuts that made them): a root whose space is covered has no
        // hole, whatever its ids say.
        let roots = initial_partition(&self.world.bounds, self.world.initial_cells);
        for root in suspects {
            let id = CellId::root(root);
            let serving = self
                .accepted
                .range(&id..)
                .take_while(|(k, _)| k.root_index() == root)
                .map(|(_, &i)| &self.cells[i].bounds);
            if roots[root as usize].1.covered_by(serving) {
                continue;
            }
            self.find_holes(&id, &mut holes);
        }
        if holes.is_empty() {
            return 0;
        }
        let known = self.known_bounds(&holes);
        let mut count = 0;
        for hole in holes {
            let inferred = known.get(&hole).map(|b| self.uncovered_part(b));
            match inferred {
                // The tree misses the id, but cells serve all of its space.
                Some(Uncovered::Nothing) => {}
                Some(Uncovered::Box(bounds)) => {
                    let cell = next_ref(self.cells, &hole);
                    self.present.insert(hole.clone());
                    count += 1;
                    self.r.transitions.push(Transition {
                        undoes: None,
                        kind: TransitionKind::Fill,
                        continues: false,
                        reason: format!("no cell serves the space of {hole}; starting {cell}"),
                        actions: vec![Action::Create {
                            cell,
                            bounds,
                            active: true,
                        }],
                    });
                }
                Some(Uncovered::NotABox) | None => self.r.problems.push(format!(
                    "no cell serves the space of {hole} and its bounds cannot be inferred \
                     without overlapping a cell that serves"
                )),
            }
        }
        count
    }

    /// The roots whose space the present cells do not cover completely, in
    /// linear time: under a root, the outermost present ids (those with no present
    /// ancestor) cover it exactly when their shares, `2^-depth` each, add up to
    /// one (and, being a prefix-free set, they cannot add up to more).
    fn roots_with_holes(&self) -> Vec<u32> {
        const WHOLE: u64 = 1 << MAX_DEPTH;
        let mut covered = vec![0u64; self.world.initial_cells as usize];
        let mut outer: Option<&CellId> = None;
        for id in &self.present {
            if outer.is_some_and(|o| o.is_ancestor_of(id)) {
                continue;
            }
            if let Some(share) = covered.get_mut(id.root_index() as usize) {
                *share = share.saturating_add(WHOLE >> id.depth());
            }
            outer = Some(id);
        }
        (0..self.world.initial_cells)
            .filter(|&r| covered[r as usize] < WHOLE)
            .collect()
    }

    /// Whether `bounds` shares space with an accepted cell.
    fn overlaps_accepted(&self, bounds: &Bounds) -> bool {
        self.accepted
            .values()
            .any(|&i| self.cells[i].bounds.overlaps(bounds))
    }

    /// The part of `bounds` no accepted cell serves: a fill must not share space
    /// with a cell that serves, whatever the tree says (ids can outlive the cuts
    /// that made them), so each accepted cell that reaches into `bounds` as a slab
    /// on one of its faces is cut away.
    fn uncovered_part(&self, bounds: &Bounds) -> Uncovered {
        let mut left = *bounds;
        for &i in self.accepted.values() {
            if let Some(shared) = left.intersection(&self.cells[i].bounds) {
                if shared == left {
                    return Uncovered::Nothing;
                }
                match left.complement(&shared) {
                    Some(rest) => left = rest,
                    None => return Uncovered::NotABox,
                }
            }
        }
        Uncovered::Box(left)
    }

    /// Collects the uncovered nodes below `node`.
    fn find_holes(&self, node: &CellId, out: &mut Vec<CellId>) {
        if self.present.contains(node) {
            return;
        }
        // Descendants sort right after their ancestor: the next id tells.
        let has_descendant = self
            .present
            .range((Excluded(node), Unbounded))
            .next()
            .is_some_and(|k| node.is_ancestor_of(k));
        if has_descendant {
            for child in node.children() {
                self.find_holes(&child, out);
            }
        } else {
            out.push(node.clone());
        }
    }

    /// Bounds of the tree nodes that can be inferred from the roots and the cells
    /// observed (those present first): a parent is the union of its children, a
    /// child is its parent less its sibling, and when holes in both halves of a
    /// split leave neither known, the cut is read from where the known cells of
    /// each half end ([`cut_from_hulls`]). Only asked for when there are holes; it
    /// looks at the roots that hold one.
    fn known_bounds(&self, holes: &[CellId]) -> BTreeMap<CellId, Bounds> {
        let roots = initial_partition(&self.world.bounds, self.world.initial_cells);
        let with_holes: BTreeSet<u32> = holes.iter().map(CellId::root_index).collect();
        let mut known: BTreeMap<CellId, Bounds> = roots
            .into_iter()
            .filter(|(id, _)| with_holes.contains(&id.root_index()))
            .collect();
        let mut nodes: BTreeSet<CellId> = BTreeSet::new();
        for c in self.cells {
            if !with_holes.contains(&c.cell.id.root_index()) {
                continue;
            }
            if self.present.contains(&c.cell.id) {
                known.insert(c.cell.id.clone(), c.bounds);
            }
            let mut up = c.cell.id.parent();
            while let Some(p) = up {
                for child in p.children() {
                    nodes.insert(child);
                }
                up = p.parent();
                if !nodes.insert(p) {
                    break;
                }
            }
        }
        // Cells that do not keep their space (overlap losers, incoming cells)
        // still say where their space is: a loser waiting to hand over can be the
        // only witness of its children's bounds.
        for c in self.cells {
            if c.layout == self.current && with_holes.contains(&c.cell.id.root_index()) {
                known.entry(c.cell.id.clone()).or_insert(c.bounds);
            }
        }
        nodes.extend(holes.iter().cloned());
        // Unions go up the tree and complements down it: deepest first, then
        // shallowest first, until nothing more can be inferred.
        let mut order: Vec<CellId> = nodes.into_iter().collect();
        order.sort_by_key(|id| std::cmp::Reverse(id.depth()));
        loop {
            let mut changed = false;
            for n in order.iter().chain(order.iter().rev()) {
                if known.contains_key(n) {
                    continue;
                }
                let [lo, hi] = n.children();
                let inferred = match (known.get(&lo), known.get(&hi)) {
                    (Some(a), Some(b)) => Some(a.union(b)),
                    _ => match (
                        n.parent().and_then(|p| known.get(&p)),
                        n.sibling().and_then(|s| known.get(&s)),
                    ) {
                        (Some(p), Some(s)) => p.complement(s),
                        _ => None,
                    },
                };
                if let Some(b) = inferred {
                    known.insert(n.clone(), b);
                    changed = true;
                }
            }
            if !changed && !cut_from_hulls(&order, &self.present, &mut known) {
                return known;
            }
        }
    }

    /// Replaces one cell whose revision is out of date, sessions handed over, when
    /// no other replacement is in progress and every cell is healthy. A cell
    /// being shut down is not: it is drained first (its successor starts with
    /// the current revision anyway).
    fn roll_out(&mut self) {
        let in_progress = self.r.transitions.iter().any(|t| {
            matches!(
                t.kind,
                TransitionKind::Rollout | TransitionKind::Replace | TransitionKind::Drain
            )
        });
        let healthy = self
            .accepted
            .values()
            .all(|&i| self.cells[i].health == Health::Ready);
        if in_progress || !healthy {
            return;
        }
        let Some(&i) = self
            .accepted
            .values()
            .find(|&&i| !self.busy.contains(&i) && self.cells[i].revision != self.world.revision)
        else {
            return;
        };
        let old = &self.cells[i];
        let new = next_ref(self.cells, &old.cell.id);
        self.busy.insert(i);
        let reason = format!(
            "{} runs an out-of-date revision; replacing it with {}",
            old.cell, new
        );
        self.r
            .transitions
            .push(successor(old, new, TransitionKind::Rollout, reason));
    }
}

/// One step of inference for holes on both sides of a cut: for a node whose
/// parent is known but which neither its children nor its sibling can give, the
/// cut between it and its sibling lies where the known cells under each end.
/// Along the first axis where the lower half's cells end at or before the upper
/// half's begin (or, with cells under one half only, where they reach across the
/// parent from its face on their side and stop short of the other), the parent is
/// cut at that edge. The uncovered space between is given to the half without
/// cells there, so the fill cells tile the parent with the cells present. Only
/// the cells present count: an old incarnation's bounds may come from another cut.
/// Returns whether it inferred anything.
fn cut_from_hulls(
    order: &[CellId],
    present: &BTreeSet<CellId>,
    known: &mut BTreeMap<CellId, Bounds>,
) -> bool {
    let mut hulls: BTreeMap<CellId, Bounds> = BTreeMap::new();
    // Only cells that keep their space: an old incarnation's bounds may be from
    // another cut.
    for (id, b) in known.iter().filter(|(id, _)| present.contains(*id)) {
        let mut up = id.parent();
        while let Some(a) = up {
            hulls
                .entry(a.clone())
                .and_modify(|h| *h = h.union(b))
                .or_insert(*b);
            up = a.parent();
        }
    }
    let extent = |id: &CellId| known.get(id).or_else(|| hulls.get(id)).copied();
    for n in order.iter().rev() {
        if known.contains_key(n) {
            continue;
        }
        let (Some(parent), Some(sibling), Some(side)) = (n.parent(), n.sibling(), n.side()) else {
            continue;
        };
        let Some(p) = known.get(&parent).copied() else {
            continue;
        };
        let (mine, theirs) = (extent(n), extent(&sibling));
        let (lower, upper) = if side == 0 { (mine, theirs) } else { (theirs, mine) };
        let cut = p.axes().find_map(|a| match (lower, upper) {
            (Some(l), Some(u)) => (l.max(a) <= u.min(a)).then_some((a, l.max(a))),
            (Some(l), None) => (l.min(a) == p.min(a) && l.max(a) < p.max(a)).then_some((a, l.max(a))),
            (None, Some(u)) => (u.max(a) == p.max(a) && u.min(a) > p.min(a)).then_some((a, u.min(a))),
            (None, None) => None,
        });
        if let Some((axis, at)) = cut
            && let Ok((lo, hi)) = p.split(axis, at)
        {
            known.insert(n.clone(), if side == 0 { lo } else { hi });
            return true;
        }
    }
    false
}
