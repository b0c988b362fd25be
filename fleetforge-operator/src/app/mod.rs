//! The process: its entry point ([`main`], what the binary runs, callable by a
//! test with its own arguments), the operator's lifecycle ([`operator`]: admin
//! server, leader election, orderly shutdown) and the wiring of its controllers
//! ([`controllers`]).
//!
//! This is the top room: it may import every other, and none imports it.

pub mod controllers;
pub mod operator;

use std::ffi::OsString;

use clap::Parser as _;
use fleetforge_obs::{Telemetry, TelemetryConfig};

use crate::commands::backup;
use crate::config::cli::Cli;

/// Exit status of a clean run (for the operator: stopped by a signal).
pub const EXIT_OK: u8 = 0;
/// Exit status of a run that failed (the operator stopped on an error, a command
/// failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a command line or set-up that cannot be used.
pub const EXIT_USAGE: u8 = 2;

/// The `fleetforge-operator` binary: parses `args` (the program name first),
/// sets up logs and traces, and runs the operator until SIGTERM or SIGINT, or one
/// of its one-off commands (`backup`, `restore`). Returns the exit status.
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are printed to stdout and are not failures.
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    if let Err(e) = cli.validate() {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(run(cli))
}

/// Runs what `cli` asks with logs and traces set up, and shuts them down after.
async fn run(cli: Cli) -> u8 {
    let telemetry = match Telemetry::init(TelemetryConfig {
        format: cli.log_format,
        filter: cli.log.clone(),
        otlp_endpoint: cli.otlp_endpoint.clone(),
        service_name: "fleetforge-operator".to_owned(),
        service_instance: std::env::var("POD_NAME").ok(),
    }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let code = match &cli.command {
        Some(command) => match backup::run_command(&cli, command).await {
            Ok(()) => EXIT_OK,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "failed");
                EXIT_FAILED
            }
        },
        None => match operator::run(cli, Some(telemetry.log_control())).await {
            Ok(()) => EXIT_OK,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "operator stopped");
                EXIT_FAILED
            }
        },
    };
    if let Err(e) = telemetry.shutdown() {
        eprintln!("error: {e}");
    }
    code
}
