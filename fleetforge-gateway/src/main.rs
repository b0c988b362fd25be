//! The `fleetforge-gateway` binary; see [`fleetforge_gateway::app::main`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(fleetforge_gateway::app::main(std::env::args_os()))
}
