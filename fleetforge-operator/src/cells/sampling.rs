//! Load sampling: while it leads, the operator reads every live cell's load at
//! its Pod IP at a fixed interval, with bounded concurrency and a timeout per
//! cell, and keeps recent samples per cell process for the planner.
//!
//! A reconcile is woken when a sample matters rather than on a timer: a cell's
//! first answer, a cell crossing a threshold, a threshold held for the world's
//! stabilisation window (when the planner may act), a cell falling silent, one
//! staying silent past the deadline, or coming back. A steady world is never woken
//! by its samples.
//!
//! Silence is never taken for an empty cell. A cell that answered before and is
//! silent now is `Unready` (neither split nor merged, the world degraded); silent
//! past `dead_after` it is `Failed`, and the planner replaces it at once instead
//! of waiting minutes for Kubernetes to evict a Pod from a dead node. The players
//! it last reported are then counted as lost ([`Samples::take_lost`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetforge_core::{Health, LoadSample, ObservedCell, Timestamp, World};
use fleetforge_crd::{WorldSpec, to_world};
use fleetforge_obs::metrics as m;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::cells::client::CellClient;
use crate::runtime::clock::Clock;

/// Samples older than this are dropped: longer than any stabilisation window or
/// prediction horizon a world is likely to use.
const RETAIN: Duration = Duration::from_secs(600);
/// Most samples kept per cell, whatever the interval.
const MAX_SAMPLES: usize = 1200;

/// How sampling runs.
#[derive(Debug, Clone)]
pub struct SamplingConfig {
    /// Time between two rounds of samples.
    pub interval: Duration,
    /// Limit of one sample.
    pub timeout: Duration,
    /// Cells sampled at once.
    pub concurrency: usize,
    /// A cell that answered before and stays silent this long is failed.
    pub dead_after: Duration,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            concurrency: 64,
            dead_after: Duration::from_secs(5),
        }
    }
}

/// Where a cell's load sits against its world's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Band {
    Cold,
    Normal,
    Hot,
}

fn band(world: &World, players: u32) -> Band {
    let occupancy = world.occupancy(players);
    if occupancy > world.policy.scale_up_threshold {
        Band::Hot
    } else if occupancy < world.policy.scale_down_threshold {
        Band::Cold
    } else {
        Band::Normal
    }
}

/// What the sampler knows of one cell process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellRecord {
    /// Recent samples, oldest first.
    pub samples: VecDeque<LoadSample>,
    /// The last answer.
    pub last_ok: Option<Timestamp>,
    /// The first failed attempt since the last answer (or since sampling began).
    pub silent_since: Option<Timestamp>,
    /// The last attempt, answered or not: what the health seen then is judged at.
    last_attempt: Option<Timestamp>,
    band: Option<(Band, Timestamp)>,
    streak_woken: bool,
    lost_taken: bool,
}

/// The health of a cell process given its Pod's health and what sampling found.
///
/// Only a Pod that says it runs (`Ready`, `Unready`, or `Terminating`: being
/// deleted but still running) is refined: a terminating cell that stays silent
/// past `dead_after` died during its grace period and is `Failed`. A cell not
/// sampled yet keeps its Pod's health; one answering keeps it too; one that never
/// answered is still `Starting`, however long it stays silent (it was never
/// ready, so it holds no session: the planner retires it without a hand-over, and
/// replaces or rolls it back once the world's transition timeout has passed); one
/// that answered and fell silent is `Unready`, then `Failed` after `dead_after`.
pub fn sampled_health(
    pod: Health,
    record: Option<&CellRecord>,
    now: Timestamp,
    dead_after: Duration,
) -> Health {
    if !matches!(pod, Health::Ready | Health::Unready | Health::Terminating) {
        return pod;
    }
    let Some(r) = record else { return pod };
    match (r.last_ok, r.silent_since) {
        (_, None) => pod,
        // A terminating cell keeps its state until it is heard dead: a drain
        // waits for it rather than starting over.
        (None, Some(_)) if pod == Health::Terminating => pod,
        (None, Some(_)) => Health::Starting,
        (Some(_), Some(since)) if now.since(since) >= dead_after => Health::Failed,
        (Some(_), Some(_)) if pod == Health::Terminating => pod,
        (Some(_), Some(_)) => Health::Unready,
    }
}

/// The health a Ready Pod's cell had at the previous attempt (`Ready` before any).
fn previous_health(r: &CellRecord, dead_after: Duration) -> Health {
    r.last_attempt.map_or(Health::Ready, |at| {
        sampled_health(Health::Ready, Some(r), at, dead_after)
    })
}

/// Recent samples of every cell process, by Pod uid; shared by the sampler and
/// the reconciles.
#[derive(Debug)]
pub struct Samples {
    records: Mutex<HashMap<String, CellRecord>>,
    dead_after: Duration,
}

impl Samples {
    /// An empty set; cells silent for `dead_after` count as failed.
    pub fn new(dead_after: Duration) -> Self {
        Self {
            records: Mutex::new(HashMap::new()),
            dead_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CellRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `cell` (the process of the Pod with `uid`) its samples and refines
    /// its health by them.
    ///
    /// A cell waiting for a hand-over is not ready before it has answered once:
    /// sessions must not be sent to a process that is not listening yet. An
    /// active cell not sampled yet (a new leader's first moments) keeps its Pod's
    /// health, so a failover does not make a steady world look as if it scaled.
    pub fn overlay(&self, uid: &str, cell: &mut ObservedCell, now: Timestamp) {
        let records = self.lock();
        let record = records.get(uid);
        if record.is_none() && !cell.is_active() && cell.health == Health::Ready {
            cell.health = Health::Starting;
            return;
        }
        cell.health = sampled_health(cell.health, record, now, self.dead_after);
        if let Some(r) = record {
            cell.samples = r.samples.iter().cloned().collect();
        }
    }

    /// The players the cell of Pod `uid` last reported, once: the sessions lost
    /// when it is retired without a hand-over. `None` when already taken or never
    /// sampled.
    pub fn take_lost(&self, uid: &str) -> Option<u32> {
        let mut records = self.lock();
        let r = records.get_mut(uid)?;
        if r.lost_taken {
            return None;
        }
        r.lost_taken = true;
        r.samples.back().map(|s| s.players)
    }

    /// Records an answer; returns whether the world should be woken.
    fn answered(&self, uid: &str, sample: LoadSample, world: Option<&World>) -> bool {
        let now = sample.at;
        let mut records = self.lock();
        let r = records.entry(uid.to_owned()).or_default();
        let before = previous_health(r, self.dead_after);
        r.last_attempt = Some(now);
        let first = r.last_ok.is_none();
        let mut wake = false;
        if let Some(world) = world {
            let b = band(world, sample.players);
            match r.band {
                Some((old, _)) if old == b => {
                    let since = r.band.map_or(now, |(_, t)| t);
                    if b != Band::Normal
                        && !r.streak_woken
                        && now.since(since) >= world.policy.stabilization_window
                    {
                        r.streak_woken = true;
                        wake = true;
                    }
                }
                _ => {
                    r.band = Some((b, now));
                    r.streak_woken = world.policy.stabilization_window.is_zero();
                    wake = true;
                }
            }
        }
        r.last_ok = Some(now);
        r.silent_since = None;
        r.samples.push_back(sample);
        while r.samples.len() > MAX_SAMPLES || r.samples.front().is_some_and(|s| now.since(s.at) > RETAIN) {
            r.samples.pop_front();
        }
        let after = sampled_health(Health::Ready, Some(r), now, self.dead_after);
        wake || first || before != after
    }

    /// Records a failed attempt; returns whether the world should be woken.
    fn silent(&self, uid: &str, now: Timestamp) -> bool {
        let mut records = self.lock();
        let r = records.entry(uid.to_owned()).or_default();
        let before = previous_health(r, self.dead_after);
        r.last_attempt = Some(now);
        r.silent_since.get_or_insert(now);
        let after = sampled_health(Health::Ready, Some(r), now, self.dead_after);
        before != after
    }

    /// Forgets every cell process whose Pod uid is not in `live`.
    fn retain(&self, live: &HashSet<String>) {
        self.lock().retain(|uid, _| live.contains(uid));
    }
}

/// A cell Pod worth sampling: running, with an IP, not being deleted.
fn sample_target(pod: &Pod) -> Option<(String, String, ObjectRef<WorldSpec>)> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    let uid = pod.metadata.uid.clone()?;
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))?;
    let world = ObjectRef::new(&owner.name).within(pod.metadata.namespace.as_deref()?);
    Some((uid, ip, world))
}

/// One namespace's load sampler: what it reads, where it keeps samples, whom it
/// wakes.
pub struct Sampler {
    /// The cell Pods to sample.
    pub pods: Store<Pod>,
    /// Their worlds, for the thresholds that decide whether a sample matters.
    pub worlds: Store<WorldSpec>,
    /// Where samples are kept for the planner.
    pub samples: Arc<Samples>,
    /// Calls to cells.
    pub client: CellClient,
    /// Interval, timeout, concurrency and the dead-cell deadline.
    pub config: SamplingConfig,
    /// When a sample was taken.
    pub clock: Clock,
    /// Where the worlds to reconcile are sent.
    pub wake: UnboundedSender<ObjectRef<WorldSpec>>,
}

impl Sampler {
    /// Samples every cell once per interval until `stop` turns `true`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let config = &self.config;
        info!(interval = ?config.interval, timeout = ?config.timeout, dead_after = ?config.dead_after, "load sampling started");
        let mut ticks = tokio::time::interval(config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.round().instrument(info_span!("sampling")).await;
        }
        info!("load sampling stopped");
    }

    /// One round: every cell sampled once.
    async fn round(&self) {
        let all = self.pods.state();
        let live: HashSet<String> = all.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.samples.retain(&live);
        let targets: Vec<_> = all.iter().filter_map(|p| sample_target(p)).collect();
        // Each world converted once per round, not once per cell.
        let mut converted: HashMap<ObjectRef<WorldSpec>, Option<World>> = HashMap::new();
        for (_, _, world) in &targets {
            converted
                .entry(world.clone())
                .or_insert_with(|| self.worlds.get(world).and_then(|ws| to_world(&ws).ok()));
        }
        let results: Vec<_> = futures::stream::iter(targets)
            .map(|(uid, ip, world)| async move {
                let result = self.client.load(&ip).await;
                (uid, ip, world, result, self.clock.now())
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut woken = HashSet::new();
        for (uid, ip, world, result, at) in results {
            let wake_world = match result {
                Ok(report) => {
                    metrics::counter!(m::LOAD_SAMPLES).increment(1);
                    let w = converted.get(&world).and_then(Option::as_ref);
                    self.samples.answered(&uid, report.sample(at), w)
                }
                Err(e) => {
                    metrics::counter!(m::LOAD_SAMPLING_ERRORS, "reason" => e.reason()).increment(1);
                    debug!(world = %world, %ip, error = %e, "load sample failed");
                    self.samples.silent(&uid, at)
                }
            };
            if wake_world && woken.insert(world.clone()) && self.wake.unbounded_send(world).is_err() {
                warn!("the controller stopped taking wake-ups");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetforge_core::{Bounds, Overrides, ScalingPolicy};

    fn world(window_secs: u64) -> World {
        World {
            name: "w".into(),
            bounds: Bounds::rect((0.0, 100.0), (0.0, 100.0)).unwrap(),
            initial_cells: 2,
            min_cell_extent: None,
            players_per_cell: 100,
            policy: ScalingPolicy {
                scale_up_threshold: 0.8,
                scale_down_threshold: 0.3,
                stabilization_window: Duration::from_secs(window_secs),
                ..ScalingPolicy::default()
            },
            revision: "r".into(),
            overrides: Overrides::default(),
        }
    }

    fn sample(ms: u64, players: u32) -> LoadSample {
        LoadSample {
            at: Timestamp(ms),
            players,
            histogram: None,
        }
    }

    #[test]
    fn silence_is_unready_then_failed_never_empty() {
        let dead = Duration::from_secs(5);
        let s = Samples::new(dead);
        let t = |ms| Timestamp(ms);
        assert!(s.answered("a", sample(0, 40), None), "a first answer wakes");
        assert!(
            !s.answered("a", sample(1_000, 41), None),
            "a steady cell does not"
        );
        assert!(s.silent("a", t(2_000)), "falling silent wakes");
        assert!(!s.silent("a", t(3_000)));
        let records = s.lock();
        let r = records.get("a").unwrap();
        assert_eq!(
            sampled_health(Health::Ready, Some(r), t(6_999), dead),
            Health::Unready
        );
        assert_eq!(
            sampled_health(Health::Ready, Some(r), t(7_000), dead),
            Health::Failed
        );
        // The Pod's own verdict wins when it says the cell is not running.
        assert_eq!(
            sampled_health(Health::Starting, Some(r), t(9_000), dead),
            Health::Starting
        );
        // A terminating cell stays terminating while it may still hand over, and
        // is failed once silent past the deadline (it died in its grace period).
        assert_eq!(
            sampled_health(Health::Terminating, Some(r), t(6_999), dead),
            Health::Terminating
        );
        assert_eq!(
            sampled_health(Health::Terminating, Some(r), t(7_000), dead),
            Health::Failed
        );
        drop(records);
        assert!(s.silent("a", t(7_000)), "crossing the deadline wakes");
        assert_eq!(s.take_lost("a"), Some(41), "the last reported players are lost");
        assert_eq!(s.take_lost("a"), None, "and counted once");
        assert!(s.answered("a", sample(8_000, 0), None), "coming back wakes");
    }

    #[test]
    fn a_cell_that_never_answered_stays_starting() {
        let dead = Duration::from_secs(5);
        let s = Samples::new(dead);
        s.silent("b", Timestamp(0));
        let records = s.lock();
        let r = records.get("b");
        assert_eq!(
            sampled_health(Health::Ready, r, Timestamp(1_000), dead),
            Health::Starting
        );
        // Never ready, it may hold nothing: `Unready` would tell the planner to
        // wait for its sessions, which it never had.
        assert_eq!(
            sampled_health(Health::Ready, r, Timestamp(60_000), dead),
            Health::Starting
        );
        assert_eq!(
            sampled_health(Health::Ready, None, Timestamp(5_000), dead),
            Health::Ready
        );
    }

    #[test]
    fn thresholds_wake_on_crossing_and_once_the_window_has_held() {
        let w = world(2);
        let s = Samples::new(Duration::from_secs(5));
        assert!(s.answered("c", sample(0, 50), Some(&w)));
        assert!(!s.answered("c", sample(1_000, 60), Some(&w)));
        assert!(s.answered("c", sample(2_000, 90), Some(&w)), "crossing up wakes");
        assert!(
            !s.answered("c", sample(3_000, 95), Some(&w)),
            "inside the window: no wake"
        );
        assert!(s.answered("c", sample(4_000, 95), Some(&w)), "window held: wake");
        assert!(
            !s.answered("c", sample(5_000, 95), Some(&w)),
            "only once per streak"
        );
        assert!(
            s.answered("c", sample(6_000, 10), Some(&w)),
            "crossing down wakes"
        );
        let mut cell = ObservedCell {
            cell: fleetforge_core::CellRef {
                id: "c0".parse().unwrap(),
                incarnation: 0,
            },
            bounds: w.bounds,
            layout: 0,
            revision: String::new(),
            role: fleetforge_core::Role::Active { since: Timestamp(0) },
            health: Health::Ready,
            created_at: Timestamp(0),
            samples: Vec::new(),
        };
        s.overlay("c", &mut cell, Timestamp(6_000));
        assert_eq!(cell.samples.len(), 7);
        assert_eq!(cell.health, Health::Ready);

        // A new cell waiting for sessions is ready only once it has answered.
        let mut incoming = cell.clone();
        incoming.role = fleetforge_core::Role::Incoming;
        incoming.samples.clear();
        s.overlay("new", &mut incoming, Timestamp(6_000));
        assert_eq!(incoming.health, Health::Starting);
        let mut active = cell.clone();
        active.samples.clear();
        s.overlay("new", &mut active, Timestamp(6_000));
        assert_eq!(
            active.health,
            Health::Ready,
            "an active cell keeps its Pod's health until sampled"
        );
    }
}
