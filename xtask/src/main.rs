//! `cargo xtask <task>`: FleetForge's developer tasks, in Rust so they run wherever
//! cargo does.

mod bench_gate;
mod crdgen;
mod demo;
mod e2e;
mod gateway_load;
mod k8s;
mod load;
mod modules;
mod soak;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// FleetForge developer tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write the WorldSpec CRD to deploy/crd/worldspec.yaml.
    Crdgen {
        /// Fail, writing nothing, when the committed YAML differs from the generated one.
        #[arg(long)]
        check: bool,
    },
    /// Build the local control plane (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, kwok) from source into the cache, or reuse it.
    K8s {
        /// Print the directory holding the binaries and do nothing else (builds if missing).
        #[arg(long)]
        print_dir: bool,
    },
    /// The main job on an embedded default: start the local control plane, install
    /// the CRD, start the operator, apply the sample worlds and print the cells as
    /// they become Ready.
    Demo {
        /// Stop once every world is Ready instead of keeping everything up until
        /// Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// The elastic loop end to end, from a release build: cells as real processes,
    /// split/merge rounds, a load storm and a dead cell; prints latencies,
    /// hand-over time and sessions lost.
    E2e,
    /// Load run: the operator binary (release) with many worlds on the local
    /// cluster; prints time to Ready, API writes per cell and memory.
    Load {
        /// How many worlds.
        #[arg(long, default_value_t = 100)]
        worlds: usize,
        /// Cells per world.
        #[arg(long, default_value_t = 4)]
        cells: u32,
    },
    /// The planner's soak at length, from a release build: worlds driven through
    /// the staged executor with every fault injected, then left to settle.
    Soak {
        /// How many seeds (worlds).
        #[arg(long, default_value_t = 20_000)]
        seeds: u64,
        /// Faulty steps per seed before the calm phase.
        #[arg(long, default_value_t = 300)]
        steps: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
    },
    /// Fail when the modules of a workspace crate import each other in a circle;
    /// prints each circle with the line that makes each of its edges.
    Modules {
        /// Check only this crate (its package name).
        #[arg(long = "crate", value_name = "NAME")]
        krate: Option<String>,
        /// Also print every edge between modules with where it comes from.
        #[arg(long)]
        edges: bool,
    },
    /// The gateway's player API under load, from a release build and with no
    /// cluster: one world served on one core, locate requests over keep-alive
    /// connections; prints requests/s, latency percentiles and CPU time.
    GatewayLoad {
        /// Cells of the one world served.
        #[arg(long, default_value_t = 1_000)]
        cells: u32,
        /// Keep-alive HTTP/1.1 connections the requests come over.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds measured, after 2 s of warm-up.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Run the planner benchmarks and compare them with the committed baseline.
    BenchGate {
        /// Fewer samples, for CI: enough to catch a regression past the tolerance.
        #[arg(long)]
        short: bool,
        /// Write the measured figures as the new baseline instead of comparing.
        #[arg(long)]
        update: bool,
    },
}

/// The workspace root (the parent of this crate's directory). `cargo xtask` sets
/// the manifest directory at run time too, and that one wins: a target directory
/// shared by two checkouts may hold a binary built in the other.
fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Crdgen { check } => crdgen::run(&root, check),
        Task::K8s { print_dir } => k8s::run(&root, print_dir),
        Task::Demo { exit } => demo::run(&root, exit),
        Task::E2e => e2e::run(&root),
        Task::Load { worlds, cells } => load::run(&root, worlds, cells),
        Task::Soak { seeds, steps, first } => soak::run(&root, seeds, steps, first),
        Task::Modules { krate, edges } => modules::run(&root, krate.as_deref(), edges),
        Task::GatewayLoad {
            cells,
            connections,
            seconds,
        } => gateway_load::run(
            &root,
            &gateway_load::Options {
                cells,
                connections,
                seconds,
            },
        ),
        Task::BenchGate { short, update } => bench_gate::run_gate(&root, short, update),
    }
}
