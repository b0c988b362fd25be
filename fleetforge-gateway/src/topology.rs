//! Which of a world's authoritative cells are face neighbours: the cells a
//! player can walk into from a cell, and the cells a cell hands a crossing
//! session to.
//!
//! Two cells are neighbours when their boxes share a face: along one axis they
//! touch (one ends where the other begins) and along every other axis their
//! ranges overlap by more than a point. Boxes that meet only along an edge or at
//! a corner are not neighbours (a player passes through a face first). Cells
//! whose boxes overlap are neighbours too: while a split or merge completes, an
//! old cell keeps the part of its space the new cells do not cover yet, and
//! players cross between the two.
//!
//! Found by a sweep along the first axis: a cell is compared only with the cells
//! whose range along it meets its own, so a grid of n cells costs about n times
//! a column, not n squared.

use std::cmp::Ordering;

use fleetforge_core::{Axis, Bounds};

/// Whether boxes `a` and `b` (of the same dimensions) share a face or overlap.
pub fn adjacent(a: &Bounds, b: &Bounds) -> bool {
    if a.dims() != b.dims() {
        return false;
    }
    let mut touching = 0;
    for axis in a.axes() {
        let low = a.min(axis).max(b.min(axis));
        let high = a.max(axis).min(b.max(axis));
        match low.total_cmp(&high) {
            Ordering::Greater => return false,
            Ordering::Equal => touching += 1,
            Ordering::Less => {}
        }
    }
    touching <= 1
}

/// For each box of `boxes`, the positions in `boxes` of its neighbours, in
/// ascending order.
pub fn neighbours(boxes: &[Bounds]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&i, &j| boxes[i].min(Axis::X).total_cmp(&boxes[j].min(Axis::X)));
    let mut found = vec![Vec::new(); boxes.len()];
    for (k, &i) in order.iter().enumerate() {
        let reach = boxes[i].max(Axis::X);
        // Later boxes start at or after this one; once one starts beyond its end,
        // so do all the rest.
        for &j in order[k + 1..]
            .iter()
            .take_while(|&&j| boxes[j].min(Axis::X) <= reach)
        {
            if adjacent(&boxes[i], &boxes[j]) {
                found[i].push(j);
                found[j].push(i);
            }
        }
    }
    for list in &mut found {
        list.sort_unstable();
    }
    found
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rect(x: (f64, f64), y: (f64, f64)) -> Bounds {
        Bounds::rect(x, y).unwrap()
    }

    #[test]
    fn faces_count_edges_and_corners_do_not() {
        let a = rect((0.0, 10.0), (0.0, 10.0));
        assert!(adjacent(&a, &rect((10.0, 20.0), (5.0, 15.0))), "a shared face");
        assert!(!adjacent(&a, &rect((10.0, 20.0), (10.0, 20.0))), "a corner");
        assert!(!adjacent(&a, &rect((11.0, 20.0), (0.0, 10.0))), "a gap");
        assert!(adjacent(&a, &rect((5.0, 20.0), (5.0, 20.0))), "an overlap");
        let line = |x0, x1| Bounds::line((x0, x1)).unwrap();
        assert!(
            adjacent(&line(0.0, 1.0), &line(1.0, 2.0)),
            "1-D: a point is a face"
        );
        assert!(!adjacent(&a, &line(0.0, 10.0)), "other dimensions");
    }

    #[test]
    fn a_grid_has_four_neighbours_inside_and_fewer_on_its_edges() {
        let boxes: Vec<Bounds> = (0..4)
            .flat_map(|i| {
                (0..4).map(move |j| {
                    let (i, j) = (f64::from(i), f64::from(j));
                    rect((i, i + 1.0), (j, j + 1.0))
                })
            })
            .collect();
        let n = neighbours(&boxes);
        let counts: Vec<usize> = n.iter().map(Vec::len).collect();
        assert_eq!(counts.iter().filter(|&&c| c == 4).count(), 4);
        assert_eq!(counts.iter().filter(|&&c| c == 3).count(), 8);
        assert_eq!(counts.iter().filter(|&&c| c == 2).count(), 4);
    }

    fn any_box() -> impl Strategy<Value = Bounds> {
        (0..8i32, 1..4i32, 0..8i32, 1..4i32)
            .prop_map(|(x, w, y, h)| rect((f64::from(x), f64::from(x + w)), (f64::from(y), f64::from(y + h))))
    }

    proptest! {
        #[test]
        fn the_sweep_finds_exactly_the_pairs_a_scan_finds(boxes in proptest::collection::vec(any_box(), 0..24)) {
            let swept = neighbours(&boxes);
            for (i, a) in boxes.iter().enumerate() {
                let scanned: Vec<usize> = boxes
                    .iter()
                    .enumerate()
                    .filter(|&(j, b)| j != i && adjacent(a, b))
                    .map(|(j, _)| j)
                    .collect();
                prop_assert_eq!(&swept[i], &scanned);
            }
        }
    }
}
