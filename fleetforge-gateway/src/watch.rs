//! The gateway's only contact with the API server: two watches, one on
//! WorldSpecs and one on the cell Pods the operator manages (by label), read
//! into [`State`]. Get, list and watch; nothing is ever written.
//!
//! A (re-)list is buffered until it is complete and then replaces what was known,
//! so a watch that fell behind (410 Gone) never leaves a deleted cell behind. The
//! watches retry on their own with a backoff; an error is logged and the last
//! known state keeps being served meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use fleetforge_core::Timestamp;
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::managed_selector;
use fleetforge_obs::metrics::{GATEWAY_CELLS, GATEWAY_DIRECTORY_LAG, GATEWAY_UNREADABLE, GATEWAY_WORLDS};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::cluster::{self, Publication, ReadError, WorldKey};
use crate::directory::CellEntry;
use crate::state::State;
use crate::worlds::{Published, Worlds};

/// Which namespaces the gateway reads: all of them, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (a ClusterRole).
    Cluster,
    /// One namespace (a Role in it is enough).
    Namespace(String),
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::Cluster => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Follows the cluster into `state` until the future is dropped; marks the state
/// synced once both first lists are in.
pub async fn follow(client: Client, scope: Scope, state: Arc<State>) {
    let lists_in = Arc::new(AtomicUsize::new(0));
    let worlds = watch_kind::<WorldSpec, _>(
        api(&client, &scope),
        watcher::Config::default(),
        Arc::clone(&state),
        Arc::clone(&lists_in),
        WorldSpecs,
    );
    let pods = watch_kind::<Pod, _>(
        api(&client, &scope),
        watcher::Config::default().labels(&managed_selector()),
        Arc::clone(&state),
        lists_in,
        CellPods,
    );
    futures::join!(worlds, pods);
}

/// How one kind of object is read into the worlds.
trait Kind<K>: Send + 'static {
    /// What a readable object becomes.
    type Item: Send;
    /// The `kind` label of the unreadable-objects metric.
    const LABEL: &'static str;
    /// Reads one object.
    fn read(&self, obj: &K) -> Result<Self::Item, ReadError>;
    /// The object was read as `item`.
    fn apply(&self, worlds: &mut Worlds, obj: &K, item: Self::Item) -> Published;
    /// The object was deleted, or can no longer be read.
    fn remove(&self, worlds: &mut Worlds, obj: &K) -> Published;
    /// A complete list replaces what was known.
    fn replace(&self, worlds: &mut Worlds, items: Vec<Self::Item>) -> Published;
}

struct WorldSpecs;

impl Kind<WorldSpec> for WorldSpecs {
    type Item = (WorldKey, Option<Publication>);
    const LABEL: &'static str = "worldspec";

    fn read(&self, ws: &WorldSpec) -> Result<Self::Item, ReadError> {
        let key = cluster::world_key(ws).ok_or_else(|| ReadError {
            object: "worldspec".to_owned(),
            field: "metadata".to_owned(),
            problem: "no namespace or name".to_owned(),
        })?;
        Ok((key, cluster::publication(ws)?))
    }

    fn apply(&self, worlds: &mut Worlds, _: &WorldSpec, (key, publication): Self::Item) -> Published {
        worlds.set_world(key, publication)
    }

    fn remove(&self, worlds: &mut Worlds, ws: &WorldSpec) -> Published {
        cluster::world_key(ws)
            .map(|key| worlds.remove_world(&key))
            .unwrap_or_default()
    }

    fn replace(&self, worlds: &mut Worlds, items: Vec<Self::Item>) -> Published {
        worlds.replace_worlds(items)
    }
}

struct CellPods;

impl Kind<Pod> for CellPods {
    type Item = (String, String, WorldKey, CellEntry);
    const LABEL: &'static str = "pod";

    fn read(&self, pod: &Pod) -> Result<Self::Item, ReadError> {
        let (world, entry) = cluster::cell_of_pod(pod)?;
        Ok((world.namespace.clone(), pod.name_any(), world, entry))
    }

    fn apply(&self, worlds: &mut Worlds, _: &Pod, (ns, name, world, entry): Self::Item) -> Published {
        worlds.set_cell(&ns, &name, world, entry)
    }

    fn remove(&self, worlds: &mut Worlds, pod: &Pod) -> Published {
        worlds.remove_cell(&pod.namespace().unwrap_or_default(), &pod.name_any())
    }

    fn replace(&self, worlds: &mut Worlds, items: Vec<Self::Item>) -> Published {
        worlds.replace_cells(items)
    }
}

/// Watches one kind of object and reads every event into the state.
async fn watch_kind<K, R>(
    api: Api<K>,
    config: watcher::Config,
    state: Arc<State>,
    lists_in: Arc<AtomicUsize>,
    kind: R,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    R: Kind<K>,
{
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Vec<R::Item>> = None;
    let mut listed_once = false;
    while let Some(event) = events.next().await {
        let was_synced = state.is_synced();
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn!(kind = R::LABEL, error = %e, "watch failed; retrying");
                continue;
            }
        };
        let published = match event {
            Event::Init => {
                listing = Some(Vec::new());
                continue;
            }
            Event::InitApply(obj) => {
                if let Some(item) = read(&kind, &obj) {
                    listing.get_or_insert_with(Vec::new).push(item);
                }
                continue;
            }
            Event::InitDone => {
                let items = listing.take().unwrap_or_default();
                let published = kind.replace(&mut state.write(), items);
                if !listed_once {
                    listed_once = true;
                    info!(kind = R::LABEL, "first list in");
                    // Both kinds listed: the worlds are whole.
                    if lists_in.fetch_add(1, Ordering::AcqRel) + 1 == 2 {
                        state.set_synced();
                        info!("the gateway knows the cluster; serving");
                    }
                }
                published
            }
            Event::Apply(obj) => match read(&kind, &obj) {
                Some(item) => kind.apply(&mut state.write(), &obj, item),
                None => kind.remove(&mut state.write(), &obj),
            },
            Event::Delete(obj) => kind.remove(&mut state.write(), &obj),
        };
        if was_synced {
            report(&state, &published);
        } else if state.is_synced() {
            // The cells of the first lists were activated before the gateway
            // started: their age is no lag of the gateway's.
            report(&state, &Published::default());
        }
    }
}

/// Reads an object, or counts and logs why it cannot be.
fn read<K, R: Kind<K>>(kind: &R, obj: &K) -> Option<R::Item> {
    match kind.read(obj) {
        Ok(item) => Some(item),
        Err(e) => {
            metrics::counter!(GATEWAY_UNREADABLE, "kind" => R::LABEL).increment(1);
            warn!(error = %e, "left out of the directory: cannot be read");
            None
        }
    }
}

/// Keeps the gauges current and measures the directory's lag.
fn report(state: &State, published: &Published) {
    let (worlds, cells) = state.read(|w| (w.published(), w.authoritative_cells()));
    metrics::gauge!(GATEWAY_WORLDS).set(worlds as f64);
    metrics::gauge!(GATEWAY_CELLS).set(cells as f64);
    let now = now();
    for since in &published.newly_authoritative {
        // Clocks of two machines: a cell seemingly activated in the future is
        // counted as no lag rather than as a negative one.
        let lag_ms = now.as_millis().saturating_sub(since.as_millis());
        metrics::histogram!(GATEWAY_DIRECTORY_LAG).record(lag_ms as f64 / 1000.0);
    }
}

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}
