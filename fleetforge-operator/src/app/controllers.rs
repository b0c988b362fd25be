//! Wiring: reflectors and one controller per watched namespace (or one for all),
//! with their load samplers and the key watch, started when this instance leads
//! and stopped gracefully.

use std::sync::Arc;
use std::time::Duration;

use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::managed_selector;
use futures::future::join_all;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Config;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cells::client::CellClient;
use crate::cells::sampling::{Sampler, Samples, SamplingConfig};
use crate::cells::tokens::TokenKeys;
use crate::config::cli::Scope;
use crate::reconcile::context::{Books, Cells, Context, Identity, Kube, Timing};
use crate::reconcile::{error_policy, reconcile};
use crate::runtime::backoff::Backoff;
use crate::runtime::clock::Clock;
use crate::runtime::expectations::Expectations;
use crate::runtime::gauges::{Phases, ReadyTimer};
use crate::runtime::queue::Queue;

/// How the controllers run.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Namespaces to watch.
    pub scope: Scope,
    /// Worlds reconciled at once, per controller.
    pub concurrency: u16,
    /// Resync and requeue intervals.
    pub timing: Timing,
    /// Who this operator is: the reporting instance in Events (its Pod name) and
    /// the user audit records name.
    pub identity: Identity,
    /// Load sampling and hand-overs; `None` for cells that do not speak the cell
    /// contract (their health then comes from their Pods only).
    pub sampling: Option<SamplingConfig>,
    /// Where the worlds' cell tokens come from.
    pub tokens: Arc<TokenKeys>,
    /// The time reconciles, samplers and expectations go by.
    pub clock: Clock,
}

/// Limit of one cell's whole hand-over: it exports every session it holds, in
/// batches, to each target.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Strips what the operator never reads from a cached child object: managed
/// fields are most of a Pod's size and only matter to the API server.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// The caches of one watched namespace: worlds, cell Pods, Services, budgets.
type Stores = (
    Store<WorldSpec>,
    Store<Pod>,
    Store<Service>,
    Store<PodDisruptionBudget>,
);

/// Waits until a store has its initial list; `false` when its writer went away.
///
/// The store's readiness is a one-shot channel that wakes only the waiter that
/// polled it last, and the controller waits on the same store: so each wait is
/// bounded and polled again rather than trusted to be woken.
async fn synced<F, Fut>(wait: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), reflector::store::WriterDropped>>,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), wait()).await {
            Ok(result) => return result.is_ok(),
            Err(_elapsed) => continue,
        }
    }
}

/// Runs the controllers until `stop` turns `true`, then lets in-flight reconciles
/// finish. Calls `on_synced` once every cache has its initial list.
pub async fn run_controllers(
    client: Client,
    settings: ControllerSettings,
    stop: watch::Receiver<bool>,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let namespaces = settings.scope.namespaces();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "fleetforge-operator".to_owned(),
            instance: Some(settings.identity.instance.clone()),
        },
    );
    let mut stores: Vec<Stores> = Vec::new();
    let mut controllers = Vec::new();
    // Load samplers and the key watch: stopped once the controllers are.
    let mut background = Vec::new();
    let cells = settings
        .sampling
        .as_ref()
        .map(|s| CellClient::new(s.timeout, HANDOFF_TIMEOUT));
    let dead_after = settings.sampling.as_ref().map_or(Duration::MAX, |s| s.dead_after);
    let queue = Arc::new(Queue::default());
    let mut key_watch = Vec::new();
    let phases = Arc::new(Phases::default());
    let ready_timer = Arc::new(ReadyTimer::default());
    for ns in &namespaces {
        let ns = ns.as_deref();
        let children = watcher::Config::default()
            .labels(&managed_selector())
            .any_semantic();

        let (pods, pod_writer) = reflector::store::<Pod>();
        let q = queue.clone();
        let pod_stream = watcher(api_for::<Pod>(&client, ns), children.clone())
            .default_backoff()
            .modify(slim)
            .reflect(pod_writer)
            .touched_objects()
            .inspect_ok(move |pod| q.owner_woken(pod));
        let (services, svc_writer) = reflector::store::<Service>();
        let q = queue.clone();
        let svc_stream = watcher(api_for::<Service>(&client, ns), children.clone())
            .default_backoff()
            .modify(slim)
            .reflect(svc_writer)
            .touched_objects()
            .inspect_ok(move |svc| q.owner_woken(svc));
        let (budgets, budget_writer) = reflector::store::<PodDisruptionBudget>();
        let q = queue.clone();
        let budget_stream = watcher(api_for::<PodDisruptionBudget>(&client, ns), children)
            .default_backoff()
            .modify(slim)
            .reflect(budget_writer)
            .touched_objects()
            .inspect_ok(move |pdb| q.owner_woken(pdb));
        let (worlds, world_writer) = reflector::store::<WorldSpec>();
        let q = queue.clone();
        let world_stream = watcher(
            api_for::<WorldSpec>(&client, ns),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .reflect(world_writer)
        .touched_objects()
        .inspect_ok(move |ws| q.woken(ObjectRef::from_obj(ws)));

        let ctx = Arc::new(Context {
            kube: Kube {
                client: client.clone(),
                recorder: recorder.clone(),
                pods: pods.clone(),
                services: services.clone(),
                budgets: budgets.clone(),
            },
            books: Books {
                backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(300)),
                expectations: Expectations::new(Duration::from_secs(30), settings.clock.clone()),
                queue: queue.clone(),
                phases: phases.clone(),
                ready_timer: ready_timer.clone(),
            },
            cells: Cells {
                samples: Arc::new(Samples::new(dead_after)),
                client: cells.clone(),
                tokens: settings.tokens.clone(),
            },
            timing: settings.timing.clone(),
            clock: settings.clock.clone(),
            identity: settings.identity.clone(),
        });
        let (wake, woken) = futures::channel::mpsc::unbounded();
        let mut stop_controller = stop.clone();
        let q = queue.clone();
        let woken = woken.inspect(move |world: &ObjectRef<WorldSpec>| q.woken(world.clone()));
        let controller = Controller::for_stream(world_stream, worlds)
            .owns_stream(pod_stream)
            .owns_stream(svc_stream)
            .owns_stream(budget_stream)
            .reconcile_on(woken)
            .with_config(Config::default().concurrency(settings.concurrency))
            .graceful_shutdown_on(async move {
                let _ = stop_controller.wait_for(|s| *s).await;
            });
        key_watch.push((wake.clone(), controller.store()));
        if let (Some(config), Some(cells)) = (settings.sampling.clone(), cells.clone()) {
            let sampler = Sampler {
                pods: pods.clone(),
                worlds: controller.store(),
                samples: ctx.cells.samples.clone(),
                client: cells,
                config,
                clock: settings.clock.clone(),
                wake,
            };
            background.push(tokio::spawn(sampler.run(stop.clone())));
        }
        stores.push((controller.store(), pods, services, budgets));
        let scope = ns.unwrap_or("*").to_owned();
        controllers.push(
            controller
                .run(reconcile, error_policy, ctx)
                .for_each(move |result| {
                    let scope = scope.clone();
                    async move {
                        match result {
                            Ok((obj, _)) => debug!(world = %obj, %scope, "reconciled"),
                            Err(e) => debug!(error = %e, %scope, "controller"),
                        }
                    }
                }),
        );
    }

    tokio::spawn(async move {
        for (worlds, pods, services, budgets) in stores {
            let synced = synced(|| worlds.wait_until_ready()).await
                && synced(|| pods.wait_until_ready()).await
                && synced(|| services.wait_until_ready()).await
                && synced(|| budgets.wait_until_ready()).await;
            if !synced {
                warn!("a cache was dropped before it synced");
                return;
            }
        }
        info!("caches synced");
        on_synced();
    });

    background.push(tokio::spawn(watch_keys(
        settings.tokens.clone(),
        key_watch,
        stop.clone(),
    )));

    info!(scope = ?settings.scope, concurrency = settings.concurrency, "controllers running");
    join_all(controllers).await;
    for task in background {
        task.abort();
    }
    info!("controllers stopped");
}

/// How often the cell-token key files are checked for a rotation.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Wakes every world when the cell-token master key changes on disk, so each
/// writes its new token Secret within seconds of a rotation instead of at its
/// next resync.
async fn watch_keys(
    tokens: Arc<TokenKeys>,
    worlds: Vec<(
        futures::channel::mpsc::UnboundedSender<ObjectRef<WorldSpec>>,
        Store<WorldSpec>,
    )>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(KEY_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match tokens.refresh() {
            Ok(false) => {}
            Ok(true) => {
                let mut woken = 0;
                for (wake, store) in &worlds {
                    for ws in store.state() {
                        woken += usize::from(wake.unbounded_send(ObjectRef::from_obj(&*ws)).is_ok());
                    }
                }
                info!(
                    worlds = woken,
                    "cell token key changed; every world writes its new tokens"
                );
            }
            Err(error) => warn!(%error, "cell token key unreadable; keeping the last good key"),
        }
    }
}
