//! Time of `plan` over a fleet of 1000 worlds of 100 cells each (REQ-PERF-003: 1000
//! WorldSpecs per cluster), in a steady state and with 1 % of cells crossing the
//! scale-up threshold.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetforge_benches::{fleet, plan_all};

const WORLDS: usize = 1000;
const CELLS: u32 = 100;

fn bench_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.throughput(Throughput::Elements(WORLDS as u64));
    group.sample_size(20);

    let steady = fleet(WORLDS, CELLS, 0);
    assert_eq!(plan_all(&steady), 0, "the steady fleet must plan nothing");
    group.bench_function("steady_1000x100", |b| b.iter(|| plan_all(black_box(&steady))));

    // 1 cell of 100 in every world is hot: 1 % of all cells.
    let changing = fleet(WORLDS, CELLS, 1);
    assert_eq!(plan_all(&changing), WORLDS, "every world must split its hot cell");
    group.bench_function("changing_1pct_1000x100", |b| {
        b.iter(|| plan_all(black_box(&changing)))
    });
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
