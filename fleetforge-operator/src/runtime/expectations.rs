//! Read-your-writes for the reconcile: what the operator expects its caches to
//! show after it wrote, so it never plans from a cache that predates its own last
//! writes.
//!
//! The reflector stores are updated by watch events, which arrive a little after
//! a write returns. A reconcile woken in between (by another Pod's event, or a
//! timer) would see a world without the status it just wrote (and so forget a
//! split it just recorded) or without the Pods it just created (and create them
//! again). Like the ReplicaSet controller's expectations, the reconcile records
//! what it wrote and waits until the caches have caught up, or until the
//! expectation expires so a lost event cannot stall a world for good.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::runtime::clock::Clock;

/// What one world's last reconcile wrote and expects to see.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Versions of the world that predate the reconcile's last write to it: the
    /// one it read, and what each earlier write of the same reconcile returned
    /// (an annotation patch before the status). A cached world at any of them
    /// lacks something the reconcile wrote.
    pub stale_world_versions: BTreeSet<String>,
    /// What the last write to the world returned.
    pub last_world_version: Option<String>,
    /// Cell Pods created, by name: the cache must show them.
    pub created: BTreeSet<String>,
    /// Cell Pods deleted, by name and uid: the cache must show them gone or
    /// terminating.
    pub deleted: BTreeMap<String, String>,
    /// Cell Pods handed their space, by name, with the epoch stamped on each:
    /// the cache must show them active with that stamp (a re-activated Pod was
    /// active already; only its new stamp tells the write arrived).
    pub activated: BTreeMap<String, u64>,
}

impl Expected {
    /// Records a write to the world, made from a world read at `read` and
    /// answered with `written`.
    pub fn wrote_world(&mut self, read: Option<&str>, written: Option<&str>) {
        self.stale_world_versions.extend(read.map(str::to_owned));
        self.stale_world_versions.extend(self.last_world_version.take());
        self.last_world_version = written.map(str::to_owned);
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.stale_world_versions.is_empty()
            && self.created.is_empty()
            && self.deleted.is_empty()
            && self.activated.is_empty()
    }
}

/// A cached cell Pod, as far as expectations care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPod<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its uid.
    pub uid: &'a str,
    /// Whether it is being deleted.
    pub terminating: bool,
    /// Its mark when its role annotation says active (the epoch stamped on it,
    /// else its activation time); `None` when it is not active.
    pub mark: Option<u64>,
}

/// Whether the caches show everything `expected` says was written.
pub fn satisfied(expected: &Expected, world_version: Option<&str>, pods: &[CachedPod<'_>]) -> bool {
    if world_version.is_some_and(|v| expected.stale_world_versions.contains(v)) {
        return false;
    }
    let created = expected.created.iter().all(|n| pods.iter().any(|p| p.name == n));
    let deleted = expected.deleted.iter().all(|(name, uid)| {
        !pods
            .iter()
            .any(|p| p.name == name && p.uid == uid && !p.terminating)
    });
    let activated = expected.activated.iter().all(|(n, stamp)| {
        pods.iter()
            .any(|p| p.name == n && p.mark.is_some_and(|m| m >= *stamp))
    });
    created && deleted && activated
}

/// Expectations of every world, by uid.
#[derive(Debug)]
pub struct Expectations {
    ttl: Duration,
    clock: Clock,
    by_world: Mutex<HashMap<String, (Expected, Instant)>>,
}

impl Expectations {
    /// Expectations that lapse after `ttl` on `clock` (a watch event lost for good
    /// must not stall a world).
    pub fn new(ttl: Duration, clock: Clock) -> Self {
        Self {
            ttl,
            clock,
            by_world: Mutex::new(HashMap::new()),
        }
    }

    /// Records what a reconcile of world `uid` wrote, replacing what was expected
    /// before (that was satisfied, or the reconcile would not have run).
    pub fn expect(&self, uid: &str, expected: Expected) {
        let mut map = self.by_world.lock().unwrap_or_else(|e| e.into_inner());
        if expected.is_empty() {
            map.remove(uid);
        } else {
            map.insert(uid.to_owned(), (expected, self.clock.instant()));
        }
    }

    /// Whether world `uid` may be planned from caches showing `world_version` and
    /// `pods`. A satisfied or lapsed expectation is forgotten.
    pub fn ready(&self, uid: &str, world_version: Option<&str>, pods: &[CachedPod<'_>]) -> bool {
        let mut map = self.by_world.lock().unwrap_or_else(|e| e.into_inner());
        let Some((expected, at)) = map.get(uid) else {
            return true;
        };
        if self.clock.instant().saturating_duration_since(*at) > self.ttl
            || satisfied(expected, world_version, pods)
        {
            map.remove(uid);
            return true;
        }
        false
    }

    /// Forgets world `uid` (it was deleted).
    pub fn forget(&self, uid: &str) {
        self.by_world
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod<'a>(name: &'a str, uid: &'a str, terminating: bool) -> CachedPod<'a> {
        CachedPod {
            name,
            uid,
            terminating,
            mark: None,
        }
    }

    #[test]
    fn activated_pods_must_show_as_active_with_their_stamp() {
        let e = Expected {
            activated: [("w-c0-0".to_owned(), 20)].into(),
            ..Expected::default()
        };
        let incoming = pod("w-c0-0", "u", false);
        assert!(!satisfied(&e, None, std::slice::from_ref(&incoming)));
        // Active already, with an older stamp: a re-activation not seen yet.
        let before = CachedPod {
            mark: Some(10),
            ..incoming.clone()
        };
        assert!(!satisfied(&e, None, &[before]));
        let active = CachedPod {
            mark: Some(20),
            ..incoming
        };
        assert!(satisfied(&e, None, &[active]));
    }

    #[test]
    fn a_world_cached_before_the_last_write_of_the_reconcile_is_stale() {
        let mut e = Expected::default();
        // Read at 10, annotations patched (11), then status (12).
        e.wrote_world(Some("10"), Some("11"));
        e.wrote_world(Some("10"), Some("12"));
        assert!(!satisfied(&e, Some("10"), &[]));
        assert!(
            !satisfied(&e, Some("11"), &[]),
            "the status write is not in it yet"
        );
        assert!(satisfied(&e, Some("12"), &[]));
        assert!(satisfied(&e, Some("13"), &[]), "someone else wrote after us");
    }

    #[test]
    fn created_pods_must_show_and_deleted_ones_must_go_or_terminate() {
        let e = Expected {
            created: ["w-c0-0".to_owned()].into(),
            deleted: [("w-c0".to_owned(), "u1".to_owned())].into(),
            ..Expected::default()
        };
        assert!(!satisfied(&e, None, &[pod("w-c0", "u1", false)]));
        assert!(!satisfied(
            &e,
            None,
            &[pod("w-c0-0", "u2", false), pod("w-c0", "u1", false)]
        ));
        assert!(satisfied(
            &e,
            None,
            &[pod("w-c0-0", "u2", false), pod("w-c0", "u1", true)]
        ));
        assert!(satisfied(&e, None, &[pod("w-c0-0", "u2", false)]));
        // A new Pod of the same name is not the one deleted.
        assert!(satisfied(
            &e,
            None,
            &[pod("w-c0-0", "u2", false), pod("w-c0", "u9", false)]
        ));
    }

    #[test]
    fn expectations_are_forgotten_once_met_or_lapsed() {
        let (clock, hand) = Clock::manual(fleetforge_core::Timestamp(0));
        let x = Expectations::new(Duration::from_secs(3600), clock.clone());
        let e = Expected {
            created: ["a".to_owned()].into(),
            ..Expected::default()
        };
        x.expect("w", e.clone());
        assert!(!x.ready("w", None, &[]));
        assert!(x.ready("w", None, &[pod("a", "1", false)]));
        assert!(x.ready("w", None, &[]), "met once, forgotten");

        x.expect("w", e);
        hand.advance(Duration::from_secs(3599));
        assert!(!x.ready("w", None, &[]), "not met, not lapsed");
        hand.advance(Duration::from_secs(2));
        assert!(x.ready("w", None, &[]), "lapsed");
    }
}
