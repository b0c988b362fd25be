//! Per-object retry backoff: exponential with jitter, reset on success.
//!
//! kube-runtime's `error_policy` is handed the object and the error but keeps no
//! state between calls, so the failure count of each world lives here, in the
//! controller's context, with the kind of its latest failure: a user is told
//! once per kind of failure, not once per retry.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::Duration;

/// Failure counts per key, and the delays they lead to.
#[derive(Debug)]
pub struct Backoff<K> {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<K, Failures>>,
    jitter: RandomState,
}

/// A key's failures in a row and the kind of the latest one.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    kind: &'static str,
}

/// What a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long to wait before retrying.
    pub delay: Duration,
    /// Whether this failure is of another kind than the key's previous one in a
    /// row (or the first one): the moment to tell a user.
    pub new_kind: bool,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    /// A backoff whose first retry comes after about `base` and whose delay doubles
    /// with every further failure up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
            jitter: RandomState::new(),
        }
    }

    /// Records a failure of `key` of kind `kind` and returns how long to wait
    /// before retrying it: `base * 2^(failures-1)`, capped at `max`, then scaled by
    /// a random factor in `[0.5, 1.0)` so that worlds failing together do not retry
    /// in lockstep.
    pub fn failed(&self, key: &K, kind: &'static str) -> Retry {
        let (attempt, new_kind) = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let f = failures
                .entry(key.clone())
                .or_insert(Failures { count: 0, kind: "" });
            let new_kind = f.count == 0 || f.kind != kind;
            f.count = f.count.saturating_add(1);
            f.kind = kind;
            (f.count, new_kind)
        };
        let exp = attempt.saturating_sub(1).min(30);
        let delay = self.base.saturating_mul(1u32 << exp).min(self.max);
        // A fresh hash of (key, attempt) under a per-process random seed: jitter
        // without a random-number dependency.
        let bits = self.jitter.hash_one((key, attempt));
        let factor = 0.5 + (bits >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        Retry {
            delay: delay.mul_f64(factor),
            new_kind,
        }
    }

    /// Forgets the failures of `key` after it succeeded.
    pub fn succeeded(&self, key: &K) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// How many times in a row `key` has failed.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map_or(0, |f| f.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_and_stop_at_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let key = "games/meadow".to_owned();
        let mut delays = Vec::new();
        for _ in 0..8 {
            delays.push(b.failed(&key, "conflict").delay);
        }
        for (i, d) in delays.iter().enumerate() {
            let nominal = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
            assert!(
                *d >= nominal / 2 && *d < nominal,
                "attempt {i}: {d:?} not in [{nominal:?}/2, {nominal:?})"
            );
        }
        assert_eq!(b.failures(&key), 8);
    }

    #[test]
    fn success_resets_only_that_key() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let (a, c) = ("a".to_owned(), "c".to_owned());
        for _ in 0..5 {
            b.failed(&a, "conflict");
            b.failed(&c, "conflict");
        }
        b.succeeded(&a);
        assert_eq!(b.failures(&a), 0);
        assert_eq!(b.failures(&c), 5);
        assert!(
            b.failed(&a, "conflict").delay < Duration::from_secs(1),
            "a starts over at the base delay"
        );
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let key = 7u32;
        let mut last = Duration::ZERO;
        for _ in 0..100 {
            last = b.failed(&key, "throttled").delay;
        }
        assert!(last >= Duration::from_secs(150) && last < Duration::from_secs(300));
    }

    #[test]
    fn a_user_is_told_once_per_kind_of_failure_in_a_row() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let key = "games/meadow";
        let told: Vec<bool> = ["throttled", "throttled", "conflict", "conflict", "throttled"]
            .into_iter()
            .map(|kind| b.failed(&key, kind).new_kind)
            .collect();
        assert_eq!(told, [true, false, true, false, true]);
        b.succeeded(&key);
        assert!(
            b.failed(&key, "throttled").new_kind,
            "after a success the same kind is news again"
        );
    }
}
