//! What the gateway's answers cost on one world of 10, 1,000 and 10,000 cells
//! (`GATEWAY_CELLS`), laid out as a world that has grown: a grid of roots whose
//! cells were split at random again and again (`split_layout`). Ids are
//! `<group>/<case>/<cells>`:
//!
//! - `gateway_locate/{uniform,per_cell}/<cells>`: one `Directory::locate`, of
//!   positions spread evenly over the world's area, or over its cells (as many
//!   players in every cell, which is what the planner's splits aim for, so small
//!   deep cells are asked about as often as large ones). Throughput is one
//!   element: criterion's time is the time of one lookup.
//! - `gateway_build/directory/<cells>`: `Directory::build` from the world's
//!   entries, the cost of every change of the layout.
//! - `gateway_event/set_cell/<cells>`: `Worlds::set_cell` of one cell Pod whose
//!   readiness flips, as the watch applies it under the state's write lock: the
//!   directory rebuilt, compared and published.
//! - `gateway_neighbours/sweep/<cells>`: every cell's face neighbours, what
//!   `WorldView::neighbours` computes on a view's first topology request (and
//!   then keeps, so measured on the view's boxes rather than through the view).
//! - `gateway_topology/json/<cells>`: the body of a topology answer, built and
//!   serialised, once the neighbours are known.
//!
//! Throughput of all but locate is in cells, so a linear cost shows the same
//! cells per second at every size. 10 samples for those (a build of 10,000
//! cells takes milliseconds); criterion's command-line options override.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use fleetforge_benches::{GATEWAY_CELLS, LAYOUT_SEED};
use fleetforge_core::sim::SplitMix;
use fleetforge_core::{Bounds, Point};
use fleetforge_gateway::Directory;
use fleetforge_gateway::cluster::WorldKey;
use fleetforge_gateway::http::answers;
use fleetforge_gateway::topology;
use fleetforge_gateway::worlds::WorldView;

mod gateway_world;

/// Positions asked per case: a power of two, cycled through; more than a branch
/// predictor learns, few enough to stay in cache beside the index.
const POSITIONS: usize = 1 << 13;

/// One benchmark world: its cell Pods, fed to a `Worlds`, and its view.
struct Fixture {
    cells: u32,
    key: WorldKey,
    pods: Vec<(String, String, WorldKey, fleetforge_gateway::CellEntry)>,
    view: std::sync::Arc<WorldView>,
}

impl Fixture {
    fn new(cells: u32) -> Self {
        let worlds = gateway_world::worlds(&[cells]);
        let key = WorldKey::new(gateway_world::NAMESPACE, "w0");
        let view = worlds.view(&key).expect("the world is published");
        let pods = gateway_world::pods(&key, cells, LAYOUT_SEED);
        assert_eq!(
            view.directory.authoritative().len(),
            cells as usize,
            "every cell of a tiling owns its space"
        );
        assert!(view.directory.excluded().is_empty());
        Self {
            cells,
            key,
            pods,
            view,
        }
    }

    fn directory(&self) -> &Directory {
        &self.view.directory
    }
}

/// `POSITIONS` positions uniform over `world`'s area.
fn uniform(world: &Bounds, rng: &mut SplitMix) -> Vec<Point> {
    (0..POSITIONS).map(|_| point_in(world, rng)).collect()
}

/// `POSITIONS` positions each in a cell picked uniformly among the directory's.
fn per_cell(directory: &Directory, rng: &mut SplitMix) -> Vec<Point> {
    let cells = directory.authoritative();
    (0..POSITIONS)
        .map(|_| {
            let c = &cells[(rng.next_u64() % cells.len() as u64) as usize];
            point_in(&c.bounds, rng)
        })
        .collect()
}

/// A position uniform in `b` (half-open, so inside the box that was asked for).
fn point_in(b: &Bounds, rng: &mut SplitMix) -> Point {
    let [x, y] =
        [fleetforge_core::Axis::X, fleetforge_core::Axis::Y].map(|a| b.min(a) + b.extent(a) * rng.next_f64());
    Point::new(x, y, 0.0)
}

fn bench_locate(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut group = c.benchmark_group("gateway_locate");
    group.throughput(Throughput::Elements(1));
    for f in fixtures {
        let directory = f.directory();
        let mut rng = SplitMix::new(LAYOUT_SEED ^ u64::from(f.cells));
        let cases = [
            ("uniform", uniform(directory.world(), &mut rng)),
            ("per_cell", per_cell(directory, &mut rng)),
        ];
        for (name, points) in cases {
            // Every position has an owner: a lookup that fails early would
            // measure the wrong thing.
            assert!(points.iter().all(|p| directory.locate(p).is_ok()));
            let mut next = 0usize;
            group.bench_function(BenchmarkId::new(name, f.cells), |b| {
                b.iter(|| {
                    let p = &points[next % POSITIONS];
                    next = next.wrapping_add(1);
                    directory.locate(black_box(p)).map(|c| c.cell.incarnation)
                })
            });
        }
    }
    group.finish();
}

/// The groups whose one iteration handles every cell of the world.
fn per_world_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group
}

/// Flat sampling where one iteration takes milliseconds: 10 iterations, not the
/// 55 of linear sampling's 1 + 2 + ... + 10.
fn sampling(cells: u32) -> SamplingMode {
    if cells >= 10_000 {
        SamplingMode::Flat
    } else {
        SamplingMode::Auto
    }
}

fn bench_build(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut group = per_world_group(c, "gateway_build");
    for f in fixtures {
        group.throughput(Throughput::Elements(u64::from(f.cells)));
        group.sampling_mode(sampling(f.cells));
        let world = *f.directory().world();
        // In the order the gateway gives them (its cells by Pod name); the
        // copies are made outside the measurement, as `Worlds` makes them
        // from its own map.
        let entries: Vec<_> = f.pods.iter().map(|p| p.3.clone()).collect();
        group.bench_function(BenchmarkId::new("directory", f.cells), |b| {
            b.iter_batched(
                || entries.clone(),
                |e| Directory::build(world, e),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_event(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut group = per_world_group(c, "gateway_event");
    for f in fixtures {
        group.throughput(Throughput::Elements(u64::from(f.cells)));
        group.sampling_mode(sampling(f.cells));
        let mut worlds = gateway_world::worlds(&[f.cells]);
        let (namespace, pod, key, entry) = f.pods[f.pods.len() / 2].clone();
        let mut flipped = entry.clone();
        flipped.ready = false;
        let mut toggle = false;
        group.bench_function(BenchmarkId::new("set_cell", f.cells), |b| {
            b.iter(|| {
                toggle = !toggle;
                let e = if toggle { &flipped } else { &entry };
                worlds.set_cell(&namespace, &pod, key.clone(), e.clone())
            })
        });
        // Each flip changed an answer, so each published a view.
        let view = worlds.view(&f.key).expect("still published");
        assert_eq!(view.directory.authoritative().len(), f.cells as usize);
    }
    group.finish();
}

fn bench_neighbours(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut group = per_world_group(c, "gateway_neighbours");
    for f in fixtures {
        group.throughput(Throughput::Elements(u64::from(f.cells)));
        group.sampling_mode(sampling(f.cells));
        let directory = f.directory();
        // What `WorldView::neighbours` computes, once per view.
        let sweep = || {
            let boxes: Vec<Bounds> = directory.authoritative().iter().map(|c| c.bounds).collect();
            topology::neighbours(&boxes)
        };
        assert_eq!(sweep(), f.view.neighbours(), "the view computes the same");
        let pairs: usize = f.view.neighbours().iter().map(Vec::len).sum::<usize>() / 2;
        assert!(pairs >= f.cells as usize - 1, "a tiling is connected");
        group.bench_function(BenchmarkId::new("sweep", f.cells), |b| b.iter(sweep));
    }
    group.finish();
}

fn bench_topology(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut group = per_world_group(c, "gateway_topology");
    for f in fixtures {
        group.throughput(Throughput::Elements(u64::from(f.cells)));
        group.sampling_mode(sampling(f.cells));
        // The neighbours are computed already: the view keeps them.
        let _ = f.view.neighbours();
        let bytes = serde_json::to_vec(&answers::topology(&f.view))
            .expect("serialisable")
            .len();
        println!("gateway_topology/json/{}: an answer of {bytes} bytes", f.cells);
        group.bench_function(BenchmarkId::new("json", f.cells), |b| {
            b.iter(|| serde_json::to_vec(&answers::topology(black_box(&f.view))).map(|v| v.len()))
        });
    }
    group.finish();
}

fn bench_gateway(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = GATEWAY_CELLS.into_iter().map(Fixture::new).collect();
    for f in &fixtures {
        println!(
            "gateway world of {} cells: index of {} nodes, {} levels deep",
            f.cells,
            f.directory().index().node_count(),
            f.directory().index().depth()
        );
    }
    bench_locate(c, &fixtures);
    bench_build(c, &fixtures);
    bench_event(c, &fixtures);
    bench_neighbours(c, &fixtures);
    bench_topology(c, &fixtures);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_gateway
}
criterion_main!(benches);
