//! What the request handlers share with the watches: the worlds, whether the
//! first lists are in, and the signal that ends open streams at shutdown.

use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};

use tokio::sync::watch;

use crate::cluster::WorldKey;
use crate::worlds::{Channel, WorldView, Worlds};

/// The gateway's state, shared between the watches (which write it) and the
/// request handlers (which read it).
#[derive(Debug)]
pub struct State {
    worlds: RwLock<Worlds>,
    synced: watch::Sender<bool>,
    closing: watch::Sender<bool>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            worlds: RwLock::new(Worlds::new()),
            synced: watch::Sender::new(false),
            closing: watch::Sender::new(false),
        }
    }
}

impl State {
    /// Nothing known yet, not synced.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The latest view of a published world.
    pub fn view(&self, key: &WorldKey) -> Option<Arc<WorldView>> {
        self.read(|w| w.view(key))
    }

    /// A channel of a published world's views.
    pub fn subscribe(&self, key: &WorldKey) -> Option<Channel> {
        self.read(|w| w.subscribe(key))
    }

    /// Reads the worlds.
    pub fn read<T>(&self, f: impl FnOnce(&Worlds) -> T) -> T {
        // A writer that panicked left the table as it was between two whole
        // updates (each update is one call), so its contents are still sound.
        f(&self.worlds.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The worlds, for the watches to change.
    pub fn write(&self) -> RwLockWriteGuard<'_, Worlds> {
        self.worlds.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the first lists of WorldSpecs and cell Pods are in: before that,
    /// an unknown world may just not have been read yet.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Marks the first lists as in.
    pub fn set_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Resolves once the first lists are in.
    pub async fn synced(&self) {
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }

    /// Ends every open stream (at shutdown, so that the server can drain).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`close`](Self::close) was called.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}
