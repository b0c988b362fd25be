//! What every reconcile of a controller shares, grouped by concern: the API
//! server and its caches, the per-world bookkeeping, the cells, and the pacing.

use std::sync::Arc;
use std::time::Duration;

use fleetforge_core::pacing::Pacing;
use fleetforge_crd::WorldSpec;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::warn;

use crate::cells::client::CellClient;
use crate::cells::sampling::Samples;
use crate::cells::tokens::{TokenKeys, WorldTokens};
use crate::runtime::backoff::Backoff;
use crate::runtime::clock::Clock;
use crate::runtime::expectations::Expectations;
use crate::runtime::gauges::{Phases, ReadyTimer};
use crate::runtime::queue::Queue;

/// What every reconcile shares.
pub struct Context {
    /// The API server and the caches of what the operator manages.
    pub kube: Kube,
    /// Per-world bookkeeping between reconciles.
    pub books: Books,
    /// The cell processes: their samples, the client and the tokens.
    pub cells: Cells,
    /// When worlds are looked at again, and how many Pods a reconcile creates at
    /// once.
    pub timing: Timing,
    /// The time the planner and the expectations go by.
    pub clock: Clock,
    /// Who this operator is, as audit records name it.
    pub identity: Identity,
}

/// The API server and the operator's caches of it.
pub struct Kube {
    /// The API client.
    pub client: Client,
    /// Publishes Events on WorldSpecs.
    pub recorder: Recorder,
    /// The cell Pods the operator manages, in the namespaces it watches.
    pub pods: Store<Pod>,
    /// The worlds' headless Services.
    pub services: Store<Service>,
    /// The worlds' PodDisruptionBudgets.
    pub budgets: Store<PodDisruptionBudget>,
}

/// Bookkeeping that outlives one reconcile of a world.
pub struct Books {
    /// Failure counts per world, for `error_policy`.
    pub backoff: Backoff<ObjectRef<WorldSpec>>,
    /// What each world's last reconcile wrote and expects the caches to show.
    pub expectations: Expectations,
    /// Worlds waiting for a reconcile (the queue-depth gauge).
    pub queue: Arc<Queue>,
    /// Each world's phase, for the worlds-by-phase gauge.
    pub phases: Arc<Phases>,
    /// Cells seen starting, for the time-to-serve histogram.
    pub ready_timer: Arc<ReadyTimer>,
}

/// The cell processes.
pub struct Cells {
    /// Recent load samples of every cell process.
    pub samples: Arc<Samples>,
    /// Calls to cells; `None` when cells do not speak the cell contract (no
    /// sampling, nothing to hand over).
    pub client: Option<CellClient>,
    /// Where the worlds' cell tokens come from.
    pub tokens: Arc<TokenKeys>,
}

impl Cells {
    /// The cell tokens of `ws`. A key that can no longer be read is reported and
    /// the last good one kept.
    pub fn world_tokens(&self, ws: &WorldSpec) -> WorldTokens {
        let (tokens, error) = self
            .tokens
            .world_tokens(ws.metadata.uid.as_deref().unwrap_or_default());
        if let Some(error) = error {
            warn!(%error, "cell token key unreadable; keeping the last good key");
        }
        tokens
    }
}

/// Who the operator is, named in its audit records.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// This instance's name (its Pod).
    pub instance: String,
    /// The user it authenticates as, when the API server said (a
    /// SelfSubjectReview at start).
    pub user: Option<String>,
}

/// How often reconciles come, besides the changes that wake them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The resync and busy intervals (see [`fleetforge_core::pacing`]).
    pub pacing: Pacing,
    /// How many cell Pods one reconcile creates at once.
    pub create_concurrency: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            pacing: Pacing::default(),
            create_concurrency: 16,
        }
    }
}

/// How long a reconcile waits for caches that predate its world's last writes.
pub const CACHE_WAIT: Duration = Duration::from_millis(200);
