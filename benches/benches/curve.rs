//! How the time of `plan` grows with the cells of one world: worlds of 10 to
//! 10,000 cells (`CURVE_CELLS`), shallow (many roots) and deep (one root, a
//! balanced tree), steady, with 1 % of cells hot, or with 1 % of sibling pairs
//! cold. Throughput is in cells, so a linear planner shows the same cells per
//! second at every size. Ids are `plan_curve/<activity>_<shape>/<cells>`.
//!
//! Short by default (10 samples, 1 s of warm-up, 2 s of measurement, flat
//! sampling at 10,000 cells) so the whole curve runs in under two minutes on 2
//! cores; criterion's command-line options (`--sample-size`, `--warm-up-time`,
//! `--measurement-time`, a filter) override all but the sampling mode.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use fleetforge_benches::{
    Activity, CURVE_CELLS, CurveCase, Shape, curve, curve_exists, curve_name, plan_all,
};

fn bench_curve(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_curve");
    for cells in CURVE_CELLS {
        group.throughput(Throughput::Elements(u64::from(cells)));
        // A plan of 10,000 cells takes milliseconds: flat sampling needs 10
        // iterations, not the 55 of linear sampling's 1 + 2 + ... + 10.
        group.sampling_mode(if cells >= 10_000 {
            SamplingMode::Flat
        } else {
            SamplingMode::Auto
        });
        for activity in Activity::ALL {
            for shape in Shape::ALL {
                // Merging needs sibling leaves: a shallow world of up to 1,000
                // cells is all roots.
                if !curve_exists(shape, activity, cells) {
                    continue;
                }
                // Built (and checked) once, and only when criterion's filter
                // selects the id: criterion calls this closure once per sample.
                let mut fixture: Option<CurveCase> = None;
                let id = BenchmarkId::new(curve_name(shape, activity), cells);
                group.bench_function(id, |b| {
                    let f = fixture.get_or_insert_with(|| {
                        let f = curve(shape, activity, cells).expect("the case exists");
                        f.check();
                        f
                    });
                    let case = std::slice::from_ref(&f.case);
                    b.iter(|| plan_all(black_box(case)))
                });
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_curve
}
criterion_main!(benches);
