//! `cargo xtask soak`: the planner's soak (`fleetforge-core/tests/soak.rs`) at a
//! size `cargo test` has no time for, from a release build. Every seed drives a
//! world through the staged executor with every fault injected, then lets it
//! settle; a failing seed prints its world and last plans.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::bench_gate::cargo;

/// Runs `seeds` seeds of `steps` steps each, starting at seed `first`.
pub fn run(root: &Path, seeds: u64, steps: u64, first: u64) -> anyhow::Result<()> {
    println!("soak: {seeds} seeds from {first}, {steps} faulty steps each, then calm until at rest");
    let started = std::time::Instant::now();
    let status = Command::new(cargo())
        .current_dir(root)
        .args([
            "test",
            "--release",
            "--locked",
            "-p",
            "fleetforge-core",
            "--test",
            "soak",
        ])
        .env("FLEETFORGE_SOAK_SEEDS", seeds.to_string())
        .env("FLEETFORGE_SOAK_STEPS", steps.to_string())
        .env("FLEETFORGE_SOAK_FIRST_SEED", first.to_string())
        .status()
        .context("cannot start cargo test")?;
    if !status.success() {
        bail!("the soak failed; rerun one seed with FLEETFORGE_SOAK_SEED=<seed>");
    }
    println!(
        "soak: {seeds} seeds passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
