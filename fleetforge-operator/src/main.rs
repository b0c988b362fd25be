//! The `fleetforge-operator` binary: parses the command line and runs the
//! operator until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use fleetforge_operator::cli::Cli;
use fleetforge_operator::operator;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = fleetforge_obs::init_logging(cli.log_format, &cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match operator::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "operator stopped");
            ExitCode::FAILURE
        }
    }
}
