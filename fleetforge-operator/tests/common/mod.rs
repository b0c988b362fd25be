//! Shared fixtures for the operator's integration tests: sample worlds, an
//! in-process operator scoped to one namespace and run as its own user (so its
//! writes can be counted in the audit log), and polling helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use fleetforge_core::pacing::Pacing;
use fleetforge_crd::WorldSpec;
use fleetforge_operator::app::controllers::{ControllerSettings, run_controllers};
use fleetforge_operator::config::cli::Scope;
use fleetforge_operator::reconcile::context::{Identity, Timing};
use fleetforge_operator::runtime::clock::Clock;
use fleetforge_testenv::{TestEnv, workspace_root};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The small sample world (`examples/worlds/small.yaml`) named `name` in `ns`.
pub fn sample_world(ns: &str, name: &str) -> anyhow::Result<WorldSpec> {
    let path = workspace_root().join("examples/worlds/small.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut ws: WorldSpec = serde_yaml_ng::from_str(&text)?;
    ws.metadata.namespace = Some(ns.to_owned());
    ws.metadata.name = Some(name.to_owned());
    Ok(ws)
}

/// Creates `ws` and returns it as stored.
pub async fn create_world(client: &Client, ws: &WorldSpec) -> anyhow::Result<WorldSpec> {
    let api: Api<WorldSpec> = Api::namespaced(client.clone(), &ws.namespace().unwrap());
    Ok(api.create(&PostParams::default(), ws).await?)
}

/// An operator running in this process, watching one namespace.
pub struct InProcess {
    /// The user its client authenticates as (for the audit log).
    pub user: String,
    /// Set once the controllers' caches have synced.
    pub synced: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl InProcess {
    /// Starts the controllers for `ns` as a `system:masters` user of its own,
    /// resyncing every `resync`.
    pub async fn start(env: &TestEnv, ns: &str, resync: Duration) -> anyhow::Result<Self> {
        let user = format!("operator-{ns}");
        let client = env.client_for(&user, &["system:masters"]).await?;
        let (stop, stop_rx) = watch::channel(false);
        let settings = ControllerSettings {
            scope: Scope::Namespaces(vec![ns.to_owned()]),
            concurrency: 4,
            timing: Timing {
                pacing: Pacing {
                    resync,
                    busy: Duration::from_millis(500),
                },
                ..Timing::default()
            },
            identity: Identity {
                instance: user.clone(),
                user: None,
            },
            sampling: None,
            tokens: std::sync::Arc::new(fleetforge_operator::cells::tokens::TokenKeys::ephemeral()?),
            clock: Clock::system(),
        };
        let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = synced.clone();
        let task = tokio::spawn(run_controllers(client, settings, stop_rx, move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        Ok(Self {
            user,
            synced,
            stop,
            task,
        })
    }

    /// Asks the controllers to stop and waits until in-flight reconciles finished.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.send(true).ok();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("controllers did not stop within 30s")??;
        Ok(())
    }
}

/// The operator's own count of successful reconciles,
/// `fleetforge_reconciles_total{result="ok"}` as its `/metrics` renders it, of the
/// controllers that run on the calling thread while this lives.
///
/// That counter has no `world` label, and the tests of a binary run at once, each
/// with an operator of its own: a recorder installed for the whole process would
/// add up every test's reconciles, so another test's could make up for a world
/// that never reconciled. This recorder is instead the calling thread's default
/// ([`metrics::set_default_local_recorder`]); a `#[tokio::test]` runs its
/// (current-thread) runtime, and with it every task its operator spawns, on the
/// test's own thread, which no other test uses. A reconcile run on another thread
/// would go uncounted: the count can come out too low, never too high.
pub struct ThreadReconciles {
    recorder: &'static metrics_exporter_prometheus::PrometheusRecorder,
    _installed: metrics::LocalRecorderGuard<'static>,
}

impl ThreadReconciles {
    /// Makes a fresh recorder the default of the calling thread until dropped. Call
    /// it before starting the operator it should count.
    pub fn install() -> Self {
        // Leaked so the guard can borrow it for as long as the test holds both: a
        // few bytes per test.
        let recorder: &'static _ = Box::leak(Box::new(
            metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
        ));
        let installed = metrics::set_default_local_recorder(recorder);
        Self {
            recorder,
            _installed: installed,
        }
    }

    /// Successful reconciles so far.
    pub fn ok(&self) -> u64 {
        let series = format!("{}{{result=\"ok\"}} ", fleetforge_obs::metrics::RECONCILES);
        self.recorder
            .handle()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    fleetforge_testenv::eventually(what, timeout, Duration::from_millis(100), check).await
}

/// The world's cell Pods that are not being deleted.
pub async fn live_cells(client: &Client, ns: &str, world: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&kube::api::ListParams::default().labels(&fleetforge_crd::keys::world_selector(world)))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// A condition's status on the world, if set.
pub fn condition(ws: &WorldSpec, type_: &str) -> Option<(String, String, String)> {
    ws.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether the world's Ready condition is True for its current generation.
pub fn is_ready(ws: &WorldSpec) -> bool {
    let generation = ws.metadata.generation;
    ws.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == generation)
        && condition(ws, "Ready").is_some_and(|(status, _, _)| status == "True")
}

/// The value of annotation `key` of a Pod.
pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Server-side applies `obj` as field manager `manager` (a dry run when
/// `dry_run`), whatever its kind, as `kubectl apply --server-side` would.
pub async fn apply(
    client: &Client,
    discovery: &kube::discovery::Discovery,
    obj: &kube::api::DynamicObject,
    manager: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    use kube::api::{DynamicObject, Patch, PatchParams};
    use kube::discovery::Scope;
    let types = obj.types.as_ref().context("object without apiVersion/kind")?;
    let gvk = kube::api::GroupVersionKind::try_from(types)?;
    let (resource, caps) = discovery
        .resolve_gvk(&gvk)
        .with_context(|| format!("the API server does not serve {gvk:?}"))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            Api::namespaced_with(client.clone(), &obj.namespace().unwrap_or_default(), &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply(manager).force();
    params.dry_run = dry_run;
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await
        .with_context(|| format!("applying {} {}", types.kind, obj.name_any()))?;
    Ok(())
}
