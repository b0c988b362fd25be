//! Simulated players: the admin request that adds or removes them, where new
//! players appear, and how a ramp spreads additions over time.

use std::time::Duration;

use fleetforge_core::{Bounds, Point};
use rand::Rng;
use serde_json::Value;

use crate::body;

/// Most players one request may add: enough to overload any cell, few enough
/// that a typo cannot exhaust the process's memory.
pub const MAX_ADD: u32 = 1_000_000;
/// Longest ramp, in seconds.
pub const MAX_RAMP_SECONDS: f64 = 3600.0;
/// Ramp steps per second: smooth enough for a load graph, cheap enough to ignore.
pub const RAMP_STEPS_PER_SECOND: f64 = 20.0;

/// Where new players appear.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// Uniformly in the cell's bounds.
    Uniform,
    /// Uniformly in the given box, which may reach past the cell (to make strays).
    Within(Bounds),
    /// Normally around `center` with standard deviation `spread` on every axis,
    /// clamped into the cell's bounds.
    Around {
        /// The hot spot.
        center: Point,
        /// Standard deviation along each axis, in world units.
        spread: f64,
    },
}

/// A `POST /v1/admin/players` request.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayersRequest {
    /// `{"add": n, "distribution": D, "rampSeconds": s}`.
    Add {
        /// Players to add.
        count: u32,
        /// Where they appear.
        distribution: Distribution,
        /// Over how long the additions are spread; zero adds them at once.
        ramp: Duration,
    },
    /// `{"remove": n}`: the `n` oldest sessions leave.
    Remove {
        /// Players to remove.
        count: u32,
    },
}

impl PlayersRequest {
    /// Parses the request body for a cell covering `cell`; the error names the
    /// field at fault.
    pub fn parse(body: &[u8], cell: &Bounds) -> Result<Self, String> {
        let mut fields = body::object(body)?;
        let add: Option<u32> = body::take(&mut fields, "", "add")?;
        let remove: Option<u32> = body::take(&mut fields, "", "remove")?;
        let distribution = fields.remove("distribution");
        let ramp: Option<f64> = body::take(&mut fields, "", "rampSeconds")?;
        body::no_other_fields(&fields, "")?;
        match (add, remove) {
            (Some(count), None) => {
                if count > MAX_ADD {
                    return Err(format!("add: at most {MAX_ADD} players per request, got {count}"));
                }
                let distribution = match distribution {
                    None | Some(Value::Null) => Distribution::Uniform,
                    Some(v) => Distribution::parse(v, cell)?,
                };
                let secs = ramp.unwrap_or(0.0);
                if !secs.is_finite() || !(0.0..=MAX_RAMP_SECONDS).contains(&secs) {
                    return Err(format!(
                        "rampSeconds: must be between 0 and {MAX_RAMP_SECONDS}, got {secs}"
                    ));
                }
                Ok(Self::Add {
                    count,
                    distribution,
                    ramp: Duration::from_secs_f64(secs),
                })
            }
            (None, Some(count)) => {
                if distribution.is_some() || ramp.is_some() {
                    return Err("remove: takes no distribution or rampSeconds".to_owned());
                }
                Ok(Self::Remove { count })
            }
            (Some(_), Some(_)) => Err("add: give either add or remove, not both".to_owned()),
            (None, None) => Err("add: give add (players to add) or remove (players to remove)".to_owned()),
        }
    }
}

impl Distribution {
    /// Reads `{"uniform": {}}`, `{"within": <bounds>}` or
    /// `{"around": {"center": <point>, "spread": f}}`.
    fn parse(value: Value, cell: &Bounds) -> Result<Self, String> {
        const PATH: &str = "distribution";
        let fields = body::as_object(value, PATH)?;
        let mut entries = fields.into_iter();
        let (Some((kind, value)), None) = (entries.next(), entries.next()) else {
            return Err(format!(
                "{PATH}: expected exactly one of uniform, within or around"
            ));
        };
        match kind.as_str() {
            "uniform" => {
                let fields = body::as_object(value, "distribution.uniform")?;
                body::no_other_fields(&fields, "distribution.uniform")?;
                Ok(Self::Uniform)
            }
            "within" => {
                let b: Bounds = body::decode(value, "distribution.within")?;
                if b.dims() != cell.dims() {
                    return Err(format!(
                        "distribution.within: a {}-D box for a {}-D cell",
                        b.dims(),
                        cell.dims()
                    ));
                }
                Ok(Self::Within(b))
            }
            "around" => {
                const AROUND: &str = "distribution.around";
                let mut fields = body::as_object(value, AROUND)?;
                let center: Option<Point> = body::take(&mut fields, AROUND, "center")?;
                let spread: Option<f64> = body::take(&mut fields, AROUND, "spread")?;
                body::no_other_fields(&fields, AROUND)?;
                let center = center.ok_or_else(|| format!("{AROUND}.center: required"))?;
                if ![center.x, center.y, center.z].iter().all(|c| c.is_finite()) {
                    return Err(format!("{AROUND}.center: coordinates must be finite"));
                }
                let spread = spread.ok_or_else(|| format!("{AROUND}.spread: required"))?;
                if !spread.is_finite() || spread < 0.0 {
                    return Err(format!(
                        "{AROUND}.spread: must be a non-negative number, got {spread}"
                    ));
                }
                Ok(Self::Around { center, spread })
            }
            other => Err(format!(
                "{PATH}: unknown distribution {other:?}: expected uniform, within or around"
            )),
        }
    }

    /// Where one new player of a cell covering `cell` appears.
    pub fn sample(&self, cell: &Bounds, rng: &mut impl Rng) -> Point {
        match self {
            Self::Uniform => uniform_in(cell, rng),
            Self::Within(b) => uniform_in(b, rng),
            Self::Around { center, spread } => {
                let mut c = [0.0; 3];
                for axis in cell.axes() {
                    let v = center.get(axis) + spread * standard_normal(rng);
                    c[axis.index()] = clamp_half_open(v, cell.min(axis), cell.max(axis));
                }
                Point::new(c[0], c[1], c[2])
            }
        }
    }
}

/// A point drawn uniformly from the half-open box `b`; coordinates of axes the
/// box lacks are 0.
fn uniform_in(b: &Bounds, rng: &mut impl Rng) -> Point {
    let mut c = [0.0; 3];
    for axis in b.axes() {
        let (min, max) = (b.min(axis), b.max(axis));
        // Rounding may land a float sample on the upper edge, which the box
        // does not contain.
        c[axis.index()] = clamp_half_open(rng.random_range(min..max), min, max);
    }
    Point::new(c[0], c[1], c[2])
}

/// `v` moved into `[min, max)`: a cell's box excludes its upper faces. The top
/// is kept a billionth of the extent below `max`, because a coordinate one step
/// below it may be read back from JSON as `max` itself (parsers are allowed to
/// round the last digit), putting the player on the face after all.
fn clamp_half_open(v: f64, min: f64, max: f64) -> f64 {
    let top = (max - (max - min) * 1e-9).min(max.next_down()).max(min);
    if v.is_nan() || v < min {
        min
    } else if v > top {
        top
    } else {
        v
    }
}

/// A standard normal sample (Box-Muller), enough for a hot spot without another
/// dependency.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    // `random` is in [0, 1); 1 - it is in (0, 1], whose logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// How many of `count` players to add at each step of a ramp lasting `ramp`:
/// evenly spread, summing to `count`. One step when there is no ramp.
pub fn ramp_steps(count: u32, ramp: Duration) -> Vec<u32> {
    let steps = (ramp.as_secs_f64() * RAMP_STEPS_PER_SECOND).ceil().max(1.0) as u64;
    let count = u64::from(count);
    (0..steps)
        .map(|k| {
            let share = count * (k + 1) / steps - count * k / steps;
            u32::try_from(share).unwrap_or(u32::MAX)
        })
        .collect()
}

/// Time between two ramp steps.
pub fn ramp_interval() -> Duration {
    Duration::from_secs_f64(1.0 / RAMP_STEPS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn cell() -> Bounds {
        Bounds::rect((0.0, 100.0), (200.0, 300.0)).unwrap()
    }

    fn parse(json: &str) -> Result<PlayersRequest, String> {
        PlayersRequest::parse(json.as_bytes(), &cell())
    }

    #[test]
    fn every_distribution_stays_in_its_box() {
        let cell = cell();
        let mut rng = StdRng::seed_from_u64(7);
        let hot = Bounds::rect((10.0, 20.0), (250.0, 251.0)).unwrap();
        let cases = [
            (Distribution::Uniform, cell),
            (Distribution::Within(hot), hot),
            // A centre on the edge with a wide spread: half the samples fall
            // outside before clamping.
            (
                Distribution::Around {
                    center: Point::new(100.0, 200.0, 0.0),
                    spread: 50.0,
                },
                cell,
            ),
            (
                Distribution::Around {
                    center: Point::new(-1e6, 1e6, 0.0),
                    spread: 0.0,
                },
                cell,
            ),
        ];
        for (d, inside) in cases {
            for _ in 0..2_000 {
                let p = d.sample(&cell, &mut rng);
                assert!(inside.contains(&p), "{d:?} gave {p:?}");
                assert_eq!(p.z, 0.0);
            }
        }
        // A tight hot spot really is tight.
        let d = Distribution::Around {
            center: Point::new(50.0, 250.0, 0.0),
            spread: 1.0,
        };
        let near = (0..1_000)
            .filter(|_| (d.sample(&cell, &mut rng).x - 50.0).abs() < 4.0)
            .count();
        assert!(near > 990, "{near}");
    }

    #[test]
    fn clamping_excludes_the_upper_face() {
        let top = clamp_half_open(5.0, 0.0, 5.0);
        assert!(top < 5.0 && top > 4.999_999, "{top}");
        // Written and read back as JSON, the top stays below the face.
        let back: f64 = serde_json::from_str(&serde_json::to_string(&top).unwrap()).unwrap();
        assert!(back < 5.0);
        // Huge coordinates where a billionth of the extent is below one step.
        assert!(clamp_half_open(2e20, 1e20, 1e20 + 1e5) < 1e20 + 1e5);
        assert_eq!(clamp_half_open(f64::NAN, 0.0, 5.0), 0.0);
        assert_eq!(clamp_half_open(-1.0, 0.0, 5.0), 0.0);
        assert_eq!(clamp_half_open(2.5, 0.0, 5.0), 2.5);
    }

    #[test]
    fn requests_parse_with_defaults() {
        assert_eq!(
            parse(r#"{"add": 5}"#),
            Ok(PlayersRequest::Add {
                count: 5,
                distribution: Distribution::Uniform,
                ramp: Duration::ZERO
            })
        );
        assert_eq!(
            parse(
                r#"{"add": 5, "distribution": {"within": {"x":{"min":0,"max":1},"y":{"min":200,"max":201}}}, "rampSeconds": 1.5}"#
            ),
            Ok(PlayersRequest::Add {
                count: 5,
                distribution: Distribution::Within(Bounds::rect((0.0, 1.0), (200.0, 201.0)).unwrap()),
                ramp: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse(r#"{"add": 1, "distribution": {"around": {"center": {"x": 1, "y": 2}, "spread": 3}}}"#),
            Ok(PlayersRequest::Add {
                count: 1,
                distribution: Distribution::Around {
                    center: Point::new(1.0, 2.0, 0.0),
                    spread: 3.0
                },
                ramp: Duration::ZERO
            })
        );
        assert_eq!(parse(r#"{"remove": 3}"#), Ok(PlayersRequest::Remove { count: 3 }));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let starts = |json: &str, field: &str| {
            let e = parse(json).unwrap_err();
            assert!(e.starts_with(field), "{json}: {e}");
        };
        starts(r#"{"add": -1}"#, "add: ");
        starts(r#"{"add": "x"}"#, "add: ");
        starts(r#"{}"#, "add: ");
        starts(r#"{"add": 1, "remove": 1}"#, "add: ");
        starts(r#"{"add": 2000000}"#, "add: ");
        starts(r#"{"add": 1, "rampSeconds": -1}"#, "rampSeconds: ");
        starts(r#"{"add": 1, "ramp_seconds": 1}"#, "ramp_seconds: unknown field");
        starts(r#"{"add": 1, "distribution": {"gauss": {}}}"#, "distribution: ");
        starts(
            r#"{"add": 1, "distribution": {"uniform": {}, "within": {}}}"#,
            "distribution: ",
        );
        starts(
            r#"{"add": 1, "distribution": {"within": {"x":{"min":0,"max":1}}}}"#,
            "distribution.within: ",
        );
        starts(
            r#"{"add": 1, "distribution": {"within": {"x":{"min":1,"max":0}}}}"#,
            "distribution.within: ",
        );
        starts(
            r#"{"add": 1, "distribution": {"around": {"spread": 1}}}"#,
            "distribution.around.center: ",
        );
        starts(
            r#"{"add": 1, "distribution": {"around": {"center": {"x": 0}, "spread": -2}}}"#,
            "distribution.around.spread: ",
        );
        starts(r#"{"remove": 1, "rampSeconds": 1}"#, "remove: ");
        starts("not json", "body: ");
    }

    #[test]
    fn a_ramp_spreads_every_player_over_its_steps() {
        assert_eq!(ramp_steps(7, Duration::ZERO), vec![7]);
        let steps = ramp_steps(1_000, Duration::from_secs(2));
        assert_eq!(steps.len(), 40);
        assert_eq!(steps.iter().sum::<u32>(), 1_000);
        assert!(steps.iter().all(|&s| s == 25));
        let few = ramp_steps(3, Duration::from_secs(1));
        assert_eq!(few.iter().sum::<u32>(), 3);
        assert_eq!(
            ramp_steps(u32::MAX, Duration::from_secs(3600))
                .iter()
                .map(|&s| u64::from(s))
                .sum::<u64>(),
            u64::from(u32::MAX)
        );
    }
}
