//! Property tests of the index on arbitrary boxes, far from what the planner
//! builds: overlapping in any way, reaching out of the world, leaving holes, of
//! other dimensions. The index must still answer exactly what a scan answers.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use common::{any_bounds, point_in, probes, visible};
use fleetforge_core::{Axis, Bounds};
use fleetforge_gateway::{Index, owns};
use proptest::prelude::*;

/// A box inside (or partly outside) `world`, from fractions of its extent.
fn box_in(world: &Bounds, lo: [f64; 3], size: [f64; 3]) -> Bounds {
    let a = point_in(world, lo);
    let edge = |ax: Axis| (a.get(ax), a.get(ax) + world.extent(ax) * size[ax.index()]);
    match world.dims() {
        1 => Bounds::line(edge(Axis::X)),
        2 => Bounds::rect(edge(Axis::X), edge(Axis::Y)),
        _ => Bounds::cuboid(edge(Axis::X), edge(Axis::Y), edge(Axis::Z)),
    }
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every probe point (random, every box's corners and face centres, the
    /// world's corners) is answered with the first box in the given order that
    /// owns it, or with nothing when none does; the boxes kept are exactly those
    /// with some space in the world that no earlier box covers.
    #[test]
    fn the_index_answers_what_a_scan_answers(
        world in any_bounds(),
        shapes in prop::collection::vec(
            (prop::array::uniform3(-0.2f64..1.0), prop::array::uniform3(0.05f64..0.8)),
            0..24,
        ),
        grid in 0usize..4,
        random in prop::collection::vec(prop::array::uniform3(0.0f64..=1.0), 32),
    ) {
        let mut boxes: Vec<Bounds> = shapes.iter().map(|(lo, size)| box_in(&world, *lo, *size)).collect();
        // Sometimes a tiling underneath, as the planner builds.
        if grid > 0 {
            boxes.extend(world.slabs(Axis::X, grid));
        }
        // One box of other dimensions, which owns nothing.
        if world.dims() > 1 {
            boxes.push(Bounds::line((world.min(Axis::X), world.max(Axis::X))).unwrap());
        }
        let items: Vec<(usize, Bounds)> = boxes.iter().copied().enumerate().collect();
        let (index, left) = Index::build(world, items.clone(), |i| i.1);

        let kept: Vec<usize> = index.items().iter().map(|i| i.0).collect();
        let expected: Vec<usize> = items
            .iter()
            .filter(|(k, b)| {
                b.dims() == world.dims()
                    && visible(&world, b, &boxes[..*k].iter().filter(|e| e.dims() == world.dims()).copied().collect::<Vec<_>>())
            })
            .map(|i| i.0)
            .collect();
        prop_assert_eq!(&kept, &expected);
        prop_assert_eq!(kept.len() + left.len(), items.len());

        for p in probes(&world, &boxes, &random) {
            let want = items.iter().find(|(_, b)| owns(&world, b, &p)).map(|i| i.0);
            let got = index.locate(&p).map(|i| i.0);
            prop_assert_eq!(got, want, "at {:?}", p);
        }
    }

    /// A tiling the planner could build (cuts of random leaves, one after the
    /// other) is indexed with one leaf per cell: no cell is divided, so the
    /// index holds two nodes per cell, whatever the cuts.
    #[test]
    fn a_guillotine_tiling_gets_one_leaf_per_cell(
        world in any_bounds(),
        cuts in prop::collection::vec((0usize..64, 0usize..3, 0.05f64..0.95), 0..60),
        random in prop::collection::vec(prop::array::uniform3(0.0f64..=1.0), 32),
    ) {
        let mut leaves = vec![world];
        for &(pick, axis, frac) in &cuts {
            let i = pick % leaves.len();
            let b = leaves[i];
            let axis = Axis::ALL[axis % b.dims()];
            if let Ok((lo, hi)) = b.split(axis, b.min(axis) + b.extent(axis) * frac) {
                leaves.swap_remove(i);
                leaves.push(lo);
                leaves.push(hi);
            }
        }
        let (index, left) = Index::build(world, leaves.clone(), |l| *l);
        prop_assert!(left.is_empty());
        prop_assert_eq!(index.node_count(), 2 * leaves.len() - 1);
        let boxes = leaves;
        for p in probes(&world, &boxes, &random) {
            let owners = boxes.iter().filter(|b| owns(&world, b, &p)).count();
            prop_assert_eq!(owners, 1, "{:?} owned {} times", p, owners);
            let got = index.locate(&p).unwrap();
            prop_assert!(owns(&world, got, &p));
        }
    }
}
