//! Bringing the observed cells back to a sound layout: resuming transitions in
//! flight, rolling back the ones that stalled, replacing failed cells, filling
//! space no cell covers, moving to a new partition, and rolling out a new revision.
//!
//! Policy-driven splits and merges are decided afterwards, in `scaling`, on the
//! cells this leaves free.

use std::collections::{BTreeMap, BTreeSet};

use crate::cell::{CellId, CellRef};
use crate::geometry::Bounds;
use crate::observed::{Health, Observed, ObservedCell};
use crate::partition::initial_partition;
use crate::plan::{Action, Target, Transition, TransitionKind};
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
    /// For each cell id ever observed, the incarnation a new process of it takes.
    pub next_incarnation: BTreeMap<CellId, u32>,
}

impl Repaired {
    /// The reference for a new process of `id`.
    pub fn new_ref(&self, id: &CellId) -> CellRef {
        CellRef {
            id: id.clone(),
            incarnation: self.next_incarnation.get(id).copied().unwrap_or(0),
        }
    }
}

/// The other half of `parent` once `child` is cut from it, if `child` is a slab of
/// `parent` along exactly one axis touching one of its faces.
pub(crate) fn complement(parent: &Bounds, child: &Bounds) -> Option<Bounds> {
    if parent.dims() != child.dims() || !parent.contains_bounds(child) {
        return None;
    }
    let mut differing = parent.axes().filter(|&a| parent.range(a) != child.range(a));
    let axis = differing.next()?;
    if differing.next().is_some() {
        return None;
    }
    let (lo, hi) = if child.min(axis) == parent.min(axis) {
        parent.split(axis, child.max(axis)).ok()?
    } else if child.max(axis) == parent.max(axis) {
        parent.split(axis, child.min(axis)).ok()?
    } else {
        return None;
    };
    Some(if lo == *child { hi } else { lo })
}

/// Resumes, repairs and rolls out; see the module docs.
pub(super) fn repair(world: &World, observed: &Observed, now: Timestamp) -> Repaired {
    let mut r = Repaired {
        settled: true,
        ..Repaired::default()
    };
    for c in &observed.cells {
        let next = r.next_incarnation.entry(c.cell.id.clone()).or_insert(0);
        *next = (*next).max(c.cell.incarnation + 1);
    }
    let current = world.layout_key();
    let cells = &observed.cells;
    let mut stale_active = Vec::new();
    let mut junk = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        if c.layout != current {
            if c.is_active() {
                stale_active.push(i);
            } else {
                junk.push(i);
            }
        }
    }
    if !junk.is_empty() {
        r.transitions.push(cleanup(
            cells,
            &junk,
            "incoming cells of an earlier partition are not needed",
        ));
    }
    if !stale_active.is_empty() {
        r.settled = false;
        repartition(world, cells, &stale_active, now, &mut r);
        return r;
    }
    Layout::new(world, cells, now, &mut r).run();
    r
}

/// A transition retiring `idx` cells that nothing needs.
fn cleanup(cells: &[ObservedCell], idx: &[usize], reason: &str) -> Transition {
    Transition {
        undoes: None,
        kind: TransitionKind::Cleanup,
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

/// Whether targets that exist have stalled: any failed, or not all ready by the
/// deadline counted from the oldest.
fn stalled(world: &World, targets: &[&ObservedCell], now: Timestamp) -> Option<String> {
    if let Some(f) = targets.iter().find(|t| t.health == Health::Failed) {
        return Some(format!("new cell {} failed", f.cell));
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

/// Carries a move to a new root partition forward (or rolls it back).
fn repartition(world: &World, cells: &[ObservedCell], stale: &[usize], now: Timestamp, r: &mut Repaired) {
    let current = world.layout_key();
    let roots = initial_partition(&world.bounds, world.initial_cells);
    let root_ids: BTreeMap<&CellId, &Bounds> = roots.iter().map(|(id, b)| (id, b)).collect();
    // The newest process of each root; everything else of the new layout is extra.
    let mut extra = Vec::new();
    let mut roots_seen = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        if c.layout != current {
            continue;
        }
        if root_ids.contains_key(&c.cell.id) {
            roots_seen.push(i);
        } else {
            extra.push(i);
        }
    }
    let newest = newest_per_id(cells, roots_seen, &mut extra);
    if !extra.is_empty() {
        extra.sort_unstable();
        r.transitions.push(cleanup(
            cells,
            &extra,
            "cells of the new partition that it does not need",
        ));
    }
    let existing: Vec<&ObservedCell> = newest.values().map(|&i| &cells[i]).collect();
    if let Some(why) = stalled(world, &existing, now) {
        r.transitions.push(Transition {
            undoes: Some(TransitionKind::Repartition),
            kind: TransitionKind::RollBack,
            continues: true,
            reason: format!("new partition rolled back: {why}"),
            actions: existing
                .iter()
                .map(|c| Action::Retire { cell: c.cell.clone() })
                .collect(),
        });
        r.projected_cells = stale.len() as u32;
        return;
    }
    let mut actions = Vec::new();
    let mut to = Vec::new();
    for (id, bounds) in &roots {
        let cell = match newest.get(id) {
            Some(&i) => cells[i].cell.clone(),
            None => {
                let cell = r.new_ref(id);
                actions.push(Action::Create {
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
    let from: Vec<CellRef> = stale.iter().map(|&i| cells[i].cell.clone()).collect();
    actions.push(Action::HandOver {
        from: from.clone(),
        to,
    });
    actions.extend(from.into_iter().map(|cell| Action::Retire { cell }));
    r.transitions.push(Transition {
        undoes: None,
        kind: TransitionKind::Repartition,
        continues: !existing.is_empty(),
        reason: format!(
            "bounds or initial cells changed: moving {} cells onto a new partition of {}",
            stale.len(),
            roots.len()
        ),
        actions,
    });
    r.projected_cells = roots.len() as u32;
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
    /// Incoming cell whose sources are gone: it is activated when ready.
    Orphan(CellId),
}

/// Layout repair within the current partition.
struct Layout<'a> {
    world: &'a World,
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
    fn new(world: &'a World, cells: &'a [ObservedCell], now: Timestamp, r: &'a mut Repaired) -> Self {
        Self {
            world,
            cells,
            now,
            r,
            accepted: BTreeMap::new(),
            busy: BTreeSet::new(),
            present: BTreeSet::new(),
            leaving: BTreeSet::new(),
        }
    }

    fn run(mut self) {
        let current = self.world.layout_key();
        let mine: Vec<usize> = (0..self.cells.len())
            .filter(|&i| self.cells[i].layout == current)
            .collect();
        if mine.is_empty() {
            self.initialize();
            return;
        }
        self.resolve_overlaps(&mine);
        self.resume_groups(&mine);
        self.replace_failed();
        let holes = self.fill_holes();
        if holes == 0 {
            self.roll_out();
        }
        self.r.free = self
            .accepted
            .values()
            .copied()
            .filter(|i| !self.busy.contains(i) && self.cells[*i].health == Health::Ready)
            .collect();
        let staying = self
            .present
            .iter()
            .filter(|id| !self.leaving.contains(*id))
            .count();
        self.r.projected_cells = staying as u32;
    }

    /// A world with no cell of its partition gets all its root cells at once, or
    /// the cells of its restore layout when one is given.
    fn initialize(self) {
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
                cell: self.r.new_ref(id),
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
        self.r.projected_cells = roots.len() as u32;
    }

    /// When active cells overlap (a hand-over finished but its sources were not
    /// retired), the one that took over last owns the space.
    fn resolve_overlaps(&mut self, mine: &[usize]) {
        let mut active: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&i| self.cells[i].is_active())
            .collect();
        active.sort_by(|&a, &b| {
            let (ca, cb) = (&self.cells[a], &self.cells[b]);
            cb.active_since()
                .cmp(&ca.active_since())
                .then(cb.cell.incarnation.cmp(&ca.cell.incarnation))
                .then(cb.cell.id.depth().cmp(&ca.cell.id.depth()))
                .then(ca.cell.id.cmp(&cb.cell.id))
        });
        let mut losers = Vec::new();
        for i in active {
            let id = &self.cells[i].cell.id;
            if self.conflicts(id) {
                losers.push(i);
            } else {
                self.accepted.insert(id.clone(), i);
                self.present.insert(id.clone());
            }
        }
        self.retire_unneeded(losers, "cells whose space a newer cell already serves");
    }

    /// Whether an accepted cell is `id`, an ancestor or a descendant of it.
    fn conflicts(&self, id: &CellId) -> bool {
        let mut up = Some(id.clone());
        while let Some(a) = up {
            if self.accepted.contains_key(&a) {
                return true;
            }
            up = a.parent();
        }
        self.accepted
            .range(id.clone()..)
            .take_while(|(k, _)| k.root_index() == id.root_index())
            .any(|(k, _)| id.is_ancestor_of(k))
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

    /// Accepted strict descendants of `id`.
    fn accepted_descendants(&self, id: &CellId) -> Vec<usize> {
        self.accepted
            .range(id.clone()..)
            .filter(|(k, _)| id.is_ancestor_of(k))
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
            } else if !self.accepted_descendants(id).is_empty() {
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
        self.retire_unneeded(junk, "incoming cells that no transition in progress needs");
    }

    /// Retires cells nothing needs, in one cleanup transition, and keeps them out of
    /// every other transition.
    fn retire_unneeded(&mut self, mut idx: Vec<usize>, reason: &str) {
        if idx.is_empty() {
            return;
        }
        idx.sort_unstable();
        self.busy.extend(idx.iter().copied());
        self.r.transitions.push(cleanup(self.cells, &idx, reason));
    }

    /// Carries one group forward.
    fn resume(&mut self, key: GroupKey, targets: Vec<usize>, junk: &mut Vec<usize>) {
        let cells = self.cells;
        let (kind, sources): (TransitionKind, Vec<usize>) = match &key {
            GroupKey::Replace(id) => (TransitionKind::Rollout, vec![self.accepted[id]]),
            GroupKey::Split(parent) => (TransitionKind::Split, vec![self.accepted[parent]]),
            GroupKey::Merge(id) => (TransitionKind::Merge, self.accepted_descendants(id)),
            GroupKey::Orphan(_) => (TransitionKind::Fill, Vec::new()),
        };
        if sources.iter().any(|s| self.busy.contains(s)) {
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
                [(_, b, _)] => complement(&pb, b).map(|other| {
                    let id = wanted[0].0.id.sibling().unwrap_or_else(|| parent.child(0));
                    let cell = self.r.new_ref(&id);
                    wanted.push((cell, other, None));
                }),
                [(_, a, _), (_, b, _)] => (complement(&pb, a) == Some(*b)).then_some(()),
                _ => None,
            };
            if sound.is_none() {
                self.r.problems.push(format!(
                    "children of {parent} do not tile it; rolling the split back"
                ));
                self.roll_back(kind, &targets, "children's bounds do not tile the parent".into());
                self.busy.extend(sources);
                return;
            }
            wanted.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let existing: Vec<&ObservedCell> = targets.iter().map(|&t| &cells[t]).collect();
        if let Some(why) = stalled(self.world, &existing, self.now) {
            self.roll_back(kind, &targets, why);
            self.busy.extend(sources);
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
        actions.push(Action::HandOver {
            from: sources.iter().map(|&s| cells[s].cell.clone()).collect(),
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
            GroupKey::Replace(id) => format!("replacing {id} with {}", names.join(", ")),
            GroupKey::Split(p) => format!("splitting {p} into {}", names.join(" and ")),
            GroupKey::Merge(id) => format!("merging into {id}"),
            GroupKey::Orphan(id) => format!("activating {id}, whose source cells are gone"),
        };
        self.r.transitions.push(Transition {
            undoes: None,
            kind,
            continues: true,
            reason,
            actions,
        });
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

    /// Retires a stalled group's targets; its sources keep serving.
    fn roll_back(&mut self, kind: TransitionKind, targets: &[usize], why: String) {
        self.busy.extend(targets.iter().copied());
        self.r.transitions.push(Transition {
            undoes: Some(kind),
            kind: TransitionKind::RollBack,
            continues: true,
            reason: format!("{kind} rolled back: {why}"),
            actions: targets
                .iter()
                .map(|&t| Action::Retire {
                    cell: self.cells[t].cell.clone(),
                })
                .collect(),
        });
    }

    /// A failed active cell is retired and a new incarnation serves its space at
    /// once: there is nothing left to hand over from a dead process.
    fn replace_failed(&mut self) {
        let failed: Vec<usize> = self
            .accepted
            .values()
            .copied()
            .filter(|i| !self.busy.contains(i) && self.cells[*i].health == Health::Failed)
            .collect();
        for i in failed {
            let old = &self.cells[i];
            let new = self.r.new_ref(&old.cell.id);
            self.busy.insert(i);
            self.r.transitions.push(Transition {
                undoes: None,
                kind: TransitionKind::Replace,
                continues: false,
                reason: format!("cell {} failed; starting {}", old.cell, new),
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
        let roots = initial_partition(&self.world.bounds, self.world.initial_cells);
        let known = self.known_bounds(&roots);
        let mut holes = Vec::new();
        for (root, _) in &roots {
            self.find_holes(root, &mut holes);
        }
        let mut count = 0;
        for hole in holes {
            match known.get(&hole) {
                Some(bounds) => {
                    let cell = self.r.new_ref(&hole);
                    self.present.insert(hole.clone());
                    count += 1;
                    self.r.transitions.push(Transition {
                        undoes: None,
                        kind: TransitionKind::Fill,
                        continues: false,
                        reason: format!("no cell serves the space of {hole}; starting {cell}"),
                        actions: vec![Action::Create {
                            cell,
                            bounds: *bounds,
                            active: true,
                        }],
                    });
                }
                None => self.r.problems.push(format!(
                    "no cell serves the space of {hole} and its bounds cannot be inferred"
                )),
            }
        }
        count
    }

    /// Collects the uncovered nodes below `node`.
    fn find_holes(&self, node: &CellId, out: &mut Vec<CellId>) {
        if self.present.contains(node) {
            return;
        }
        let has_descendant = self
            .present
            .range(node.clone()..)
            .take_while(|k| k.root_index() == node.root_index())
            .any(|k| node.is_ancestor_of(k));
        if has_descendant {
            for child in node.children() {
                self.find_holes(&child, out);
            }
        } else {
            out.push(node.clone());
        }
    }

    /// Bounds of every tree node that can be inferred from the roots and the
    /// cells present: a parent is the union of its children, a child is its parent
    /// less its sibling.
    fn known_bounds(&self, roots: &[(CellId, Bounds)]) -> BTreeMap<CellId, Bounds> {
        let mut known: BTreeMap<CellId, Bounds> = roots.iter().cloned().collect();
        let mut nodes: BTreeSet<CellId> = BTreeSet::new();
        for c in self.cells {
            if self.present.contains(&c.cell.id) {
                known.insert(c.cell.id.clone(), c.bounds);
            }
            let mut up = c.cell.id.parent();
            while let Some(p) = up {
                for child in p.children() {
                    nodes.insert(child);
                }
                up = p.parent();
                nodes.insert(p);
            }
        }
        loop {
            let mut changed = false;
            for n in &nodes {
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
                        (Some(p), Some(s)) => complement(p, s),
                        _ => None,
                    },
                };
                if let Some(b) = inferred {
                    known.insert(n.clone(), b);
                    changed = true;
                }
            }
            if !changed {
                return known;
            }
        }
    }

    /// Replaces one cell whose revision is out of date, sessions handed over, when
    /// no other replacement is in progress and every cell is healthy.
    fn roll_out(&mut self) {
        let in_progress = self
            .r
            .transitions
            .iter()
            .any(|t| matches!(t.kind, TransitionKind::Rollout | TransitionKind::Replace));
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
        let new = self.r.new_ref(&old.cell.id);
        self.busy.insert(i);
        self.r.transitions.push(Transition {
            undoes: None,
            kind: TransitionKind::Rollout,
            continues: false,
            reason: format!(
                "{} runs an out-of-date revision; replacing it with {}",
                old.cell, new
            ),
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
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Axis;

    #[test]
    fn complement_of_a_slab() {
        let p = Bounds::rect((0.0, 10.0), (0.0, 4.0)).unwrap();
        let (lo, hi) = p.split(Axis::X, 3.0).unwrap();
        assert_eq!(complement(&p, &lo), Some(hi));
        assert_eq!(complement(&p, &hi), Some(lo));
        let corner = Bounds::rect((0.0, 3.0), (0.0, 2.0)).unwrap();
        assert_eq!(complement(&p, &corner), None);
        assert_eq!(complement(&p, &p), None);
    }
}
