//! A real, local Kubernetes control plane for FleetForge's tests.
//!
//! [`TestEnv::start`] runs etcd and kube-apiserver (profile [`Profile::ApiServer`]),
//! and optionally kube-controller-manager, kube-scheduler and kwok with fake nodes
//! ([`Profile::Cluster`]), in a fresh temporary directory (etcd on a unix socket in
//! it, the API server on a loopback port of its own); it installs every CRD in
//! `deploy/crd/`, waits until they are Established, and tears everything down when
//! dropped. The binaries come from `cargo xtask k8s`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use fleetforge_testenv::{Profile, TestEnv};
//! // One control plane per test binary, shared; each test works in its own namespace.
//! let env = TestEnv::shared(Profile::ApiServer).await?;
//! let client = env.client().await?;
//! let ns = env.create_namespace("my-test").await?;
//! # let _ = (client, ns); Ok(()) }
//! ```

pub mod locate;
mod pki;
mod poll;
mod ports;
mod process;
pub mod runner;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::pki::{ClientCert, Pki};
use crate::process::{Janitor, Supervised};
pub use poll::eventually;
pub use runner::CellRunner;

/// The wrapper module `cargo xtask k8s` builds from; its pin is the cache key.
const KUBERNETES_GO_MOD: &str = include_str!("../../xtask/k8s/kubernetes/go.mod");

/// Field manager for everything the harness itself writes.
const FIELD_MANAGER: &str = "fleetforge-testenv";

/// The annotation kwok is told to manage nodes by; removing it is how a node "fails".
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// Binaries a profile needs, in start order.
const APISERVER_BINS: &[&str] = &["etcd", "kube-apiserver"];
const CLUSTER_BINS: &[&str] = &["kube-controller-manager", "kube-scheduler", "kwok"];

/// Which components run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// etcd + kube-apiserver: storage, validation, admission, RBAC, audit; nothing
    /// reconciles (no garbage collection, no scheduling, no default ServiceAccount).
    ApiServer,
    /// [`Profile::ApiServer`] plus kube-controller-manager, kube-scheduler and kwok with
    /// fake nodes: Pods are scheduled and turn Running/Ready with IPs from the pod CIDR,
    /// owner references are garbage-collected and nodes can fail.
    Cluster,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::ApiServer => "apiserver",
            Profile::Cluster => "cluster",
        })
    }
}

/// How to start a [`TestEnv`]. Start from [`Options::new`] and adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Which components run.
    pub profile: Profile,
    /// Fake kwok nodes created at start (cluster profile only).
    pub nodes: usize,
    /// Pods the scheduler may place on one fake node (its `pods` capacity).
    pub pods_per_node: u32,
    /// CIDR kwok takes Pod IPs from. A loopback range (all of 127.0.0.0/8 is loopback
    /// on Linux) lets a local process bind each Pod's IP and stand in for it.
    pub pod_cidr: String,
    /// Directory whose `*.yaml` CRDs are installed; `None` installs none.
    pub crd_dir: Option<PathBuf>,
    /// How long after a node's last heartbeat the node controller marks it NotReady
    /// (kube-controller-manager `--node-monitor-grace-period`; the default is 50s).
    pub node_monitor_grace_period: Duration,
    /// Audit policy YAML; `None` uses [`DEFAULT_AUDIT_POLICY`].
    pub audit_policy: Option<String>,
    /// Longest wait for the control plane to become ready.
    pub ready_timeout: Duration,
    /// The loopback port kube-apiserver tries first; `None` picks one. Should the
    /// port be taken, it moves to another (see [`TestEnv::server_url`] for the one
    /// it serves on).
    pub api_port: Option<u16>,
    /// Pods being deleted stay until their grace period is over (or their process
    /// under the cell runner has stopped), as on a real node, instead of being
    /// removed at once as kwok's fast stages do. For tests of what happens while a
    /// Pod terminates (drains, evictions); slower for everything else.
    pub graceful_deletion: bool,
}

/// The kwok stage that removes a deleted Pod once its deletion timestamp (the
/// end of its grace period) has passed, as a kubelet would after SIGKILL, in place
/// of kwok's fast one that removes it at once. The cell runner removes it sooner
/// when its process stops by itself, as a kubelet does.
const GRACEFUL_POD_DELETE_STAGE: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.deletionTimestamp'
  next:
    delete: true
"#;

/// A loopback /16 for Pod IPs, `127.N.0.0/16` with N from 1 to 250 picked by the
/// process id: two environments running at once (a test binary and the demo, say)
/// then rarely hand out the same Pod IPs, whose cell processes would collide on
/// their ports.
pub fn default_pod_cidr() -> String {
    format!("127.{}.0.0/16", 1 + std::process::id() % 250)
}

impl Options {
    /// Defaults for `profile`: 3 nodes, 110 pods per node, pods in a loopback /16 of
    /// this process's own ([`default_pod_cidr`]), the CRDs in `$FLEETFORGE_CRD_DIR`
    /// or else the workspace's `deploy/crd/`, a 10s node grace period.
    pub fn new(profile: Profile) -> Options {
        let crd_dir = std::env::var_os("FLEETFORGE_CRD_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(workspace_crd_dir, PathBuf::from);
        Options {
            profile,
            nodes: 3,
            pods_per_node: 110,
            pod_cidr: default_pod_cidr(),
            crd_dir: Some(crd_dir),
            node_monitor_grace_period: Duration::from_secs(10),
            audit_policy: None,
            ready_timeout: Duration::from_secs(120),
            api_port: None,
            graceful_deletion: false,
        }
    }

    /// Sets [`Options::graceful_deletion`].
    pub fn graceful_deletion(mut self, graceful: bool) -> Options {
        self.graceful_deletion = graceful;
        self
    }

    /// Sets [`Options::nodes`].
    pub fn nodes(mut self, nodes: usize) -> Options {
        self.nodes = nodes;
        self
    }

    /// Sets [`Options::pod_cidr`].
    pub fn pod_cidr(mut self, cidr: impl Into<String>) -> Options {
        self.pod_cidr = cidr.into();
        self
    }

    /// Sets [`Options::crd_dir`].
    pub fn crd_dir(mut self, dir: Option<PathBuf>) -> Options {
        self.crd_dir = dir;
        self
    }

    /// Sets [`Options::api_port`].
    pub fn api_port(mut self, port: u16) -> Options {
        self.api_port = Some(port);
        self
    }
}

/// Ports kube-apiserver is started on before the start fails: each one after the
/// first is taken only when the previous one was in use.
const API_PORT_ATTEMPTS: u32 = 5;

/// Records every request's metadata, and full bodies for FleetForge's own API group;
/// leaves out the health probes and lease heartbeats that would drown the rest.
pub const DEFAULT_AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: None
  resources: [{group: "coordination.k8s.io", resources: ["leases"]}]
- level: RequestResponse
  resources: [{group: "fleetforge.io"}]
- level: Metadata
"#;

/// A running control plane. Dropping it stops every process and removes its directory.
pub struct TestEnv {
    profile: Profile,
    options: Options,
    dir: PathBuf,
    server: String,
    pki: Pki,
    admin_kubeconfig: PathBuf,
    audit_log: PathBuf,
    startup: Duration,
    nodes: Mutex<Vec<String>>,
    processes: Mutex<Vec<Supervised>>,
    users: Mutex<BTreeMap<String, ClientCert>>,
    janitor: Option<Janitor>,
}

impl fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestEnv")
            .field("profile", &self.profile)
            .field("server", &self.server)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

static SHARED_APISERVER: tokio::sync::OnceCell<TestEnv> = tokio::sync::OnceCell::const_new();
static SHARED_CLUSTER: tokio::sync::OnceCell<TestEnv> = tokio::sync::OnceCell::const_new();

impl TestEnv {
    /// Starts a control plane with [`Options::new`]`(profile)`.
    pub async fn start(profile: Profile) -> anyhow::Result<TestEnv> {
        TestEnv::start_with(Options::new(profile)).await
    }

    /// One control plane per test binary and profile, started on first use with the
    /// default options and shared by all tests in the binary. Isolate tests from each
    /// other with [`TestEnv::create_namespace`]. Its processes end, and its directory
    /// goes, when the test binary exits (statics are never dropped, so the supervisors
    /// notice their pipe closing instead).
    pub async fn shared(profile: Profile) -> anyhow::Result<&'static TestEnv> {
        let cell = match profile {
            Profile::ApiServer => &SHARED_APISERVER,
            Profile::Cluster => &SHARED_CLUSTER,
        };
        cell.get_or_try_init(|| TestEnv::start(profile)).await
    }

    /// Starts a control plane.
    pub async fn start_with(options: Options) -> anyhow::Result<TestEnv> {
        let started = Instant::now();
        let profile = options.profile;
        let bin = bin_dir()?;
        let mut needed: Vec<&str> = APISERVER_BINS.to_vec();
        if profile == Profile::Cluster {
            needed.extend_from_slice(CLUSTER_BINS);
        }
        check_binaries(&bin, &needed)?;
        let stages = if profile == Profile::Cluster {
            kwok_stages(&bin)?
        } else {
            Vec::new()
        };

        let dir = tempfile::Builder::new()
            .prefix("fleetforge-testenv-")
            .tempdir()
            .context("creating the control plane's temp dir")?
            .keep();
        let pids = dir.join("supervisors.pid");
        let keep = std::env::var_os("FLEETFORGE_TESTENV_KEEP").is_some_and(|v| !v.is_empty());
        let janitor = Janitor::spawn(&dir, &pids, keep)?;
        let logs = dir.join("logs");
        fs::create_dir_all(&logs)?;
        let pki = Pki::create(&dir.join("pki"))?;

        let mut env = TestEnv {
            profile,
            options: options.clone(),
            dir: dir.clone(),
            // Set once kube-apiserver has a port (see `start_apiserver`).
            server: String::new(),
            admin_kubeconfig: PathBuf::new(),
            audit_log: dir.join("audit.log"),
            pki,
            startup: Duration::ZERO,
            nodes: Mutex::new(Vec::new()),
            processes: Mutex::new(Vec::new()),
            users: Mutex::new(BTreeMap::new()),
            janitor: Some(janitor),
        };

        // etcd takes no port: its clients (the API server alone) reach it on a unix
        // socket in the environment's directory, and its peer listener, which a
        // one-member cluster never dials, binds port 0.
        let socket = dir.join("etcd.sock");
        // sun_path holds 108 bytes with its terminating NUL.
        ensure!(
            socket.as_os_str().len() < 108,
            "{} is too long a path for a unix socket: point TMPDIR at a shorter directory",
            socket.display()
        );
        let etcd_url = format!("unix://{}", socket.display());
        let peer_url = "http://127.0.0.1:0";
        env.spawn(
            "etcd",
            &bin,
            &[
                "--name=testenv".to_owned(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testenv={peer_url}"),
                // Test data is disposable: skipping fsync makes etcd several times faster.
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &[],
        )?;

        let policy = dir.join("audit-policy.yaml");
        fs::write(
            &policy,
            options.audit_policy.as_deref().unwrap_or(DEFAULT_AUDIT_POLICY),
        )?;
        // Without a controller-manager nobody creates the `default` ServiceAccount, and
        // the ServiceAccount admission plugin would then reject every Pod.
        let disabled = if profile == Profile::ApiServer {
            "ServiceAccount"
        } else {
            ""
        };
        let p = &env.pki;
        let api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            // 1.37 rejects a loopback advertise address unless the endpoint reconciler
            // (which would publish it as the `kubernetes` Service endpoint) is off.
            "--advertise-address=127.0.0.1".to_owned(),
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", p.serving_cert.display()),
            format!("--tls-private-key-file={}", p.serving_key.display()),
            format!("--client-ca-file={}", p.ca_cert.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", p.sa_pub.display()),
            format!("--service-account-signing-key-file={}", p.sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--authorization-mode=RBAC".to_owned(),
            "--enable-admission-plugins=PodSecurity".to_owned(),
            format!("--disable-admission-plugins={disabled}"),
            "--allow-privileged=true".to_owned(),
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", env.audit_log.display()),
            // Blocking: an event is on disk before the response, so a test can read it.
            "--audit-log-mode=blocking".to_owned(),
            "--audit-log-format=json".to_owned(),
            // Load tests should meet the operator's limits, not the defaults (400/200).
            "--max-requests-inflight=2000".to_owned(),
            "--max-mutating-requests-inflight=1000".to_owned(),
            "--profiling=false".to_owned(),
        ];
        env.start_apiserver(&bin, &api_args, started + options.ready_timeout)
            .await?;

        if profile == Profile::Cluster {
            env.start_cluster_components(&bin, &stages)?;
            for i in 0..options.nodes {
                let name = format!("kwok-node-{i}");
                env.add_node(&name).await?;
            }
            env.wait_nodes_ready(started + options.ready_timeout).await?;
        }

        if let Some(crds) = &options.crd_dir {
            env.install_crds(crds, started + options.ready_timeout).await?;
        }
        env.startup = started.elapsed();
        eprintln!(
            "[fleetforge-testenv] {profile} control plane ready in {:.2}s at {} (dir {})",
            env.startup.as_secs_f64(),
            env.server,
            env.dir.display()
        );
        Ok(env)
    }

    fn spawn(&self, name: &str, bin: &Path, args: &[String], envs: &[(&str, &Path)]) -> anyhow::Result<()> {
        let child = Supervised::spawn(
            name,
            &bin.join(name),
            args,
            envs,
            self.dir.join("logs").join(format!("{name}.log")),
            &self.dir.join("supervisors.pid"),
        )?;
        self.lock_processes().push(child);
        Ok(())
    }

    fn lock_processes(&self) -> std::sync::MutexGuard<'_, Vec<Supervised>> {
        self.processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails with the component's log tail if any component has exited.
    fn check_alive(&self) -> anyhow::Result<()> {
        let mut procs = self.lock_processes();
        for p in procs.iter_mut() {
            if let Some(status) = p.exited() {
                bail!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    p.name,
                    p.log.display(),
                    p.log_tail(30)
                );
            }
        }
        Ok(())
    }

    /// Starts kube-apiserver with `args` (all but its port) and waits until it is
    /// ready: on [`Options::api_port`] or else a [`ports::candidate`], and, each
    /// time the server exits because its port is taken, once more on another, up to
    /// [`API_PORT_ATTEMPTS`] ports. The server cannot be handed a bound listener
    /// nor port 0 (see [`ports`]), so this is the one place a port is chosen.
    async fn start_apiserver(
        &mut self,
        bin: &Path,
        args: &[String],
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut port = self.options.api_port.unwrap_or_else(ports::candidate);
        let mut attempt = 1;
        loop {
            self.server = format!("https://127.0.0.1:{port}");
            self.admin_kubeconfig = self.kubeconfig_for("admin", &["system:masters"])?;
            let mut with_port = args.to_vec();
            with_port.push(format!("--secure-port={port}"));
            self.spawn("kube-apiserver", bin, &with_port, &[])?;
            match self.wait_apiserver_ready(deadline).await {
                Err(e) if attempt < API_PORT_ATTEMPTS && self.drop_port_clash("kube-apiserver", port)? => {
                    eprintln!(
                        "[fleetforge-testenv] port {port} is taken, kube-apiserver tries another: {}",
                        format!("{e:#}").lines().next().unwrap_or_default()
                    );
                    port = ports::candidate();
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// If component `name` has exited saying its port was taken, forgets it (its log
    /// kept as `<name>-port-<port>.log`) and says so.
    fn drop_port_clash(&self, name: &str, port: u16) -> anyhow::Result<bool> {
        let mut procs = self.lock_processes();
        let Some(i) = procs.iter_mut().position(|p| {
            p.name == name
                && p.exited().is_some()
                && ports::is_port_clash(&fs::read_to_string(&p.log).unwrap_or_default())
        }) else {
            return Ok(false);
        };
        let gone = procs.remove(i);
        fs::rename(
            &gone.log,
            self.dir.join("logs").join(format!("{name}-port-{port}.log")),
        )?;
        Ok(true)
    }

    async fn wait_apiserver_ready(&self, deadline: Instant) -> anyhow::Result<()> {
        let client = self.client().await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        // A component that exits ends the wait at once: its error is the outcome.
        let outcome = eventually(
            "kube-apiserver ready",
            timeout,
            Duration::from_millis(200),
            || async {
                if let Err(exited) = self.check_alive() {
                    return Ok(Some(Err(exited)));
                }
                let req = http::Request::get("/readyz").body(Vec::new())?;
                match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
                    Ok(Ok(body)) if body.trim() == "ok" => Ok(Some(Ok(()))),
                    Ok(Ok(body)) => bail!("/readyz answered {body}"),
                    Ok(Err(e)) => bail!("/readyz failed: {e}"),
                    Err(_) => bail!("/readyz timed out"),
                }
            },
        )
        .await;
        match outcome {
            Ok(ready) => ready,
            Err(not_ready) => {
                let tail = self
                    .lock_processes()
                    .iter()
                    .find(|p| p.name == "kube-apiserver")
                    .map(|p| p.log_tail(30))
                    .unwrap_or_default();
                bail!("{not_ready:#}; its log ends:\n{tail}");
            }
        }
    }

    fn start_cluster_components(&self, bin: &Path, stages: &[PathBuf]) -> anyhow::Result<()> {
        let o = &self.options;
        let p = &self.pki;
        let kcm =
            self.component_kubeconfig("kube-controller-manager", "system:kube-controller-manager", None)?;
        let grace = o.node_monitor_grace_period.as_secs().max(2);
        self.spawn(
            "kube-controller-manager",
            bin,
            &[
                format!("--kubeconfig={}", kcm.display()),
                format!("--authentication-kubeconfig={}", kcm.display()),
                format!("--authorization-kubeconfig={}", kcm.display()),
                "--bind-address=127.0.0.1".to_owned(),
                // No serving port: nothing scrapes it, and parallel envs need no port.
                "--secure-port=0".to_owned(),
                "--leader-elect=false".to_owned(),
                // As kubeadm does: each controller acts as its own ServiceAccount, so
                // RBAC applies to them as in a real cluster.
                "--use-service-account-credentials=true".to_owned(),
                format!("--root-ca-file={}", p.ca_cert.display()),
                format!("--service-account-private-key-file={}", p.sa_key.display()),
                format!("--cluster-signing-cert-file={}", p.ca_cert.display()),
                format!("--cluster-signing-key-file={}", p.ca_key.display()),
                "--kube-api-qps=1000".to_owned(),
                "--kube-api-burst=2000".to_owned(),
                "--node-monitor-period=1s".to_owned(),
                format!("--node-monitor-grace-period={grace}s"),
                "--concurrent-gc-syncs=50".to_owned(),
            ],
            &[],
        )?;

        let sched_kubeconfig = self.component_kubeconfig("kube-scheduler", "system:kube-scheduler", None)?;
        let sched_config = self.dir.join("kube-scheduler.yaml");
        // The QPS flags are deprecated for the scheduler; its config file is the way.
        fs::write(
            &sched_config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
                 clientConnection:\n  kubeconfig: {}\n  qps: 1000\n  burst: 2000\n\
                 leaderElection:\n  leaderElect: false\n",
                sched_kubeconfig.display()
            ),
        )?;
        self.spawn(
            "kube-scheduler",
            bin,
            &[
                format!("--config={}", sched_config.display()),
                format!("--authentication-kubeconfig={}", sched_kubeconfig.display()),
                format!("--authorization-kubeconfig={}", sched_kubeconfig.display()),
                "--bind-address=127.0.0.1".to_owned(),
                "--secure-port=0".to_owned(),
            ],
            &[],
        )?;

        let kwok_kubeconfig = self.component_kubeconfig("kwok", "kwok-controller", Some("system:masters"))?;
        // kwok reads ~/.kwok/kwok.yaml when present: a developer's own must not leak in.
        let home = self.dir.join("kwok-home");
        fs::create_dir_all(&home)?;
        // Lease renewal is a quarter of this; with the grace period above, a node that
        // stops renewing turns NotReady within about `grace` seconds.
        let lease = (grace / 2).clamp(2, 40);
        let mut args = vec![
            format!("--kubeconfig={}", kwok_kubeconfig.display()),
            "--manage-all-nodes=false".to_owned(),
            format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
            format!("--cidr={}", o.pod_cidr),
            "--node-ip=127.0.0.1".to_owned(),
            format!("--node-lease-duration-seconds={lease}"),
        ];
        let mut stages = stages.to_vec();
        if o.graceful_deletion {
            let graceful = self.dir.join("kwok-pod-delete-graceful.yaml");
            fs::write(&graceful, GRACEFUL_POD_DELETE_STAGE)?;
            stages.retain(|s| s.file_name().is_none_or(|n| n != "pod-delete.yaml"));
            stages.push(graceful);
        }
        args.extend(stages.iter().map(|s| format!("--config={}", s.display())));
        self.spawn("kwok", bin, &args, &[("HOME", &home)])?;
        Ok(())
    }

    async fn wait_nodes_ready(&self, deadline: Instant) -> anyhow::Result<()> {
        for name in &self.node_names() {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_node_ready(name, true, left).await?;
        }
        Ok(())
    }

    async fn install_crds(&self, dir: &Path, deadline: Instant) -> anyhow::Result<()> {
        let crds = read_crds(dir)?;
        if crds.is_empty() {
            return Ok(());
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        for crd in &crds {
            let name = crd.metadata.name.clone().context("a CRD without metadata.name")?;
            api.patch(&name, &pp, &Patch::Apply(crd))
                .await
                .with_context(|| format!("installing CRD {name}"))?;
        }
        for crd in &crds {
            let name = crd.metadata.name.as_deref().unwrap_or_default();
            let timeout = deadline.saturating_duration_since(Instant::now());
            eventually(
                &format!("CRD {name} Established"),
                timeout,
                Duration::from_millis(100),
                || async {
                    let got = api.get(name).await?;
                    let established = got
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
                    Ok(established.then_some(()))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The profile this environment runs.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The options it was started with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// How long start-up took, from the call to a ready API server with nodes and CRDs.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The environment's directory (certificates, kubeconfigs, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PEM CA certificate that signed the API server's serving certificate.
    pub fn ca_cert_path(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, `kwok`, …).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{component}.log"))
    }

    /// The pod CIDR kwok assigns Pod IPs from.
    pub fn pod_cidr(&self) -> &str {
        &self.options.pod_cidr
    }

    /// Names of the fake nodes created so far (cluster profile).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The kube-apiserver audit log (JSON lines, one event per line).
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// The audit events written so far. Each is the API server's `audit.k8s.io/v1`
    /// Event as JSON (`verb`, `user.username`, `objectRef`, `responseStatus.code`, …).
    pub fn audit_events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = fs::read_to_string(&self.audit_log)
            .with_context(|| format!("reading {}", self.audit_log.display()))?;
        // The last line may be half-written while the server keeps logging.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The writes (create, update, patch, delete) `user` made in `namespace` so
    /// far, in order, each as `verb resource[/subresource]/name` (for example
    /// `patch worldspecs/status/meadow`): what a test counts to prove a controller
    /// writes only when something changed.
    pub fn writes_by(&self, user: &str, namespace: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .audit_events()?
            .into_iter()
            .filter(|e| e["stage"] == "ResponseComplete")
            .filter(|e| e["user"]["username"] == user)
            .filter(|e| e["objectRef"]["namespace"] == namespace)
            .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete")))
            .map(|e| {
                let o = &e["objectRef"];
                let sub = o["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!(
                    "{} {}{sub}/{}",
                    e["verb"].as_str().unwrap_or("?"),
                    o["resource"].as_str().unwrap_or("?"),
                    o["name"].as_str().unwrap_or("?"),
                )
            })
            .collect())
    }

    /// A client acting as the cluster admin (group `system:masters`).
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// A kubeconfig file for the admin, for processes started by a test (the operator).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A client authenticated as `user` in `groups` (plus `system:authenticated`).
    /// With at most one group it uses a client certificate (CN = user, O = group);
    /// X.509 names built here carry a single O, so more groups go through
    /// impersonation by the admin, which RBAC evaluates identically.
    pub async fn client_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<Client> {
        client_from_kubeconfig(&self.kubeconfig_for(user, groups)?).await
    }

    /// A client acting as ServiceAccount `namespace/name`, by impersonation (the API
    /// server adds the account's groups).
    pub async fn impersonate_service_account(&self, namespace: &str, name: &str) -> anyhow::Result<Client> {
        let path = self.dir.join(format!("kubeconfig-sa-{namespace}-{name}.yaml"));
        let admin = self.user_cert("admin", Some("system:masters"))?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        write_kubeconfig(&path, &self.server, &self.pki.ca_cert, &admin, Some((&user, &[])))?;
        client_from_kubeconfig(&path).await
    }

    /// Writes a kubeconfig file for `user` in `groups` (see [`TestEnv::client_for`]),
    /// for processes a test starts, and returns its path.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let stem = sanitize(&format!("{user}-{}", groups.join("-")));
        let path = self.dir.join(format!("kubeconfig-{stem}.yaml"));
        if groups.len() <= 1 {
            let cert = self.user_cert(user, groups.first().copied())?;
            write_kubeconfig(&path, &self.server, &self.pki.ca_cert, &cert, None)?;
        } else {
            let admin = self.user_cert("admin", Some("system:masters"))?;
            write_kubeconfig(
                &path,
                &self.server,
                &self.pki.ca_cert,
                &admin,
                Some((user, groups)),
            )?;
        }
        Ok(path)
    }

    fn component_kubeconfig(&self, file: &str, user: &str, group: Option<&str>) -> anyhow::Result<PathBuf> {
        let cert = self.user_cert(user, group)?;
        let path = self.dir.join(format!("kubeconfig-{file}.yaml"));
        write_kubeconfig(&path, &self.server, &self.pki.ca_cert, &cert, None)?;
        Ok(path)
    }

    fn user_cert(&self, user: &str, group: Option<&str>) -> anyhow::Result<ClientCert> {
        let key = format!("{user}\n{}", group.unwrap_or_default());
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cert) = users.get(&key) {
            return Ok(cert.clone());
        }
        let stem = format!("user-{}-{}", users.len(), sanitize(user));
        let cert = self.pki.client_cert(&stem, user, group)?;
        users.insert(key, cert.clone());
        Ok(cert)
    }

    /// Creates a namespace with a unique name starting with `prefix`, so tests sharing
    /// one environment do not see each other's objects. In the cluster profile it also
    /// waits for the `default` ServiceAccount, without which Pods are rejected.
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        self.namespace_with_labels(prefix, json!({})).await
    }

    /// [`TestEnv::create_namespace`], enforcing the `restricted` Pod Security
    /// Standard, as the namespaces FleetForge's cells run in should.
    pub async fn create_restricted_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let labels = json!({
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        });
        self.namespace_with_labels(prefix, labels).await
    }

    async fn namespace_with_labels(&self, prefix: &str, labels: serde_json::Value) -> anyhow::Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut base = sanitize(prefix);
        base.truncate(40);
        let name = format!("{}-{:x}-{n}", base.trim_end_matches('-'), std::process::id());
        let client = self.client().await?;
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        if self.profile == Profile::Cluster {
            let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
            eventually(
                &format!("the default ServiceAccount in {name}"),
                Duration::from_secs(60),
                Duration::from_millis(100),
                || async { Ok(sas.get_opt("default").await?.map(drop)) },
            )
            .await?;
        }
        Ok(name)
    }

    /// Adds a fake node managed by kwok (cluster profile); it turns Ready shortly.
    pub async fn add_node(&self, name: &str) -> anyhow::Result<()> {
        ensure!(
            self.profile == Profile::Cluster,
            "fake nodes need the cluster profile"
        );
        let pods = self.options.pods_per_node.to_string();
        let resources = json!({"cpu": "64", "memory": "256Gi", "pods": pods, "ephemeral-storage": "1Ti"});
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": resources,
                "capacity": resources,
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
            },
        }))?;
        Api::<Node>::all(self.client().await?)
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("creating node {name}"))?;
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.to_owned());
        Ok(())
    }

    /// Makes a node fail the way a crashed kubelet does: kwok stops managing it and its
    /// lease stops being renewed, so after [`Options::node_monitor_grace_period`] the
    /// node controller marks it `Ready=Unknown`, marks its Pods not Ready and taints it
    /// `node.kubernetes.io/unreachable` (NoExecute: Pods are evicted once their
    /// toleration, 300s by default, runs out). Returns at once; see
    /// [`TestEnv::wait_node_ready`].
    pub async fn fail_node(&self, name: &str) -> anyhow::Result<()> {
        self.set_kwok_annotation(name, None).await?;
        // kwok 0.8 keeps renewing a node's lease until the Node is deleted, even once
        // it no longer manages it; a lease held by another, long-lived holder is one it
        // leaves alone, and the node controller sees its renewals stop.
        let leases: Api<Lease> = Api::namespaced(self.client().await?, "kube-node-lease");
        let now = k8s_openapi::jiff::Timestamp::now();
        let patch = json!({"spec": {
            "holderIdentity": "fleetforge-testenv/failed-node",
            "leaseDurationSeconds": 86_400,
            "renewTime": MicroTime(now),
        }});
        leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("taking over the lease of node {name}"))?;
        Ok(())
    }

    /// Undoes [`TestEnv::fail_node`]: kwok manages the node again, renews a fresh
    /// lease, and the node turns Ready.
    pub async fn recover_node(&self, name: &str) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client().await?, "kube-node-lease");
        leases.delete(name, &Default::default()).await?;
        self.set_kwok_annotation(name, Some("fake")).await
    }

    async fn set_kwok_annotation(&self, name: &str, value: Option<&str>) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        let patch = json!({"metadata": {"annotations": {KWOK_NODE_ANNOTATION: value}}});
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Waits until node `name`'s Ready condition is (`ready`) or is not (`!ready`) True.
    pub async fn wait_node_ready(&self, name: &str, ready: bool, timeout: Duration) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        let what = format!("node {name} {}", if ready { "Ready" } else { "NotReady" });
        // A component that exits ends the wait at once: its error is the outcome.
        eventually(&what, timeout, Duration::from_millis(100), || async {
            let is_ready = nodes.get_opt(name).await?.is_some_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            if is_ready == ready {
                return Ok(Some(Ok(())));
            }
            Ok(self.check_alive().err().map(Err))
        })
        .await?
    }

    /// Stops every process and removes the directory now (also done on drop).
    pub fn stop(self) {}
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let mut procs = self.lock_processes();
        // Signal all at once and then wait: stopping in sequence would add up the
        // grace periods.
        for p in procs.iter_mut() {
            p.signal_stop();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in procs.iter_mut() {
            p.wait_stopped(deadline);
        }
        procs.clear();
        drop(procs);
        // Last, so it removes the directory only after every process has gone.
        self.janitor.take();
    }
}

/// The Kubernetes version pinned in `xtask/k8s/kubernetes/go.mod` (e.g. `v1.37.2`).
pub fn kubernetes_version() -> &'static str {
    KUBERNETES_GO_MOD
        .lines()
        .map(str::trim)
        .map(|l| l.strip_prefix("require ").unwrap_or(l))
        .find_map(|l| l.strip_prefix("k8s.io/kubernetes "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("unknown")
}

/// Where the control-plane binaries are: `$FLEETFORGE_K8S_BIN`, else
/// `$FLEETFORGE_CACHE/k8s-<version>/bin`, else `$HOME/.cache/fleetforge/k8s-<version>/bin`
/// (the same rule `cargo xtask k8s` follows).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FLEETFORGE_K8S_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let base = match std::env::var_os("FLEETFORGE_CACHE").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .context("neither FLEETFORGE_K8S_BIN, FLEETFORGE_CACHE nor HOME is set")?;
            PathBuf::from(home).join(".cache/fleetforge")
        }
    };
    Ok(base.join(format!("k8s-{}", kubernetes_version())).join("bin"))
}

fn check_binaries(bin: &Path, names: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = names.iter().copied().filter(|n| !bin.join(n).is_file()).collect();
    ensure!(
        missing.is_empty(),
        "control-plane binaries missing from {} ({}): run `cargo xtask k8s` to build them \
         (about 15 minutes the first time, seconds after), or point FLEETFORGE_K8S_BIN at a \
         directory that has them",
        bin.display(),
        missing.join(", ")
    );
    Ok(())
}

/// The kwok stage files `cargo xtask k8s` copied next to `bin/`.
fn kwok_stages(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = bin.parent().unwrap_or(bin).join("kwok-stages");
    let mut stages: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    stages.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    stages.sort();
    ensure!(
        !stages.is_empty(),
        "no kwok stages in {}: run `cargo xtask k8s`, which copies them there",
        dir.display()
    );
    Ok(stages)
}

/// The FleetForge workspace root (where `deploy/` and `examples/` are).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// The workspace's `deploy/crd/`.
pub fn workspace_crd_dir() -> PathBuf {
    workspace_root().join("deploy/crd")
}

/// Every CustomResourceDefinition in the `*.yaml`/`*.yml` files of `dir` (multi-document
/// files allowed); none when the directory does not exist.
pub fn read_crds(dir: &Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        for value in yaml::file_documents(&file)? {
            if value["kind"] != "CustomResourceDefinition" {
                continue;
            }
            crds.push(
                serde_json::from_value(value)
                    .with_context(|| format!("reading a CRD in {}", file.display()))?,
            );
        }
    }
    Ok(crds)
}

async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let kubeconfig = Kubeconfig::from_yaml(&text)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &ClientCert,
    impersonate: Option<(&str, &[&str])>,
) -> anyhow::Result<()> {
    let mut user = json!({
        "client-certificate": cert.cert,
        "client-key": cert.key,
    });
    if let Some((name, groups)) = impersonate {
        user["as"] = json!(name);
        if !groups.is_empty() {
            user["as-groups"] = json!(groups);
        }
    }
    // JSON is YAML, and every Kubernetes client reads it.
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "user"}}],
        "current-context": "testenv",
    });
    fs::write(path, serde_json::to_string_pretty(&config)?)?;
    Ok(())
}

/// Lower-case letters, digits and `-`: valid in file names and namespace names.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_how_to_build_them() {
        let empty = tempfile::tempdir()
            .map(|d| d.keep())
            .unwrap_or_else(|_| std::env::temp_dir());
        let err = check_binaries(&empty, APISERVER_BINS)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("cargo xtask k8s"), "{err}");
        assert!(err.contains("kube-apiserver"), "{err}");
        let _ = fs::remove_dir_all(&empty);
    }

    #[test]
    fn version_comes_from_the_wrapper_module() {
        assert!(
            kubernetes_version().starts_with("v1."),
            "{}",
            kubernetes_version()
        );
    }

    #[test]
    fn reads_multi_document_crd_files_and_skips_other_kinds() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
             apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {name: things.example.io}\nspec:\n  group: example.io\n  scope: Namespaced\n\
             \x20 names: {plural: things, kind: Thing}\n  versions: []\n",
        )?;
        let crds = read_crds(dir.path())?;
        assert_eq!(crds.len(), 1);
        assert!(read_crds(&dir.path().join("missing"))?.is_empty());
        Ok(())
    }
}
