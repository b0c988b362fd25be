//! The query string of a locate request,
//! `GET /v1/worlds/{namespace}/{world}/locate?x=..&y=..[&z=..]`, read into a
//! position of the world.
//!
//! The query names one number per axis of the world and nothing else. Every
//! problem is an error that names the parameter at fault and says what is wrong
//! with it ([`QueryError::Invalid`], a 400 once there is an HTTP API); a position
//! that is well formed but outside the world is an error of its own
//! ([`QueryError::OutsideWorld`], a 422). The reader is strict because a player
//! silently located somewhere else than they asked is worse than an error:
//!
//! - a missing coordinate, or a coordinate with no value, is an error, never 0;
//! - a value must be a finite decimal number (`12`, `-3.5`, `1e3`); `NaN`,
//!   `inf` and numbers too large for a double are refused;
//! - an axis the world does not have (`z` in a 2-D world), a parameter given
//!   twice, and any other parameter are refused;
//! - names and values are percent-decoded as an HTML form encodes them (`+` is
//!   a space, `%2D` is `-`); a malformed escape or bytes that are not UTF-8 are
//!   refused.
//!
//! Empty pairs (`x=1&&y=2`, a trailing `&`) are ignored, as browsers write them.
//! Problems are reported in the order they appear, the first one only. What an
//! error echoes of the request is cut short, so a long query cannot make a long
//! answer. Nothing here panics, whatever the input (property-tested).

use std::fmt;

use fleetforge_core::{Axis, Bounds, Point};
use thiserror::Error;

/// The longest part of a parameter name or value an error repeats back.
const ECHO_LIMIT: usize = 32;

/// Why a locate query cannot be answered with a position.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QueryError {
    /// The query is malformed: it names the parameter at fault and the problem.
    #[error("query parameter {parameter:?}: {problem}")]
    Invalid {
        /// The parameter at fault, as decoded (cut short when long).
        parameter: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The position is well formed but lies outside the world.
    #[error(
        "{axis}={} is outside the world, whose {axis} goes from {} to {}",
        Num(*value), Num(*min), Num(*max)
    )]
    OutsideWorld {
        /// The first axis along which the position is outside.
        axis: Axis,
        /// The coordinate given.
        value: f64,
        /// The world's lower edge along `axis`.
        min: f64,
        /// The world's upper edge along `axis`.
        max: f64,
    },
}

impl QueryError {
    /// The parameter the error is about.
    pub fn parameter(&self) -> &str {
        match self {
            QueryError::Invalid { parameter, .. } => parameter,
            QueryError::OutsideWorld { axis, .. } => axis.name(),
        }
    }

    /// Whether the query was well formed and only the position is outside the
    /// world (a 422 rather than a 400).
    pub fn is_outside_world(&self) -> bool {
        matches!(self, QueryError::OutsideWorld { .. })
    }
}

/// What is wrong with one parameter of a locate query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A coordinate of the world is not given.
    Missing,
    /// The parameter is given without `=value`.
    NoValue,
    /// The value is not a decimal number.
    NotANumber {
        /// The value given, as decoded (cut short when long).
        value: String,
    },
    /// The value is a number but not a finite one (`NaN`, `inf`, `1e999`).
    NotFinite {
        /// The value given, as decoded (cut short when long).
        value: String,
    },
    /// The axis exists, but not in this world.
    NoSuchAxis {
        /// The world's dimensions.
        dims: usize,
    },
    /// The parameter is given more than once.
    Repeated,
    /// The parameter is not one a locate query takes.
    Unknown {
        /// The world's dimensions, to say which parameters it takes.
        dims: usize,
    },
    /// The name or value is not valid percent-encoded UTF-8.
    BadEncoding,
}

/// A coordinate as an error shows it: plainly, or in scientific notation when
/// plain digits would run long (`1e300` is 301 digits).
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.abs() < 1e15 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

/// `x`, `x, y` or `x, y, z`: the parameters a world of `dims` dimensions takes.
struct Expected(usize);

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, axis) in Axis::ALL.iter().take(self.0.clamp(1, 3)).enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            f.write_str(axis.name())?;
        }
        Ok(())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("is required"),
            Problem::NoValue => f.write_str("has no value; give it as name=number"),
            Problem::NotANumber { value } => {
                write!(f, "{value:?} is not a decimal number")?;
                if value.starts_with(' ') {
                    // The usual cause: a sign written as `+`, which a query string
                    // reads as a space.
                    f.write_str(" (a '+' in a query string is a space: write %2B, or no sign)")?;
                }
                Ok(())
            }
            Problem::NotFinite { value } => write!(f, "{value:?} is not a finite number"),
            Problem::NoSuchAxis { dims } => {
                write!(f, "this world has {dims} dimensions ({})", Expected(*dims))
            }
            Problem::Repeated => f.write_str("is given more than once"),
            Problem::Unknown { dims } => {
                write!(f, "is not a parameter of locate (it takes {})", Expected(*dims))
            }
            Problem::BadEncoding => f.write_str("is not valid percent-encoded UTF-8"),
        }
    }
}

/// Reads the query string of a locate request (without the leading `?`) into a
/// position of the world with bounds `world`. Coordinates of axes the world does
/// not have are 0 in the result.
pub fn parse_locate(query: &str, world: &Bounds) -> Result<Point, QueryError> {
    let dims = world.dims();
    let invalid = |parameter: &str, problem| QueryError::Invalid {
        parameter: echo(parameter),
        problem,
    };
    let mut coords: [Option<f64>; 3] = [None; 3];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        let name = decode(raw_name).ok_or_else(|| invalid(raw_name, Problem::BadEncoding))?;
        let axis = match name.as_str() {
            "x" => Axis::X,
            "y" => Axis::Y,
            "z" => Axis::Z,
            _ => return Err(invalid(&name, Problem::Unknown { dims })),
        };
        if axis.index() >= dims {
            return Err(invalid(&name, Problem::NoSuchAxis { dims }));
        }
        let slot = &mut coords[axis.index()];
        if slot.is_some() {
            return Err(invalid(&name, Problem::Repeated));
        }
        let raw_value = raw_value.ok_or_else(|| invalid(&name, Problem::NoValue))?;
        let value = decode(raw_value).ok_or_else(|| invalid(&name, Problem::BadEncoding))?;
        let number: f64 = value
            .parse()
            .map_err(|_| invalid(&name, Problem::NotANumber { value: echo(&value) }))?;
        if !number.is_finite() {
            return Err(invalid(&name, Problem::NotFinite { value: echo(&value) }));
        }
        *slot = Some(number);
    }
    let mut point = [0.0; 3];
    for axis in world.axes() {
        let value = coords[axis.index()].ok_or_else(|| invalid(axis.name(), Problem::Missing))?;
        point[axis.index()] = value;
    }
    let point = Point::new(point[0], point[1], point[2]);
    if let Some(axis) = world
        .axes()
        .find(|&a| point.get(a) < world.min(a) || point.get(a) > world.max(a))
    {
        return Err(QueryError::OutsideWorld {
            axis,
            value: point.get(axis),
            min: world.min(axis),
            max: world.max(axis),
        });
    }
    Ok(point)
}

/// Percent-decodes one name or value of a query string as a form encodes it:
/// `+` is a space, `%XY` the byte of hex `XY`. `None` on a malformed escape or
/// bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex(bytes.next()?)?;
                let lo = hex(bytes.next()?)?;
                out.push(hi << 4 | lo);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The value of one hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `s` as an error repeats it: at most [`ECHO_LIMIT`] characters, then `...`.
fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_LIMIT) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane() -> Bounds {
        Bounds::rect((0.0, 1000.0), (-50.0, 50.0)).unwrap()
    }

    fn space() -> Bounds {
        Bounds::cuboid((0.0, 10.0), (0.0, 10.0), (0.0, 10.0)).unwrap()
    }

    fn problem(query: &str, world: &Bounds) -> (String, Problem) {
        match parse_locate(query, world) {
            Err(QueryError::Invalid { parameter, problem }) => (parameter, problem),
            other => panic!("{query:?}: expected an invalid query, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_position_in_any_order() {
        assert_eq!(
            parse_locate("x=12.5&y=-3", &plane()).unwrap(),
            Point::new(12.5, -3.0, 0.0)
        );
        assert_eq!(
            parse_locate("y=1e1&x=0", &plane()).unwrap(),
            Point::new(0.0, 10.0, 0.0)
        );
        assert_eq!(
            parse_locate("z=1&y=2&x=3", &space()).unwrap(),
            Point::new(3.0, 2.0, 1.0)
        );
        // Edges are in the world, which is closed.
        assert_eq!(
            parse_locate("x=1000&y=50", &plane()).unwrap(),
            Point::new(1000.0, 50.0, 0.0)
        );
        // Empty pairs are ignored; escapes are decoded.
        assert_eq!(
            parse_locate("&x=%31&&%79=%2D2&", &plane()).unwrap(),
            Point::new(1.0, -2.0, 0.0)
        );
    }

    #[test]
    fn a_missing_coordinate_names_its_axis() {
        assert_eq!(problem("x=1", &plane()), ("y".into(), Problem::Missing));
        assert_eq!(problem("", &plane()), ("x".into(), Problem::Missing));
        assert_eq!(problem("x=1&y=2", &space()), ("z".into(), Problem::Missing));
        assert_eq!(problem("x&y=1", &plane()), ("x".into(), Problem::NoValue));
    }

    #[test]
    fn values_must_be_finite_decimal_numbers() {
        let cases = [
            ("x=&y=1", "\"\" is not a decimal number"),
            ("x=abc&y=1", "\"abc\" is not a decimal number"),
            ("x=0x10&y=1", "\"0x10\" is not a decimal number"),
            ("x=1,5&y=1", "\"1,5\" is not a decimal number"),
            ("x=NaN&y=1", "\"NaN\" is not a finite number"),
            ("x=inf&y=1", "\"inf\" is not a finite number"),
            ("x=-infinity&y=1", "\"-infinity\" is not a finite number"),
            ("x=1e999&y=1", "\"1e999\" is not a finite number"),
        ];
        for (query, message) in cases {
            let err = parse_locate(query, &plane()).unwrap_err();
            assert_eq!(err.parameter(), "x", "{query}");
            assert_eq!(
                err.to_string(),
                format!("query parameter \"x\": {message}"),
                "{query}"
            );
        }
        let err = parse_locate("x=+5&y=1", &plane()).unwrap_err();
        assert!(err.to_string().contains("%2B"), "{err}");
        assert_eq!(
            parse_locate("x=%2B5&y=1", &plane()).unwrap(),
            Point::new(5.0, 1.0, 0.0)
        );
    }

    #[test]
    fn unknown_repeated_and_foreign_axes_are_refused() {
        assert_eq!(
            problem("x=1&y=2&z=3", &plane()),
            ("z".into(), Problem::NoSuchAxis { dims: 2 })
        );
        assert_eq!(problem("x=1&x=2&y=3", &plane()), ("x".into(), Problem::Repeated));
        assert_eq!(
            problem("x=1&y=2&zoom=3", &plane()),
            ("zoom".into(), Problem::Unknown { dims: 2 })
        );
        assert_eq!(
            problem("X=1&y=2", &plane()),
            ("X".into(), Problem::Unknown { dims: 2 })
        );
        assert_eq!(
            problem("=1&x=1&y=2", &plane()),
            ("".into(), Problem::Unknown { dims: 2 })
        );
        let err = parse_locate("x=1&y=2&zoom=3", &plane()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "query parameter \"zoom\": is not a parameter of locate (it takes x, y)"
        );
        let err = parse_locate("x=1&y=2&z=3", &plane()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "query parameter \"z\": this world has 2 dimensions (x, y)"
        );
    }

    #[test]
    fn bad_escapes_and_bytes_that_are_not_utf8_are_refused() {
        assert_eq!(problem("x=%4&y=1", &plane()), ("x".into(), Problem::BadEncoding));
        assert_eq!(problem("x=%zz&y=1", &plane()), ("x".into(), Problem::BadEncoding));
        assert_eq!(problem("x=%ff&y=1", &plane()), ("x".into(), Problem::BadEncoding));
        assert_eq!(problem("%ff=1", &plane()), ("%ff".into(), Problem::BadEncoding));
    }

    #[test]
    fn outside_the_world_is_its_own_kind_and_names_the_axis() {
        let err = parse_locate("x=5&y=50.5", &plane()).unwrap_err();
        assert!(err.is_outside_world());
        assert_eq!(err.parameter(), "y");
        assert_eq!(
            err.to_string(),
            "y=50.5 is outside the world, whose y goes from -50 to 50"
        );
        assert!(
            parse_locate("x=-0.001&y=0", &plane())
                .unwrap_err()
                .is_outside_world()
        );
        // A malformed query is reported before the position is judged.
        assert!(
            !parse_locate("x=-5&y=nope", &plane())
                .unwrap_err()
                .is_outside_world()
        );
        let err = parse_locate("x=1e300&y=0", &plane()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x=1e300 is outside the world, whose x goes from 0 to 1000"
        );
    }

    #[test]
    fn what_is_echoed_back_is_cut_short() {
        let long = "w".repeat(10_000);
        let err = parse_locate(&format!("{long}=1"), &plane()).unwrap_err();
        assert_eq!(err.parameter(), format!("{}...", "w".repeat(ECHO_LIMIT)));
        let err = parse_locate(&format!("x={}&y=1", "é".repeat(100)), &plane()).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn a_one_dimensional_world_takes_x_only() {
        let line = Bounds::line((0.0, 1.0)).unwrap();
        assert_eq!(parse_locate("x=0.5", &line).unwrap(), Point::new(0.5, 0.0, 0.0));
        assert_eq!(
            problem("x=0.5&y=0", &line),
            ("y".into(), Problem::NoSuchAxis { dims: 1 })
        );
        assert_eq!(Expected(1).to_string(), "x");
    }
}
