//! Embeds `fleetforge-core` in another program: reads a `WorldSpec` from YAML and
//! the recent load of its cells from JSON, plans, and prints the plan.
//!
//! ```sh
//! cargo run -p fleetforge-examples --bin plan-world -- \
//!     examples/worlds/small.yaml examples/loads/small-hot.json
//! ```
//!
//! The world is taken as freshly laid out (its initial cells, all ready) when the
//! loads were taken; the loads JSON names cells by id:
//!
//! ```json
//! { "now": 60, "cells": { "c0": [ { "at": 20, "players": 90 }, { "at": 60, "players": 95 } ] } }
//! ```
//! (times in seconds; each sample may carry a `histogram` of player positions).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use fleetforge_core::sim::apply;
use fleetforge_core::{Action, CellId, LoadSample, Observed, PositionHistogram, Timestamp, World, plan};
use fleetforge_crd::WorldSpec;
use serde::Deserialize;

/// Plan a world from a WorldSpec YAML and a JSON of cell loads.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A WorldSpec manifest (for example examples/worlds/small.yaml).
    world: PathBuf,
    /// Recent load samples per cell id (for example examples/loads/small-hot.json).
    loads: PathBuf,
    /// Print the plan as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The loads file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Loads {
    /// When to plan, in seconds since the world was laid out.
    now: u64,
    /// Samples per cell id, oldest first.
    cells: BTreeMap<String, Vec<Sample>>,
}

/// One sample in the loads file; times in seconds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    at: u64,
    players: u32,
    #[serde(default)]
    histogram: Option<PositionHistogram>,
}

fn secs(s: u64) -> Timestamp {
    Timestamp(s.saturating_mul(1000))
}

fn load_world(path: &PathBuf) -> anyhow::Result<World> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: WorldSpec =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not a WorldSpec", path.display()))?;
    World::try_from(&spec).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut world = load_world(&args.world)?;
    let text =
        std::fs::read_to_string(&args.loads).with_context(|| format!("reading {}", args.loads.display()))?;
    let loads: Loads =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", args.loads.display()))?;

    // Lay the world out as the operator would have at time 0.
    let mut observed = Observed::default();
    let initial = plan(&world, &observed, secs(0));
    apply(&mut world, &mut observed, &initial, secs(0));

    for (id, samples) in loads.cells {
        let id: CellId = id.parse()?;
        let Some(cell) = observed.cells.iter_mut().find(|c| c.cell.id == id) else {
            bail!("{}: the world has no cell {id}", args.loads.display());
        };
        cell.samples = samples
            .into_iter()
            .map(|s| LoadSample {
                at: secs(s.at),
                players: s.players,
                histogram: s.histogram,
            })
            .collect();
    }

    let p = plan(&world, &observed, secs(loads.now));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    let s = &p.summary;
    println!(
        "world {}: {} cells active ({} ready), {} players, phase {}",
        world.name, s.active_cells, s.ready_cells, s.players, s.phase
    );
    if p.is_empty() {
        println!("nothing to do");
    }
    for t in &p.transitions {
        println!("{}: {}", t.kind, t.reason);
        for a in &t.actions {
            match a {
                Action::Create { cell, bounds, active } => {
                    let how = if *active { "active" } else { "incoming" };
                    println!(
                        "  create {} ({how}) covering {bounds}",
                        cell.process_name(&world.name)
                    );
                }
                Action::HandOver { from, to } => {
                    let from: Vec<String> = from.iter().map(ToString::to_string).collect();
                    let to: Vec<String> = to.iter().map(|t| t.cell.to_string()).collect();
                    println!(
                        "  hand sessions over from [{}] to [{}]",
                        from.join(", "),
                        to.join(", ")
                    );
                }
                Action::Retire { cell } => println!("  retire {}", cell.process_name(&world.name)),
            }
        }
    }
    for h in &s.held_back {
        println!("held back: {h}");
    }
    for problem in &s.problems {
        println!("problem: {problem}");
    }
    Ok(())
}
