//! Memory of the planner per 100 cells (REQ-PERF-004 allows 500 MB), measured with
//! a counting global allocator: the bytes the model of a 100-cell world holds (its
//! spec and observed cells with a window of samples each), and the peak and total
//! bytes one `plan` call allocates on top. Deterministic, so the bench gate can
//! compare it tightly. Prints the figures; with `FLEETFORGE_BENCH_OUT` set, also
//! writes them there as JSON.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use fleetforge_benches::{NOW, fleet};
use fleetforge_core::plan;

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
