//! Memory of the planner per 100 cells (REQ-PERF-004 allows 500 MB), measured with
//! a counting global allocator: the bytes the model of a 100-cell world holds (its
//! spec and observed cells with a window of samples each), and the peak and total
//! bytes one `plan` call allocates on top. Deterministic, so the bench gate can
//! compare it tightly. Prints the figures; with `FLEETFORGE_BENCH_OUT` set, also
//! writes them there as JSON.
//!
//! And the gateway's per 1,000 cells: the bytes its `Worlds` holds (every cell
//! Pod's entry, each world's directory and published view) for one world of 10,
//! 1,000 or 10,000 cells and for 1,000 worlds of 4 cells, and the face
//! neighbours a view keeps once a topology request has asked for them. Printed
//! only: the bench gate holds the planner's figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use fleetforge_benches::{GATEWAY_CELLS, NOW, fleet};
use fleetforge_core::plan;
use fleetforge_gateway::cluster::WorldKey;
use fleetforge_gateway::worlds::Worlds;

mod gateway_world;

/// Counts live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// the `GlobalAlloc` contract; the counters are only atomics on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        TOTAL.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    const CELLS: u32 = 100;
    const WORLDS: usize = 100;

    let live_before = LIVE.load(Ordering::Relaxed);
    let cases = fleet(WORLDS, CELLS, 1);
    let model_per_world = (LIVE.load(Ordering::Relaxed) - live_before) / WORLDS;

    // The plan of a world with one hot cell: the larger of the two fixtures' plans.
    let case = &cases[0];
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let total_before = TOTAL.load(Ordering::Relaxed);
    let p = black_box(plan(&case.world, &case.observed, NOW));
    let plan_peak = PEAK.load(Ordering::Relaxed) - base;
    let plan_total = TOTAL.load(Ordering::Relaxed) - total_before;
    assert_eq!(p.transitions.len(), 1, "the fixture must plan one split");
    drop(p);

    println!("memory per 100 cells (one world of {CELLS} cells, 7 samples per cell):");
    println!("  model (spec + observed cells + samples): {model_per_world} bytes");
    println!("  plan() peak on top of the model:         {plan_peak} bytes");
    println!("  plan() bytes allocated in all:           {plan_total} bytes");

    gateway();

    if let Ok(path) = std::env::var("FLEETFORGE_BENCH_OUT") {
        let figures = serde_json::json!({
            "memory/model_bytes_per_100_cells": model_per_world,
            "memory/plan_peak_bytes_per_100_cells": plan_peak,
            "memory/plan_total_bytes_per_100_cells": plan_total,
        });
        if let Err(e) = std::fs::write(&path, format!("{figures:#}\n")) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
}

/// Live bytes `build`'s result holds once what it built it from is dropped.
fn held<T>(build: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let built = build();
    (built, LIVE.load(Ordering::Relaxed) - before)
}

/// Live bytes the views of `worlds` (named `w0`, `w1`, ...) gain once each has
/// computed its face neighbours.
fn neighbours_held(worlds: &Worlds, count: usize) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..count {
        let key = WorldKey::new(gateway_world::NAMESPACE, format!("w{i}"));
        let view = worlds.view(&key).expect("published");
        black_box(view.neighbours());
    }
    LIVE.load(Ordering::Relaxed) - before
}

/// Prints the gateway's memory per 1,000 cells.
fn gateway() {
    println!("gateway memory per 1,000 cells (the Worlds table: entries by Pod, directories, views):");
    for cells in GATEWAY_CELLS {
        let (worlds, bytes) = held(|| gateway_world::worlds(&[cells]));
        let near = neighbours_held(&worlds, 1);
        let per = |b: usize| b as f64 * 1_000.0 / f64::from(cells);
        println!(
            "  one world of {cells:>6} cells:  {:>9.0} bytes; face neighbours once asked: +{:.0} bytes",
            per(bytes),
            per(near)
        );
    }
    const WORLDS: usize = 1_000;
    const CELLS: u32 = 4;
    let (worlds, bytes) = held(|| gateway_world::worlds(&[CELLS; WORLDS]));
    let near = neighbours_held(&worlds, WORLDS);
    let cells = (WORLDS * CELLS as usize) as f64;
    println!(
        "  {WORLDS} worlds of {CELLS} cells:   {:>9.0} bytes; face neighbours once asked: +{:.0} bytes",
        bytes as f64 * 1_000.0 / cells,
        near as f64 * 1_000.0 / cells
    );
}
