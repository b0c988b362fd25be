//! Fuzz-style property tests of the locate query parser: whatever the query
//! string, it answers a position or an error naming a parameter, and never
//! panics.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

mod common;

use common::{any_bounds, point_in};
use fleetforge_core::{Axis, Bounds};
use fleetforge_gateway::{QueryError, parse_locate};
use proptest::prelude::*;

/// The names an error may name for `query`: an axis, or the name of one of its
/// pairs, raw or decoded, as the error echoes it (cut at 32 characters).
fn nameable(query: &str) -> Vec<String> {
    let echo = |s: &str| match s.char_indices().nth(32) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    };
    let mut out: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
    for pair in query.split('&') {
        let raw = pair.split_once('=').map_or(pair, |(n, _)| n);
        out.push(echo(raw));
        out.push(echo(&decode_lossy(raw)));
    }
    out
}

/// Form-decoding that never fails, to recognise a decoded name.
fn decode_lossy(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |k: usize| bytes.get(k).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks what `parse_locate` makes of `query` in `world`.
fn check(query: &str, world: &Bounds) -> Result<(), TestCaseError> {
    match parse_locate(query, world) {
        Ok(p) => {
            prop_assert!(
                world.contains_closed(&p),
                "{:?} gave {:?}, outside the world",
                query,
                p
            );
            for a in Axis::ALL.iter().skip(world.dims()) {
                prop_assert_eq!(p.get(*a), 0.0);
            }
        }
        Err(e) => {
            let parameter = e.parameter().to_owned();
            prop_assert!(
                nameable(query).contains(&parameter),
                "{:?}: the error names {:?}, which the query does not",
                query,
                parameter
            );
            let message = e.to_string();
            // Names are quoted and escaped as Rust strings are, so that no control
            // character of a request reaches a log line or an answer raw.
            let named = match &e {
                QueryError::Invalid { .. } => message.contains(&format!("{parameter:?}")),
                QueryError::OutsideWorld { .. } => message.starts_with(&format!("{parameter}=")),
            };
            prop_assert!(named, "{:?} does not name {:?}", message, parameter);
            prop_assert!(message.len() < 400, "a {}-byte message", message.len());
            if let QueryError::OutsideWorld { axis, value, .. } = e {
                prop_assert!(value.is_finite());
                prop_assert!(value < world.min(axis) || value > world.max(axis));
            }
        }
    }
    Ok(())
}

/// Query-like strings: names and values from the characters that matter.
fn query_like() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("x".to_owned()),
        Just("y".to_owned()),
        Just("z".to_owned()),
        Just("%78".to_owned()),
        "[a-zA-Z%+=0-9]{0,4}",
    ];
    let value = prop_oneof![
        "-?[0-9]{1,6}(\\.[0-9]{0,4})?(e-?[0-9]{1,3})?",
        "(NaN|inf|-inf|infinity|1e999|0x10|%2D1|%2B1|\\+1|%|%4|%zz|%ff|%C3%A9|)",
        "[ -~]{0,12}",
    ];
    prop::collection::vec((name, prop::option::weighted(0.9, value)), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}={v}"),
                None => n,
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Any string at all: no panic; a position inside the world, or an error
    /// that names a parameter of the query (or a missing axis) and says so.
    #[test]
    fn arbitrary_strings_never_panic_and_every_error_names_a_parameter(
        world in any_bounds(),
        query in any::<String>(),
    ) {
        check(&query, &world)?;
    }

    /// Strings shaped like queries, which reach every branch of the parser.
    #[test]
    fn query_like_strings_never_panic_and_every_error_names_a_parameter(
        world in any_bounds(),
        query in query_like(),
    ) {
        check(&query, &world)?;
    }

    /// A well-formed query of a position in the world reads back exactly, in any
    /// order of its parameters; one outside the world is refused as outside,
    /// naming the first axis out of range.
    #[test]
    fn positions_read_back_exactly(
        world in any_bounds(),
        u in prop::array::uniform3(-0.5f64..1.5),
        order in Just([0usize, 1, 2]).prop_shuffle(),
        encode in any::<bool>(),
    ) {
        let p = point_in(&world, u);
        let pairs: Vec<String> = order
            .iter()
            .filter(|&&k| k < world.dims())
            .map(|&k| {
                let axis = Axis::ALL[k];
                let value = p.get(axis).to_string();
                let value = if encode { value.replace('-', "%2D") } else { value };
                format!("{axis}={value}")
            })
            .collect();
        let query = pairs.join("&");
        let outside = world.axes().find(|&a| p.get(a) < world.min(a) || p.get(a) > world.max(a));
        match (parse_locate(&query, &world), outside) {
            (Ok(got), None) => {
                for a in world.axes() {
                    prop_assert_eq!(got.get(a).to_bits(), p.get(a).to_bits());
                }
            }
            (Err(QueryError::OutsideWorld { axis, .. }), Some(first)) => prop_assert_eq!(axis, first),
            (got, _) => prop_assert!(false, "{:?} gave {:?}", query, got),
        }
    }
}
