//! The directory of one world: from plain data describing the world's cell
//! processes, the cells that own space *now*, an index to find them by position,
//! and the layout epoch that versions the answer.
//!
//! # Who owns the space
//!
//! Only active cells own space; an incoming cell waits for a hand-over and is
//! never answered. During a split, merge, roll-out or repartition the operator
//! activates the new cells once the hand-over is complete and only then deletes
//! the old ones, so for a moment old and new cells are active together and
//! overlap. Wherever they overlap the most recently activated wins ([`precedence`]:
//! the higher mark, that is the epoch the operator stamped at activation or else
//! the activation time; then the higher incarnation, then the deeper cell, then
//! the lower id). Without stamps that is the order in which the planner settles
//! overlapping cells. With them, activations within one millisecond are ordered
//! as they happened, where the planner's tie-breaks can guess wrong: when a
//! cleanup re-activates two siblings as owners and a merge resumed in the same
//! reconcile then activates their parent, the parent holds every session, yet the
//! deeper siblings win the tie (should both still be there at the next plan, the
//! planner has the parent hand the sessions back, and the directory follows).
//!
//! A cell whose space newer cells cover completely owns nothing and is not
//! authoritative; one they cover in part (one child of a split activated, the
//! other not yet) keeps the rest. A terminating cell that nothing newer covers
//! stays the owner: it is still handing its sessions over, and the answer says it
//! is terminating so that a player is not sent to it.
//!
//! The planner also ranks cells by health before age (a ready cell beats one
//! that never started). The directory does not: ownership would then follow
//! readiness, which flaps, and a player could be sent back to an old cell whose
//! sessions have already moved. Readiness is reported with each answer instead
//! ([`CellEntry::serving`]). Stamps aside, the two orders differ only where the
//! newer cell is not ready, so the directory's answer there is "not serving right
//! now"; they meet again once the planner has retired the loser.
//!
//! Geometry decides, never ids: ids can outlive the cuts that made them, so
//! overlaps are found from the cells' bounds, by the [`Index`].
//!
//! # The layout epoch
//!
//! Every answer carries the world's [`Epoch`], so that clients and cells can tell
//! a stale answer from a fresh one. It is a pure function of the cells: every
//! stateless gateway replica computes the same epoch from the same cluster state.
//!
//! A cell's *mark* is the epoch the operator stamped on it when it activated it
//! ([`CellEntry::stamped_epoch`]), or else its activation time in milliseconds.
//! The epoch is the highest mark among the authoritative cells, with the number
//! of authoritative cells that carry it, compared in that order.
//!
//! How it grows, change by change, as the gateway sees the cluster one write at
//! a time:
//!
//! 1. *A cell is created incoming, or a cell's readiness, address or termination
//!    changes.* No ownership changes and neither does the epoch: the epoch
//!    versions who owns what; readiness is read fresh with every answer.
//! 2. *A cell is activated* (created active, its role turned active, or an active
//!    cell re-activated as the owner of a hand-over). Its mark is at least every
//!    mark in the world: a stamp is required to be, and an activation time is the
//!    operator's `now`, which does not go back. So the highest mark never falls.
//!    - *Stamped*: the mark is higher than every other, so the cell wins all the
//!      space it reaches ([`precedence`] goes by marks first): the highest mark
//!      rises and the epoch strictly grows.
//!    - *Not stamped*: when the time is later than every mark, the epoch strictly
//!      grows. When it is the same millisecond as earlier activations (one
//!      reconcile activates both children of a split, one after the other), the
//!      new cell usually joins the cells carrying the mark and their count grows.
//!      Not always: if it covers cells activated in that same millisecond (a
//!      cleanup re-activates two siblings as the owners of an old parent's
//!      space, and a merge resumed in the same reconcile then activates their new
//!      parent), it replaces them in the count, which stays or falls. Activation
//!      times do not say which of two activations in one millisecond came last,
//!      so this case needs stamps.
//! 3. *A cell that owns nothing is deleted* (an incoming cell rolled back, an old
//!    cell wholly covered by the cells that replaced it). No point changes owner,
//!    so the authoritative cells and the epoch stay as they were: nothing needs to
//!    grow when a shadowed cell disappears, because its disappearing changes no
//!    answer.
//!
//! Those are all the writes the operator makes for the transitions the planner
//! plans, with two exceptions, where the epoch can go *back* until the next
//! activation:
//!
//! - *A cell that still owns space is deleted*: the planner replaces a failed or
//!   hung cell by retiring it first and then starting its next incarnation
//!   active; and Pods are deleted by others (eviction, a lost node, a person).
//!   The space is a hole meanwhile, and if the deleted cell carried the highest
//!   mark, the epoch falls back to the one before it.
//! - *The world's bounds change* (which starts a repartition): a cell left wholly
//!   outside the new bounds owns nothing any more.
//!
//! No function of the cells alone can help there: the cluster state after such a
//! deletion can equal an earlier one exactly.
//!
//! So: with every activation stamped, the epoch never falls and strictly grows
//! whenever the authoritative cells change, over every write the operator makes
//! for the planner's plans but those two. Without stamps, its highest mark never
//! falls and it grows at every activation but the same-millisecond covers above.
//! What the operator has to provide for a truly monotonic epoch: a stamp at each
//! activation (re-activations included) of `max(now in ms, highest mark in the
//! world + 1)`, counting its own activations of the same reconcile, which keeps
//! stamps on the scale of activation times, makes every activation's mark unique
//! and survives operator restarts whose clocks disagree; and, for the two
//! exceptions, a world-level high-water mark it raises before deleting a cell
//! that still owns space (on the WorldSpec), which the gateway would fold in as
//! a floor. Stamps must be at least every mark already in the world; a world may
//! mix stamped and unstamped cells while an operator is upgraded.
//!
//! The property tests drive the planner's layouts write by write and check each
//! claim, stamped and not (`tests/directory.rs`).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::net::IpAddr;

use fleetforge_core::{Bounds, CellRef, Point, Role, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::index::Index;

/// One cell process of a world, as the gateway reads it from the cluster: plain
/// data, so the directory neither knows nor needs the Pod it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct CellEntry {
    /// Which cell and incarnation the process is.
    pub cell: CellRef,
    /// The space the cell covers.
    pub bounds: Bounds,
    /// Whether it owns its space yet, and since when.
    pub role: Role,
    /// Whether the process passes its readiness probe (it takes players).
    pub ready: bool,
    /// Whether the process is being deleted (it drains and takes no player).
    pub terminating: bool,
    /// The process's address (the Pod IP), once it has one.
    pub address: Option<IpAddr>,
    /// The epoch the operator stamped on the cell when it activated it, if it
    /// did; see the module docs for what a stamp must satisfy.
    pub stamped_epoch: Option<u64>,
}

impl CellEntry {
    /// When the cell took over its space, if it has.
    pub fn active_since(&self) -> Option<Timestamp> {
        match self.role {
            Role::Active { since } => Some(since),
            Role::Incoming => None,
        }
    }

    /// Whether a player can be sent to this cell now: it is ready, has an
    /// address, and is not draining towards its end.
    pub fn serving(&self) -> bool {
        self.ready && !self.terminating && self.address.is_some()
    }

    /// When the cell was activated, for [`precedence`] and the epoch: its stamp,
    /// else its activation time in milliseconds. `None` for an incoming cell.
    pub fn mark(&self) -> Option<u64> {
        let since = self.active_since()?;
        Some(self.stamped_epoch.unwrap_or(since.as_millis()))
    }
}

/// Which of two active cells owns the space both cover: [`Ordering::Less`] when
/// `a` does. The most recently activated wins, by [`CellEntry::mark`]; ties go to
/// the higher incarnation, then the deeper cell (a child over its parent), then
/// the lower id, as the planner settles overlapping cells. Incoming cells come
/// after every active cell.
pub fn precedence(a: &CellEntry, b: &CellEntry) -> Ordering {
    b.mark()
        .cmp(&a.mark())
        .then_with(|| b.cell.incarnation.cmp(&a.cell.incarnation))
        .then_with(|| b.cell.id.depth().cmp(&a.cell.id.depth()))
        .then_with(|| a.cell.id.cmp(&b.cell.id))
}

/// A total order on entries: [`precedence`], then everything else an entry says,
/// so that the directory does not depend on the order its input came in, even
/// when one cell incarnation is listed twice unalike.
fn total_order(a: &CellEntry, b: &CellEntry) -> Ordering {
    let edges = |e: &CellEntry| {
        e.bounds
            .axes()
            .flat_map(|ax| [e.bounds.min(ax), e.bounds.max(ax)])
            .collect::<Vec<f64>>()
    };
    precedence(a, b)
        .then_with(|| a.bounds.dims().cmp(&b.bounds.dims()))
        .then_with(|| {
            edges(a)
                .iter()
                .zip(edges(b).iter())
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
        .then_with(|| b.ready.cmp(&a.ready))
        .then_with(|| a.terminating.cmp(&b.terminating))
        .then_with(|| a.address.cmp(&b.address))
        .then_with(|| a.stamped_epoch.cmp(&b.stamped_epoch))
}

/// The version of a world's layout: it grows when the cells that own the world's
/// space change (see the module docs for the argument, and its limits). Compare
/// epochs with `<`; the fields are public so that an answer can carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Epoch {
    /// The highest mark among the authoritative cells: a stamped epoch, or an
    /// activation time in milliseconds.
    pub mark: u64,
    /// How many authoritative cells carry that mark (several cells activated in
    /// the same millisecond, such as both children of a split).
    pub seq: u32,
}

impl Epoch {
    /// The epoch of a world where no cell owns anything.
    pub const NONE: Epoch = Epoch { mark: 0, seq: 0 };
}

/// `mark.seq`, as a topology stream numbers its events.
impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.mark, self.seq)
    }
}

/// Why a cell given to the directory is not authoritative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// It waits for a hand-over.
    Incoming,
    /// Cells activated after it cover all of its space within the world.
    Shadowed,
    /// None of its space lies inside the world (the world shrank).
    OutsideWorld,
    /// Its box has other dimensions than the world's (a repartition changed
    /// them): there is no comparing the two.
    Dimensions {
        /// The cell's dimensions.
        cell: usize,
        /// The world's dimensions.
        world: usize,
    },
    /// The same cell incarnation was given again, unalike; the directory kept
    /// the entry that comes first in precedence, then by content.
    Duplicate,
}

/// A cell the directory does not answer with, and why: for diagnostics and
/// metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludedCell {
    /// The cell incarnation.
    pub cell: CellRef,
    /// Why it is not authoritative.
    pub reason: Exclusion,
}

/// Why a position has no owner to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LocateError {
    /// The position lies outside the world's bounds (or is not a number).
    #[error("the position is outside the world")]
    OutsideWorld,
    /// No active cell covers the position right now (a failed cell being
    /// replaced, or space a repartition has not handed over yet).
    #[error("no cell owns this position right now")]
    Unowned,
}

/// The authoritative cells of one world, indexed by position, with the layout
/// epoch. Built afresh from the world's cells whenever they change; pure data,
/// cheap to share between requests.
#[derive(Debug, Clone)]
pub struct Directory {
    index: Index<CellEntry>,
    excluded: Vec<ExcludedCell>,
    epoch: Epoch,
}

impl Directory {
    /// The directory of a world with bounds `world` whose cell processes are
    /// `cells`, in any order: the result does not depend on it.
    pub fn build(world: Bounds, cells: impl IntoIterator<Item = CellEntry>) -> Self {
        let mut cells: Vec<CellEntry> = cells.into_iter().collect();
        cells.sort_by(total_order);
        let mut excluded = Vec::new();
        let mut active = Vec::with_capacity(cells.len());
        // In that order, the first entry of an incarnation listed more than once
        // is the one kept, whatever order the input came in.
        let mut seen: BTreeSet<CellRef> = BTreeSet::new();
        for c in cells {
            let reason = if seen.contains(&c.cell) {
                Some(Exclusion::Duplicate)
            } else if c.active_since().is_none() {
                Some(Exclusion::Incoming)
            } else if c.bounds.dims() != world.dims() {
                Some(Exclusion::Dimensions {
                    cell: c.bounds.dims(),
                    world: world.dims(),
                })
            } else {
                None
            };
            seen.insert(c.cell.clone());
            match reason {
                Some(reason) => excluded.push(ExcludedCell { cell: c.cell, reason }),
                None => active.push(c),
            }
        }
        let (index, unplaced) = Index::build(world, active, |c| c.bounds);
        excluded.extend(unplaced.into_iter().map(|c| ExcludedCell {
            reason: if c.bounds.overlaps(&world) {
                Exclusion::Shadowed
            } else {
                Exclusion::OutsideWorld
            },
            cell: c.cell,
        }));
        excluded.sort_by(|a, b| a.cell.cmp(&b.cell));
        let epoch = epoch_of(index.items());
        Self {
            index,
            excluded,
            epoch,
        }
    }

    /// The world's bounds.
    pub fn world(&self) -> &Bounds {
        self.index.world()
    }

    /// The layout epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The cells that own some of the world now, newest activation first
    /// ([`precedence`]).
    pub fn authoritative(&self) -> &[CellEntry] {
        self.index.items()
    }

    /// The cells given that are not authoritative, and why, by cell.
    pub fn excluded(&self) -> &[ExcludedCell] {
        &self.excluded
    }

    /// The index the lookups go through (for its size and depth).
    pub fn index(&self) -> &Index<CellEntry> {
        &self.index
    }

    /// The cell that owns position `p` now. A position on the world's upper
    /// faces belongs to the cell that reaches them ([`crate::index::owns`]).
    pub fn locate(&self, p: &Point) -> Result<&CellEntry, LocateError> {
        if !self.world().contains_closed(p) {
            return Err(LocateError::OutsideWorld);
        }
        self.index.locate(p).ok_or(LocateError::Unowned)
    }
}

/// The epoch of a set of authoritative cells: the highest mark and how many carry
/// it.
fn epoch_of(authoritative: &[CellEntry]) -> Epoch {
    let mut epoch = Epoch::NONE;
    for mark in authoritative.iter().filter_map(CellEntry::mark) {
        match mark.cmp(&epoch.mark) {
            Ordering::Greater => epoch = Epoch { mark, seq: 1 },
            Ordering::Equal => epoch.seq = epoch.seq.saturating_add(1),
            Ordering::Less => {}
        }
    }
    epoch
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use fleetforge_core::{Axis, CellId};

    use super::*;

    fn world() -> Bounds {
        Bounds::rect((0.0, 100.0), (0.0, 100.0)).unwrap()
    }

    fn entry(id: &str, incarnation: u32, bounds: Bounds, since: Option<u64>) -> CellEntry {
        CellEntry {
            cell: CellRef {
                id: id.parse().unwrap(),
                incarnation,
            },
            bounds,
            role: since.map_or(Role::Incoming, |ms| Role::Active { since: Timestamp(ms) }),
            ready: true,
            terminating: false,
            address: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            stamped_epoch: None,
        }
    }

    fn at(x: f64, y: f64) -> Point {
        Point::new(x, y, 0.0)
    }

    fn owner(d: &Directory, p: Point) -> Result<String, LocateError> {
        d.locate(&p).map(|c| c.cell.to_string())
    }

    fn reasons(d: &Directory) -> Vec<(String, Exclusion)> {
        d.excluded()
            .iter()
            .map(|e| (e.cell.to_string(), e.reason))
            .collect()
    }

    /// A parent split at x = 40 into its two children.
    fn split() -> (Bounds, Bounds, Bounds) {
        let parent = world();
        let (lo, hi) = parent.split(Axis::X, 40.0).unwrap();
        (parent, lo, hi)
    }

    #[test]
    fn a_split_moves_ownership_only_as_the_children_are_activated() {
        let (parent, lo, hi) = split();
        let p = entry("c0", 0, parent, Some(1_000));
        // Children created, waiting for the hand-over: the parent owns all.
        let d0 = Directory::build(
            world(),
            [p.clone(), entry("c0-0", 0, lo, None), entry("c0-1", 0, hi, None)],
        );
        assert_eq!(owner(&d0, at(50.0, 50.0)).unwrap(), "c0");
        assert_eq!(owner(&d0, at(10.0, 50.0)).unwrap(), "c0");
        assert_eq!(d0.epoch(), Epoch { mark: 1_000, seq: 1 });
        assert_eq!(
            reasons(&d0),
            vec![
                ("c0-0".into(), Exclusion::Incoming),
                ("c0-1".into(), Exclusion::Incoming)
            ]
        );
        // The lower child activated first: the parent keeps the upper half.
        let d1 = Directory::build(
            world(),
            [
                p.clone(),
                entry("c0-0", 0, lo, Some(2_000)),
                entry("c0-1", 0, hi, None),
            ],
        );
        assert_eq!(owner(&d1, at(10.0, 50.0)).unwrap(), "c0-0");
        assert_eq!(owner(&d1, at(40.0, 50.0)).unwrap(), "c0");
        assert_eq!(owner(&d1, at(100.0, 100.0)).unwrap(), "c0");
        assert_eq!(d1.authoritative().len(), 2);
        assert_eq!(d1.epoch(), Epoch { mark: 2_000, seq: 1 });
        // Both activated in the same millisecond: the parent is shadowed, and the
        // epoch still grows.
        let d2 = Directory::build(
            world(),
            [
                p.clone(),
                entry("c0-0", 0, lo, Some(2_000)),
                entry("c0-1", 0, hi, Some(2_000)),
            ],
        );
        assert_eq!(owner(&d2, at(40.0, 50.0)).unwrap(), "c0-1");
        assert_eq!(owner(&d2, at(39.9, 50.0)).unwrap(), "c0-0");
        assert_eq!(reasons(&d2), vec![("c0".into(), Exclusion::Shadowed)]);
        assert_eq!(d2.epoch(), Epoch { mark: 2_000, seq: 2 });
        assert!(d0.epoch() < d1.epoch() && d1.epoch() < d2.epoch());
        // The parent retired: nothing changes.
        let d3 = Directory::build(
            world(),
            [
                entry("c0-0", 0, lo, Some(2_000)),
                entry("c0-1", 0, hi, Some(2_000)),
            ],
        );
        assert_eq!(d3.epoch(), d2.epoch());
        assert!(d3.excluded().is_empty());
    }

    #[test]
    fn a_merge_hands_the_space_to_the_parent_once_it_is_active() {
        let (parent, lo, hi) = split();
        let children = [
            entry("c0-0", 0, lo, Some(1_000)),
            entry("c0-1", 0, hi, Some(1_000)),
        ];
        let waiting = Directory::build(
            world(),
            children.iter().cloned().chain([entry("c0", 1, parent, None)]),
        );
        assert_eq!(owner(&waiting, at(50.0, 0.0)).unwrap(), "c0-1");
        let merged = Directory::build(
            world(),
            children
                .iter()
                .cloned()
                .chain([entry("c0", 1, parent, Some(5_000))]),
        );
        assert_eq!(owner(&merged, at(50.0, 0.0)).unwrap(), "c0#1");
        assert_eq!(owner(&merged, at(0.0, 0.0)).unwrap(), "c0#1");
        assert_eq!(merged.authoritative().len(), 1);
        assert!(waiting.epoch() < merged.epoch());
    }

    #[test]
    fn ties_go_to_the_higher_incarnation_then_the_deeper_cell_then_the_lower_id() {
        let b = world();
        let (lo, _) = b.split(Axis::Y, 50.0).unwrap();
        let old = entry("c0", 0, b, Some(7));
        let new = entry("c0", 1, b, Some(7));
        let d = Directory::build(world(), [old.clone(), new.clone()]);
        assert_eq!(owner(&d, at(1.0, 1.0)).unwrap(), "c0#1");
        let child = entry("c0-0", 0, lo, Some(7));
        let d = Directory::build(world(), [old.clone(), child]);
        assert_eq!(owner(&d, at(1.0, 1.0)).unwrap(), "c0-0");
        assert_eq!(owner(&d, at(1.0, 60.0)).unwrap(), "c0");
        let other = entry("c1", 0, b, Some(7));
        let d = Directory::build(world(), [other, old]);
        assert_eq!(owner(&d, at(1.0, 1.0)).unwrap(), "c0");
    }

    #[test]
    fn stamps_order_activations_within_one_millisecond() {
        let (parent, lo, hi) = split();
        // A cleanup re-activated both children, then a merge activated their new
        // parent, all at 5 ms: by time alone the deeper children win the tie.
        let mut cells = [
            entry("c0-0", 0, lo, Some(5)),
            entry("c0-1", 0, hi, Some(5)),
            entry("c0", 0, parent, Some(5)),
        ];
        let d = Directory::build(world(), cells.clone());
        assert_eq!(owner(&d, at(1.0, 1.0)).unwrap(), "c0-0");
        // Stamped in the order they happened, the parent, which holds the
        // sessions now, wins.
        for (k, c) in cells.iter_mut().enumerate() {
            c.stamped_epoch = Some(5 + k as u64);
        }
        let d = Directory::build(world(), cells);
        assert_eq!(owner(&d, at(1.0, 1.0)).unwrap(), "c0");
        assert_eq!(d.authoritative().len(), 1);
        assert_eq!(d.epoch(), Epoch { mark: 7, seq: 1 });
    }

    #[test]
    fn a_terminating_cell_nothing_newer_covers_stays_the_owner_but_does_not_serve() {
        let mut c = entry("c0", 0, world(), Some(10));
        c.terminating = true;
        let d = Directory::build(world(), [c]);
        let owner = d.locate(&at(5.0, 5.0)).unwrap();
        assert_eq!(owner.cell.to_string(), "c0");
        assert!(!owner.serving());
    }

    #[test]
    fn outside_the_world_and_holes_are_told_apart() {
        let (_, lo, _) = split();
        let d = Directory::build(world(), [entry("c0-0", 0, lo, Some(1))]);
        assert_eq!(d.locate(&at(-1.0, 5.0)), Err(LocateError::OutsideWorld));
        assert_eq!(d.locate(&at(f64::NAN, 5.0)), Err(LocateError::OutsideWorld));
        assert_eq!(d.locate(&at(60.0, 5.0)), Err(LocateError::Unowned));
        assert_eq!(owner(&d, at(0.0, 100.0)).unwrap(), "c0-0");
    }

    #[test]
    fn cells_of_other_dimensions_or_outside_the_world_are_excluded_and_say_why() {
        let line = Bounds::line((0.0, 100.0)).unwrap();
        let far = Bounds::rect((200.0, 300.0), (0.0, 100.0)).unwrap();
        let d = Directory::build(
            world(),
            [
                entry("c0", 0, world(), Some(1)),
                entry("c1", 0, line, Some(2)),
                entry("c2", 0, far, Some(3)),
            ],
        );
        assert_eq!(
            reasons(&d),
            vec![
                ("c1".into(), Exclusion::Dimensions { cell: 1, world: 2 }),
                ("c2".into(), Exclusion::OutsideWorld)
            ]
        );
        // Only authoritative cells count for the epoch.
        assert_eq!(d.epoch(), Epoch { mark: 1, seq: 1 });
    }

    #[test]
    fn duplicates_are_settled_the_same_whatever_the_input_order() {
        let a = entry("c0", 0, world(), Some(1));
        let mut b = a.clone();
        b.ready = false;
        let incoming = entry("c0", 0, world(), None);
        let one = Directory::build(world(), [a.clone(), b.clone(), incoming.clone()]);
        let two = Directory::build(world(), [incoming, b, a]);
        assert_eq!(one.authoritative(), two.authoritative());
        assert!(one.authoritative()[0].ready);
        assert_eq!(
            reasons(&one),
            vec![
                ("c0".into(), Exclusion::Duplicate),
                ("c0".into(), Exclusion::Duplicate)
            ]
        );
        assert_eq!(one.excluded(), two.excluded());
    }

    #[test]
    fn stamps_take_the_place_of_activation_times_in_the_epoch() {
        let (_, lo, hi) = split();
        let mut a = entry("c0-0", 0, lo, Some(1_000));
        let mut b = entry("c0-1", 0, hi, Some(1_000));
        a.stamped_epoch = Some(1_500);
        b.stamped_epoch = Some(1_501);
        let d = Directory::build(world(), [a.clone(), b.clone()]);
        assert_eq!(d.epoch(), Epoch { mark: 1_501, seq: 1 });
        // A world that mixes both: unstamped cells count by their time.
        b.stamped_epoch = None;
        let d = Directory::build(world(), [a, b]);
        assert_eq!(d.epoch(), Epoch { mark: 1_500, seq: 1 });
        assert_eq!(Directory::build(world(), []).epoch(), Epoch::NONE);
    }

    #[test]
    fn serving_needs_readiness_an_address_and_no_termination() {
        let mut c = entry("c0", 0, world(), Some(1));
        assert!(c.serving());
        c.address = None;
        assert!(!c.serving());
        c.address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        c.ready = false;
        assert!(!c.serving());
        assert_eq!(c.mark(), Some(1));
        assert_eq!(entry("c0", 0, world(), None).mark(), None);
        assert_eq!(CellId::root(0).depth(), 0);
    }
}
