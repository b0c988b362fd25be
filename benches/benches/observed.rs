//! What the operator's instrumentation costs around `plan`: the same fleet of
//! 1000 worlds of 100 cells (1 % hot) planned bare, and planned as a reconcile
//! does it, inside a `reconcile` span carrying a correlation id and a `plan` span,
//! with the JSON log subscriber installed (writing to a sink) and the reconcile's
//! metrics recorded into the Prometheus recorder, plus one info line per world
//! that changes. Not part of the bench gate: it is a figure, not a limit.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetforge_benches::{Case, NOW, fleet, plan_all};
use fleetforge_core::plan;
use fleetforge_obs::metrics as m;
use fleetforge_obs::{LogFormat, Telemetry, TelemetryConfig};

const WORLDS: usize = 1000;
const CELLS: u32 = 100;

fn plan_instrumented(cases: &[Case]) -> usize {
    let mut transitions = 0;
    for (i, c) in cases.iter().enumerate() {
        let span = tracing::info_span!("reconcile", world = %c.world.name, generation = 1, correlation_id = %format!("{i:016x}"));
        let _entered = span.enter();
        let p = tracing::info_span!("plan").in_scope(|| plan(&c.world, &c.observed, NOW));
        if !p.transitions.is_empty() {
            tracing::info!(transitions = p.transitions.len(), phase = %p.summary.phase, "planned");
        }
        metrics::histogram!(m::RECONCILE_DURATION).record(0.001);
        metrics::counter!(m::RECONCILES, "result" => "ok").increment(1);
        metrics::gauge!(m::ACTIVE_CELLS, "world" => c.world.name.clone())
            .set(f64::from(p.summary.active_cells));
        metrics::gauge!(m::PLAYERS, "world" => c.world.name.clone()).set(p.summary.players as f64);
        transitions += p.transitions.len();
    }
    transitions
}

fn bench_observed(c: &mut Criterion) {
    let _metrics = m::install_recorder().expect("a recorder");
    let config = TelemetryConfig {
        format: LogFormat::Json,
        ..TelemetryConfig::new("bench")
    };
    let (_telemetry, dispatch) = Telemetry::build(config, std::io::sink).expect("a subscriber");
    let _guard = tracing::dispatcher::set_default(&dispatch);

    let mut group = c.benchmark_group("observed");
    group.throughput(Throughput::Elements(WORLDS as u64));
    group.sample_size(20);
    let changing = fleet(WORLDS, CELLS, 1);
    assert_eq!(plan_instrumented(&changing), plan_all(&changing));
    group.bench_function("bare_1pct_1000x100", |b| {
        b.iter(|| plan_all(black_box(&changing)))
    });
    group.bench_function("instrumented_1pct_1000x100", |b| {
        b.iter(|| plan_instrumented(black_box(&changing)))
    });
    group.finish();
}

criterion_group!(benches, bench_observed);
criterion_main!(benches);
