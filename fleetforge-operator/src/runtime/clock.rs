//! The operator's one clock: wall time for the planner and the Lease, monotonic
//! time for deadlines (sampling, leader election, expectations).
//!
//! Everything that asks "what time is it" takes a [`Clock`], so a test can hold
//! time still or move it on by hand ([`Clock::manual`]) instead of sleeping, and
//! the pure core keeps getting time as a parameter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetforge_core::Timestamp;

/// A source of time: the system's, or a manual one a test moves.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

/// The state of a manual clock: where it started and how far it was moved.
#[derive(Debug)]
struct Manual {
    wall: Timestamp,
    start: Instant,
    moved_ms: AtomicU64,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that shows `wall` and only moves when its [`ClockHand`] moves it;
    /// its monotonic time starts at the moment of this call.
    pub fn manual(wall: Timestamp) -> (Self, ClockHand) {
        let manual = Arc::new(Manual {
            wall,
            start: Instant::now(),
            moved_ms: AtomicU64::new(0),
        });
        (
            Self {
                manual: Some(manual.clone()),
            },
            ClockHand(manual),
        )
    }

    /// The wall-clock time, for the planner and for times written to the API
    /// server.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            Some(m) => m.wall + Duration::from_millis(m.moved_ms.load(Ordering::SeqCst)),
            None => {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0);
                Timestamp(ms)
            }
        }
    }

    /// The monotonic time, for deadlines: unlike [`Clock::now`] it never jumps when
    /// the system's wall clock is set.
    pub fn instant(&self) -> Instant {
        match &self.manual {
            Some(m) => m.start + Duration::from_millis(m.moved_ms.load(Ordering::SeqCst)),
            None => Instant::now(),
        }
    }
}

/// Moves a manual [`Clock`] (and every clone of it) forward.
#[derive(Debug, Clone)]
pub struct ClockHand(Arc<Manual>);

impl ClockHand {
    /// Moves the clock forward by `by` (whole milliseconds).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.moved_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_its_hand_does_and_moves_every_clone() {
        let (clock, hand) = Clock::manual(Timestamp(1_000));
        let copy = clock.clone();
        let before = clock.instant();
        assert_eq!(clock.now(), Timestamp(1_000));
        hand.advance(Duration::from_millis(2_500));
        assert_eq!(copy.now(), Timestamp(3_500));
        assert_eq!(copy.instant() - before, Duration::from_millis(2_500));
    }

    #[test]
    fn the_system_clock_reads_the_present() {
        let clock = Clock::system();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now = clock.now();
        assert!(
            now.0.abs_diff(u64::try_from(wall.as_millis()).unwrap()) < 60_000,
            "{now:?}"
        );
    }
}
