//! Fixtures for the planner benchmarks: fleets of worlds in a steady state, or
//! with a share of their cells over the scale-up threshold; and single worlds of
//! 10 to 10,000 cells (the curve), to measure how the cost of `plan` grows with
//! the number of cells in one world. For the gateway's benchmarks and its load
//! run (`cargo xtask gateway-load`): [`split_layout`], one grown world's cells.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use fleetforge_core::cell::MAX_DEPTH;
use fleetforge_core::partition::initial_partition;
use fleetforge_core::sim::{SplitMix, apply};
use fleetforge_core::world::MAX_INITIAL_CELLS;
use fleetforge_core::{
    Axis, Bounds, CellId, CellRef, Health, LoadSample, Observed, ObservedCell, Overrides, Plan,
    PositionHistogram, Role, ScalingPolicy, Timestamp, TransitionKind, World, plan,
};

/// Seconds between the load samples of the fixtures.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The instant every fixture is planned at.
pub const NOW: Timestamp = Timestamp(600_000);

/// When every fixture's cells were created: the epoch, ten minutes before [`NOW`],
/// so no cell is still cooling down after a split or merge.
pub const CREATED: Timestamp = Timestamp(0);

/// Players of a cell in a steady state (occupancy 0.5 of the fixtures' 100
/// players per cell): neither hot, nor cold even together with a sibling.
pub const STEADY: u32 = 50;

/// Players of a hot cell (occupancy 0.95): above the default scale-up threshold
/// (0.8) on every sample, so the plan splits it.
pub const HOT: u32 = 95;

/// Players of each cell of a cold sibling pair (occupancy 0.05): the pair holds
/// 0.1, below the default scale-down threshold (0.3), so the plan merges it.
pub const COLD: u32 = 5;

/// The samples one cell reports over `world`'s stabilisation window up to
/// [`NOW`], one every [`SAMPLE_INTERVAL`], each of `players` players spread evenly
/// over an 8-bin histogram along x and y: enough for the planner to act on a
/// threshold held over the whole window.
pub fn window_samples(world: &World, players: u32) -> Vec<LoadSample> {
    let window = world.policy.stabilization_window;
    let samples = (window.as_secs() / SAMPLE_INTERVAL.as_secs() + 1) as u32;
    (0..samples)
        .map(|s| LoadSample {
            at: NOW - SAMPLE_INTERVAL * (samples - 1 - s),
            players,
            histogram: Some(PositionHistogram {
                x: vec![players / 8; 8],
                y: vec![players / 8; 8],
                z: Vec::new(),
            }),
        })
        .collect()
}

/// One world and what is observed of it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The world.
    pub world: World,
    /// Its cells, each with a window of samples.
    pub observed: Observed,
}

/// A 2-D world named `world-<index>` with `cells` initial cells and the default
/// policy (a 30 s window), every cell active and ready.
pub fn world(index: usize, cells: u32) -> World {
    World {
        name: format!("world-{index}"),
        bounds: Bounds::rect((0.0, 10_000.0), (0.0, 10_000.0)).expect("valid bounds"),
        initial_cells: cells,
        min_cell_extent: None,
        players_per_cell: 100,
        policy: ScalingPolicy {
            max_cells: cells * 4,
            ..ScalingPolicy::default()
        },
        revision: "bench".into(),
        overrides: Overrides::default(),
    }
}

/// `worlds` worlds of `cells` cells each, observed at [`NOW`] with a full window of
/// samples per cell. Half-loaded cells (occupancy 0.5: neither hot nor cold) make a
/// steady state; `hot_per_world` cells of each world are at 0.95, so each of those
/// crosses the scale-up threshold and the plan splits it.
pub fn fleet(worlds: usize, cells: u32, hot_per_world: usize) -> Vec<Case> {
    (0..worlds)
        .map(|i| {
            let mut world = world(i, cells);
            let mut observed = Observed::default();
            let init = plan(&world, &observed, CREATED);
            apply(&mut world, &mut observed, &init, CREATED);
            for (k, c) in observed.cells.iter_mut().enumerate() {
                let players = if k < hot_per_world { HOT } else { STEADY };
                c.samples = window_samples(&world, players);
            }
            Case { world, observed }
        })
        .collect()
}

/// Plans every case once; returns how many transitions were planned, so the work
/// cannot be optimised away and the fixture's intent can be checked.
pub fn plan_all(cases: &[Case]) -> usize {
    cases
        .iter()
        .map(|c| plan(&c.world, &c.observed, NOW).transitions.len())
        .sum()
}

/// The cell counts of the curve: one world of each size.
pub const CURVE_CELLS: [u32; 4] = [10, 100, 1_000, 10_000];

/// The shape of a curve world's partition tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    /// Many roots: `min(cells, MAX_INITIAL_CELLS)` initial cells, then leaves split
    /// until the world has its cells (depth 0 up to 1,000 cells, 3 or 4 at 10,000).
    Shallow,
    /// One root split into a balanced binary tree: every leaf at depth
    /// `floor(log2 cells)` or one more (13 or 14 at 10,000 cells).
    Deep,
}

impl Shape {
    /// Both shapes.
    pub const ALL: [Shape; 2] = [Shape::Shallow, Shape::Deep];

    /// The name in benchmark ids and figure names.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Shallow => "shallow",
            Shape::Deep => "deep",
        }
    }

    /// The world's initial cells for a curve world of `cells` cells.
    pub fn initial_cells(self, cells: u32) -> u32 {
        match self {
            Shape::Shallow => cells.clamp(1, MAX_INITIAL_CELLS),
            Shape::Deep => 1,
        }
    }
}

/// What the cells of a curve world are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Activity {
    /// Every cell at occupancy 0.5: nothing to do, the plan is empty.
    Steady,
    /// 1 % of the cells (at least one) at occupancy 0.95: each is split.
    Hot,
    /// 1 % of the pairs of sibling leaves (at least one) at occupancy 0.05 each,
    /// the rest at 0.5: each cold pair is merged. Needs a tree with sibling leaves,
    /// which a shallow world of up to 1,000 cells (all roots) does not have.
    Merging,
}

impl Activity {
    /// Every activity.
    pub const ALL: [Activity; 3] = [Activity::Steady, Activity::Hot, Activity::Merging];

    /// The name in benchmark ids and figure names.
    pub fn name(self) -> &'static str {
        match self {
            Activity::Steady => "steady",
            Activity::Hot => "hot",
            Activity::Merging => "merging",
        }
    }
}

/// One world of the curve: its cells, what they do, and the plan it must give.
#[derive(Debug, Clone)]
pub struct CurveCase {
    /// The tree shape.
    pub shape: Shape,
    /// What the cells are doing.
    pub activity: Activity,
    /// Active cells in the world.
    pub cells: u32,
    /// The world and its observed cells.
    pub case: Case,
    /// The transitions planning it at [`NOW`] must give, by kind.
    pub expected: BTreeMap<TransitionKind, usize>,
}

/// A curve case's name, as [`curve_name`] gives it.
impl fmt::Display for CurveCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&curve_name(self.shape, self.activity))
    }
}

/// The name of a curve case, `<activity>_<shape>` (`steady_deep`): the function
/// part of its benchmark id and of its bench-gate figures.
pub fn curve_name(shape: Shape, activity: Activity) -> String {
    format!("{}_{}", activity.name(), shape.name())
}

/// The shape and activity a [`curve_name`] names, if it names one.
pub fn parse_curve_name(name: &str) -> Option<(Shape, Activity)> {
    Shape::ALL
        .into_iter()
        .flat_map(|s| Activity::ALL.map(|a| (s, a)))
        .find(|&(s, a)| curve_name(s, a) == name)
}

/// Whether [`curve`] can build this case: every case but merging in a world with
/// no split (a shallow world of up to 1,000 cells is all roots, so it has no
/// sibling leaves). Any split tree has a pair of sibling leaves, below its
/// deepest split.
pub fn curve_exists(shape: Shape, activity: Activity, cells: u32) -> bool {
    activity != Activity::Merging || cells > shape.initial_cells(cells)
}

impl CurveCase {
    /// Plans the world at [`NOW`] and panics unless the plan has exactly the
    /// expected transitions, by kind: a fixture that plans something else (a hole
    /// filled, a split held back) would measure the wrong thing.
    pub fn check(&self) {
        let p = plan(&self.case.world, &self.case.observed, NOW);
        let got = transitions_by_kind(&p);
        assert_eq!(
            got, self.expected,
            "{self}/{}: planned {got:?}, expected {:?}; held back: {:?}; problems: {:?}",
            self.cells, self.expected, p.summary.held_back, p.summary.problems
        );
        if self.activity == Activity::Steady {
            assert!(
                p.is_empty(),
                "{self}/{}: a steady world must plan nothing",
                self.cells
            );
        }
    }

    /// How many transitions planning it must give, of every kind.
    pub fn expected_transitions(&self) -> usize {
        self.expected.values().sum()
    }
}

/// How many transitions of each kind `plan` holds.
pub fn transitions_by_kind(plan: &Plan) -> BTreeMap<TransitionKind, usize> {
    let mut kinds = BTreeMap::new();
    for t in &plan.transitions {
        *kinds.entry(t.kind).or_insert(0) += 1;
    }
    kinds
}

/// One world of `cells` active, ready leaf cells in the given tree shape, every
/// cell with a full window of samples, its cells doing `activity`; `None` when the
/// case does not exist ([`curve_exists`]).
///
/// The leaves are built directly, not by planning and applying splits one at a
/// time: each root of the initial partition is cut breadth-first, at the middle of
/// its longest axis, as a split with an even histogram cuts it, until the world
/// has `cells` leaves. The world allows 4 x `cells` cells and as many transitions
/// per rate-limit period as it has cells, so neither limit holds a split back.
pub fn curve(shape: Shape, activity: Activity, cells: u32) -> Option<CurveCase> {
    assert!(cells >= 1, "a world has at least one cell");
    if !curve_exists(shape, activity, cells) {
        return None;
    }
    let mut world = world(0, shape.initial_cells(cells));
    world.name = format!("curve-{}", shape.name());
    world.policy.max_cells = cells * 4;
    world.policy.max_transitions = cells;

    let mut leaves: VecDeque<(CellId, Bounds)> = initial_partition(&world.bounds, world.initial_cells).into();
    while leaves.len() < cells as usize {
        let (id, bounds) = leaves.pop_front().expect("a world has at least one cell");
        let axis = bounds.longest_axis();
        let middle = (bounds.min(axis) + bounds.max(axis)) / 2.0;
        let (lower, upper) = bounds.split(axis, middle).expect("a cut at the middle is inside");
        leaves.push_back((id.child(0), lower));
        leaves.push_back((id.child(1), upper));
    }
    let mut leaves = Vec::from(leaves);
    // In the planner's order, so it does not sort them first.
    leaves.sort_by(|a, b| a.0.cmp(&b.0));

    let mut players = vec![STEADY; leaves.len()];
    let mut expected = BTreeMap::new();
    match activity {
        Activity::Steady => {}
        Activity::Hot => {
            let hot = spread(leaves.len(), leaves.len() / 100);
            for &k in &hot {
                players[k] = HOT;
            }
            let splits = hot.len().min(world.policy.max_transitions as usize);
            expected.insert(TransitionKind::Split, splits);
        }
        Activity::Merging => {
            // Lower children whose sibling is a leaf too: in id order, right after it.
            let pairs: Vec<usize> = (0..leaves.len().saturating_sub(1))
                .filter(|&k| {
                    leaves[k].0.side() == Some(0) && leaves[k].0.sibling() == Some(leaves[k + 1].0.clone())
                })
                .collect();
            assert!(!pairs.is_empty(), "a split tree has sibling leaves");
            let cold = spread(pairs.len(), pairs.len() / 100);
            for &p in &cold {
                players[pairs[p]] = COLD;
                players[pairs[p] + 1] = COLD;
            }
            let merges = cold.len().min(world.policy.max_transitions as usize);
            expected.insert(TransitionKind::Merge, merges);
        }
    }

    let layout = world.layout_key();
    let observed = Observed {
        cells: leaves
            .into_iter()
            .zip(players)
            .map(|((id, bounds), players)| ObservedCell {
                cell: CellRef::first(id),
                bounds,
                layout,
                revision: world.revision.clone(),
                role: Role::Active { since: CREATED },
                health: Health::Ready,
                created_at: CREATED,
                samples: window_samples(&world, players),
            })
            .collect(),
        history: Vec::new(),
    };
    Some(CurveCase {
        shape,
        activity,
        cells,
        case: Case { world, observed },
        expected,
    })
}

/// `count` indices (at least one) spread evenly over `0..len`.
fn spread(len: usize, count: usize) -> Vec<usize> {
    let count = count.clamp(1, len.max(1));
    (0..count).map(|k| k * len / count).collect()
}

/// The cell counts of the gateway benchmarks: one world of each size.
pub const GATEWAY_CELLS: [u32; 3] = [10, 1_000, 10_000];

/// The seed of every [`split_layout`] the benchmarks and the load run use, so
/// that they measure the same worlds.
pub const LAYOUT_SEED: u64 = 0x5eed_ce11;

/// When the roots of a [`split_layout`] were activated (a date in 2023, in
/// milliseconds, so that epochs look like the operator's).
pub const LAYOUT_START: Timestamp = Timestamp(1_700_000_000_000);

/// One cell of a [`split_layout`].
#[derive(Debug, Clone, PartialEq)]
pub struct LaidOutCell {
    /// The cell's id: its root and split path.
    pub id: CellId,
    /// Its box.
    pub bounds: Bounds,
    /// When it was activated: [`LAYOUT_START`] for a root, one second later per
    /// split before it for a child (both children of a split at once, as one
    /// reconcile activates them).
    pub activated: Timestamp,
}

/// How many roots a [`split_layout`] of `cells` cells starts from: a quarter
/// of the cells, at least 1 and at most 64 (a world started small and grew).
pub fn layout_roots(cells: u32) -> u32 {
    (cells / 4).clamp(1, 64)
}

/// `cells` cells tiling `world` (2-D) as the planner lays out a world that has
/// grown: a grid of [`layout_roots`] roots ([`initial_partition`]), then a cell
/// picked at random split in two, again and again, until there are `cells`.
///
/// Each split cuts the cell's longest axis somewhere between a quarter and
/// three quarters of the way (the planner cuts where the players are, not at the
/// middle). Picking cells rather than places at random splits small cells as
/// often as large ones, so some regions end up far deeper than others, as a
/// hot spot does. The same `seed` gives the same layout; cells come in id order.
pub fn split_layout(world: &Bounds, cells: u32, seed: u64) -> Vec<LaidOutCell> {
    assert!(cells >= 1, "a world has at least one cell");
    let mut rng = SplitMix::new(seed);
    let mut leaves: Vec<LaidOutCell> = initial_partition(world, layout_roots(cells))
        .into_iter()
        .map(|(id, bounds)| LaidOutCell {
            id,
            bounds,
            activated: LAYOUT_START,
        })
        .collect();
    let mut splits: u64 = 0;
    while leaves.len() < cells as usize {
        let k = (rng.next_u64() % leaves.len() as u64) as usize;
        // Ids deeper than the planner allows do not exist: pick again.
        if leaves[k].id.depth() >= MAX_DEPTH {
            continue;
        }
        let cell = leaves.swap_remove(k);
        let axis: Axis = cell.bounds.longest_axis();
        let at = cell.bounds.min(axis) + cell.bounds.extent(axis) * (0.25 + 0.5 * rng.next_f64());
        let (lower, upper) = cell
            .bounds
            .split(axis, at)
            .expect("a cut between a quarter and three quarters is inside the cell");
        splits += 1;
        let activated = Timestamp(LAYOUT_START.0 + splits * 1_000);
        leaves.push(LaidOutCell {
            id: cell.id.child(0),
            bounds: lower,
            activated,
        });
        leaves.push(LaidOutCell {
            id: cell.id.child(1),
            bounds: upper,
            activated,
        });
    }
    leaves.sort_by(|a, b| a.id.cmp(&b.id));
    leaves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_curve_case_up_to_1000_cells_plans_what_it_expects() {
        for cells in [1, 2, 3, 10, 100, 1_000] {
            for shape in Shape::ALL {
                for activity in Activity::ALL {
                    let Some(c) = curve(shape, activity, cells) else {
                        assert!(!curve_exists(shape, activity, cells));
                        continue;
                    };
                    assert_eq!(c.case.observed.cells.len(), cells as usize, "{c}/{cells}");
                    c.check();
                }
            }
        }
    }

    #[test]
    fn curve_leaves_tile_the_world_in_the_shape_asked_for() {
        for shape in Shape::ALL {
            let c = curve(shape, Activity::Steady, 10_000).expect("a steady case always exists");
            let cells = &c.case.observed.cells;
            let area: f64 = cells.iter().map(|o| o.bounds.measure()).sum();
            let world = c.case.world.bounds.measure();
            assert!(
                (area - world).abs() <= world * 1e-9,
                "{c}: leaves cover {area} of {world}"
            );
            let depths: Vec<usize> = cells.iter().map(|o| o.cell.id.depth()).collect();
            let (min, max) = (depths.iter().min(), depths.iter().max());
            match shape {
                Shape::Shallow => assert_eq!((min, max), (Some(&3), Some(&4))),
                Shape::Deep => assert_eq!((min, max), (Some(&13), Some(&14))),
            }
            assert!(
                cells.is_sorted_by(|a, b| a.cell <= b.cell),
                "{c}: not in the planner's order"
            );
        }
        assert!(!curve_exists(Shape::Shallow, Activity::Merging, 1_000));
        assert!(curve_exists(Shape::Shallow, Activity::Merging, 10_000));
        assert_eq!(
            parse_curve_name("merging_deep"),
            Some((Shape::Deep, Activity::Merging))
        );
        assert_eq!(parse_curve_name("deep_merging"), None);
    }

    #[test]
    fn split_layouts_tile_the_world_with_unique_ids_and_are_reproducible() {
        let world = Bounds::rect((0.0, 10_000.0), (0.0, 10_000.0)).expect("valid bounds");
        for cells in GATEWAY_CELLS {
            let layout = split_layout(&world, cells, LAYOUT_SEED);
            assert_eq!(layout.len(), cells as usize);
            let area: f64 = layout.iter().map(|c| c.bounds.measure()).sum();
            assert!(
                (area - world.measure()).abs() <= world.measure() * 1e-9,
                "{cells}: {area}"
            );
            assert!(
                layout.windows(2).all(|w| w[0].id < w[1].id),
                "{cells}: ids not unique and sorted"
            );
            // Pairwise up to 1,000 cells (the debug build is slow at 10,000); the
            // area then rules out overlaps hiding a hole of the same size.
            for (i, a) in layout.iter().enumerate().take(1_000) {
                for b in &layout[i + 1..layout.len().min(1_000)] {
                    assert!(
                        !a.bounds.overlaps(&b.bounds),
                        "{cells}: {} overlaps {}",
                        a.id,
                        b.id
                    );
                }
            }
            assert_eq!(layout, split_layout(&world, cells, LAYOUT_SEED));
        }
    }
}
