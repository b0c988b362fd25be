//! The `fleetforge-operator` binary: everything it does is
//! [`fleetforge_operator::app::main`], which tests call the same way.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(fleetforge_operator::app::main(std::env::args_os()))
}
