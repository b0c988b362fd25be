//! `cargo xtask e2e`: the elastic-loop test (`examples/tests/elastic_loop.rs`)
//! from a release build, with its summary of figures printed. The same test runs
//! in `cargo test --workspace` with 3 rounds of split and merge; this is the way
//! to read its figures at the speed the operator and the cells really run, over
//! 20 rounds unless `FLEETFORGE_E2E_ROUNDS` says otherwise.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::bench_gate::cargo;

/// Entry point of `cargo xtask e2e`.
pub fn run(root: &Path) -> anyhow::Result<()> {
    crate::k8s::run(root, false)?;
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["test", "--release", "--package", "fleetforge-examples"])
        .args(["--test", "elastic_loop", "--", "--nocapture"])
        .env(
            "FLEETFORGE_E2E_ROUNDS",
            std::env::var("FLEETFORGE_E2E_ROUNDS").unwrap_or_else(|_| "20".to_owned()),
        )
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("the elastic-loop test failed ({status})");
    }
    Ok(())
}
