//! The operator process: client, admin server, leader election, controllers and
//! an orderly shutdown.
//!
//! On SIGTERM or SIGINT it stops taking work, lets in-flight reconciles finish,
//! releases the Lease (so a standby takes over at once) and only then closes the
//! admin server. If the election fails while leading (the Lease cannot be renewed
//! or was taken), the process exits at once: better a restart than a leader that
//! no longer is one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleetforge_core::pacing::Pacing;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{error, info, warn};

use fleetforge_obs::metrics as m;
use fleetforge_obs::{AdminState, LogControl, serve_admin};

use crate::app::controllers::{ControllerSettings, run_controllers};
use crate::cells::tokens::TokenKeys;
use crate::config::cli::{Cli, seconds};
use crate::config::client::client;
use crate::ha::leader::{Election, LeaderConfig};
use crate::ha::selfcheck::{checks, self_check, warn_excess, whoami};
use crate::reconcile::context::{Identity, Timing};
use crate::runtime::clock::Clock;
use crate::runtime::error::Error;
use crate::runtime::gauges;

/// Where the in-cluster service account's namespace is mounted.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn identity(cli: &Cli) -> String {
    cli.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "fleetforge".to_owned());
            format!("{host}-{}", std::process::id())
        })
}

fn lease_namespace(cli: &Cli) -> String {
    cli.lease_namespace
        .clone()
        .or_else(|| {
            std::fs::read_to_string(NAMESPACE_FILE)
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "fleetforge-system".to_owned())
}

/// The master key of the cell tokens: the mounted key directory, else a random
/// key for development.
fn token_keys(cli: &Cli) -> anyhow::Result<TokenKeys> {
    match &cli.cell_token_key_dir {
        Some(dir) => Ok(TokenKeys::from_dir(dir)?),
        None => {
            warn!(
                "no --cell-token-key-dir: cell tokens come from a random key that changes with every restart and replica; mount a key Secret in production"
            );
            Ok(TokenKeys::ephemeral()?)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn signal() {
    let term = async {
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
        _ = term => info!("SIGTERM received: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received: shutting down"),
    }
}

/// Creates the counters and gauges alerts read at zero: a series that first
/// appears with its first increment makes `rate()` miss that increment, and an
/// alert on it would fire a scrape late.
fn zero_series() {
    for result in ["ok", "error", "invalid_spec"] {
        metrics::counter!(m::RECONCILES, "result" => result).absolute(0);
    }
    for &kind in Error::KINDS {
        metrics::counter!(m::RECONCILE_ERRORS, "kind" => kind).absolute(0);
    }
    for reason in ["timeout", "connect", "status", "body"] {
        metrics::counter!(m::LOAD_SAMPLING_ERRORS, "reason" => reason).absolute(0);
    }
    for counter in [
        m::SPLITS,
        m::MERGES,
        m::SESSIONS_HANDED_OVER,
        m::SESSIONS_LOST,
        m::LOAD_SAMPLES,
        m::CELLS_CREATED,
        m::CELLS_RETIRED,
        m::LEADER_ACQUISITIONS,
    ] {
        metrics::counter!(counter).absolute(0);
    }
    for gauge in [m::LEADER, m::RECONCILE_QUEUE_DEPTH, m::EXCESS_PERMISSIONS] {
        metrics::gauge!(gauge).set(0.0);
    }
    gauges::zero_phases();
}

/// Runs the operator until SIGTERM or SIGINT asks it to stop. `log` is the
/// process's log filter handle, if it has one: the admin server then serves
/// `/v1/log-filter`.
pub async fn run(cli: Cli, log: Option<LogControl>) -> anyhow::Result<()> {
    run_until(cli, log, signal()).await
}

/// Runs the operator until `shutdown` completes (or leadership is lost), for
/// embedding it in another program; `log` as for [`run`].
pub async fn run_until(
    cli: Cli,
    log: Option<LogControl>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = fleetforge_obs::metrics::install_recorder().context("installing the metrics recorder")?;
    zero_series();
    let mut admin = AdminState::new(Some(metrics));
    if let Some(log) = log {
        admin = admin.with_log_control(log);
    }
    let client = client(&cli).await?;
    let identity = identity(&cli);
    let mut settings = ControllerSettings {
        scope: cli.scope(),
        concurrency: cli.concurrency,
        timing: Timing {
            pacing: Pacing {
                resync: seconds("resync-seconds", cli.resync_seconds)?,
                busy: seconds("busy-requeue-seconds", cli.busy_requeue_seconds)?,
            },
            ..Timing::default()
        },
        identity: Identity {
            instance: identity.clone(),
            user: None,
        },
        sampling: cli.sampling(),
        tokens: Arc::new(token_keys(&cli)?),
        clock: Clock::system(),
    };

    let lease_namespace = lease_namespace(&cli);
    let watched = settings.scope.namespaces();
    let lease = cli
        .leader_elect
        .then_some((lease_namespace.as_str(), cli.lease_name.as_str()));
    let (required, unwanted) = checks(&watched, lease);
    let report = self_check(&client, &required, &unwanted).await?;
    let own_pod = std::env::var("POD_NAME").ok().map(|name| ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(name),
        namespace: Some(lease_namespace.clone()),
        ..ObjectReference::default()
    });
    warn_excess(&client, &report, own_pod, &identity).await;
    info!(checked = required.len() + unwanted.len(), "self-check passed");
    match whoami(&client).await {
        Ok(user) => {
            info!(%user, "authenticated as");
            settings.identity.user = Some(user);
        }
        Err(e) => warn!(error = %e, "could not ask the API server who the operator is"),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let (admin_stop_tx, mut admin_stop_rx) = watch::channel(false);
    let admin_server = tokio::spawn(serve_admin(
        cli.admin_addr,
        admin.clone(),
        |addr| info!(%addr, "admin server listening"),
        async move {
            let _ = admin_stop_rx.wait_for(|s| *s).await;
        },
    ));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let mut stopping = stop_rx.clone();
    let result = if cli.leader_elect {
        let config = LeaderConfig {
            namespace: lease_namespace.clone(),
            name: cli.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: seconds("lease-duration-seconds", cli.lease_duration_seconds)?,
            renew_deadline: seconds("renew-deadline-seconds", cli.renew_deadline_seconds)?,
            retry_period: seconds("retry-period-seconds", cli.retry_period_seconds)?,
        };
        info!(lease = %config.name, namespace = %config.namespace, %identity, "campaigning for leadership");
        let mut election = Election::start(
            Api::<Lease>::namespaced(client.clone(), &config.namespace),
            config,
            settings.clock.clone(),
        );
        let mut is_leader = election.is_leader.clone();
        // A standby is ready: it serves its purpose by waiting.
        admin.set_ready(true);
        metrics::gauge!(m::LEADER).set(0.0);
        // The `wait_for` guards are dropped inside these blocks: they must not be
        // held while leading.
        let led = tokio::select! {
            () = async { let _ = stopping.wait_for(|s| *s).await; } => Ok(false),
            e = election.failed() => Err(anyhow::Error::new(e).context("leader election ended")),
            led = async { is_leader.wait_for(|l| *l).await.is_ok() } => Ok(led),
        };
        let outcome = match led {
            Ok(true) => lead(&client, settings, stop_rx, &admin, &mut election).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if outcome.is_ok() {
            election.release().await;
        }
        outcome
    } else {
        admin.set_ready(false);
        let ready = admin.clone();
        run_controllers(client, settings, stop_rx, move || ready.set_ready(true)).await;
        Ok(())
    };
    metrics::gauge!(m::LEADER).set(0.0);
    admin.set_ready(false);
    let _ = admin_stop_tx.send(true);
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), admin_server).await {
        error!(error = %e, "admin server failed");
    }
    result
}

/// Runs the controllers while this instance leads. Returns when asked to stop;
/// fails at once when leadership is lost.
async fn lead(
    client: &Client,
    settings: ControllerSettings,
    stop: watch::Receiver<bool>,
    admin: &AdminState,
    election: &mut Election,
) -> anyhow::Result<()> {
    metrics::gauge!(m::LEADER).set(1.0);
    metrics::counter!(m::LEADER_ACQUISITIONS).increment(1);
    // Not ready until this leader's caches are synced and its controllers run.
    admin.set_ready(false);
    let ready = admin.clone();
    let controllers = run_controllers(client.clone(), settings, stop, move || ready.set_ready(true));
    tokio::select! {
        () = controllers => Ok(()),
        e = election.failed() => Err(anyhow::Error::new(e).context("lost leadership; exiting so no zombie leader keeps acting")),
    }
}
