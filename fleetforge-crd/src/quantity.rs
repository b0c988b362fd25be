//! Reading Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`).
//!
//! The CRD schema only says "int or string", so the operator checks the format
//! itself before a bad value reaches a Pod spec (where the API server would
//! reject the Pod, far from the field that caused it). A float is precise enough
//! here: the value is only compared and hashed, never written back.

use thiserror::Error;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a Kubernetes quantity (such as 500m, 2, 1.5Gi or 512Mi)")]
pub struct QuantityError(pub String);

/// The value of quantity `s` in base units (cores, bytes).
pub fn parse_quantity(s: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError(s.to_owned());
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1.0, &s[1..]),
        Some(b'-') => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    let num_len = rest
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_len);
    if !is_number(number) {
        return Err(err());
    }
    let mantissa: f64 = number.parse().map_err(|_| err())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let digits = &exp[1..];
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if !is_number(unsigned) {
                return Err(err());
            }
            let e: f64 = digits.parse().map_err(|_| err())?;
            10f64.powf(e)
        }
        _ => return Err(err()),
    };
    let v = sign * mantissa * factor;
    if v.is_finite() { Ok(v) } else { Err(err()) }
}

/// `digits`, `digits.`, `digits.digits` or `.digits`.
fn is_number(s: &str) -> bool {
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        None => !s.is_empty() && digits(s),
        Some((int, frac)) => !(int.is_empty() && frac.is_empty()) && digits(int) && digits(frac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_form() {
        let cases = [
            ("1", 1.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            (".5", 0.5),
            ("2.", 2.0),
            ("+3", 3.0),
            ("-1k", -1000.0),
            ("1Ki", 1024.0),
            ("512Mi", 512.0 * 1024.0 * 1024.0),
            ("1.5Gi", 1.5 * 1024.0 * 1024.0 * 1024.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("2M", 2e6),
            ("250u", 250e-6),
            ("1e1.5", 10f64.powf(1.5)),
        ];
        for (s, v) in cases {
            let got = parse_quantity(s).unwrap();
            assert!((got - v).abs() <= 1e-12 * v.abs().max(1.0), "{s}: {got} != {v}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in [
            "", "m", "1.2.3", "1GB", "1 Gi", "Gi", "1e", "1e+", "1ee3", "1e.", "1e1.2.3", "abc", "1mi", ".",
            "--1", "1e999",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad} should be rejected");
        }
    }
}
