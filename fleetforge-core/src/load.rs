//! What a cell reports about its load, and what the planner reads from it.

use serde::{Deserialize, Serialize};

use crate::geometry::{Axis, Bounds};
use crate::time::Timestamp;

/// One reading of a cell's load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSample {
    /// When the reading was taken.
    pub at: Timestamp,
    /// Players connected to the cell.
    pub players: u32,
    /// Where the players are, if the cell reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<PositionHistogram>,
}

/// Player positions binned along each axis of the cell: `bins[k]` counts the players
/// in the k-th of `bins.len()` equal slices of the cell's extent on that axis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PositionHistogram {
    /// Bins along x.
    #[serde(default)]
    pub x: Vec<u32>,
    /// Bins along y (2-D and 3-D worlds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub y: Vec<u32>,
    /// Bins along z (3-D worlds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub z: Vec<u32>,
}

impl PositionHistogram {
    /// The bins along `axis`.
    pub fn bins(&self, axis: Axis) -> &[u32] {
        match axis {
            Axis::X => &self.x,
            Axis::Y => &self.y,
            Axis::Z => &self.z,
        }
    }

    /// The coordinate along `axis` that leaves half the binned players on each side,
    /// interpolating linearly inside the bin where the half is reached. `None` when
    /// the axis has no players binned.
    pub fn median(&self, bounds: &Bounds, axis: Axis) -> Option<f64> {
        let bins = self.bins(axis);
        let total: u64 = bins.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let width = bounds.extent(axis) / bins.len() as f64;
        let half = total as f64 / 2.0;
        let mut seen = 0.0;
        for (k, &c) in bins.iter().enumerate() {
            let c = f64::from(c);
            if c > 0.0 && seen + c >= half {
                let frac = (half - seen) / c;
                return Some(bounds.min(axis) + width * (k as f64 + frac));
            }
            seen += c;
        }
        Some(bounds.max(axis))
    }
}

/// Least-squares trend of players over time, projected `ahead` seconds past `now`.
/// `None` with fewer than two samples or when every sample has the same time.
pub fn forecast(samples: &[LoadSample], now: Timestamp, ahead_secs: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    // Centre time on `now` so large epochs lose no precision.
    let t0 = now.as_secs_f64();
    let n = samples.len() as f64;
    let (mut st, mut sp) = (0.0, 0.0);
    for s in samples {
        st += s.at.as_secs_f64() - t0;
        sp += f64::from(s.players);
    }
    let (mt, mp) = (st / n, sp / n);
    let (mut cov, mut var) = (0.0, 0.0);
    for s in samples {
        let dt = s.at.as_secs_f64() - t0 - mt;
        cov += dt * (f64::from(s.players) - mp);
        var += dt * dt;
    }
    if var <= f64::EPSILON {
        return None;
    }
    let slope = cov / var;
    Some(mp + slope * (ahead_secs - mt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, players: u32) -> LoadSample {
        LoadSample {
            at: Timestamp(ms),
            players,
            histogram: None,
        }
    }

    #[test]
    fn forecast_projects_a_linear_ramp() {
        let s: Vec<_> = (0..5).map(|k| sample(1_000 * k, 10 * k as u32)).collect();
        let f = forecast(&s, Timestamp(4_000), 6.0).unwrap();
        assert!((f - 100.0).abs() < 1e-9, "{f}");
        assert_eq!(forecast(&s[..1], Timestamp(0), 1.0), None);
        assert_eq!(forecast(&[sample(5, 1), sample(5, 9)], Timestamp(5), 1.0), None);
    }

    #[test]
    fn median_balances_binned_players() {
        let b = Bounds::line((0.0, 100.0)).unwrap();
        let h = PositionHistogram {
            x: vec![0, 0, 0, 10, 10, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(h.median(&b, Axis::X), Some(40.0));
        let skewed = PositionHistogram {
            x: vec![30, 10, 0, 0],
            ..Default::default()
        };
        // Half of 40 is reached two thirds into the first bin of width 25.
        let m = skewed.median(&b, Axis::X).unwrap();
        assert!((m - 50.0 / 3.0).abs() < 1e-9, "{m}");
        assert_eq!(PositionHistogram::default().median(&b, Axis::X), None);
    }
}
