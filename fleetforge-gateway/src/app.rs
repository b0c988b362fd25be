//! The `fleetforge-gateway` process: its command line, and [`start`], which runs
//! the watches, the player API and the admin server (what the binary does, and
//! what a test or the demo runs in process).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use fleetforge_obs::{AdminState, LogControl, LogFormat, Telemetry, TelemetryConfig, serve_admin};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::http::{self, Limits};
use crate::state::State;
use crate::watch::{self, Scope};

/// Exit status of a clean run (stopped by a signal).
pub const EXIT_OK: u8 = 0;
/// Exit status of a run that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a command line or set-up that cannot be used.
pub const EXIT_USAGE: u8 = 2;

/// FleetForge player gateway: tells game clients which cell serves a position of
/// a world, and follows every split, merge and replacement.
///
/// Stateless: any number of replicas answer alike. Reads WorldSpecs and the cell
/// Pods the operator manages through watches (get, list, watch) and writes
/// nothing. Only worlds whose WorldSpec sets `spec.gateway.enabled` are answered.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleetforge-gateway", version, about, long_about)]
pub struct Cli {
    /// Kubeconfig file to use. Without it: in-cluster configuration, else
    /// $KUBECONFIG, else ~/.kube/config.
    #[arg(long, env = "FLEETFORGE_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: the file's current context).
    #[arg(long, env = "FLEETFORGE_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,

    /// The one namespace to serve worlds of. Unset: all namespaces (needs
    /// cluster-wide read access to WorldSpecs and Pods).
    #[arg(long, env = "FLEETFORGE_GATEWAY_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// Address of the player API.
    #[arg(
        long,
        env = "FLEETFORGE_GATEWAY_LISTEN",
        default_value = "0.0.0.0:8090",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "FLEETFORGE_GATEWAY_ADMIN_LISTEN",
        default_value = "0.0.0.0:8091",
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,

    /// Requests one client (one IP address) may make per second, sustained.
    #[arg(
        long,
        env = "FLEETFORGE_GATEWAY_RATE_PER_SECOND",
        default_value_t = 20.0,
        value_name = "N"
    )]
    pub rate_per_second: f64,

    /// Requests one client may make at once after being quiet.
    #[arg(
        long,
        env = "FLEETFORGE_GATEWAY_RATE_BURST",
        default_value_t = 40,
        value_name = "N"
    )]
    pub rate_burst: u32,

    /// Seconds a request may take before it is answered 408.
    #[arg(
        long,
        env = "FLEETFORGE_GATEWAY_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 2.0,
        value_name = "SECONDS"
    )]
    pub request_timeout_seconds: f64,

    /// Topology streams open at once, across clients; more are answered 503.
    #[arg(
        long,
        env = "FLEETFORGE_GATEWAY_MAX_STREAMS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_streams: usize,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "FLEETFORGE_LOG_FORMAT", default_value_t = LogFormat::Json, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Log filter, such as `info` or `fleetforge_gateway=debug,kube=warn`.
    #[arg(long, env = "FLEETFORGE_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,

    /// Base address of an OpenTelemetry OTLP/HTTP receiver to export traces to.
    /// Unset: no traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

impl Cli {
    /// The limits the command line sets, checked.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let timeout = self.request_timeout_seconds;
        anyhow::ensure!(
            timeout.is_finite() && timeout > 0.0 && timeout <= 3600.0,
            "--request-timeout-seconds must be more than 0 and at most 3600, not {timeout}"
        );
        anyhow::ensure!(self.max_streams >= 1, "--max-streams must be at least 1");
        let limits = Limits {
            rate_per_second: self.rate_per_second,
            burst: self.rate_burst,
            request_timeout: Duration::from_secs_f64(timeout),
            max_streams: self.max_streams,
            ..Limits::default()
        };
        limits.check()?;
        Ok(limits)
    }

    /// The namespaces the gateway reads.
    pub fn scope(&self) -> Scope {
        match &self.namespace {
            Some(ns) => Scope::Namespace(ns.clone()),
            None => Scope::Cluster,
        }
    }
}

/// What [`start`] runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespaces read.
    pub scope: Scope,
    /// Address of the player API (port 0: any free port).
    pub listen: SocketAddr,
    /// Address of the admin server, if one is wanted.
    pub admin_listen: Option<SocketAddr>,
    /// Rate limits and timeouts.
    pub limits: Limits,
}

/// A gateway running in this process.
#[derive(Debug)]
pub struct Running {
    /// Where the player API listens.
    pub api: SocketAddr,
    /// Where the admin server listens.
    pub admin: Option<SocketAddr>,
    /// What it knows.
    pub state: Arc<State>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the watches, ends open streams and lets requests in flight finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the gateway task panicked")?
    }
}

/// Binds the API (and admin) addresses, starts following the cluster through
/// `client`, and serves. `/readyz` turns ready once the first lists are in.
pub async fn start(
    client: Client,
    settings: Settings,
    metrics: Option<PrometheusHandle>,
    log: Option<LogControl>,
) -> anyhow::Result<Running> {
    let state = State::new();
    let router = http::router(Arc::clone(&state), &settings.limits)?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding the player API on {}", settings.listen))?;
    let api = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();

    let mut admin_state = AdminState::new(metrics);
    if let Some(log) = log {
        admin_state = admin_state.with_log_control(log);
    }
    let admin = match settings.admin_listen {
        Some(addr) => {
            let (bound_tx, bound_rx) = oneshot::channel();
            let served = admin_state.clone();
            tokio::spawn(async move {
                let bound = move |addr| {
                    let _ = bound_tx.send(addr);
                };
                if let Err(e) = serve_admin(addr, served, bound, async {
                    let _ = admin_stopped.await;
                })
                .await
                {
                    error!(error = %e, "admin server stopped");
                }
            });
            Some(
                bound_rx
                    .await
                    .with_context(|| format!("binding the admin server on {addr}"))?,
            )
        }
        None => None,
    };

    let follow = tokio::spawn(watch::follow(client, settings.scope.clone(), Arc::clone(&state)));
    let ready = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            state.synced().await;
            admin_state.set_ready(true);
        })
    };
    let closing = Arc::clone(&state);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
            // Streams never end by themselves: end them, or the server cannot drain.
            closing.close();
        };
        let served = http::serve(listener, router, shutdown).await;
        follow.abort();
        ready.abort();
        let _ = admin_stop.send(());
        served.context("serving the player API")
    });
    info!(%api, admin = ?admin, "gateway started");
    Ok(Running {
        api,
        admin,
        state,
        stop,
        task,
    })
}

/// The API client: from `--kubeconfig` (and `--context`) when given, else the
/// standard inference (in-cluster, `$KUBECONFIG`, `~/.kube/config`).
pub async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer()
            .await
            .context("finding a Kubernetes configuration")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// The `fleetforge-gateway` binary: parses `args` (the program name first), sets
/// up logs, metrics and traces, and serves until SIGTERM or SIGINT. Returns the
/// exit status.
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let limits = match cli.limits() {
        Ok(limits) => limits,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(run(cli, limits))
}

async fn run(cli: Cli, limits: Limits) -> u8 {
    let telemetry = match Telemetry::init(TelemetryConfig {
        format: cli.log_format,
        filter: cli.log.clone(),
        otlp_endpoint: cli.otlp_endpoint.clone(),
        service_name: "fleetforge-gateway".to_owned(),
        service_instance: std::env::var("POD_NAME").ok(),
    }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let code = match serve_until_signal(&cli, limits, telemetry.log_control()).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            error!(error = format!("{e:#}"), "gateway stopped");
            EXIT_FAILED
        }
    };
    if let Err(e) = telemetry.shutdown() {
        eprintln!("error: {e}");
    }
    code
}

async fn serve_until_signal(cli: &Cli, limits: Limits, log: LogControl) -> anyhow::Result<()> {
    let metrics = fleetforge_obs::metrics::install_recorder().context("installing the metrics recorder")?;
    let client = client(cli).await?;
    let running = start(
        client,
        Settings {
            scope: cli.scope(),
            listen: cli.listen,
            admin_listen: Some(cli.admin_listen),
            limits,
        },
        Some(metrics),
        Some(log),
    )
    .await?;
    signal().await;
    running.stop().await
}

/// Resolves on SIGTERM (a Pod being stopped) or SIGINT.
async fn signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => info!("SIGTERM received: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received: shutting down"),
    }
}
