//! The `fleetforge-operator` binary: parses the command line and runs the
//! operator until SIGTERM or SIGINT, or runs one of its one-off commands
//! (`backup`, `restore`).

use std::process::ExitCode;

use clap::Parser;
use fleetforge_obs::{Telemetry, TelemetryConfig};
use fleetforge_operator::cli::Cli;
use fleetforge_operator::{backup, operator};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
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
            return ExitCode::from(2);
        }
    };
    operator::set_log_control(telemetry.log_control());
    let code = run(cli).await;
    if let Err(e) = telemetry.shutdown() {
        eprintln!("error: {e}");
    }
    code
}

async fn run(cli: Cli) -> ExitCode {
    if let Some(command) = &cli.command {
        return match backup::run_command(&cli, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "failed");
                ExitCode::FAILURE
            }
        };
    }
    match operator::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "operator stopped");
            ExitCode::FAILURE
        }
    }
}
