//! Session hand-over: which receiving cell takes each session.
//!
//! A pure assignment by position. Every session goes to exactly one target, so the
//! number of sessions is conserved: a session inside a target's half-open box goes
//! there; one on the world's upper faces goes to the target whose closed box holds
//! it; one outside every target (a client that strayed past the edge) goes to the
//! nearest target. Ties go to the earliest target, so the result is deterministic.

use crate::geometry::{Bounds, Point};

/// The index in `targets` of the cell that takes a session at `p`; `None` only when
/// `targets` is empty.
pub fn target_for(p: &Point, targets: &[Bounds]) -> Option<usize> {
    targets
        .iter()
        .position(|b| b.contains(p))
        .or_else(|| targets.iter().position(|b| b.contains_closed(p)))
        .or_else(|| {
            targets
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| a.distance_to(p).total_cmp(&b.distance_to(p)))
                .map(|(i, _)| i)
        })
}

/// Splits `sessions` among `targets` by position: the result has one list per
/// target, in the targets' order, and holds every session exactly once. `None`
/// when there is no target to hand over to.
pub fn assign<T>(
    sessions: Vec<T>,
    position: impl Fn(&T) -> Point,
    targets: &[Bounds],
) -> Option<Vec<Vec<T>>> {
    if targets.is_empty() {
        return None;
    }
    let mut out: Vec<Vec<T>> = targets.iter().map(|_| Vec::new()).collect();
    for s in sessions {
        let i = target_for(&position(&s), targets)?;
        out[i].push(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Axis;

    #[test]
    fn sessions_go_to_the_cell_that_contains_them() {
        let parent = Bounds::rect((0.0, 10.0), (0.0, 10.0)).unwrap();
        let (lo, hi) = parent.split(Axis::X, 4.0).unwrap();
        let targets = [lo, hi];
        let sessions = vec![
            ("a", Point::new(1.0, 1.0, 0.0)),
            ("b", Point::new(4.0, 5.0, 0.0)),
            ("c", Point::new(10.0, 10.0, 0.0)),
            ("d", Point::new(-3.0, 2.0, 0.0)),
        ];
        let out = assign(sessions, |s| s.1, &targets).unwrap();
        let names = |v: &Vec<(&str, Point)>| v.iter().map(|s| s.0.to_owned()).collect::<Vec<String>>();
        assert_eq!(names(&out[0]), vec!["a", "d"]);
        assert_eq!(names(&out[1]), vec!["b", "c"]);
        assert!(assign(vec![1], |_| Point::default(), &[]).is_none());
    }
}
