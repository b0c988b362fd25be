//! Runs cell Pods as local processes, standing in for a kubelet.
//!
//! kwok (the cluster profile) schedules Pods and reports them Running with an IP from
//! a loopback pod CIDR, but runs nothing. [`CellRunner`] watches FleetForge's Pods and,
//! for each one reported Running, starts a local binary with the environment the Pod's
//! first container would get, so a test talks to a real process at the Pod's IP.
//! Deleting the Pod stops the process as a kubelet would (SIGTERM, then SIGKILL after
//! the grace period); [`CellRunner::kill`] ends it abruptly, as a node failure would.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use fleetforge_testenv::{CellRunner, Profile, TestEnv};
//! let env = TestEnv::shared(Profile::Cluster).await?;
//! let runner = CellRunner::start(env.client().await?, "target/debug/my-cell", env.dir().join("cells"))?;
//! // … let the operator create cell Pods in some namespace, then:
//! runner.wait_running("my-ns", "my-world-c0-0", Duration::from_secs(30)).await?;
//! runner.kill("my-ns", "my-world-c0-0")?;
//! # Ok(()) }
//! ```
//!
//! What a kubelet does that the runner does not: run the Pod's image, command or args
//! (every Pod runs the same binary, without arguments); restart a process that exited;
//! expand `$(VAR)` references in env values; take env from ConfigMaps, Secrets or
//! resource fields, or from `envFrom`; mount volumes other than Secrets; report
//! anything in the Pod's status (kwok owns it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;

/// Longest grace a stopping process gets, whatever its Pod asks: a test should not sit
/// through the 30 s default for a process that ignores SIGTERM.
const MAX_GRACE: Duration = Duration::from_secs(10);
/// The API server's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// How often mounted Secrets are re-read. Kubelets take up to a minute; a test that
/// rotates a Secret should not have to.
const REFRESH_PERIOD: Duration = Duration::from_secs(1);
/// A Pod created together with its Secret may be Running before the Secret is
/// readable; a kubelet would wait for it, the runner waits this long and then starts
/// the process anyway (the refresher writes the files once the Secret appears).
const SECRET_ATTEMPTS: u32 = 10;
const SECRET_RETRY: Duration = Duration::from_millis(250);
/// How often a stopping process is checked for its exit.
const POLL: Duration = Duration::from_millis(50);
/// Linux's ETXTBSY: a freshly written script can be briefly unexecutable while a
/// process forked by another thread still holds its write descriptor.
const ETXTBSY: i32 = 26;
const SPAWN_ATTEMPTS: u32 = 10;

const LOG: &str = "[fleetforge-testenv runner]";

/// Runs every FleetForge cell Pod that kwok reports Running as a local process, until
/// the Pod is deleted. Dropping it kills every process it started.
///
/// Each process gets the parent's environment plus the env of the Pod's first
/// container: plain values as they are, and `fieldRef`s (`status.podIP`,
/// `metadata.name`, `metadata.namespace`, `metadata.uid`, and a few more) resolved
/// from the Pod. Secret volumes mounted in that container are written to
/// [`CellRunner::mount_dir`] and kept up to date as the Secrets change; env values
/// naming a mount path are rewritten to point there. Output goes to
/// [`CellRunner::log_path`]. A Pod's process is started once: one that exits, is
/// stopped or is killed is never started again for the same Pod (same uid).
pub struct CellRunner {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for CellRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellRunner")
            .field("binary", &self.shared.binary)
            .field("log_dir", &self.shared.log_dir)
            .finish_non_exhaustive()
    }
}

impl CellRunner {
    /// Starts watching the Pods the operator manages (its
    /// [`managed_selector`](fleetforge_crd::keys::managed_selector)) in all namespaces with
    /// `client` (which must be allowed to watch Pods and read Secrets: the admin of
    /// [`crate::TestEnv::client`] is), running `binary` for each, with logs and
    /// Secret files under `log_dir` (created if missing). Must be called within a
    /// Tokio runtime, which runs the watch; returns without waiting for any Pod.
    pub fn start(
        client: Client,
        binary: impl Into<PathBuf>,
        log_dir: impl Into<PathBuf>,
    ) -> anyhow::Result<CellRunner> {
        let binary = binary.into();
        let log_dir = log_dir.into();
        let runtime = tokio::runtime::Handle::try_current()
            .context("CellRunner::start must be called within a Tokio runtime")?;
        // A bare name is looked up in PATH at spawn time; a path can be checked now,
        // which beats one error per Pod later.
        if binary.components().count() > 1 {
            ensure!(
                binary.is_file(),
                "cell binary {} does not exist",
                binary.display()
            );
        }
        fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let shared = Arc::new(Shared {
            client,
            binary,
            log_dir,
            state: Mutex::new(State::default()),
        });
        let tasks = vec![
            runtime.spawn(watch(Arc::clone(&shared))),
            runtime.spawn(refresh(Arc::clone(&shared))),
        ];
        Ok(CellRunner { shared, tasks })
    }

    /// Ends the process of Pod `namespace/pod` now with SIGKILL, as if its node died,
    /// and waits until it is gone. The runner never starts it again while that Pod
    /// exists (a new Pod of the same name, with a new uid, is started as usual).
    /// Fails if the runner has not seen the Pod Running yet.
    pub fn kill(&self, namespace: &str, pod: &str) -> anyhow::Result<()> {
        let mut state = self.shared.lock();
        let mut found = false;
        for (key, cell) in state.cells.iter_mut().filter(|(k, _)| k.is(namespace, pod)) {
            found = true;
            match std::mem::replace(&mut cell.phase, Phase::Done) {
                Phase::Running(mut child) | Phase::Stopping(mut child) => {
                    let pid = child.id();
                    let status = kill_now(&mut child)
                        .with_context(|| format!("killing process {pid} of pod {key}"))?;
                    eprintln!(
                        "{LOG} killed {key} (ip {}, pid {pid}) as if its node died: {status}",
                        cell.ip
                    );
                }
                Phase::Starting => eprintln!("{LOG} killed {key} before its process started"),
                Phase::Done => {}
            }
        }
        ensure!(
            found,
            "no process for pod {namespace}/{pod}: the runner has not seen it Running"
        );
        Ok(())
    }

    /// Never starts a process for a Pod named `namespace/pod`, now or later: a
    /// cell whose process cannot come up (a crash-looping image, a node that
    /// cannot pull it). Only Pods not started yet are affected.
    pub fn hold(&self, namespace: &str, pod: &str) {
        self.shared
            .lock()
            .held
            .insert((namespace.to_owned(), pod.to_owned()));
    }

    /// The Pods whose process is alive (including one still shutting down after its
    /// Pod was deleted), as `(namespace, pod)`, sorted.
    pub fn running(&self) -> Vec<(String, String)> {
        let mut state = self.shared.lock();
        reap(&mut state);
        let mut pods: Vec<(String, String)> = state
            .cells
            .iter()
            .filter(|(_, c)| c.phase.is_alive())
            .map(|(k, _)| (k.namespace.clone(), k.name.clone()))
            .collect();
        pods.sort();
        pods.dedup();
        pods
    }

    /// The process id of Pod `namespace/pod`'s process while it is alive.
    pub fn pid(&self, namespace: &str, pod: &str) -> Option<u32> {
        let mut state = self.shared.lock();
        reap(&mut state);
        state
            .cells
            .iter_mut()
            .filter(|(k, _)| k.is(namespace, pod))
            .find_map(|(_, c)| c.phase.child().map(|child| child.id()))
    }

    /// Waits until Pod `namespace/pod` has a live process and returns its pid.
    pub async fn wait_running(&self, namespace: &str, pod: &str, timeout: Duration) -> anyhow::Result<u32> {
        let what = format!("a running process for pod {namespace}/{pod}");
        crate::poll::eventually(&what, timeout, POLL, || async {
            if let Some(pid) = self.pid(namespace, pod) {
                return Ok(Some(pid));
            }
            // Not the end of the wait (a new Pod of that name may still come), but
            // what the timeout reports.
            let ended = self
                .shared
                .lock()
                .cells
                .iter()
                .any(|(k, c)| k.is(namespace, pod) && matches!(c.phase, Phase::Done));
            ensure!(
                !ended,
                "the process of pod {namespace}/{pod} has already ended; see {}",
                self.log_path(namespace, pod).display()
            );
            Ok(None)
        })
        .await
    }

    /// Where the output of Pod `namespace/pod`'s process goes:
    /// `<log_dir>/<namespace>_<pod>.log` (appended to by every process of that name).
    pub fn log_path(&self, namespace: &str, pod: &str) -> PathBuf {
        self.shared.log_path(namespace, pod)
    }

    /// Where the Secret volume `volume` of Pod `namespace/pod` is "mounted":
    /// `<log_dir>/mounts/<namespace>/<pod>/<volume>/`, one file (mode 0600) per key.
    pub fn mount_dir(&self, namespace: &str, pod: &str, volume: &str) -> PathBuf {
        self.shared.mount_dir(namespace, pod, volume)
    }

    /// Stops watching and kills every process now (also done on drop).
    pub fn stop(self) {}
}

impl Drop for CellRunner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let mut state = self.shared.lock();
        // Start tasks still reading Secrets check this before spawning anything.
        state.closed = true;
        // Synchronous on purpose: a test that fails and unwinds must leave no process
        // behind, and aborted tasks only end at their next poll, if ever.
        for (key, cell) in &mut state.cells {
            if let Some(child) = cell.phase.child() {
                let pid = child.id();
                match kill_now(child) {
                    Ok(_) => eprintln!("{LOG} killed {key} (ip {}, pid {pid}): runner stopped", cell.ip),
                    Err(e) => eprintln!("{LOG} could not kill {key} (pid {pid}): {e}"),
                }
            }
            cell.phase = Phase::Done;
        }
    }
}

struct Shared {
    client: Client,
    binary: PathBuf,
    log_dir: PathBuf,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_path(&self, namespace: &str, pod: &str) -> PathBuf {
        self.log_dir.join(format!("{namespace}_{pod}.log"))
    }

    fn mount_dir(&self, namespace: &str, pod: &str, volume: &str) -> PathBuf {
        self.log_dir.join("mounts").join(namespace).join(pod).join(volume)
    }
}

#[derive(Default)]
struct State {
    /// Every Pod ever started, stopped or killed, so none is started twice; entries
    /// are never removed (a few bytes per Pod a test creates).
    cells: HashMap<PodKey, Cell>,
    /// Set when the runner is dropped: nothing may start after.
    closed: bool,
    /// Pods, by namespace and name, whose process is never started.
    held: HashSet<(String, String)>,
}

/// One Pod: the uid tells a Pod from a later one of the same name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PodKey {
    namespace: String,
    name: String,
    uid: String,
}

impl PodKey {
    fn of(pod: &Pod) -> Option<PodKey> {
        Some(PodKey {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone()?,
        })
    }

    fn is(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.name == name
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

struct Cell {
    ip: String,
    /// How long a stopping process may take before SIGKILL.
    grace: Duration,
    /// Filled in once the process runs; the refresher keeps these up to date.
    mounts: Vec<SecretMount>,
    phase: Phase,
}

enum Phase {
    /// Reading Secrets; the process is not spawned yet.
    Starting,
    Running(Child),
    /// SIGTERM sent (or about to be); a stop task waits for the exit.
    Stopping(Child),
    /// Exited, stopped, killed or never started: never started again.
    Done,
}

impl Phase {
    fn child(&mut self) -> Option<&mut Child> {
        match self {
            Phase::Running(child) | Phase::Stopping(child) => Some(child),
            Phase::Starting | Phase::Done => None,
        }
    }

    fn is_alive(&self) -> bool {
        matches!(self, Phase::Running(_) | Phase::Stopping(_))
    }
}

/// Collects the exit status of processes that ended on their own, so none lingers as
/// a zombie and [`CellRunner::running`] tells the truth.
fn reap(state: &mut State) {
    for (key, cell) in &mut state.cells {
        let Some(child) = cell.phase.child() else {
            continue;
        };
        let pid = child.id();
        if let Ok(Some(status)) = child.try_wait() {
            let how = if matches!(cell.phase, Phase::Stopping(_)) {
                "stopped"
            } else {
                "exited by itself"
            };
            eprintln!("{LOG} {key} (ip {}, pid {pid}) {how}: {status}", cell.ip);
            cell.phase = Phase::Done;
        }
    }
}

fn kill_now(child: &mut Child) -> std::io::Result<ExitStatus> {
    child.kill()?;
    child.wait()
}

fn sigterm(pid: u32) -> anyhow::Result<()> {
    // `kill(1)` rather than libc::kill: the workspace forbids unsafe code.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill(1)")?;
    ensure!(status.success(), "kill -TERM {pid} failed: {status}");
    Ok(())
}

async fn watch(shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().labels(&fleetforge_crd::keys::managed_selector());
    let mut events = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
    // The Pods of the list in progress: a Pod deleted while the watch was down shows
    // up only as missing from the next list.
    let mut listed: Option<HashSet<PodKey>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(listed), Some(key)) = (listed.as_mut(), PodKey::of(&pod)) {
                    listed.insert(key);
                }
                on_pod(&shared, &pod);
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let gone: Vec<PodKey> = shared
                        .lock()
                        .cells
                        .keys()
                        .filter(|k| !listed.contains(k))
                        .cloned()
                        .collect();
                    for key in gone {
                        stop(&shared, &key, None, "gone while the watch was down");
                    }
                }
            }
            Ok(Event::Apply(pod)) => on_pod(&shared, &pod),
            Ok(Event::Delete(pod)) => {
                if let Some(key) = PodKey::of(&pod) {
                    stop(&shared, &key, Some(&pod), "deleted");
                }
            }
            Err(e) => eprintln!("{LOG} watching Pods: {e}"),
        }
    }
}

fn on_pod(shared: &Arc<Shared>, pod: &Pod) {
    let Some(key) = PodKey::of(pod) else {
        return;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() {
        stop(shared, &key, Some(pod), "being deleted");
        return;
    }
    // No kubelet keeps containers of a finished Pod running.
    if let Some(finished @ ("Succeeded" | "Failed")) = phase {
        stop(shared, &key, Some(pod), &format!("phase {finished}"));
        return;
    }
    let Some(ip) = pod_ip(pod) else {
        return;
    };
    if phase != Some("Running") {
        return;
    }
    let mut state = shared.lock();
    if state.closed || state.cells.contains_key(&key) {
        return;
    }
    if state.held.contains(&(key.namespace.clone(), key.name.clone())) {
        return;
    }
    state.cells.insert(
        key.clone(),
        Cell {
            ip,
            grace: grace_of(pod),
            mounts: Vec::new(),
            phase: Phase::Starting,
        },
    );
    drop(state);
    // Reading Secrets may take seconds: never in the watch loop.
    tokio::spawn(start_cell(Arc::clone(shared), key, pod.clone()));
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
}

fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_GRACE)
}

/// Begins stopping the process of `key`, if it has one: SIGTERM now, SIGKILL after
/// the grace period, in a task of its own so the watch loop goes on.
fn stop(shared: &Arc<Shared>, key: &PodKey, pod: Option<&Pod>, why: &str) {
    let mut state = shared.lock();
    let Some(cell) = state.cells.get_mut(key) else {
        return;
    };
    match std::mem::replace(&mut cell.phase, Phase::Done) {
        Phase::Starting => eprintln!("{LOG} {key} {why} before its process started; not starting it"),
        Phase::Running(child) => {
            let mut grace = cell.grace;
            // A deletion asking for less (`kubectl delete --grace-period`) gets less;
            // 0 is how kwok force-deletes, which a kubelet would not see.
            if let Some(asked) = pod
                .and_then(|p| p.metadata.deletion_grace_period_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
            {
                grace = grace.min(Duration::from_secs(asked));
            }
            eprintln!(
                "{LOG} stopping {key} (ip {}, pid {}): {why}; SIGKILL after {grace:?}",
                cell.ip,
                child.id()
            );
            cell.phase = Phase::Stopping(child);
            tokio::spawn(finish_stop(Arc::clone(shared), key.clone(), grace));
        }
        other @ (Phase::Stopping(_) | Phase::Done) => cell.phase = other,
    }
}

async fn finish_stop(shared: Arc<Shared>, key: PodKey, grace: Duration) {
    {
        let mut state = shared.lock();
        if let Some(Phase::Stopping(child)) = state.cells.get_mut(&key).map(|c| &mut c.phase)
            && matches!(child.try_wait(), Ok(None))
        {
            // Signalled under the lock and only while not reaped: the pid cannot have
            // been reused by an unrelated process.
            if let Err(e) = sigterm(child.id()) {
                eprintln!("{LOG} stopping {key}: {e:#}");
            }
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let stopped = {
            let mut state = shared.lock();
            let Some(cell) = state.cells.get_mut(&key) else {
                return;
            };
            // Anything else: killed, reaped by `running`, or the runner was dropped.
            let Phase::Stopping(child) = &mut cell.phase else {
                return;
            };
            let pid = child.id();
            let outcome = match child.try_wait() {
                Ok(Some(status)) => Some(format!("stopped: {status}")),
                Ok(None) if Instant::now() < deadline => None,
                Ok(None) => Some(match kill_now(child) {
                    Ok(status) => format!("did not stop within {grace:?}; killed: {status}"),
                    Err(e) => format!("did not stop within {grace:?} and could not be killed: {e}"),
                }),
                Err(e) => Some(match kill_now(child) {
                    Ok(status) => format!("could not be waited for ({e}); killed: {status}"),
                    Err(e2) => format!("could not be waited for ({e}) nor killed ({e2})"),
                }),
            };
            if let Some(outcome) = outcome {
                eprintln!("{LOG} {key} (ip {}, pid {pid}) {outcome}", cell.ip);
                cell.phase = Phase::Done;
                true
            } else {
                false
            }
        };
        if stopped {
            remove_stopped_pod(&shared, &key).await;
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Removes the Pod of a process that stopped, as a kubelet does once a deleted
/// Pod's containers have ended: with a node that honours grace periods
/// ([`crate::Options::graceful_deletion`]) the Pod would otherwise stay until its
/// grace period is over. Only that Pod (its uid): never a new one of the same name.
async fn remove_stopped_pod(shared: &Shared, key: &PodKey) {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &key.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(key.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&key.name, &params).await {
        // Gone already (kwok removed it), or a new Pod took the name.
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => eprintln!("{LOG} removing the Pod of {key}: {e}"),
    }
}

async fn start_cell(shared: Arc<Shared>, key: PodKey, pod: Pod) {
    if let Err(e) = launch(&shared, &key, &pod).await {
        eprintln!("{LOG} {e:#}");
        if let Some(cell) = shared.lock().cells.get_mut(&key)
            && matches!(cell.phase, Phase::Starting)
        {
            cell.phase = Phase::Done;
        }
    }
}

async fn launch(shared: &Shared, key: &PodKey, pod: &Pod) -> anyhow::Result<()> {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .with_context(|| format!("pod {key} has no container"))?;
    let mounts = secret_mounts(shared, key, pod, container);
    for mount in &mounts {
        mount.populate(&shared.client, key).await.with_context(|| {
            format!(
                "mounting secret volume {} of pod {key} at {}",
                mount.volume,
                mount.dir.display()
            )
        })?;
    }
    let env = pod_env(pod, container, &mounts);
    let log = shared.log_path(&key.namespace, &key.name);
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {} for pod {key}", log.display()))?;
    let mut command = Command::new(&shared.binary);
    // The parent's environment stays (PATH, HOME, RUST_LOG…); the Pod's wins.
    command
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let mut child = spawn(&mut command)
        .await
        .with_context(|| format!("starting {} for pod {key}", shared.binary.display()))?;

    let mut state = shared.lock();
    let closed = state.closed;
    match state.cells.get_mut(key) {
        Some(cell) if !closed && matches!(cell.phase, Phase::Starting) => {
            eprintln!("{LOG} started {key} (ip {}, pid {})", cell.ip, child.id());
            cell.mounts = mounts;
            cell.phase = Phase::Running(child);
        }
        _ => {
            let _ = kill_now(&mut child);
            eprintln!("{LOG} not starting {key}: deleted, killed or runner stopped meanwhile");
        }
    }
    Ok(())
}

async fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempt < SPAWN_ATTEMPTS => {
                tokio::time::sleep(POLL).await;
            }
            other => return other,
        }
    }
}

/// The container's env as a kubelet would set it, as far as the runner can.
fn pod_env(pod: &Pod, container: &Container, mounts: &[SecretMount]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            Some(from) => match from
                .field_ref
                .as_ref()
                .and_then(|f| field_value(pod, &f.field_path))
            {
                Some(value) => value,
                None => continue,
            },
            None => var.value.clone().unwrap_or_default(),
        };
        env.push((var.name.clone(), rewrite_mount_path(&value, mounts)));
    }
    env
}

/// A downward-API field of the Pod, or `None` for one the runner does not know.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.as_str()).collect::<Vec<_>>().join(",")),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        _ => {
            let (map, key) = if let Some(rest) = path.strip_prefix("metadata.labels['") {
                (meta.labels.as_ref(), rest.strip_suffix("']")?)
            } else {
                (
                    meta.annotations.as_ref(),
                    path.strip_prefix("metadata.annotations['")?.strip_suffix("']")?,
                )
            };
            Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
        }
    }
}

/// Points a value naming a path inside a Secret mount at the local copy; the longest
/// matching mount path wins, as with nested mounts in a container.
fn rewrite_mount_path(value: &str, mounts: &[SecretMount]) -> String {
    let mut best: Option<(&str, &Path)> = None;
    for (mount_path, local) in mounts.iter().flat_map(|m| &m.paths) {
        let mount_path = mount_path.trim_end_matches('/');
        if mount_path.is_empty() {
            continue;
        }
        let matches = value == mount_path
            || value
                .strip_prefix(mount_path)
                .is_some_and(|rest| rest.starts_with('/'));
        if matches && best.is_none_or(|(b, _)| mount_path.len() > b.len()) {
            best = Some((mount_path, local));
        }
    }
    match best {
        Some((mount_path, local)) => {
            let rest = value[mount_path.len()..].trim_start_matches('/');
            if rest.is_empty() {
                local.display().to_string()
            } else {
                local.join(rest).display().to_string()
            }
        }
        None => value.to_owned(),
    }
}

/// The Secret volumes `container` mounts, one per volume however often it is mounted.
fn secret_mounts(shared: &Shared, key: &PodKey, pod: &Pod, container: &Container) -> Vec<SecretMount> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut mounts: Vec<SecretMount> = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let Some(source) = volumes
            .iter()
            .find(|v| v.name == vm.name)
            .and_then(|v| v.secret.as_ref())
        else {
            continue;
        };
        let dir = shared.mount_dir(&key.namespace, &key.name, &vm.name);
        let local = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        if let Some(mount) = mounts.iter_mut().find(|m| m.volume == vm.name) {
            mount.paths.push((vm.mount_path.clone(), local));
            continue;
        }
        mounts.push(SecretMount {
            volume: vm.name.clone(),
            namespace: key.namespace.clone(),
            secret: source.secret_name.clone().unwrap_or_default(),
            items: source.items.clone(),
            optional: source.optional.unwrap_or(false),
            dir,
            paths: vec![(vm.mount_path.clone(), local)],
        });
    }
    mounts
}

/// A Secret volume of a Pod and where its files are on this machine.
#[derive(Clone)]
struct SecretMount {
    volume: String,
    namespace: String,
    secret: String,
    items: Option<Vec<KeyToPath>>,
    optional: bool,
    dir: PathBuf,
    /// Each mount path in the container, and the local path that stands for it.
    paths: Vec<(String, PathBuf)>,
}

impl SecretMount {
    async fn read(&self, client: &Client) -> kube::Result<Option<Secret>> {
        Api::<Secret>::namespaced(client.clone(), &self.namespace)
            .get_opt(&self.secret)
            .await
    }

    /// Writes the Secret into a fresh directory, waiting a little for a Secret that is
    /// not there yet.
    async fn populate(&self, client: &Client, key: &PodKey) -> anyhow::Result<()> {
        // An earlier Pod of the same name may have left files of another Secret.
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).with_context(|| format!("clearing {}", self.dir.display()))?;
        }
        create_private_dir(&self.dir)?;
        let mut attempt = 0;
        let secret = loop {
            attempt += 1;
            let why = match self.read(client).await {
                Ok(Some(secret)) => break Some(secret),
                Ok(None) if self.optional => break None,
                Ok(None) => "it does not exist".to_owned(),
                Err(e) => e.to_string(),
            };
            if attempt >= SECRET_ATTEMPTS {
                eprintln!(
                    "{LOG} starting {key} without secret {}/{} (volume {}): {why}; its files \
                     appear once it can be read",
                    self.namespace, self.secret, self.volume
                );
                break None;
            }
            tokio::time::sleep(SECRET_RETRY).await;
        };
        if let Some(secret) = secret {
            write_files(&self.dir, &secret_files(&secret, self.items.as_deref())?)?;
        }
        Ok(())
    }

    /// Rewrites the files that changed; `Ok(true)` if any did. A Secret that cannot
    /// be read leaves the files as they are, as a kubelet does.
    async fn refresh(&self, client: &Client) -> anyhow::Result<bool> {
        let Ok(Some(secret)) = self.read(client).await else {
            return Ok(false);
        };
        // Gone when a newer Pod of the same name cleared it; not ours to recreate.
        if !self.dir.is_dir() {
            return Ok(false);
        }
        write_files(&self.dir, &secret_files(&secret, self.items.as_deref())?)
    }
}

/// The files of a Secret volume: one per key, or the `items` projection.
fn secret_files(secret: &Secret, items: Option<&[KeyToPath]>) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let mut files = BTreeMap::new();
    match items {
        None => {
            for (key, value) in data {
                files.insert(safe_relative(key)?, value.0.clone());
            }
        }
        Some(items) => {
            // A key missing from the Secret is an error for a kubelet; here the file
            // is simply absent, which a test notices as readily.
            for item in items {
                if let Some(value) = data.get(&item.key) {
                    files.insert(safe_relative(&item.path)?, value.0.clone());
                }
            }
        }
    }
    Ok(files)
}

/// `path` if it stays inside the directory it is joined to.
fn safe_relative(path: &str) -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(path);
    ensure!(
        !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_))),
        "secret file path {path:?} would leave its volume"
    );
    Ok(p)
}

/// Makes `dir` hold exactly `files`; returns whether anything changed. Each file is
/// replaced atomically so a process never reads half a Secret.
fn write_files(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> anyhow::Result<bool> {
    let mut changed = false;
    for (relative, content) in files {
        let path = dir.join(relative);
        if fs::read(&path).is_ok_and(|old| old == *content) {
            continue;
        }
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        write_atomic(&path, content)?;
        changed = true;
    }
    // Keys removed from the Secret disappear from the volume, as with a kubelet.
    let keep: HashSet<OsString> = files
        .keys()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_owned())
        .collect();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if keep.contains(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
        changed = true;
    }
    Ok(changed)
}

fn write_atomic(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    // Secret keys may not start with "..", so this never clashes with one.
    let mut tmp_name = OsString::from("..");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(content)
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Secret files are readable by this user only, down the whole path.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Re-reads the Secrets of running Pods every [`REFRESH_PERIOD`], and reaps processes
/// that exited on their own so their end is logged promptly.
async fn refresh(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(REFRESH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mounted: Vec<(PodKey, Vec<SecretMount>)> = {
            let mut state = shared.lock();
            reap(&mut state);
            state
                .cells
                .iter()
                .filter(|(_, c)| matches!(c.phase, Phase::Running(_)) && !c.mounts.is_empty())
                .map(|(k, c)| (k.clone(), c.mounts.clone()))
                .collect()
        };
        for (key, mounts) in mounted {
            for mount in mounts {
                match mount.refresh(&shared.client).await {
                    Ok(true) => eprintln!(
                        "{LOG} updated secret {}/{} in volume {} of {key}",
                        mount.namespace, mount.secret, mount.volume
                    ),
                    Ok(false) => {}
                    Err(e) => eprintln!("{LOG} refreshing volume {} of {key}: {e:#}", mount.volume),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn mount(mount_path: &str, local: &str) -> SecretMount {
        SecretMount {
            volume: "v".to_owned(),
            namespace: "ns".to_owned(),
            secret: "s".to_owned(),
            items: None,
            optional: false,
            dir: PathBuf::from(local),
            paths: vec![(mount_path.to_owned(), PathBuf::from(local))],
        }
    }

    #[test]
    fn env_values_naming_a_mount_point_into_its_local_copy() {
        let mounts = [
            mount("/var/run/x", "/tmp/m/x"),
            mount("/var/run/x/deeper/", "/tmp/m/d"),
        ];
        assert_eq!(rewrite_mount_path("/var/run/x", &mounts), "/tmp/m/x");
        assert_eq!(rewrite_mount_path("/var/run/x/token", &mounts), "/tmp/m/x/token");
        assert_eq!(rewrite_mount_path("/var/run/x/deeper/a", &mounts), "/tmp/m/d/a");
        assert_eq!(rewrite_mount_path("/var/run/xy", &mounts), "/var/run/xy");
        assert_eq!(rewrite_mount_path("plain", &mounts), "plain");
    }

    #[test]
    fn secret_files_stay_inside_the_volume() -> anyhow::Result<()> {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("token".to_owned(), ByteString(b"t".to_vec())),
                ("ca.crt".to_owned(), ByteString(b"c".to_vec())),
            ])),
            ..Secret::default()
        };
        let all = secret_files(&secret, None)?;
        assert_eq!(all.len(), 2);
        let items = [KeyToPath {
            key: "token".to_owned(),
            path: "sub/tok".to_owned(),
            mode: None,
        }];
        let projected = secret_files(&secret, Some(&items))?;
        assert_eq!(projected.keys().collect::<Vec<_>>(), [Path::new("sub/tok")]);
        assert!(safe_relative("../escape").is_err());
        assert!(safe_relative("/abs").is_err());
        Ok(())
    }

    #[test]
    fn written_files_follow_the_secret_and_are_private() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let mut files = BTreeMap::from([
            (PathBuf::from("a"), b"1".to_vec()),
            (PathBuf::from("b"), b"2".to_vec()),
        ]);
        assert!(write_files(dir.path(), &files)?);
        assert!(!write_files(dir.path(), &files)?, "unchanged content rewritten");
        let mode = fs::metadata(dir.path().join("a"))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        files.remove(Path::new("b"));
        files.insert(PathBuf::from("a"), b"3".to_vec());
        assert!(write_files(dir.path(), &files)?);
        assert_eq!(fs::read(dir.path().join("a"))?, b"3");
        assert!(!dir.path().join("b").exists());
        let names: Vec<_> = fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [OsString::from("a")], "temp files left behind");
        Ok(())
    }

    #[test]
    fn grace_is_capped() {
        let pod = |seconds: Option<i64>| Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                termination_grace_period_seconds: seconds,
                ..Default::default()
            }),
            ..Pod::default()
        };
        assert_eq!(grace_of(&pod(None)), MAX_GRACE);
        assert_eq!(grace_of(&pod(Some(2))), Duration::from_secs(2));
        assert_eq!(grace_of(&pod(Some(0))), Duration::ZERO);
    }
}
