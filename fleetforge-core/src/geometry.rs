//! Axis-aligned boxes in one, two or three dimensions.
//!
//! Cells cover half-open boxes `[min, max)` on every axis, so that children tile
//! their parent with no point counted twice. The world's own upper faces are the
//! one exception callers must handle: [`Bounds::contains_closed`] includes them.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One of the three spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// The first axis, present in every world.
    X,
    /// The second axis, present in 2-D and 3-D worlds.
    Y,
    /// The third axis, present in 3-D worlds.
    Z,
}

impl Axis {
    /// All axes in order.
    pub const ALL: [Axis; 3] = [Axis::X, Axis::Y, Axis::Z];

    /// The position of this axis in coordinate arrays.
    pub const fn index(self) -> usize {
        match self {
            Axis::X => 0,
            Axis::Y => 1,
            Axis::Z => 2,
        }
    }

    /// The lowercase name used in specs and annotations (`x`, `y`, `z`).
    pub const fn name(self) -> &'static str {
        match self {
            Axis::X => "x",
            Axis::Y => "y",
            Axis::Z => "z",
        }
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A position in the world. Coordinates beyond the world's dimensions are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    /// Position along x.
    pub x: f64,
    /// Position along y (ignored in 1-D worlds).
    #[serde(default)]
    pub y: f64,
    /// Position along z (ignored in 1-D and 2-D worlds).
    #[serde(default)]
    pub z: f64,
}

impl Point {
    /// A point from its three coordinates.
    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Self { x, y, z }
    }

    /// The coordinate along `axis`.
    pub const fn get(&self, axis: Axis) -> f64 {
        match axis {
            Axis::X => self.x,
            Axis::Y => self.y,
            Axis::Z => self.z,
        }
    }
}

/// The closed interval `[min, max]` of one axis, as written in specs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Lower edge.
    pub min: f64,
    /// Upper edge; must be greater than `min`.
    pub max: f64,
}

impl Range {
    /// A range from its edges (not validated; see [`Bounds::new`]).
    pub const fn new(min: f64, max: f64) -> Self {
        Self { min, max }
    }

    /// `max - min`.
    pub fn extent(&self) -> f64 {
        self.max - self.min
    }
}

/// Why a box could not be built or cut.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GeometryError {
    /// An edge is NaN or infinite.
    #[error("{axis} bounds must be finite numbers")]
    NotFinite {
        /// The offending axis.
        axis: Axis,
    },
    /// `min` is not below `max`.
    #[error("{axis} bounds: min ({min}) must be less than max ({max})")]
    Empty {
        /// The offending axis.
        axis: Axis,
        /// The lower edge given.
        min: f64,
        /// The upper edge given.
        max: f64,
    },
    /// z was given without y.
    #[error("z bounds require y bounds")]
    ZWithoutY,
    /// The box has no such axis (for example a cut along y of a 1-D box).
    #[error("axis {axis} is not part of this {dims}-D box")]
    NoSuchAxis {
        /// The axis asked for.
        axis: Axis,
        /// The box's dimensions.
        dims: usize,
    },
    /// The cut does not fall strictly inside the box.
    #[error("cut at {at} along {axis} is outside ({min}, {max})")]
    CutOutside {
        /// The cut's axis.
        axis: Axis,
        /// The cut's coordinate.
        at: f64,
        /// The box's lower edge on that axis.
        min: f64,
        /// The box's upper edge on that axis.
        max: f64,
    },
}

/// An axis-aligned box of 1 to 3 dimensions. Always non-empty and finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BoundsRepr", into = "BoundsRepr")]
pub struct Bounds {
    min: [f64; 3],
    max: [f64; 3],
    dims: usize,
}

/// Serialized form of [`Bounds`]: `{x: {min, max}, y?: .., z?: ..}`.
#[derive(Serialize, Deserialize)]
struct BoundsRepr {
    x: Range,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    y: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    z: Option<Range>,
}

impl TryFrom<BoundsRepr> for Bounds {
    type Error = GeometryError;

    fn try_from(r: BoundsRepr) -> Result<Self, Self::Error> {
        Bounds::new(r.x, r.y, r.z)
    }
}

impl From<Bounds> for BoundsRepr {
    fn from(b: Bounds) -> Self {
        BoundsRepr {
            x: b.range(Axis::X).unwrap_or(Range::new(0.0, 0.0)),
            y: b.range(Axis::Y),
            z: b.range(Axis::Z),
        }
    }
}

impl Bounds {
    /// A box from per-axis ranges; y and z are optional, z only with y.
    pub fn new(x: Range, y: Option<Range>, z: Option<Range>) -> Result<Self, GeometryError> {
        if z.is_some() && y.is_none() {
            return Err(GeometryError::ZWithoutY);
        }
        let mut min = [0.0; 3];
        let mut max = [0.0; 3];
        let mut dims = 0;
        for (axis, range) in Axis::ALL.into_iter().zip([Some(x), y, z]) {
            let Some(r) = range else { break };
            if !r.min.is_finite() || !r.max.is_finite() {
                return Err(GeometryError::NotFinite { axis });
            }
            if r.min >= r.max {
                return Err(GeometryError::Empty {
                    axis,
                    min: r.min,
                    max: r.max,
                });
            }
            min[axis.index()] = r.min;
            max[axis.index()] = r.max;
            dims += 1;
        }
        Ok(Self { min, max, dims })
    }

    /// A 1-D box.
    pub fn line(x: (f64, f64)) -> Result<Self, GeometryError> {
        Self::new(Range::new(x.0, x.1), None, None)
    }

    /// A 2-D box.
    pub fn rect(x: (f64, f64), y: (f64, f64)) -> Result<Self, GeometryError> {
        Self::new(Range::new(x.0, x.1), Some(Range::new(y.0, y.1)), None)
    }

    /// A 3-D box.
    pub fn cuboid(x: (f64, f64), y: (f64, f64), z: (f64, f64)) -> Result<Self, GeometryError> {
        Self::new(
            Range::new(x.0, x.1),
            Some(Range::new(y.0, y.1)),
            Some(Range::new(z.0, z.1)),
        )
    }

    /// Number of dimensions (1, 2 or 3).
    pub const fn dims(&self) -> usize {
        self.dims
    }

    /// The axes this box spans, in order.
    pub fn axes(&self) -> impl Iterator<Item = Axis> + '_ {
        Axis::ALL.into_iter().take(self.dims)
    }

    /// The range along `axis`, or `None` when the box has no such axis.
    pub fn range(&self, axis: Axis) -> Option<Range> {
        (axis.index() < self.dims).then(|| Range::new(self.min[axis.index()], self.max[axis.index()]))
    }

    /// Lower edge along `axis` (0 for an absent axis).
    pub fn min(&self, axis: Axis) -> f64 {
        self.min[axis.index()]
    }

    /// Upper edge along `axis` (0 for an absent axis).
    pub fn max(&self, axis: Axis) -> f64 {
        self.max[axis.index()]
    }

    /// Extent along `axis` (0 for an absent axis).
    pub fn extent(&self, axis: Axis) -> f64 {
        self.max[axis.index()] - self.min[axis.index()]
    }

    /// Length, area or volume, by dimension.
    pub fn measure(&self) -> f64 {
        self.axes().map(|a| self.extent(a)).product()
    }

    /// The centre of the box.
    pub fn center(&self) -> Point {
        let c = |a: Axis| {
            if a.index() < self.dims {
                (self.min(a) + self.max(a)) / 2.0
            } else {
                0.0
            }
        };
        Point::new(c(Axis::X), c(Axis::Y), c(Axis::Z))
    }

    /// The longest axis; ties go to the earliest axis, so the choice is deterministic.
    pub fn longest_axis(&self) -> Axis {
        let mut best = Axis::X;
        for a in self.axes() {
            if self.extent(a) > self.extent(best) {
                best = a;
            }
        }
        best
    }

    /// Whether `p` lies in the half-open box `[min, max)` on every axis.
    pub fn contains(&self, p: &Point) -> bool {
        self.axes().all(|a| {
            let v = p.get(a);
            v >= self.min(a) && v < self.max(a)
        })
    }

    /// Whether `p` lies in the closed box `[min, max]` on every axis.
    pub fn contains_closed(&self, p: &Point) -> bool {
        self.axes().all(|a| {
            let v = p.get(a);
            v >= self.min(a) && v <= self.max(a)
        })
    }

    /// Whether `other` lies inside `self` (edges may touch).
    pub fn contains_bounds(&self, other: &Bounds) -> bool {
        self.dims == other.dims
            && self
                .axes()
                .all(|a| other.min(a) >= self.min(a) && other.max(a) <= self.max(a))
    }

    /// Whether the two boxes share interior volume.
    pub fn overlaps(&self, other: &Bounds) -> bool {
        self.dims == other.dims
            && self
                .axes()
                .all(|a| self.min(a) < other.max(a) && other.min(a) < self.max(a))
    }

    /// The smallest box containing both (their union when they tile a box).
    pub fn union(&self, other: &Bounds) -> Bounds {
        let mut out = *self;
        for a in self.axes() {
            let i = a.index();
            out.min[i] = self.min[i].min(other.min[i]);
            out.max[i] = self.max[i].max(other.max[i]);
        }
        out
    }

    /// The box both share, if they share interior volume.
    pub fn intersection(&self, other: &Bounds) -> Option<Bounds> {
        if !self.overlaps(other) {
            return None;
        }
        let mut out = *self;
        for a in self.axes() {
            let i = a.index();
            out.min[i] = self.min[i].max(other.min[i]);
            out.max[i] = self.max[i].min(other.max[i]);
        }
        Some(out)
    }

    /// Whether `parts`, taken not to overlap one another, cover all of `self`
    /// (their shares of it add up to its measure, within floating-point rounding).
    pub fn covered_by<'b>(&self, parts: impl IntoIterator<Item = &'b Bounds>) -> bool {
        let covered: f64 = parts
            .into_iter()
            .filter_map(|p| self.intersection(p))
            .map(|b| b.measure())
            .sum();
        covered >= self.measure() * (1.0 - 1e-9)
    }

    /// The other half of `self` once `part` is cut from it: `Some` only when
    /// `part` is a slab of `self` along exactly one axis, touching one of its
    /// faces, so that `part` and the result are the two halves of one cut.
    pub fn complement(&self, part: &Bounds) -> Option<Bounds> {
        if self.dims != part.dims || !self.contains_bounds(part) {
            return None;
        }
        let mut differing = self.axes().filter(|&a| self.range(a) != part.range(a));
        let axis = differing.next()?;
        if differing.next().is_some() {
            return None;
        }
        let (lo, hi) = if part.min(axis) == self.min(axis) {
            self.split(axis, part.max(axis)).ok()?
        } else if part.max(axis) == self.max(axis) {
            self.split(axis, part.min(axis)).ok()?
        } else {
            return None;
        };
        Some(if lo == *part { hi } else { lo })
    }

    /// Distance from `p` to the box (0 inside), for placing strays.
    pub fn distance_to(&self, p: &Point) -> f64 {
        self.axes()
            .map(|a| {
                let v = p.get(a);
                let d = (self.min(a) - v).max(v - self.max(a)).max(0.0);
                d * d
            })
            .sum::<f64>()
            .sqrt()
    }

    /// Cuts the box along `axis` at `at`, giving the lower and upper halves.
    pub fn split(&self, axis: Axis, at: f64) -> Result<(Bounds, Bounds), GeometryError> {
        if axis.index() >= self.dims {
            return Err(GeometryError::NoSuchAxis {
                axis,
                dims: self.dims,
            });
        }
        let (min, max) = (self.min(axis), self.max(axis));
        if !at.is_finite() || at <= min || at >= max {
            return Err(GeometryError::CutOutside { axis, at, min, max });
        }
        let mut lower = *self;
        let mut upper = *self;
        lower.max[axis.index()] = at;
        upper.min[axis.index()] = at;
        Ok((lower, upper))
    }

    /// Cuts the box into `n` slabs of equal extent along `axis`.
    pub fn slabs(&self, axis: Axis, n: usize) -> Vec<Bounds> {
        let (min, max) = (self.min(axis), self.max(axis));
        let step = (max - min) / n as f64;
        (0..n)
            .map(|k| {
                let mut b = *self;
                b.min[axis.index()] = if k == 0 { min } else { min + step * k as f64 };
                // The last slab ends exactly on the edge, so no sliver is lost to rounding.
                b.max[axis.index()] = if k + 1 == n {
                    max
                } else {
                    min + step * (k + 1) as f64
                };
                b
            })
            .collect()
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, a) in self.axes().enumerate() {
            if k > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{a}=[{},{})", self.min(a), self.max(a))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_non_finite_ranges() {
        assert!(matches!(
            Bounds::line((5.0, 5.0)),
            Err(GeometryError::Empty { axis: Axis::X, .. })
        ));
        assert!(matches!(
            Bounds::rect((0.0, 1.0), (0.0, f64::NAN)),
            Err(GeometryError::NotFinite { axis: Axis::Y })
        ));
        assert_eq!(
            Bounds::new(Range::new(0.0, 1.0), None, Some(Range::new(0.0, 1.0))),
            Err(GeometryError::ZWithoutY)
        );
    }

    #[test]
    fn split_tiles_and_union_restores() {
        let b = Bounds::cuboid((0.0, 10.0), (-5.0, 5.0), (0.0, 2.0)).unwrap();
        let (lo, hi) = b.split(Axis::X, 3.0).unwrap();
        assert_eq!(lo.max(Axis::X), 3.0);
        assert_eq!(hi.min(Axis::X), 3.0);
        assert!(!lo.overlaps(&hi));
        assert_eq!(lo.union(&hi), b);
        assert!((lo.measure() + hi.measure() - b.measure()).abs() < 1e-12);
        assert!(b.split(Axis::X, 10.0).is_err());
        assert!(Bounds::line((0.0, 1.0)).unwrap().split(Axis::Y, 0.5).is_err());
    }

    #[test]
    fn complement_of_a_slab() {
        let p = Bounds::rect((0.0, 10.0), (0.0, 4.0)).unwrap();
        let (lo, hi) = p.split(Axis::X, 3.0).unwrap();
        assert_eq!(p.complement(&lo), Some(hi));
        assert_eq!(p.complement(&hi), Some(lo));
        let corner = Bounds::rect((0.0, 3.0), (0.0, 2.0)).unwrap();
        assert_eq!(p.complement(&corner), None);
        assert_eq!(p.complement(&p), None);
    }

    #[test]
    fn intersection_and_cover() {
        let p = Bounds::rect((0.0, 10.0), (0.0, 4.0)).unwrap();
        let (lo, hi) = p.split(Axis::X, 3.0).unwrap();
        assert_eq!(p.intersection(&lo), Some(lo));
        assert_eq!(lo.intersection(&hi), None);
        assert!(p.covered_by([&lo, &hi]));
        assert!(!p.covered_by([&lo]));
        let wider = Bounds::rect((-5.0, 20.0), (-1.0, 9.0)).unwrap();
        assert!(p.covered_by([&wider]));
    }

    #[test]
    fn longest_axis_prefers_earlier_on_ties() {
        let b = Bounds::rect((0.0, 4.0), (0.0, 4.0)).unwrap();
        assert_eq!(b.longest_axis(), Axis::X);
        let b = Bounds::rect((0.0, 4.0), (0.0, 9.0)).unwrap();
        assert_eq!(b.longest_axis(), Axis::Y);
    }

    #[test]
    fn containment_is_half_open() {
        let b = Bounds::rect((0.0, 1.0), (0.0, 1.0)).unwrap();
        assert!(b.contains(&Point::new(0.0, 0.0, 0.0)));
        assert!(!b.contains(&Point::new(1.0, 0.5, 0.0)));
        assert!(b.contains_closed(&Point::new(1.0, 0.5, 0.0)));
        assert_eq!(b.distance_to(&Point::new(2.0, 0.5, 0.0)), 1.0);
    }

    #[test]
    fn serde_round_trip_keeps_dimensions() {
        let b = Bounds::rect((0.0, 1.0), (2.0, 3.0)).unwrap();
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"x":{"min":0.0,"max":1.0},"y":{"min":2.0,"max":3.0}}"#);
        let back: Bounds = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        let bad = serde_json::from_str::<Bounds>(r#"{"x":{"min":1,"max":0}}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("min (1) must be less than max (0)")
        );
    }
}
