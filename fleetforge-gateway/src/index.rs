//! Lookup by position: a binary space partition of the world built from the
//! cells' own bounds.
//!
//! # Which cell owns a point
//!
//! Cells own half-open boxes `[min, max)`, as [`Bounds::contains`] says, so that
//! cells sharing a face never both own a point on it. The world itself is closed
//! (`[min, max]` on every axis, as a spec writes it and as
//! [`Bounds::contains_closed`] reads it), so a point on one of the world's upper
//! faces belongs to whoever owns the space just inside the world below it: the
//! cell whose box reaches that face, the last one along the axis. The core's
//! hand-over does the same for a session on the world's edge
//! (`fleetforge_core::handoff::target_for` gives it to a target whose closed box
//! holds it); where that leaves a choice (a point on the world's face and on a
//! face between two cells), the half-open rule of the other axes settles it here
//! rather than the order of a list. [`owns`] states the rule for one cell.
//!
//! Where several cells own a point (during a split or merge the old cell and the
//! new ones are active together), the one that comes first in the order the index
//! was given wins: the directory passes its cells newest activation first.
//!
//! # Why a partition of space, and not the partition tree of the cell ids
//!
//! The ids encode the tree of cuts that made the cells, and descending it would
//! find a cell in as many steps as the tree is deep. But ids can outlive the cuts
//! that made them (a cell merged and split again elsewhere while others were
//! missing from an observation), a root's cuts are not written anywhere but in its
//! cells' bounds, and while a split or merge completes an old cell and the cells
//! replacing it overlap, with the newer winning point by point. So, as the planner
//! does where ids and geometry disagree, geometry wins: the index is built from
//! the bounds alone and never reads an id.
//!
//! It is a binary space partition. A node stands for a box of the world and the
//! cells that reach into it, in precedence order; it is a leaf when the first of
//! them covers the whole box (it owns all of it) or none is left (a hole); else it
//! is cut in two along a face of one of its cells that lies strictly inside it,
//! which always exists (the first cell reaches into the box without covering it,
//! so one of its faces lies inside). The cut chosen crosses as few cells as
//! possible, and among those splits the cells most evenly. A layout the planner
//! builds is a guillotine partition (a grid of roots, each cut in two again and
//! again), so a cut crossing no cell always exists: every cell then ends up in
//! exactly one leaf, and the index holds two nodes per cell. How deep it is
//! depends on the layout: about log2 of the cells where they are even (12 levels
//! for a grid of 64 x 64), about as deep as the layout's own cuts where a hot
//! spot was split again and again (the most balanced cut is chosen greedily,
//! which is not always the shallowest partition: on random split trees it came
//! out up to two levels deeper than the tree). Cells that cross a cut (overlaps, or
//! layouts no planner builds) are only divided between the two sides, never
//! lost.
//!
//! A lookup compares the point with one coordinate per level: no scan, no
//! floating-point arithmetic, only the comparisons [`owns`] makes.

use fleetforge_core::{Axis, Bounds, Point};

/// Whether the cell with bounds `cell` owns `p` in the world `world`, before
/// overlaps are settled: `p` is in the world (closed box), and on every axis it
/// lies in the cell's half-open range, except on an axis where `p` is on the
/// world's upper face, where the cell must reach that face from inside the world.
///
/// A cell of other dimensions than the world's owns nothing.
pub fn owns(world: &Bounds, cell: &Bounds, p: &Point) -> bool {
    cell.dims() == world.dims()
        && world.contains_closed(p)
        && cell.axes().all(|a| {
            let v = p.get(a);
            if v == world.max(a) {
                cell.min(a) < v && v <= cell.max(a)
            } else {
                cell.min(a) <= v && v < cell.max(a)
            }
        })
}

/// A node of the partition, in [`Index::nodes`]. Children are indices into the
/// same vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Node {
    /// Points below `at` along `axis` go to `lower`, the others to `upper`.
    Cut {
        /// The axis cut.
        axis: Axis,
        /// Where it is cut: a face of a cell.
        at: f64,
        /// The node of the lower half.
        lower: u32,
        /// The node of the upper half.
        upper: u32,
    },
    /// The whole box belongs to this item (an index into [`Index::items`]), or to
    /// none.
    Leaf(Option<u32>),
}

/// A spatial index of the world's cells: which item owns a position.
///
/// Built once per layout by [`Index::build`]; a lookup ([`Index::locate`]) costs
/// one comparison per level of the partition.
#[derive(Debug, Clone)]
pub struct Index<T> {
    world: Bounds,
    /// The items that own some space, in the precedence order they were given.
    items: Vec<T>,
    /// The partition; the root is node 0.
    nodes: Vec<Node>,
    depth: usize,
}

/// One box of the world waiting to be partitioned.
struct Pending {
    /// The slot in `nodes` that will hold its node.
    slot: usize,
    region: Bounds,
    /// Items that reach into `region`, in precedence order.
    candidates: Vec<u32>,
    depth: usize,
}

impl<T> Index<T> {
    /// Indexes `items` over `world`. `bounds_of` gives each item's box; where
    /// boxes overlap, the item that comes first in `items` owns the space.
    ///
    /// Returns the index, which keeps the items that own some of the world, and
    /// the items that own none, in their given order: those wholly covered by
    /// items before them, lying outside the world, or of other dimensions.
    pub fn build(world: Bounds, items: Vec<T>, bounds_of: impl Fn(&T) -> Bounds) -> (Self, Vec<T>) {
        let boxes: Vec<Bounds> = items.iter().map(&bounds_of).collect();
        let candidates: Vec<u32> = (0..boxes.len())
            .filter(|&i| boxes[i].overlaps(&world))
            .map(to_u32)
            .collect();
        let mut nodes = vec![Node::Leaf(None)];
        let mut owner = vec![false; boxes.len()];
        let mut depth = 0;
        let mut pending = vec![Pending {
            slot: 0,
            region: world,
            candidates,
            depth: 0,
        }];
        while let Some(Pending {
            slot,
            region,
            mut candidates,
            depth: level,
        }) = pending.pop()
        {
            depth = depth.max(level);
            // Below the first candidate that covers the region, nothing can own
            // any of it: dropping those keeps the cut choice to the cells that
            // matter (an old cell under the new ones replacing it, say).
            if let Some(k) = candidates
                .iter()
                .position(|&i| boxes[i as usize].contains_bounds(&region))
            {
                candidates.truncate(k + 1);
            }
            let Some(&first) = candidates.first() else {
                nodes[slot] = Node::Leaf(None);
                continue;
            };
            if boxes[first as usize].contains_bounds(&region) {
                owner[first as usize] = true;
                nodes[slot] = Node::Leaf(Some(first));
                continue;
            }
            let Some(cut) = choose_cut(&region, &candidates, &boxes) else {
                // Unreachable: the first candidate reaches into the region without
                // covering it, so one of its faces lies strictly inside. Should it
                // happen all the same, the region goes to the cell that wins it.
                owner[first as usize] = true;
                nodes[slot] = Node::Leaf(Some(first));
                continue;
            };
            let (axis, at) = (cut.axis, cut.at);
            let lower: Vec<u32> = candidates
                .iter()
                .copied()
                .filter(|&i| boxes[i as usize].min(axis) < at)
                .collect();
            let upper: Vec<u32> = candidates
                .into_iter()
                .filter(|&i| boxes[i as usize].max(axis) > at)
                .collect();
            let (l, u) = (nodes.len(), nodes.len() + 1);
            nodes.push(Node::Leaf(None));
            nodes.push(Node::Leaf(None));
            nodes[slot] = Node::Cut {
                axis,
                at,
                lower: to_u32(l),
                upper: to_u32(u),
            };
            pending.push(Pending {
                slot: u,
                region: cut.upper,
                candidates: upper,
                depth: level + 1,
            });
            pending.push(Pending {
                slot: l,
                region: cut.lower,
                candidates: lower,
                depth: level + 1,
            });
        }

        // Keep the owners, in their order, and renumber the leaves.
        let mut renumber = vec![u32::MAX; items.len()];
        let mut kept = Vec::new();
        let mut left = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if owner[i] {
                renumber[i] = to_u32(kept.len());
                kept.push(item);
            } else {
                left.push(item);
            }
        }
        for node in &mut nodes {
            if let Node::Leaf(Some(i)) = node {
                *i = renumber[*i as usize];
            }
        }
        (
            Self {
                world,
                items: kept,
                nodes,
                depth,
            },
            left,
        )
    }

    /// The item that owns `p`, by the rule of [`owns`] and, where items overlap,
    /// the order they were given in. `None` when `p` is outside the world (or not
    /// a number) or no item covers it.
    pub fn locate(&self, p: &Point) -> Option<&T> {
        if !self.world.contains_closed(p) {
            return None;
        }
        let mut node = 0;
        loop {
            match self.nodes.get(node)? {
                Node::Cut {
                    axis,
                    at,
                    lower,
                    upper,
                } => node = if p.get(*axis) < *at { *lower } else { *upper } as usize,
                Node::Leaf(owner) => return owner.and_then(|i| self.items.get(i as usize)),
            }
        }
    }

    /// The world the index covers.
    pub fn world(&self) -> &Bounds {
        &self.world
    }

    /// The items that own some of the world, in the order they were given.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The longest path from the root to a leaf, in cuts: the most comparisons a
    /// lookup makes.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// How many nodes (cuts and leaves) the partition has: its size in memory is
    /// proportional to this.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

/// Node numbers and item numbers are kept in 32 bits: a world has far fewer
/// cells than that, and the nodes stay small.
fn to_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// A chosen cut of a region and the two halves it makes.
struct Cut {
    axis: Axis,
    at: f64,
    lower: Bounds,
    upper: Bounds,
}

/// The cut of `region` along a face of one of `candidates` lying strictly inside
/// it that crosses the fewest candidates, then leaves the fewest on its busier
/// side; ties go to the earlier axis, then the lower coordinate, so the index
/// depends on nothing but its input. `None` when no face lies inside.
fn choose_cut(region: &Bounds, candidates: &[u32], boxes: &[Bounds]) -> Option<Cut> {
    let k = candidates.len();
    let mut best: Option<((usize, usize), Axis, f64)> = None;
    for axis in region.axes() {
        let (lo, hi) = (region.min(axis), region.max(axis));
        let mut mins: Vec<f64> = candidates.iter().map(|&i| boxes[i as usize].min(axis)).collect();
        let mut maxs: Vec<f64> = candidates.iter().map(|&i| boxes[i as usize].max(axis)).collect();
        mins.sort_by(f64::total_cmp);
        maxs.sort_by(f64::total_cmp);
        let mut faces: Vec<f64> = mins
            .iter()
            .chain(&maxs)
            .copied()
            .filter(|&x| lo < x && x < hi)
            .collect();
        faces.sort_by(f64::total_cmp);
        faces.dedup();
        for at in faces {
            // Candidates starting below the cut reach into the lower half, those
            // ending above it into the upper half; each candidate is on one side
            // or crosses, so the crossings are what both sides count twice.
            let lower = mins.partition_point(|&m| m < at);
            let upper = k - maxs.partition_point(|&m| m <= at);
            let crossing = (lower + upper).saturating_sub(k);
            let score = (crossing, lower.max(upper));
            if best.as_ref().is_none_or(|(s, _, _)| score < *s) {
                best = Some((score, axis, at));
            }
        }
    }
    let (_, axis, at) = best?;
    let (lower, upper) = region.split(axis, at).ok()?;
    Some(Cut {
        axis,
        at,
        lower,
        upper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: (f64, f64), y: (f64, f64)) -> Bounds {
        Bounds::rect(x, y).unwrap()
    }

    fn p(x: f64, y: f64) -> Point {
        Point::new(x, y, 0.0)
    }

    /// Items are (name, bounds); the index answers names.
    fn index(
        world: Bounds,
        items: &[(&'static str, Bounds)],
    ) -> (Index<(&'static str, Bounds)>, Vec<&'static str>) {
        let (index, left) = Index::build(world, items.to_vec(), |i| i.1);
        (index, left.into_iter().map(|i| i.0).collect())
    }

    fn name(index: &Index<(&'static str, Bounds)>, at: Point) -> Option<&'static str> {
        index.locate(&at).map(|i| i.0)
    }

    #[test]
    fn owns_is_half_open_inside_and_closed_on_the_worlds_upper_faces() {
        let world = rect((0.0, 10.0), (0.0, 10.0));
        let low = rect((0.0, 5.0), (0.0, 10.0));
        let high = rect((5.0, 10.0), (0.0, 10.0));
        assert!(owns(&world, &low, &p(0.0, 0.0)));
        assert!(!owns(&world, &low, &p(5.0, 3.0)));
        assert!(owns(&world, &high, &p(5.0, 3.0)));
        // The world's upper faces and corner belong to the cell that reaches them.
        assert!(owns(&world, &high, &p(10.0, 3.0)));
        assert!(owns(&world, &high, &p(10.0, 10.0)));
        assert!(owns(&world, &low, &p(2.0, 10.0)));
        assert!(!owns(&world, &low, &p(10.0, 10.0)));
        // Outside the world nobody owns anything, whatever the cell's box says.
        let wide = rect((-5.0, 20.0), (-5.0, 20.0));
        assert!(!owns(&world, &wide, &p(-1.0, 3.0)));
        assert!(!owns(&world, &wide, &p(f64::NAN, 3.0)));
        // A cell reaching past the world's face owns the face, one that only
        // touches it from outside does not.
        assert!(owns(&world, &wide, &p(10.0, 10.0)));
        let beyond = rect((10.0, 20.0), (0.0, 10.0));
        assert!(!owns(&world, &beyond, &p(10.0, 3.0)));
        // Other dimensions own nothing.
        let line = Bounds::line((0.0, 10.0)).unwrap();
        assert!(!owns(&world, &line, &p(1.0, 1.0)));
    }

    #[test]
    fn a_tiling_is_located_cell_by_cell_and_each_cell_is_one_leaf() {
        let world = rect((0.0, 100.0), (0.0, 100.0));
        let cells = [
            ("a", rect((0.0, 50.0), (0.0, 50.0))),
            ("b", rect((50.0, 100.0), (0.0, 50.0))),
            ("c", rect((0.0, 50.0), (50.0, 100.0))),
            ("d", rect((50.0, 75.0), (50.0, 100.0))),
            ("e", rect((75.0, 100.0), (50.0, 100.0))),
        ];
        let (ix, left) = index(world, &cells);
        assert!(left.is_empty());
        assert_eq!(ix.items().len(), 5);
        // A guillotine tiling: no cut crosses a cell, so leaves = cells.
        assert_eq!(ix.node_count(), 2 * cells.len() - 1);
        assert_eq!(name(&ix, p(10.0, 10.0)), Some("a"));
        assert_eq!(name(&ix, p(50.0, 0.0)), Some("b"));
        assert_eq!(name(&ix, p(49.999, 50.0)), Some("c"));
        assert_eq!(name(&ix, p(75.0, 75.0)), Some("e"));
        assert_eq!(name(&ix, p(100.0, 100.0)), Some("e"));
        assert_eq!(name(&ix, p(0.0, 100.0)), Some("c"));
        assert_eq!(name(&ix, p(100.0, 0.0)), Some("b"));
        assert_eq!(name(&ix, p(100.1, 0.0)), None);
        assert_eq!(name(&ix, p(f64::NAN, 0.0)), None);
        assert_eq!(name(&ix, p(f64::INFINITY, 0.0)), None);
    }

    #[test]
    fn the_first_of_overlapping_items_wins_and_a_covered_one_is_left_out() {
        let world = rect((0.0, 100.0), (0.0, 100.0));
        let parent = rect((0.0, 100.0), (0.0, 100.0));
        let (lo, hi) = parent.split(Axis::X, 40.0).unwrap();
        // One child active, the other not yet: the parent keeps the rest.
        let (ix, left) = index(world, &[("lo", lo), ("parent", parent)]);
        assert!(left.is_empty());
        assert_eq!(name(&ix, p(10.0, 10.0)), Some("lo"));
        assert_eq!(name(&ix, p(40.0, 10.0)), Some("parent"));
        assert_eq!(name(&ix, p(100.0, 100.0)), Some("parent"));
        // Both children active: the parent owns nothing.
        let (ix, left) = index(world, &[("hi", hi), ("lo", lo), ("parent", parent)]);
        assert_eq!(left, vec!["parent"]);
        assert_eq!(name(&ix, p(40.0, 10.0)), Some("hi"));
        assert_eq!(name(&ix, p(100.0, 100.0)), Some("hi"));
        // Order matters: the parent first covers everything.
        let (ix, left) = index(world, &[("parent", parent), ("hi", hi), ("lo", lo)]);
        assert_eq!(left, vec!["hi", "lo"]);
        assert_eq!(ix.node_count(), 1);
    }

    #[test]
    fn holes_and_cells_outside_the_world_own_nothing() {
        let world = rect((0.0, 100.0), (0.0, 100.0));
        let cells = [
            ("a", rect((0.0, 50.0), (0.0, 100.0))),
            ("outside", rect((200.0, 300.0), (0.0, 100.0))),
            ("touching", rect((100.0, 300.0), (0.0, 100.0))),
        ];
        let (ix, left) = index(world, &cells);
        assert_eq!(left, vec!["outside", "touching"]);
        assert_eq!(name(&ix, p(25.0, 25.0)), Some("a"));
        assert_eq!(name(&ix, p(50.0, 25.0)), None);
        assert_eq!(name(&ix, p(100.0, 25.0)), None);
        let (ix, _) = index(world, &[]);
        assert_eq!(name(&ix, p(1.0, 1.0)), None);
        assert_eq!(ix.depth(), 0);
    }

    #[test]
    fn a_cell_reaching_past_the_world_owns_the_worlds_face() {
        // The world shrank (a repartition is under way): the old cell still
        // reaches past the new upper face and owns it.
        let world = rect((0.0, 80.0), (0.0, 100.0));
        let cells = [
            ("new", rect((0.0, 40.0), (0.0, 100.0))),
            ("old", rect((0.0, 100.0), (0.0, 100.0))),
        ];
        let (ix, left) = index(world, &cells);
        assert!(left.is_empty());
        assert_eq!(name(&ix, p(80.0, 100.0)), Some("old"));
        assert_eq!(name(&ix, p(40.0, 0.0)), Some("old"));
        assert_eq!(name(&ix, p(39.0, 100.0)), Some("new"));
    }

    #[test]
    fn a_non_guillotine_layout_is_still_located_exactly() {
        // A pinwheel: no straight cut crosses no cell, so some are divided.
        let world = rect((0.0, 3.0), (0.0, 3.0));
        let cells = [
            ("n", rect((0.0, 2.0), (2.0, 3.0))),
            ("e", rect((2.0, 3.0), (1.0, 3.0))),
            ("s", rect((1.0, 3.0), (0.0, 1.0))),
            ("w", rect((0.0, 1.0), (0.0, 2.0))),
            ("mid", rect((1.0, 2.0), (1.0, 2.0))),
        ];
        let (ix, left) = index(world, &cells);
        assert!(left.is_empty());
        for x in [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0] {
            for y in [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0] {
                let at = p(x, y);
                let want = cells.iter().find(|c| owns(&world, &c.1, &at)).map(|c| c.0);
                assert_eq!(name(&ix, at), want, "at ({x}, {y})");
                assert!(want.is_some());
            }
        }
    }

    #[test]
    fn a_grid_is_located_in_logarithmic_depth() {
        let world = rect((0.0, 64.0), (0.0, 64.0));
        let cells: Vec<(&'static str, Bounds)> = (0..64)
            .flat_map(|i| (0..64).map(move |j| (i, j)))
            .map(|(i, j)| {
                let (x, y) = (f64::from(i), f64::from(j));
                ("cell", rect((x, x + 1.0), (y, y + 1.0)))
            })
            .collect();
        let (ix, left) = Index::build(world, cells, |c| c.1);
        assert!(left.is_empty());
        assert_eq!(ix.items().len(), 4096);
        assert_eq!(ix.depth(), 12);
        let at = p(17.5, 63.0);
        assert_eq!(
            ix.locate(&at).map(|c| c.1),
            Some(rect((17.0, 18.0), (63.0, 64.0)))
        );
    }
}
