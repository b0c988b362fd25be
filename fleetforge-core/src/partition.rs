//! The initial partition: a world's bounds cut into `initialCells` root cells.

use crate::cell::CellId;
use crate::geometry::{Axis, Bounds};

/// Cells per axis of the grid that splits `bounds` into `n` cells.
///
/// Of all ways to write `n` as a product over the box's axes, the one whose cells
/// are closest to cubes (smallest ratio of longest to shortest cell edge) wins, so
/// a square world of 4 cells is 2 x 2 and not 4 slabs. Ties go to the shape with
/// the fewest cells along its busiest axis (2 x 2 x 2 over 4 x 2 x 1), then to more
/// cells along x. A prime `n` has no choice but slabs.
pub fn grid_shape(bounds: &Bounds, n: u32) -> [u32; 3] {
    let n = n.max(1);
    let dims = bounds.dims();
    let mut best: Option<([u32; 3], f64)> = None;
    let busiest = |s: &[u32; 3]| s.iter().copied().max().unwrap_or(1);
    let divisors: Vec<u32> = (1..=n).filter(|d| n.is_multiple_of(*d)).collect();
    for &a in &divisors {
        for &b in divisors.iter().filter(|&&b| (n / a).is_multiple_of(b)) {
            let c = n / a / b;
            let shape = [a, b, c];
            if shape.iter().skip(dims).any(|&k| k != 1) {
                continue;
            }
            let edges: Vec<f64> = bounds
                .axes()
                .map(|ax| bounds.extent(ax) / f64::from(shape[ax.index()]))
                .collect();
            let longest = edges.iter().copied().fold(f64::MIN, f64::max);
            let shortest = edges.iter().copied().fold(f64::MAX, f64::min);
            let ratio = longest / shortest;
            // The enumeration visits larger x counts later, so an equal tie replaces
            // the best so far. The tolerance keeps ties from depending on rounding.
            match &best {
                Some((_, r)) if ratio > *r * (1.0 + 1e-12) => {}
                Some((b, r)) if (ratio - *r).abs() <= *r * 1e-12 => {
                    if busiest(&shape) <= busiest(b) {
                        best = Some((shape, *r));
                    }
                }
                _ => best = Some((shape, ratio)),
            }
        }
    }
    best.map(|(s, _)| s).unwrap_or([n, 1, 1])
}

/// The root cells of a world: `n` boxes that tile `bounds` in a balanced grid,
/// numbered with x varying fastest.
pub fn initial_partition(bounds: &Bounds, n: u32) -> Vec<(CellId, Bounds)> {
    let shape = grid_shape(bounds, n);
    let xs = bounds.slabs(Axis::X, shape[0] as usize);
    let mut out = Vec::with_capacity(n as usize);
    let mut index = 0;
    let per_axis = |b: &Bounds, axis: Axis, k: u32| {
        if axis.index() < bounds.dims() {
            b.slabs(axis, k as usize)
        } else {
            vec![*b]
        }
    };
    // Build z-major, then y, then x so that indices vary fastest along x.
    let mut columns: Vec<Vec<Bounds>> = Vec::new();
    for x in &xs {
        let mut col = Vec::new();
        for y in per_axis(x, Axis::Y, shape[1]) {
            col.extend(per_axis(&y, Axis::Z, shape[2]));
        }
        columns.push(col);
    }
    let per_column = columns.first().map_or(0, Vec::len);
    for k in 0..per_column {
        for col in &columns {
            out.push((CellId::root(index), col[k]));
            index += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_world_gets_a_square_grid() {
        let b = Bounds::rect((0.0, 100.0), (0.0, 100.0)).unwrap();
        assert_eq!(grid_shape(&b, 4), [2, 2, 1]);
        assert_eq!(grid_shape(&b, 9), [3, 3, 1]);
        assert_eq!(grid_shape(&b, 7), [7, 1, 1]);
    }

    #[test]
    fn wide_world_gets_more_columns() {
        let b = Bounds::rect((0.0, 400.0), (0.0, 100.0)).unwrap();
        assert_eq!(grid_shape(&b, 4), [4, 1, 1]);
        assert_eq!(grid_shape(&b, 16), [8, 2, 1]);
    }

    #[test]
    fn cube_world_uses_all_three_axes() {
        let b = Bounds::cuboid((0.0, 10.0), (0.0, 10.0), (0.0, 10.0)).unwrap();
        assert_eq!(grid_shape(&b, 8), [2, 2, 2]);
        assert_eq!(grid_shape(&b, 27), [3, 3, 3]);
        // 4 x 2 x 1 has cells as cube-like as 2 x 2 x 2 here; the even grid wins.
        let flat = Bounds::cuboid((0.0, 4000.0), (0.0, 4000.0), (0.0, 2000.0)).unwrap();
        assert_eq!(grid_shape(&flat, 8), [2, 2, 2]);
    }

    #[test]
    fn partition_tiles_the_world() {
        let b = Bounds::cuboid((0.0, 30.0), (0.0, 20.0), (-5.0, 5.0)).unwrap();
        let cells = initial_partition(&b, 12);
        assert_eq!(cells.len(), 12);
        let total: f64 = cells.iter().map(|(_, c)| c.measure()).sum();
        assert!((total - b.measure()).abs() <= 1e-9 * b.measure());
        for (i, (_, x)) in cells.iter().enumerate() {
            for (_, y) in &cells[i + 1..] {
                assert!(!x.overlaps(y), "{x} overlaps {y}");
            }
        }
        let ids: Vec<String> = cells.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids[0], "c0");
        assert_eq!(ids[11], "c11");
    }
}
