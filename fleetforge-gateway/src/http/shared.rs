//! What the handlers share: a module of its own, so that the routes and the
//! router that serves them import it without importing each other.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::state::State;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// The worlds.
    pub state: Arc<State>,
    /// One permit per topology stream that may be open.
    pub streams: Arc<Semaphore>,
    /// Keep-alive interval of streams.
    pub keep_alive: Duration,
}
