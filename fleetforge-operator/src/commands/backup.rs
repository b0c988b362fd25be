//! Backup and restore of worlds: every WorldSpec with the layout its cells had
//! split into, written to one file and applied back.
//!
//! A world restored from its spec alone would start from its initial cells and
//! take minutes of load to split again. The backup keeps each world's active
//! cells (id and bounds, read from its cell Pods); `restore` hands them to the
//! operator in the [`ANNOTATION_RESTORE_LAYOUT`] annotation, and the planner
//! creates exactly those cells for a world that has none. Player sessions live in
//! the cells' memory and are not part of a backup: players reconnect.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fleetforge_core::LayoutCell;
use fleetforge_crd::keys::{
    ANNOTATION_FORCE_MERGE, ANNOTATION_FORCE_SPLIT, ANNOTATION_RESTORE_LAYOUT, encode_restore_layout,
    managed_selector,
};
use fleetforge_crd::status::CONDITION_READY;
use fleetforge_crd::{WorldSpec, to_world};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::config::cli::{Cli, Command, seconds};
use crate::config::client::client;
use crate::mapping::observe::observe_world;

/// `apiVersion` of a backup file.
pub const BACKUP_API_VERSION: &str = "fleetforge.io/v1";
/// `kind` of a backup file.
pub const BACKUP_KIND: &str = "WorldBackup";
/// Field manager of the objects `restore` applies.
pub const RESTORE_MANAGER: &str = "fleetforge-restore";

/// Annotations a backup leaves out: requests that were meant for the live world
/// (a force-split of a cell that is restored already split would split it again)
/// and a restore layout of an earlier restore.
const TRANSIENT_ANNOTATIONS: &[&str] = &[
    ANNOTATION_FORCE_SPLIT,
    ANNOTATION_FORCE_MERGE,
    ANNOTATION_RESTORE_LAYOUT,
];

/// One backup file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorldBackup {
    /// Always [`BACKUP_API_VERSION`].
    pub api_version: String,
    /// Always [`BACKUP_KIND`].
    pub kind: String,
    /// When the backup was taken (RFC 3339).
    pub taken_at: String,
    /// The namespaces holding worlds, with their labels (Pod Security admission
    /// labels among them), so a deleted namespace comes back as it was.
    pub namespaces: Vec<NamespaceRecord>,
    /// Every world.
    pub worlds: Vec<WorldRecord>,
}

/// A namespace as the backup keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRecord {
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One world as the backup keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorldRecord {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations, less the transient ones.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Its spec, as the API server returned it: kept as JSON so that fields this
    /// version of the operator does not know survive the round trip.
    pub spec: Value,
    /// The active cells at backup time; empty when they did not form a layout
    /// the planner accepts (a world in the middle of a transition), and then the
    /// world restores to its initial cells.
    #[serde(default)]
    pub layout: Vec<LayoutCell>,
}

impl WorldBackup {
    /// Reads a backup file's text, refusing anything that is not a backup.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let backup: WorldBackup = serde_yaml_ng::from_str(text).context("the file is not a WorldBackup")?;
        if backup.api_version != BACKUP_API_VERSION || backup.kind != BACKUP_KIND {
            bail!(
                "apiVersion/kind: expected {BACKUP_API_VERSION} {BACKUP_KIND}, got {} {}",
                backup.api_version,
                backup.kind
            );
        }
        Ok(backup)
    }

    /// The file's text.
    pub fn to_yaml(&self) -> anyhow::Result<String> {
        serde_yaml_ng::to_string(self).context("writing the backup")
    }

    /// Cells over all worlds.
    pub fn cells(&self) -> usize {
        self.worlds.iter().map(|w| w.layout.len().max(1)).sum()
    }
}

/// The world's record, from the world and its cell Pods. The second value says
/// why the layout was left out, if it was.
pub fn record(ws: &WorldSpec, pods: &[Pod]) -> (WorldRecord, Option<String>) {
    let mut annotations = ws.annotations().clone();
    for key in TRANSIENT_ANNOTATIONS {
        annotations.remove(*key);
    }
    let (layout, why_not) = layout(ws, pods);
    let record = WorldRecord {
        namespace: ws.namespace().unwrap_or_default(),
        name: ws.name_any(),
        labels: ws.labels().clone(),
        annotations,
        spec: serde_json::to_value(&ws.spec).unwrap_or(Value::Null),
        layout,
    };
    (record, why_not)
}

/// The world's active cells, if they form a layout its planner accepts.
fn layout(ws: &WorldSpec, pods: &[Pod]) -> (Vec<LayoutCell>, Option<String>) {
    let mut world = match to_world(ws) {
        Ok(world) => world,
        Err(e) => return (Vec::new(), Some(format!("the spec is invalid ({e})"))),
    };
    let uid = ws.uid();
    let owned: Vec<Pod> = pods
        .iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .cloned()
        .collect();
    let (observed, _unreadable) = observe_world(&owned);
    let key = world.layout_key();
    let mut cells: Vec<LayoutCell> = observed
        .cells
        .iter()
        .filter(|c| c.is_active() && c.layout == key)
        .map(|c| LayoutCell {
            id: c.cell.id.clone(),
            bounds: c.bounds,
        })
        .collect();
    cells.sort_by(|a, b| a.id.cmp(&b.id));
    if cells.is_empty() {
        return (cells, Some("it has no active cells".to_owned()));
    }
    world.overrides.restore_layout = cells;
    match world.validate() {
        Ok(()) => (world.overrides.restore_layout, None),
        Err(errs) => {
            let why = errs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            (
                Vec::new(),
                Some(format!("its active cells do not form a layout ({why})")),
            )
        }
    }
}

/// The WorldSpec `restore` applies for `record`.
pub fn restored_object(record: &WorldRecord) -> Value {
    let mut annotations = record.annotations.clone();
    if !record.layout.is_empty() {
        annotations.insert(
            ANNOTATION_RESTORE_LAYOUT.to_owned(),
            encode_restore_layout(&record.layout),
        );
    }
    json!({
        "apiVersion": WorldSpec::api_version(&()),
        "kind": WorldSpec::kind(&()),
        "metadata": {
            "name": record.name,
            "namespace": record.namespace,
            "labels": record.labels,
            "annotations": annotations,
        },
        "spec": record.spec,
    })
}

/// Takes a backup of the worlds in `namespaces` (all namespaces when empty).
pub async fn take(client: &Client, namespaces: &[String]) -> anyhow::Result<WorldBackup> {
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut worlds = Vec::new();
    let mut namespace_names = std::collections::BTreeSet::new();
    for scope in scopes {
        let (world_api, pod_api): (Api<WorldSpec>, Api<Pod>) = match scope {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let list = world_api
            .list(&ListParams::default())
            .await
            .context("listing WorldSpecs")?;
        let pods = pod_api
            .list(&ListParams::default().labels(&managed_selector()))
            .await
            .context("listing cell Pods")?
            .items;
        for ws in &list.items {
            let (record, why_not) = record(ws, &pods);
            if let Some(why) = why_not {
                warn!(world = %format!("{}/{}", record.namespace, record.name), reason = %why,
                    "layout left out: the world restores to its initial cells");
            }
            namespace_names.insert(record.namespace.clone());
            worlds.push(record);
        }
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut namespaces = Vec::new();
    for name in namespace_names {
        let ns = ns_api
            .get(&name)
            .await
            .with_context(|| format!("reading namespace {name}"))?;
        namespaces.push(NamespaceRecord {
            name,
            labels: ns.labels().clone(),
        });
    }
    Ok(WorldBackup {
        api_version: BACKUP_API_VERSION.to_owned(),
        kind: BACKUP_KIND.to_owned(),
        taken_at: k8s_openapi::jiff::Timestamp::now().to_string(),
        namespaces,
        worlds,
    })
}

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Namespaces that did not exist and were created.
    pub namespaces_created: Vec<String>,
    /// Worlds applied (`namespace/name`).
    pub worlds_applied: Vec<String>,
}

/// Applies a backup: creates the namespaces that are missing, with their labels,
/// then server-side applies every world with its layout. With `dry_run` the API
/// server checks every write and keeps none.
pub async fn restore(client: &Client, backup: &WorldBackup, dry_run: bool) -> anyhow::Result<RestoreReport> {
    let mut report = RestoreReport::default();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &backup.namespaces {
        if ns_api
            .get_opt(&ns.name)
            .await
            .with_context(|| format!("reading namespace {}", ns.name))?
            .is_some()
        {
            continue;
        }
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(ns.name.clone());
        namespace.metadata.labels = Some(ns.labels.clone());
        let params = PostParams {
            dry_run,
            field_manager: Some(RESTORE_MANAGER.to_owned()),
        };
        ns_api
            .create(&params, &namespace)
            .await
            .with_context(|| format!("creating namespace {}", ns.name))?;
        info!(namespace = %ns.name, dry_run, "namespace created");
        report.namespaces_created.push(ns.name.clone());
    }
    let mut params = PatchParams::apply(RESTORE_MANAGER).force();
    params.dry_run = dry_run;
    for record in &backup.worlds {
        let key = format!("{}/{}", record.namespace, record.name);
        let api: Api<WorldSpec> = Api::namespaced(client.clone(), &record.namespace);
        api.patch(&record.name, &params, &Patch::Apply(restored_object(record)))
            .await
            .with_context(|| format!("applying WorldSpec {key}"))?;
        info!(world = %key, cells = record.layout.len(), dry_run, "world restored");
        report.worlds_applied.push(key);
    }
    Ok(report)
}

/// Waits until every world of `backup` is Ready with as many active cells as its
/// layout has (its initial cells when it has none), polling every `interval`.
/// Returns the worlds not there yet when `timeout` passes (empty: all converged).
pub async fn wait_converged(
    client: &Client,
    backup: &WorldBackup,
    timeout: Duration,
    interval: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pending = Vec::new();
        for record in &backup.worlds {
            let api: Api<WorldSpec> = Api::namespaced(client.clone(), &record.namespace);
            let ws = api
                .get_opt(&record.name)
                .await
                .with_context(|| format!("reading WorldSpec {}/{}", record.namespace, record.name))?;
            if !ws.as_ref().is_some_and(|ws| converged(ws, record)) {
                pending.push(format!("{}/{}", record.namespace, record.name));
            }
        }
        if pending.is_empty() || Instant::now() >= deadline {
            return Ok(pending);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Whether `ws` is Ready (for its current generation) with the cells `record`
/// asks for.
fn converged(ws: &WorldSpec, record: &WorldRecord) -> bool {
    let Some(status) = ws.status.as_ref() else {
        return false;
    };
    let want = if record.layout.is_empty() {
        ws.spec.topology.initial_cells
    } else {
        u32::try_from(record.layout.len()).unwrap_or(u32::MAX)
    };
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION_READY && c.status == "True");
    ready && status.observed_generation == ws.metadata.generation && status.active_cells == Some(want)
}

/// Runs `backup` or `restore` as the command line asks.
pub async fn run_command(cli: &Cli, command: &Command) -> anyhow::Result<()> {
    let client = client(cli).await?;
    match command {
        Command::Backup(args) => {
            let backup = take(&client, &args.namespaces).await?;
            let text = backup.to_yaml()?;
            if args.output.as_os_str() == "-" {
                std::io::stdout()
                    .write_all(text.as_bytes())
                    .context("writing the backup to standard output")?;
            } else {
                write_atomically(&args.output, &text)?;
            }
            info!(worlds = backup.worlds.len(), cells = backup.cells(), file = %args.output.display(), "backup written");
        }
        Command::Restore(args) => {
            let text = if args.input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the backup from standard input")?
            } else {
                std::fs::read_to_string(&args.input)
                    .with_context(|| format!("reading {}", args.input.display()))?
            };
            let backup =
                WorldBackup::parse(&text).with_context(|| format!("reading {}", args.input.display()))?;
            let started = Instant::now();
            let report = restore(&client, &backup, args.dry_run).await?;
            info!(
                worlds = report.worlds_applied.len(),
                namespaces_created = report.namespaces_created.len(),
                dry_run = args.dry_run,
                "backup applied"
            );
            if args.wait_seconds > 0.0 && !args.dry_run {
                let timeout = seconds("wait-seconds", args.wait_seconds)?;
                let pending = wait_converged(&client, &backup, timeout, Duration::from_millis(500)).await?;
                if !pending.is_empty() {
                    bail!(
                        "{} of {} worlds are not Ready with their layout after {:?}: {}",
                        pending.len(),
                        backup.worlds.len(),
                        timeout,
                        pending.join(", ")
                    );
                }
                info!(
                    worlds = backup.worlds.len(),
                    cells = backup.cells(),
                    seconds = started.elapsed().as_secs_f64(),
                    "every restored world is Ready with its layout"
                );
            }
        }
    }
    Ok(())
}

/// Writes `text` to `path` through a temporary file beside it, so an interrupted
/// backup never leaves a truncated file where the last good one was.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("the output is not a file name")?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving the backup to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::world_spec;

    #[test]
    fn a_backup_file_round_trips_and_anything_else_is_refused_by_field() {
        let (ws, _) = world_spec("meadow");
        let (record, why_not) = record(&ws, &[]);
        assert_eq!(why_not.as_deref(), Some("it has no active cells"));
        let backup = WorldBackup {
            api_version: BACKUP_API_VERSION.into(),
            kind: BACKUP_KIND.into(),
            taken_at: "2026-11-23T10:00:00Z".into(),
            namespaces: vec![NamespaceRecord {
                name: "games".into(),
                labels: BTreeMap::from([("pod-security.kubernetes.io/enforce".into(), "restricted".into())]),
            }],
            worlds: vec![record],
        };
        let text = backup.to_yaml().unwrap();
        assert_eq!(WorldBackup::parse(&text).unwrap(), backup);

        let other = text.replace("kind: WorldBackup", "kind: ConfigMap");
        let err = WorldBackup::parse(&other).unwrap_err().to_string();
        assert!(err.starts_with("apiVersion/kind:"), "{err}");
        assert!(WorldBackup::parse("worlds: 3").is_err());
    }

    #[test]
    fn transient_requests_are_left_out_and_the_layout_rides_in_its_annotation() {
        let (mut ws, _) = world_spec("meadow");
        ws.metadata.annotations = Some(BTreeMap::from([
            (ANNOTATION_FORCE_SPLIT.to_owned(), "c0".to_owned()),
            ("team".to_owned(), "blue".to_owned()),
        ]));
        let (mut record, _) = record(&ws, &[]);
        assert_eq!(
            record.annotations,
            BTreeMap::from([("team".into(), "blue".into())])
        );
        let object = restored_object(&record);
        assert!(
            object["metadata"]["annotations"]
                .get(ANNOTATION_RESTORE_LAYOUT)
                .is_none()
        );
        assert_eq!(object["spec"], serde_json::to_value(&ws.spec).unwrap());

        record.layout = vec![LayoutCell {
            id: "c0".parse().unwrap(),
            bounds: fleetforge_core::Bounds::rect((0.0, 1.0), (0.0, 1.0)).unwrap(),
        }];
        let object = restored_object(&record);
        let value = object["metadata"]["annotations"][ANNOTATION_RESTORE_LAYOUT]
            .as_str()
            .unwrap();
        assert_eq!(
            fleetforge_crd::keys::decode_restore_layout(value).unwrap(),
            record.layout
        );
    }
}
