//! The sessions a cell holds, kept by id (so an import is idempotent) and by
//! arrival (so players leave oldest first), and the position histogram of the
//! load report.

use std::collections::{BTreeMap, HashMap};

use fleetforge_core::contract::Session;
use fleetforge_core::{Axis, Bounds, Point, PositionHistogram};

/// Bins per axis in the load report's histogram.
pub const BINS: usize = 10;

/// Sessions held by the cell.
#[derive(Debug)]
pub struct SessionStore {
    /// Prefix of the ids this process makes up: the Pod name, unique in the world.
    prefix: String,
    /// Suffix of the next made-up id.
    next_id: u64,
    /// Arrival number of the next session.
    next_seq: u64,
    /// Sessions by arrival, oldest first.
    by_arrival: BTreeMap<u64, Session>,
    /// Arrival number of each held id.
    arrival_of: HashMap<String, u64>,
}

impl SessionStore {
    /// An empty store making ids `<prefix>-<n>`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            next_id: 0,
            next_seq: 0,
            by_arrival: BTreeMap::new(),
            arrival_of: HashMap::new(),
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.by_arrival.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_arrival.is_empty()
    }

    /// Sessions held, as the `u32` the contract reports.
    pub fn count(&self) -> u32 {
        u32::try_from(self.len()).unwrap_or(u32::MAX)
    }

    /// A new player at `position`, with a fresh id.
    pub fn add(&mut self, position: Point) {
        let id = loop {
            let id = format!("{}-{}", self.prefix, self.next_id);
            self.next_id += 1;
            // An earlier process with the same Pod name may have handed us back
            // one of its ids; never reuse an id that is held.
            if !self.arrival_of.contains_key(&id) {
                break id;
            }
        };
        self.insert(Session { id, position });
    }

    /// Takes `session` over; `false` (and nothing changes) when its id is held.
    pub fn insert(&mut self, session: Session) -> bool {
        if self.arrival_of.contains_key(&session.id) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.arrival_of.insert(session.id.clone(), seq);
        self.by_arrival.insert(seq, session);
        true
    }

    /// Removes up to `n` sessions, oldest first; returns how many.
    pub fn remove_oldest(&mut self, n: usize) -> usize {
        let mut removed = 0;
        while removed < n {
            let Some((_, s)) = self.by_arrival.pop_first() else {
                break;
            };
            self.arrival_of.remove(&s.id);
            removed += 1;
        }
        removed
    }

    /// Removes the sessions with these ids; returns how many were held.
    pub fn remove_ids<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let mut removed = 0;
        for id in ids {
            if let Some(seq) = self.arrival_of.remove(id) {
                self.by_arrival.remove(&seq);
                removed += 1;
            }
        }
        removed
    }

    /// Every session held, oldest first.
    pub fn sessions(&self) -> Vec<Session> {
        self.by_arrival.values().cloned().collect()
    }

    /// The histogram of the held sessions' positions over `bounds`.
    pub fn histogram(&self, bounds: &Bounds) -> PositionHistogram {
        histogram(bounds, self.by_arrival.values().map(|s| &s.position))
    }
}

/// Positions binned into [`BINS`] equal slices of `bounds` along each of its
/// axes. A position outside `bounds` (a player that strayed past the edge) counts
/// in the nearest edge bin, so every player is counted once per axis.
pub fn histogram<'a>(bounds: &Bounds, positions: impl Iterator<Item = &'a Point>) -> PositionHistogram {
    let mut h = PositionHistogram {
        x: vec![0; BINS],
        y: if bounds.dims() >= 2 {
            vec![0; BINS]
        } else {
            Vec::new()
        },
        z: if bounds.dims() >= 3 {
            vec![0; BINS]
        } else {
            Vec::new()
        },
    };
    for p in positions {
        for axis in bounds.axes() {
            let k = bin(p.get(axis), bounds.min(axis), bounds.extent(axis));
            let bins = match axis {
                Axis::X => &mut h.x,
                Axis::Y => &mut h.y,
                Axis::Z => &mut h.z,
            };
            if let Some(c) = bins.get_mut(k) {
                *c = c.saturating_add(1);
            }
        }
    }
    h
}

/// The bin of coordinate `v` on an axis starting at `min` with `extent > 0`.
fn bin(v: f64, min: f64, extent: f64) -> usize {
    let f = ((v - min) / extent * BINS as f64).floor();
    if f.is_nan() || f < 0.0 {
        0
    } else if f >= (BINS - 1) as f64 {
        BINS - 1
    } else {
        f as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(store: &SessionStore) -> Vec<String> {
        store.sessions().into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn histogram_bins_by_tenths_and_clamps_strays_into_edge_bins() {
        let b = Bounds::rect((0.0, 100.0), (-50.0, 50.0)).unwrap();
        let points = [
            Point::new(0.0, -50.0, 0.0),
            Point::new(9.99, 0.0, 0.0),
            Point::new(10.0, 49.9, 0.0),
            Point::new(99.99, 0.0, 0.0),
            Point::new(100.0, 50.0, 0.0),   // upper faces: last bin
            Point::new(-3.0, -1000.0, 0.0), // stray below: first bin
            Point::new(1e9, 1e9, 7.0),      // stray above: last bin
        ];
        let h = histogram(&b, points.iter());
        assert_eq!(h.x, vec![3, 1, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(h.y, vec![2, 0, 0, 0, 0, 2, 0, 0, 0, 3]);
        assert!(h.z.is_empty(), "a 2-D cell reports no z bins");
        let total: u32 = h.x.iter().sum();
        assert_eq!(total as usize, points.len());
        let line = histogram(&Bounds::line((0.0, 1.0)).unwrap(), points.iter());
        assert!(line.y.is_empty() && line.z.is_empty());
        let cube = histogram(
            &Bounds::cuboid((0.0, 1.0), (0.0, 1.0), (0.0, 10.0)).unwrap(),
            points.iter(),
        );
        assert_eq!(cube.z, vec![6, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn ids_are_prefixed_unique_and_imports_are_idempotent() {
        let mut store = SessionStore::new("meadow-c0-0");
        store.add(Point::default());
        store.add(Point::default());
        assert_eq!(ids(&store), ["meadow-c0-0-0", "meadow-c0-0-1"]);
        let foreign = Session {
            id: "meadow-c1-0-0".into(),
            position: Point::new(1.0, 2.0, 3.0),
        };
        assert!(store.insert(foreign.clone()));
        assert!(!store.insert(foreign));
        assert_eq!(store.len(), 3);
        // An id this process would make next, already held: it is skipped.
        assert!(store.insert(Session {
            id: "meadow-c0-0-2".into(),
            position: Point::default()
        }));
        store.add(Point::default());
        assert!(ids(&store).contains(&"meadow-c0-0-3".to_owned()));
        assert_eq!(store.len(), 5);
    }

    #[test]
    fn players_leave_oldest_first() {
        let mut store = SessionStore::new("p");
        for _ in 0..4 {
            store.add(Point::default());
        }
        assert_eq!(store.remove_oldest(3), 3);
        assert_eq!(ids(&store), ["p-3"]);
        assert_eq!(store.remove_oldest(10), 1);
        assert!(store.is_empty());
        store.add(Point::default());
        assert_eq!(store.remove_ids(["p-4", "p-4", "nope"]), 1);
        assert_eq!(store.count(), 0);
    }
}
