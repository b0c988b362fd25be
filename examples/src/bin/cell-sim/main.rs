//! The FleetForge cell simulator: an example game server serving one cell of a
//! world, with simulated players instead of real clients.
//!
//! It implements the cell contract of [`fleetforge_core::contract`] as a real
//! game server would, so the operator can be run, and tested, end to end:
//!
//! ```sh
//! FLEETFORGE_WORLD=meadow FLEETFORGE_CELL_ID=c0 \
//! FLEETFORGE_CELL_BOUNDS='{"x":{"min":0,"max":500},"y":{"min":0,"max":500}}' \
//! FLEETFORGE_TOKEN_DIR=/var/run/fleetforge FLEETFORGE_LOG_FORMAT=text \
//!     cargo run -p fleetforge-examples --bin cell-sim
//! ```
//!
//! One HTTP port serves:
//!
//! - `GET /healthz`, `GET /readyz` (503 once draining or handing over),
//!   `GET /metrics` (Prometheus text) and `GET /v1/load` (a `LoadReport` with a
//!   10-bin histogram per axis);
//! - behind `Authorization: Bearer <token>` (the `token` or `previous` file of
//!   the token directory):
//!   - `POST /v1/admin/players` with `{"add": n, "distribution": D,
//!     "rampSeconds": s}` or `{"remove": n}`, where D is `{"uniform": {}}`,
//!     `{"within": <bounds>}` or `{"around": {"center": {"x":..,"y":..},
//!     "spread": f}}`; answers `{"players": n}`;
//!   - `GET /v1/admin/sessions`: `{"sessions": [..]}`;
//!   - `POST /v1/handoff/export` and `POST /v1/handoff/import` of the contract.
//!
//! On SIGTERM or SIGINT the cell drains: it takes no new players, waits until
//! its sessions have been exported (or the drain timeout passed), then stops.

mod body;
mod config;
mod export;
mod players;
mod server;
mod sessions;
mod shutdown;
mod telemetry;
mod token;

use std::future::IntoFuture;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use fleetforge_obs::metrics::install_recorder;
use fleetforge_obs::{AdminState, init_logging};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::config::{Args, Config};
use crate::server::AppState;
use crate::shutdown::Signals;

/// Time in-flight requests get to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(args.log_format, &args.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "cell stopped");
            ExitCode::FAILURE
        }
    }
}

/// Serves the cell until a signal stops it and the drain is over.
async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = install_recorder().context("installing the metrics recorder")?;
    telemetry::init(config.capacity);
    if config.token_dir.is_none() {
        warn!("FLEETFORGE_TOKEN_DIR is not set: every authenticated endpoint answers 401");
    }

    let listen = config.listen;
    let drain_timeout = config.drain_timeout;
    let admin = AdminState::new(Some(metrics));
    let client = export::client().context("building the HTTP client")?;
    info!(
        world = %config.world,
        cell = %config.cell_id,
        incarnation = config.incarnation,
        pod = %config.pod_name,
        bounds = %config.bounds,
        capacity = config.capacity,
        "starting cell"
    );
    let state = AppState::new(config, admin.clone(), client);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // The address actually bound: with port 0 the kernel picked one, and whoever
    // started the cell learns it from this line.
    let bound = listener.local_addr().unwrap_or(listen);
    // Signals are taken over only now: until the socket is bound there is
    // nothing to drain, and their default action, exiting, is right.
    let mut signals = Signals::listen().context("listening for signals")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = server::router(state.clone(), admin.clone());
    // Ready before the first request is served, so that an early export's
    // "not ready" cannot be overwritten.
    admin.set_ready(true);
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                // A dropped sender stops the server just the same.
                let _ = stopped.await;
            })
            .into_future(),
    );
    info!(address = %bound, "serving");

    tokio::select! {
        signal = signals.next() => info!(signal, "stopping: draining first"),
        result = &mut server => {
            return match result {
                Ok(Ok(())) => Err(anyhow!("the server stopped on its own")),
                Ok(Err(e)) => Err(e).context("serving"),
                Err(e) => Err(e).context("the server task failed"),
            };
        }
    }
    state.start_draining();
    shutdown::drain(&state, drain_timeout, &mut signals).await;

    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "the server failed while stopping"),
        Ok(Err(e)) => warn!(error = %e, "the server task failed while stopping"),
        Err(_) => warn!("requests still running after the shutdown grace period were cut off"),
    }
    let left = state.players();
    if left > 0 {
        warn!(sessions = left, "stopped with sessions that were not handed over");
    } else {
        info!("stopped with no session left");
    }
    Ok(())
}
