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

use crate::runtime::clock::Clock;

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
    /// Lease times are read from `clock`.
    pub fn start(api: Api<Lease>, config: LeaderConfig, clock: Clock) -> Self {
        let (tx, rx) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(campaign(api, config, clock, tx, stop_rx));
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
fn held(config: &LeaderConfig, previous: Option<&Lease>, clock: &Clock) -> Lease {
    let now = micro_time(clock.now());
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
    clock: &Clock,
    seen: &mut Option<Seen>,
) -> Result<bool, kube::Error> {
    let Some(current) = api.get_opt(&config.name).await? else {
        return match api
            .create(&PostParams::default(), &held(config, None, clock))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let rv = current.metadata.resource_version.clone();
    if seen.as_ref().map(|s| &s.resource_version) != Some(&rv) {
        *seen = Some(Seen {
            resource_version: rv,
            since: clock.instant(),
        });
    }
    let mine = holder(&current) == Some(config.identity.as_str());
    let free = holder(&current).is_none();
    let expired = seen.as_ref().is_some_and(|s| {
        clock.instant().saturating_duration_since(s.since) > duration_of(&current, config.lease_duration)
    });
    if !(mine || free || expired) {
        return Ok(false);
    }
    match api
        .replace(
            &config.name,
            &PostParams::default(),
            &held(config, Some(&current), clock),
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
async fn release(api: &Api<Lease>, config: &LeaderConfig, clock: &Clock) -> Result<(), kube::Error> {
    let Some(mut current) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    if holder(&current) != Some(config.identity.as_str()) {
        return Ok(());
    }
    if let Some(spec) = current.spec.as_mut() {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_time(clock.now()));
    }
    api.replace(&config.name, &PostParams::default(), &current)
        .await?;
    Ok(())
}

async fn campaign(
    api: Api<Lease>,
    config: LeaderConfig,
    clock: Clock,
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
    let mut last_renew = clock.instant();
    loop {
        match try_hold(&api, &config, &clock, &mut seen).await {
            Ok(true) => {
                last_renew = clock.instant();
                if !leader {
                    info!(lease = %config.name, identity = %config.identity, "became leader");
                    leader = true;
                    let _ = tx.send(true);
                }
            }
            Ok(false) if leader => {
                let holder = match api.get_opt(&config.name).await {
                    Ok(Some(l)) => holder(&l).unwrap_or("nobody").to_owned(),
                    _ => "unknown".to_owned(),
                };
                if holder == config.identity {
                    // Someone wrote the Lease between our read and our renewal
                    // (a label, an annotation) and left it ours: a renewal that
                    // failed, not a lost Lease. The renew deadline still applies.
                    debug!(lease = %config.name, "renewal raced another write; the Lease is still ours");
                    if clock.instant().saturating_duration_since(last_renew) > config.renew_deadline {
                        let _ = tx.send(false);
                        return Err(LeaderError::RenewFailed {
                            namespace: config.namespace.clone(),
                            name: config.name.clone(),
                            deadline: config.renew_deadline,
                            last_error: "every renewal conflicted with another write".to_owned(),
                        });
                    }
                } else {
                    let _ = tx.send(false);
                    return Err(LeaderError::Lost {
                        namespace: config.namespace.clone(),
                        name: config.name.clone(),
                        holder,
                    });
                }
            }
            Ok(false) => {}
            Err(e) if leader => {
                warn!(error = %e, lease = %config.name, "could not renew the leader lease");
                if clock.instant().saturating_duration_since(last_renew) > config.renew_deadline {
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
                    .saturating_duration_since(clock.instant())
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
                        match release(&api, &config, &clock).await {
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
                        seen = Some(Seen { resource_version: rv, since: clock.instant() });
                        let term = duration_of(&lease, config.lease_duration);
                        sleep.as_mut().reset(tokio::time::Instant::now() + term.max(config.retry_period));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The election against a fake Lease API: a `tower` service that answers the
    //! calls `Api<Lease>` and its watcher make (get, create, replace, list, watch)
    //! from one in-memory Lease with a resourceVersion counter. It keeps the API
    //! server's optimistic concurrency (a write carrying a stale resourceVersion
    //! gets 409) and can be made to fail. Tokio's clock is paused and the
    //! candidates' clock is manual: nothing sleeps in real time, and a candidate's
    //! clock moves only when a test moves it.

    use std::collections::{BTreeSet, HashMap};
    use std::sync::{Arc, Mutex};

    use fleetforge_core::Timestamp;
    use http::{Request, Response};
    use kube::Client;
    use kube::client::Body;
    use serde_json::json;
    use tokio::sync::Barrier;

    use super::*;

    const NS: &str = "games";
    const NAME: &str = "lead";
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/games/leases";
    const LEASE_DURATION: Duration = Duration::from_secs(10);
    const RENEW_DEADLINE: Duration = Duration::from_secs(6);
    const RETRY_PERIOD: Duration = Duration::from_secs(2);
    /// Wall time on the candidates' clocks when a test starts.
    const START: Timestamp = Timestamp(1_750_000_000_000);
    /// Ten years, in milliseconds.
    const DECADE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
    /// Far more (paused) tokio time than anything should take: reaching it means
    /// the awaited thing never happens.
    const PATIENCE: Duration = Duration::from_secs(3600);

    #[derive(Default)]
    struct Store {
        version: u64,
        lease: Option<Lease>,
        /// Every version stored, oldest first, with its watch event type.
        history: Vec<(&'static str, Lease)>,
        failing: bool,
        writes: usize,
        /// Before the next PUT, another writer adds an annotation and leaves the
        /// holder alone: the PUT then conflicts although the Lease is unchanged
        /// in substance.
        annotate_before_put: bool,
    }

    /// The fake API server's Lease resource in namespace `games`.
    #[derive(Clone)]
    struct FakeLeases {
        store: Arc<Mutex<Store>>,
        version: Arc<watch::Sender<u64>>,
        /// The first this-many writes through the API wait for each other, so
        /// that candidates write on the same resourceVersion.
        race: Option<(usize, Arc<Barrier>)>,
    }

    impl FakeLeases {
        fn new() -> Self {
            Self {
                store: Arc::default(),
                version: Arc::new(watch::channel(0).0),
                race: None,
            }
        }

        fn racing(writers: usize) -> Self {
            Self {
                race: Some((writers, Arc::new(Barrier::new(writers)))),
                ..Self::new()
            }
        }

        fn api(&self) -> Api<Lease> {
            let fake = self.clone();
            let service = tower::service_fn(move |req: Request<Body>| {
                let fake = fake.clone();
                async move { Ok::<_, std::convert::Infallible>(fake.handle(req).await) }
            });
            Api::namespaced(Client::new(service, NS), NS)
        }

        /// Stores `lease` as a new version, as another writer would (no
        /// resourceVersion check).
        fn write(&self, lease: Lease) -> Lease {
            self.commit(&mut self.store.lock().unwrap(), lease)
        }

        fn commit(&self, store: &mut Store, mut lease: Lease) -> Lease {
            store.version += 1;
            lease.metadata.resource_version = Some(store.version.to_string());
            let kind = if store.lease.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            store.lease = Some(lease.clone());
            store.history.push((kind, lease.clone()));
            self.version.send_replace(store.version);
            lease
        }

        fn current(&self) -> Option<Lease> {
            self.store.lock().unwrap().lease.clone()
        }

        fn history(&self) -> Vec<Lease> {
            self.store
                .lock()
                .unwrap()
                .history
                .iter()
                .map(|(_, l)| l.clone())
                .collect()
        }

        /// Before the next PUT, a harmless write by someone else (an annotation).
        fn annotate_before_next_put(&self) {
            self.store.lock().unwrap().annotate_before_put = true;
        }

        /// From now on every request fails with 500 (or, with `false`, none does).
        fn fail(&self, failing: bool) {
            self.store.lock().unwrap().failing = failing;
        }

        /// Waits for a stored Lease that `ok` accepts.
        async fn until(&self, what: &str, ok: impl Fn(&Lease) -> bool) -> Lease {
            let mut versions = self.version.subscribe();
            let found = async {
                loop {
                    if let Some(lease) = self.current().filter(|l| ok(l)) {
                        return lease;
                    }
                    versions.changed().await.unwrap();
                }
            };
            tokio::time::timeout(PATIENCE, found)
                .await
                .unwrap_or_else(|_| panic!("never saw {what}; the Lease is {:?}", self.current()))
        }

        async fn handle(&self, req: Request<Body>) -> Response<Body> {
            let method = req.method().as_str().to_owned();
            let path = req.uri().path().to_owned();
            let query: HashMap<String, String> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.replace("%3D", "=")))
                .collect();
            let body = req.into_body().collect_bytes().await.unwrap_or_default();
            if self.store.lock().unwrap().failing {
                return status(500, "InternalError");
            }
            let item = format!("/{NAME}");
            match (method.as_str(), path.strip_prefix(LEASES)) {
                ("GET", Some("")) => {
                    let selector = query.get("fieldSelector").map(String::as_str);
                    assert_eq!(selector, Some("metadata.name=lead"), "{path}?{query:?}");
                    if query.get("watch").is_some_and(|w| w == "true") {
                        self.watch(&query).await
                    } else {
                        let store = self.store.lock().unwrap();
                        respond(
                            200,
                            json!({
                                "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                                "metadata": {"resourceVersion": store.version.to_string()},
                                "items": store.lease.iter().collect::<Vec<_>>(),
                            }),
                        )
                    }
                }
                ("GET", Some(p)) if p == item => match self.current() {
                    Some(lease) => respond(200, json!(lease)),
                    None => status(404, "NotFound"),
                },
                ("POST", Some("")) => {
                    self.race().await;
                    let lease: Lease = serde_json::from_slice(&body).unwrap();
                    let mut store = self.store.lock().unwrap();
                    if store.lease.is_some() {
                        return status(409, "AlreadyExists");
                    }
                    respond(201, json!(self.commit(&mut store, lease)))
                }
                ("PUT", Some(p)) if p == item => {
                    self.race().await;
                    let lease: Lease = serde_json::from_slice(&body).unwrap();
                    let mut store = self.store.lock().unwrap();
                    if std::mem::take(&mut store.annotate_before_put)
                        && let Some(mut current) = store.lease.clone()
                    {
                        current
                            .metadata
                            .annotations
                            .get_or_insert_default()
                            .insert("example.com/owner".to_owned(), "platform-team".to_owned());
                        self.commit(&mut store, current);
                    }
                    let Some(current) = &store.lease else {
                        return status(404, "NotFound");
                    };
                    // As the API server: a write without a resourceVersion is
                    // unconditional, one with a stale resourceVersion conflicts.
                    let wanted = lease.metadata.resource_version.as_ref();
                    if wanted.is_some_and(|v| Some(v) != current.metadata.resource_version.as_ref()) {
                        return status(409, "Conflict");
                    }
                    respond(200, json!(self.commit(&mut store, lease)))
                }
                _ => panic!("the fake Lease API does not serve {method} {path}"),
            }
        }

        /// Answers a watch once something newer than its resourceVersion is
        /// stored (or its timeout passes): every newer version as one event line,
        /// then the end of the stream, after which the watcher watches again from
        /// the last version it saw.
        async fn watch(&self, query: &HashMap<String, String>) -> Response<Body> {
            let since: u64 = query["resourceVersion"].parse().unwrap();
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(290);
            let mut versions = self.version.subscribe();
            let _ =
                tokio::time::timeout(Duration::from_secs(timeout), versions.wait_for(|v| *v > since)).await;
            let events: String = self
                .store
                .lock()
                .unwrap()
                .history
                .iter()
                .filter(|(_, l)| {
                    l.metadata
                        .resource_version
                        .as_ref()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                        > since
                })
                .map(|(kind, lease)| format!("{}\n", json!({"type": kind, "object": lease})))
                .collect();
            Response::new(Body::from(events.into_bytes()))
        }

        async fn race(&self) {
            let Some((writers, barrier)) = &self.race else {
                return;
            };
            let nth = {
                let mut store = self.store.lock().unwrap();
                store.writes += 1;
                store.writes
            };
            if nth <= *writers {
                barrier.wait().await;
            }
        }
    }

    fn respond(code: u16, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap()
    }

    fn status(code: u16, reason: &str) -> Response<Body> {
        respond(
            code,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "code": code, "reason": reason, "message": format!("{reason} (fake Lease API)"),
            }),
        )
    }

    /// A Lease as another writer stores it.
    fn lease(holder: Option<&str>, renewed: Timestamp, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(NAME.to_owned()),
                namespace: Some(NS.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(micro_time(renewed)),
                renew_time: Some(micro_time(renewed)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    fn spec(lease: &Lease) -> &LeaseSpec {
        lease.spec.as_ref().unwrap()
    }

    fn candidate(fake: &FakeLeases, identity: &str, clock: &Clock) -> Election {
        let config = LeaderConfig {
            namespace: NS.to_owned(),
            name: NAME.to_owned(),
            identity: identity.to_owned(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        };
        Election::start(fake.api(), config, clock.clone())
    }

    async fn leads(election: &Election) {
        let mut is_leader = election.is_leader.clone();
        tokio::time::timeout(PATIENCE, is_leader.wait_for(|l| *l))
            .await
            .expect("never became leader")
            .unwrap();
    }

    /// Lets (paused) tokio time run on, so every candidate goes through several
    /// of its wake-ups.
    async fn meanwhile(by: Duration) {
        tokio::time::sleep(by).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_lease_is_created_and_held() {
        let fake = FakeLeases::new();
        let (clock, _hand) = Clock::manual(START);
        let a = candidate(&fake, "a", &clock);
        leads(&a).await;
        let lease = fake.current().unwrap();
        assert_eq!(holder(&lease), Some("a"));
        assert_eq!(spec(&lease).lease_duration_seconds, Some(10));
        assert_eq!(spec(&lease).acquire_time, Some(micro_time(START)));
        assert_eq!(spec(&lease).renew_time, Some(micro_time(START)));
        assert_eq!(spec(&lease).lease_transitions, Some(0));
        assert_eq!(fake.history().len(), 1, "created once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_without_holder_is_taken_at_once() {
        let fake = FakeLeases::new();
        // Released just now: by no measure has it expired.
        fake.write(lease(None, START, 3));
        let (clock, _hand) = Clock::manual(START);
        let a = candidate(&fake, "a", &clock);
        leads(&a).await;
        let lease = fake.current().unwrap();
        assert_eq!(holder(&lease), Some("a"));
        assert_eq!(spec(&lease).acquire_time, Some(micro_time(START)));
        assert_eq!(
            spec(&lease).lease_transitions,
            Some(4),
            "a new holder is a transition"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn of_candidates_racing_for_the_lease_exactly_one_wins_and_the_other_stands_by() {
        // Both read the same state and write on it: one write must conflict.
        for initial in [None, Some(lease(None, START, 0))] {
            let fake = FakeLeases::racing(2);
            if let Some(free) = initial.clone() {
                fake.write(free);
            }
            let (clock, _hand) = Clock::manual(START);
            let a = candidate(&fake, "a", &clock);
            let b = candidate(&fake, "b", &clock);
            fake.until("a holder", |l| holder(l).is_some()).await;
            meanwhile(RETRY_PERIOD * 5).await;
            let holders: BTreeSet<String> = fake
                .history()
                .iter()
                .filter_map(|l| holder(l).map(str::to_owned))
                .collect();
            assert_eq!(holders.len(), 1, "starting from {initial:?}: held by {holders:?}");
            assert_ne!(*a.is_leader.borrow(), *b.is_leader.borrow(), "exactly one leads");
            assert!(
                !a.task.is_finished() && !b.task.is_finished(),
                "losing a race is no error"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_renews_on_its_clock_keeping_its_acquire_time_and_transitions() {
        let fake = FakeLeases::new();
        fake.write(lease(None, START, 3));
        let (clock, hand) = Clock::manual(START);
        let a = candidate(&fake, "a", &clock);
        leads(&a).await;
        let mut last = fake.current().unwrap();
        for _ in 0..3 {
            hand.advance(Duration::from_millis(1_500));
            let renewed = fake
                .until("a renewal", |l| spec(l).renew_time != spec(&last).renew_time)
                .await;
            assert_eq!(holder(&renewed), Some("a"));
            assert_eq!(spec(&renewed).renew_time, Some(micro_time(clock.now())));
            assert_eq!(spec(&renewed).acquire_time, Some(micro_time(START)));
            assert_eq!(spec(&renewed).lease_transitions, Some(4));
            last = renewed;
        }
        assert!(*a.is_leader.borrow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lease_is_taken_only_once_the_candidate_saw_it_unchanged_for_the_lease_duration() {
        // The holder's clock is a decade off either way: its renewTime says
        // nothing about whether it is alive, only its renewals do.
        for renewed in [Timestamp(START.0 - DECADE_MS), Timestamp(START.0 + DECADE_MS)] {
            let fake = FakeLeases::new();
            let mut other = fake.write(lease(Some("other"), renewed, 2));
            let (clock, hand) = Clock::manual(START);
            let b = candidate(&fake, "b", &clock);

            // While the holder renews, the candidate waits, however long that goes on.
            // (Each renewal is followed by tokio time running on, so that the
            // candidate sees it before the clock moves again.)
            for _ in 0..5 {
                hand.advance(Duration::from_secs(6));
                other = fake.write(other);
                meanwhile(Duration::from_secs(6)).await;
            }
            // The holder stops; short of the lease duration on the candidate's
            // clock, however long tokio's time runs, the Lease stays.
            hand.advance(LEASE_DURATION - Duration::from_secs(1));
            meanwhile(LEASE_DURATION * 6).await;
            assert!(
                !*b.is_leader.borrow(),
                "taken early (holder's renewTime {renewed:?})"
            );
            assert_eq!(holder(&fake.current().unwrap()), Some("other"));

            hand.advance(Duration::from_secs(2));
            let mut b_leads = b.is_leader.clone();
            tokio::time::timeout(PATIENCE, b_leads.wait_for(|l| *l))
                .await
                .unwrap_or_else(|_| panic!("never taken (holder's renewTime {renewed:?})"))
                .unwrap();
            let lease = fake.current().unwrap();
            assert_eq!(holder(&lease), Some("b"));
            assert_eq!(spec(&lease).acquire_time, Some(micro_time(clock.now())));
            assert_eq!(spec(&lease).lease_transitions, Some(3));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn on_release_the_holder_is_cleared_and_a_watching_standby_takes_the_lease_at_once() {
        let fake = FakeLeases::new();
        let (clock, _hand) = Clock::manual(START);
        let a = candidate(&fake, "a", &clock);
        leads(&a).await;
        let b = candidate(&fake, "b", &clock);
        meanwhile(RETRY_PERIOD * 3).await;
        assert!(!*b.is_leader.borrow());
        let a_leads = a.is_leader.clone();

        a.release().await;
        assert!(!*a_leads.borrow());
        // Tokio's clock is paused, so this bounds the election's own sleeps, not
        // the machine's speed: the standby's shortest sleep is the retry period,
        // so taking over within less means the watch woke it. (The candidates'
        // clock stands still, so nothing expired either.)
        tokio::time::timeout(RETRY_PERIOD / 2, leads(&b))
            .await
            .expect("the standby did not take the released Lease at once");

        let history = fake.history();
        let released = history
            .iter()
            .position(|l| holder(l).is_none())
            .expect("the Lease was released");
        let (last_a, release, first_b) = (&history[released - 1], &history[released], &history[released + 1]);
        assert_eq!(holder(last_a), Some("a"));
        assert_eq!(spec(release).lease_duration_seconds, Some(1));
        assert_eq!(spec(release).renew_time, Some(micro_time(START)));
        assert_eq!(holder(first_b), Some("b"));
        assert_eq!(spec(first_b).lease_transitions, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_lease_is_taken_ends_with_lost_naming_the_new_holder() {
        let fake = FakeLeases::new();
        let (clock, _hand) = Clock::manual(START);
        let mut a = candidate(&fake, "a", &clock);
        leads(&a).await;

        let mut stolen = fake.current().unwrap();
        stolen.spec.as_mut().unwrap().holder_identity = Some("thief".to_owned());
        fake.write(stolen);

        let error = tokio::time::timeout(PATIENCE, a.failed())
            .await
            .expect("never noticed");
        assert!(
            matches!(&error, LeaderError::Lost { holder, .. } if holder == "thief"),
            "{error}"
        );
        assert!(!*a.is_leader.borrow());
        assert_eq!(holder(&fake.current().unwrap()), Some("thief"), "not taken back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_harmless_write_racing_a_renewal_does_not_end_leadership() {
        let fake = FakeLeases::new();
        let (clock, hand) = Clock::manual(START);
        let a = candidate(&fake, "a", &clock);
        leads(&a).await;

        fake.annotate_before_next_put();
        hand.advance(RETRY_PERIOD);
        meanwhile(RETRY_PERIOD * 3).await;
        let lease = fake.current().unwrap();
        assert!(
            lease
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("example.com/owner")),
            "the racing write happened"
        );
        assert!(
            *a.is_leader.borrow(),
            "a conflict with a harmless write ended leadership"
        );
        assert!(!a.task.is_finished());
        assert_eq!(holder(&lease), Some("a"));
        assert_eq!(
            lease.spec.as_ref().and_then(|s| s.renew_time.clone()),
            Some(micro_time(clock.now())),
            "renewed after the conflict"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_within_its_renew_deadline_gives_up() {
        let fake = FakeLeases::new();
        let (clock, hand) = Clock::manual(START);
        let mut a = candidate(&fake, "a", &clock);
        leads(&a).await;

        fake.fail(true);
        // Failures within the deadline (on the candidate's clock) are retried.
        meanwhile(RETRY_PERIOD * 10).await;
        hand.advance(RENEW_DEADLINE - Duration::from_secs(1));
        meanwhile(RETRY_PERIOD * 3).await;
        assert!(*a.is_leader.borrow(), "gave up within the renew deadline");
        assert!(!a.task.is_finished());

        hand.advance(Duration::from_secs(2));
        let error = tokio::time::timeout(PATIENCE, a.failed())
            .await
            .expect("never gave up");
        assert!(
            matches!(&error, LeaderError::RenewFailed { deadline, last_error, .. }
                if *deadline == RENEW_DEADLINE && last_error.contains("InternalError")),
            "{error}"
        );
        assert!(!*a.is_leader.borrow());
    }
}
