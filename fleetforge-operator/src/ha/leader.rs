//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! The rules are client-go's: a candidate takes the Lease when it has no holder,
//! or when the holder has not renewed it for `leaseDurationSeconds` as measured on
//! the candidate's own clock (so clock skew between nodes does not matter); every
//! write carries the `resourceVersion` it read, so of two candidates exactly one
//! wins. Two things go further than kube-lease-manager, which sleeps until the old
//! lease expires even after its holder let go:
//!
//! - a standby watches the Lease and takes it the moment the holder releases it, so
//!   a rolling update or a SIGTERM hands leadership over at once;
//! - a leader that cannot renew within its renew deadline says so on the channel
//!   and the task ends with an error; the operator then exits instead of running
//!   on as a leader nobody else knows about.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use fleetforge_crd::status::micro_time;

use crate::controller::now;

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This instance's identity, written as the holder (its Pod name, say).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it gives up leadership.
    /// Shorter than `lease_duration`, so a leader stops acting before anyone else
    /// may take over.
    pub renew_deadline: Duration,
    /// How often a leader renews, and how often a failed attempt is retried.
    pub retry_period: Duration,
}

/// Why the election task ended without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be renewed within the renew deadline.
    #[error("could not renew Lease {namespace}/{name} within {deadline:?}: {last_error}")]
    RenewFailed {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The renew deadline.
        deadline: Duration,
        /// The last error seen.
        last_error: String,
    },
    /// Another instance took the Lease while this one believed it held it.
    #[error("Lease {namespace}/{name} was taken over by {holder}")]
    Lost {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The new holder.
        holder: String,
    },
    /// The election task is gone.
    #[error("the leader election ended: {0}")]
    Ended(String),
}

/// A running election: whether this instance leads, and a way to step down.
pub struct Election {
    /// `true` while this instance holds the Lease.
    pub is_leader: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), LeaderError>>,
}

impl Election {
    /// Starts campaigning for the Lease in a background task.
    pub fn start(api: Api<Lease>, config: LeaderConfig) -> Self {
        let (tx, rx) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(campaign(api, config, tx, stop_rx));
        Self {
            is_leader: rx,
            stop: Some(stop_tx),
            task,
        }
    }

    /// Resolves when the election task ends on its own (it lost the Lease or
    /// could not renew it); the operator must then stop.
    pub async fn failed(&mut self) -> LeaderError {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => LeaderError::Ended("it was stopped".to_owned()),
            Err(join) => LeaderError::Ended(format!("its task failed: {join}")),
        }
    }

    /// Steps down: releases the Lease if held, so a standby takes over at once,
    /// and waits for the task to end.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "leader election had ended before release"),
            Err(e) => warn!(error = %e, "leader election task failed"),
        }
    }
}

/// What a candidate last saw of the Lease, and when (on its own clock).
struct Seen {
    resource_version: Option<String>,
    since: Instant,
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn duration_of(lease: &Lease, fallback: Duration) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(fallback)
}

/// The Lease as held by `config.identity` from now on.
fn held(config: &LeaderConfig, previous: Option<&Lease>) -> Lease {
    let now = micro_time(now());
    let prev_spec = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
    let was_mine = previous.and_then(holder) == Some(config.identity.as_str());
    Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            // The resourceVersion read comes along: the write fails if someone
            // else wrote since.
            ..previous.map(|l| l.metadata.clone()).unwrap_or_default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
            acquire_time: if was_mine {
                prev_spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(
                prev_spec.lease_transitions.unwrap_or(0) + if was_mine || previous.is_none() { 0 } else { 1 },
            ),
            ..prev_spec
        }),
    }
}

/// Tries once to create, take or renew the Lease. `Ok(true)`: held now.
async fn try_hold(
    api: &Api<Lease>,
    config: &LeaderConfig,
    seen: &mut Option<Seen>,
) -> Result<bool, kube::Error> {
    let Some(current) = api.get_opt(&config.name).await? else {
        return match api.create(&PostParams::default(), &held(config, None)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let rv = current.metadata.resource_version.clone();
    if seen.as_ref().map(|s| &s.resource_version) != Some(&rv) {
        *seen = Some(Seen {
            resource_version: rv,
            since: Instant::now(),
        });
    }
    let mine = holder(&current) == Some(config.identity.as_str());
    let free = holder(&current).is_none();
    let expired = seen
        .as_ref()
        .is_some_and(|s| s.since.elapsed() > duration_of(&current, config.lease_duration));
    if !(mine || free || expired) {
        return Ok(false);
    }
    match api
        .replace(
            &config.name,
            &PostParams::default(),
            &held(config, Some(&current)),
        )
        .await
    {
        Ok(_) => Ok(true),
        // Someone else wrote first: they hold it, or we read it again next time.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if this instance holds it: no holder and a one-second
/// duration, so whoever watches it takes it at once.
async fn release(api: &Api<Lease>, config: &LeaderConfig) -> Result<(), kube::Error> {
    let Some(mut current) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    if holder(&current) != Some(config.identity.as_str()) {
        return Ok(());
    }
    if let Some(spec) = current.spec.as_mut() {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_time(now()));
    }
    api.replace(&config.name, &PostParams::default(), &current)
        .await?;
    Ok(())
}

async fn campaign(
    api: Api<Lease>,
    config: LeaderConfig,
    tx: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), LeaderError> {
    // Any change to the Lease wakes a standby: that is how a release is noticed
    // at once rather than when the old term would have run out.
    let mut changes = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", config.name)),
    )
    .default_backoff()
    .touched_objects()
    .boxed();
    let mut seen: Option<Seen> = None;
    let mut leader = false;
    let mut last_renew = Instant::now();
    loop {
        match try_hold(&api, &config, &mut seen).await {
            Ok(true) => {
                last_renew = Instant::now();
                if !leader {
                    info!(lease = %config.name, identity = %config.identity, "became leader");
                    leader = true;
                    let _ = tx.send(true);
                }
            }
            Ok(false) if leader => {
                let _ = tx.send(false);
                let holder = match api.get_opt(&config.name).await {
                    Ok(Some(l)) => holder(&l).unwrap_or("nobody").to_owned(),
                    _ => "unknown".to_owned(),
                };
                return Err(LeaderError::Lost {
                    namespace: config.namespace.clone(),
                    name: config.name.clone(),
                    holder,
                });
            }
            Ok(false) => {}
            Err(e) if leader => {
                warn!(error = %e, lease = %config.name, "could not renew the leader lease");
                if last_renew.elapsed() > config.renew_deadline {
                    let _ = tx.send(false);
                    return Err(LeaderError::RenewFailed {
                        namespace: config.namespace.clone(),
                        name: config.name.clone(),
                        deadline: config.renew_deadline,
                        last_error: e.to_string(),
                    });
                }
            }
            Err(e) => debug!(error = %e, lease = %config.name, "could not read the leader lease"),
        }

        // A leader renews every retry period; a standby waits for the Lease to
        // change or for its holder's term to run out, whichever comes first.
        let wait = if leader {
            config.retry_period
        } else {
            match &seen {
                Some(s) => (s.since + config.lease_duration)
                    .saturating_duration_since(Instant::now())
                    .max(config.retry_period),
                None => config.retry_period,
            }
        };
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    if leader {
                        let _ = tx.send(false);
                        match release(&api, &config).await {
                            Ok(()) => info!(lease = %config.name, "released the leader lease"),
                            Err(e) => warn!(error = %e, "could not release the leader lease"),
                        }
                    }
                    return Ok(());
                }
                _ = &mut sleep => break,
                change = changes.next(), if !leader => {
                    let Some(Ok(lease)) = change else { continue };
                    if holder(&lease).is_none() {
                        break;
                    }
                    // A renewal: the holder's term starts over from now, on our
                    // clock. Tracking renewals as they happen is what lets a dead
                    // holder be noticed one lease duration after its last renewal.
                    let rv = lease.metadata.resource_version.clone();
                    if seen.as_ref().map(|s| &s.resource_version) != Some(&rv) {
                        let now = Instant::now();
                        seen = Some(Seen { resource_version: rv, since: now });
                        let term = duration_of(&lease, config.lease_duration);
                        sleep.as_mut().reset((now + term.max(config.retry_period)).into());
                    }
                }
            }
        }
    }
}
