//! Stopping well: on SIGTERM the cell stops taking players and waits, up to the
//! drain timeout, for the operator to hand its sessions over, because every
//! session still held when the process exits is a player dropped.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tracing::{info, warn};

use crate::server::AppState;

/// How often a drain looks whether the cell is empty. Sessions leave through
/// exports and removals, both quick to notice at this pace.
const POLL: Duration = Duration::from_millis(100);

/// The signals that stop the process: SIGTERM (Kubernetes) and SIGINT (a
/// terminal).
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening; from now on the signals no longer kill the process.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal and names it.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            // Only Ctrl-C exists there; an error means no signal will ever come.
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Waits until the cell holds no session, `timeout` has passed, or a second
/// signal asks to stop at once.
pub async fn drain(state: &AppState, timeout: Duration, signals: &mut Signals) {
    let deadline = Instant::now() + timeout;
    let mut poll = interval(POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    info!(
        sessions = state.players(),
        timeout_seconds = timeout.as_secs_f64(),
        "draining: waiting for the sessions to be handed over"
    );
    loop {
        if state.is_empty() {
            info!("drained: no session left");
            return;
        }
        tokio::select! {
            _ = poll.tick() => {}
            () = sleep_until(deadline) => {
                warn!(sessions = state.players(), "drain timeout passed");
                return;
            }
            signal = signals.next() => {
                warn!(signal, sessions = state.players(), "signalled again: not waiting for the drain");
                return;
            }
        }
    }
}
