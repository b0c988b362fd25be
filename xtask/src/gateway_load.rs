//! `cargo xtask gateway-load`: the gateway's player API under load, from a
//! release build, with no cluster. A `State` is fed by hand with one world of
//! `--cells` cells laid out as the gateway benchmark lays it out (a grid of
//! roots split at random, `fleetforge_benches::split_layout`), and served by the
//! gateway's own router and layers (rate limit, body limit, timeout, request
//! metrics with the Prometheus recorder installed, as the binary has them) on a
//! current-thread tokio runtime on an OS thread of its own: the server uses one
//! core. A load generator on another current-thread runtime (the main thread)
//! keeps `--connections` keep-alive HTTP/1.1 connections busy with locate
//! requests of pseudo-random positions, one request at a time on each, for 2 s
//! of warm-up and `--seconds` measured; it checks that every answer is a 200
//! naming the cell that owns the position. Prints requests per second, the
//! latency distribution of every request, the errors, and both threads' CPU time.
//!
//! The generator runs on the same machine: on 2 cores it takes one, so the
//! figures are what one server core does while the other core is busy asking.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use fleetforge_benches::{LAYOUT_SEED, layout_roots, split_layout};
use fleetforge_core::sim::SplitMix;
use fleetforge_core::{Axis, Bounds, CellRef, Point, Role};
use fleetforge_gateway::cluster::{Publication, WorldKey};
use fleetforge_gateway::http::answers::Located;
use fleetforge_gateway::http::{self, Limits};
use fleetforge_gateway::state::State;
use fleetforge_gateway::{CellEntry, Directory};
use http_body_util::BodyExt as _;
use hyper::header::HOST;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::bench_gate::cargo;

/// Set in the environment of the release build this task re-runs itself as,
/// so that it measures instead of building again.
const RELEASE_CHILD: &str = "FLEETFORGE_XTASK_RELEASE_CHILD";

/// Requests before the measurement starts: connections open, caches and the
/// allocator warm.
const WARM_UP: Duration = Duration::from_secs(2);

/// The world served, `ns/w`.
const NAMESPACE: &str = "ns";
/// See [`NAMESPACE`].
const WORLD: &str = "w";

/// Positions asked, cycled through: enough that no cache or branch predictor
/// learns them, few enough to prepare in a moment.
const POSITIONS: usize = 1 << 14;

/// Errors printed in full; the rest are counted.
const ERRORS_SHOWN: usize = 5;

/// What `cargo xtask gateway-load` was asked for.
pub struct Options {
    /// Cells of the one world served.
    pub cells: u32,
    /// Keep-alive connections the load comes over.
    pub connections: usize,
    /// Seconds measured after the warm-up.
    pub seconds: u64,
}

/// Entry point of `cargo xtask gateway-load`.
pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    if options.cells == 0 || options.connections == 0 || options.seconds == 0 {
        bail!("--cells, --connections and --seconds must each be at least 1");
    }
    // `cargo xtask` is a debug build, and a debug gateway is ten times slower
    // than the one that ships: measure from a release build of this task.
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_CHILD).is_none() {
        println!("gateway-load: running from a release build of xtask (the first build takes minutes) ...");
        let status = Command::new(cargo())
            .current_dir(root)
            .args(["run", "--release", "--package", "xtask", "--", "gateway-load"])
            .args(["--cells", &options.cells.to_string()])
            .args(["--connections", &options.connections.to_string()])
            .args(["--seconds", &options.seconds.to_string()])
            .env(RELEASE_CHILD, "1")
            .status()
            .context("cannot start cargo")?;
        if !status.success() {
            bail!("gateway-load from the release build failed ({status})");
        }
        return Ok(());
    }
    measure(options)
}

/// One position to ask for, and the cell that must answer.
struct Probe {
    /// `/v1/worlds/ns/w/locate?x=..&y=..`.
    uri: Uri,
    /// The owner's id, as the answer spells it.
    cell: String,
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    /// The time of every request answered within the measured window.
    latencies: Vec<Duration>,
    /// Requests that failed, at any time (warm-up included).
    errors: usize,
    /// The first few failures, in words.
    first_errors: Vec<String>,
}

impl Seen {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_errors.len() < ERRORS_SHOWN {
            self.first_errors.push(e);
        }
    }
}

fn measure(options: &Options) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let bounds = Bounds::rect((0.0, 10_000.0), (0.0, 10_000.0))?;
    let entries = cells(&bounds, options.cells);
    let directory = Directory::build(bounds, entries.iter().cloned());
    if directory.authoritative().len() != entries.len() {
        bail!("the synthetic layout is not a tiling: {:?}", directory.excluded());
    }
    let probes = Arc::new(probes(&directory)?);
    let metrics = fleetforge_obs::metrics::install_recorder().context("installing the metrics recorder")?;

    println!(
        "gateway-load: 1 world of {} cells ({} roots split at random, seed {LAYOUT_SEED:#x}; index {} levels deep), release build",
        options.cells,
        layout_roots(options.cells),
        directory.index().depth()
    );
    println!(
        "  server: the gateway's router and layers (Prometheus recorder installed, rate limit 1e9/s) \
         on a current-thread tokio runtime on its own OS thread"
    );
    println!(
        "  load:   {} keep-alive HTTP/1.1 connections (hyper), one request at a time each, from a \
         current-thread runtime on the main thread; positions spread evenly over the cells",
        options.connections
    );
    println!(
        "  NOTE:   server and load generator share this machine's {cores} cores: with 2, each has about \
         one, and the figures are one server core's while the other core is busy asking"
    );
    println!(
        "  {} s of warm-up, {} s measured ...",
        WARM_UP.as_secs(),
        options.seconds
    );

    let server = Server::start(state(bounds, entries))?;
    let generated = generate(server.addr, server.tid, probes, options);
    let stopped = server.stop();
    let run = generated?;
    stopped?;

    let mut latencies: Vec<Duration> = run
        .seen
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let errors: usize = run.seen.iter().map(|s| s.errors).sum();
    let window = Duration::from_secs(options.seconds).as_secs_f64();
    let answered = latencies.len();
    println!(
        "\nfigures ({} cells, {} connections):",
        options.cells, options.connections
    );
    println!(
        "  requests:  {answered} answered in {window:.0} s = {:.0} requests/s",
        answered as f64 / window
    );
    println!(
        "  latency:   p50 {}, p90 {}, p99 {}, max {}",
        micros(percentile(&latencies, 0.50)),
        micros(percentile(&latencies, 0.90)),
        micros(percentile(&latencies, 0.99)),
        micros(latencies.last().copied().unwrap_or_default())
    );
    println!("  errors:    {errors}");
    for e in run.seen.iter().flat_map(|s| &s.first_errors).take(ERRORS_SHOWN) {
        println!("    {e}");
    }
    match (run.server_cpu, run.generator_cpu) {
        (Some(server), Some(generator)) => {
            let share = |cpu: Duration| cpu.as_secs_f64() / window * 100.0;
            println!(
                "  CPU in the measured window: server thread {:.2} s ({:.0} % of a core, {} per request), \
                 load generator {:.2} s ({:.0} %)",
                server.as_secs_f64(),
                share(server),
                micros(server / u32::try_from(answered.max(1)).unwrap_or(u32::MAX)),
                generator.as_secs_f64(),
                share(generator)
            );
        }
        _ => println!("  CPU:       not measured (no /proc/self/task/<tid>/schedstat or stat)"),
    }
    let (ok, other) = recorded_locates(&metrics.render());
    println!("  the server's own metrics: {ok} locate answers 200, {other} other (warm-up included)");
    if errors != 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

/// The world's cells: a [`split_layout`] of `cells` cells, each an active,
/// ready cell Pod with an address.
fn cells(bounds: &Bounds, cells: u32) -> Vec<CellEntry> {
    split_layout(bounds, cells, LAYOUT_SEED)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let [_, _, b, d] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
            CellEntry {
                cell: CellRef::first(c.id),
                bounds: c.bounds,
                role: Role::Active { since: c.activated },
                ready: true,
                terminating: false,
                address: Some(Ipv4Addr::new(10, 42, b, d).into()),
                stamped_epoch: None,
            }
        })
        .collect()
}

/// A synced state publishing world `ns/w` with `entries`, as the watches would
/// leave it after their first lists.
fn state(bounds: Bounds, entries: Vec<CellEntry>) -> Arc<State> {
    let state = State::new();
    {
        let key = WorldKey::new(NAMESPACE, WORLD);
        let mut worlds = state.write();
        worlds.set_world(
            key.clone(),
            Some(Publication {
                bounds,
                game_port: 7777,
            }),
        );
        worlds.replace_cells(entries.into_iter().map(|e| {
            (
                NAMESPACE.to_owned(),
                format!("{WORLD}-{}", e.cell.id),
                key.clone(),
                e,
            )
        }));
    }
    state.set_synced();
    state
}

/// [`POSITIONS`] positions, each in a cell picked at random (as many players
/// in every cell, which is what the planner's splits aim for), with their
/// owners. Coordinates are written as Rust prints an `f64`, which reads back as
/// the same number, so the server locates exactly the position the owner was
/// found for.
fn probes(directory: &Directory) -> anyhow::Result<Vec<Probe>> {
    let cells = directory.authoritative();
    let mut rng = SplitMix::new(LAYOUT_SEED ^ 0x10ad);
    (0..POSITIONS)
        .map(|_| {
            let c = &cells[(rng.next_u64() % cells.len() as u64) as usize].bounds;
            let [x, y] = [Axis::X, Axis::Y].map(|a| c.min(a) + c.extent(a) * rng.next_f64());
            let owner = directory
                .locate(&Point::new(x, y, 0.0))
                .map_err(|e| anyhow!("({x}, {y}): {e}"))?;
            Ok(Probe {
                uri: format!("/v1/worlds/{NAMESPACE}/{WORLD}/locate?x={x}&y={y}").parse()?,
                cell: owner.cell.id.to_string(),
            })
        })
        .collect()
}

/// The gateway serving on its own thread.
struct Server {
    addr: SocketAddr,
    /// The thread's id in the kernel, for its CPU time.
    tid: Option<u32>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Serves `state` on 127.0.0.1, on a port of the system's choosing.
    fn start(state: Arc<State>) -> anyhow::Result<Self> {
        let (ready, listening) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread =
            std::thread::Builder::new()
                .name("gateway".into())
                .spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        // Far above what one client can ask: the limiter still runs
                        // on every request, as in production, but never refuses.
                        let limits = Limits {
                            rate_per_second: 1e9,
                            burst: u32::MAX,
                            ..Limits::default()
                        };
                        let router = http::router(state, &limits)?;
                        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
                        // The receiver waits for this; should it be gone, the run
                        // is over anyway.
                        let _ = ready.send((listener.local_addr()?, thread_id()));
                        http::serve(listener, router, async {
                            let _ = stopped.await;
                        })
                        .await?;
                        Ok(())
                    })
                })?;
        match listening.recv() {
            Ok((addr, tid)) => Ok(Self {
                addr,
                tid,
                stop,
                thread,
            }),
            // The thread ended before it listened: its error says why.
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => e.context("starting the gateway"),
                Ok(Ok(())) => anyhow!("the gateway stopped before it listened"),
                Err(_) => anyhow!("the gateway's thread panicked"),
            }),
        }
    }

    /// Shuts the server down and waits for its thread.
    fn stop(self) -> anyhow::Result<()> {
        // Gone only if the server already stopped, which `join` reports.
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow!("the gateway's thread panicked"))?
            .context("serving the gateway")
    }
}

/// What the generator measured.
struct Run {
    seen: Vec<Seen>,
    server_cpu: Option<Duration>,
    generator_cpu: Option<Duration>,
}

/// Runs the load: every connection asks until the window ends, while a timer
/// reads both threads' CPU time at the window's start and end.
fn generate(
    addr: SocketAddr,
    server_tid: Option<u32>,
    probes: Arc<Vec<Probe>>,
    options: &Options,
) -> anyhow::Result<Run> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let generator_tid = thread_id();
    let connections = options.connections;
    let seconds = options.seconds;
    runtime.block_on(async move {
        let from = Instant::now() + WARM_UP;
        let end = from + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..connections)
            .map(|i| {
                // Each connection starts at its own place in the positions.
                let first = i * POSITIONS / connections;
                tokio::spawn(connection(addr, Arc::clone(&probes), first, from, end))
            })
            .collect();
        let cpu = |tid: Option<u32>| tid.and_then(thread_cpu);
        tokio::time::sleep_until(from.into()).await;
        let start = (cpu(server_tid), cpu(generator_tid));
        tokio::time::sleep_until(end.into()).await;
        let finish = (cpu(server_tid), cpu(generator_tid));
        let mut seen = Vec::with_capacity(connections);
        for task in tasks {
            seen.push(task.await.context("a connection's task panicked")?);
        }
        let used = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        Ok(Run {
            seen,
            server_cpu: used(start.0, finish.0),
            generator_cpu: used(start.1, finish.1),
        })
    })
}

/// One keep-alive connection asking, one request at a time, from the `first`
/// probe on, until `end`; the latencies of the answers that arrive between
/// `from` and `end` are kept. A connection that fails ends there.
async fn connection(
    addr: SocketAddr,
    probes: Arc<Vec<Probe>>,
    first: usize,
    from: Instant,
    end: Instant,
) -> Seen {
    let mut seen = Seen::default();
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            seen.error(format!("connecting: {e}"));
            return seen;
        }
    };
    // Small requests, each awaited before the next: no batching wanted.
    if let Err(e) = stream.set_nodelay(true) {
        seen.error(format!("TCP_NODELAY: {e}"));
    }
    let (mut sender, driver) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(h) => h,
        Err(e) => {
            seen.error(format!("handshake: {e}"));
            return seen;
        }
    };
    // The connection's I/O runs as a task of its own; it ends when `sender` is
    // dropped, and a failure shows in the requests.
    tokio::spawn(async move {
        let _ = driver.await;
    });
    let host = addr.to_string();
    for probe in probes.iter().cycle().skip(first) {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let asked = ask(&mut sender, &host, probe).await;
        let done = Instant::now();
        match asked {
            Ok(()) if start >= from && done <= end => seen.latencies.push(done - start),
            Ok(()) => {}
            Err(Failure::Answer(e)) => seen.error(e),
            Err(Failure::Connection(e)) => {
                seen.error(e);
                break;
            }
        }
    }
    seen
}

/// Why a request failed.
enum Failure {
    /// The answer was wrong; the connection is still good.
    Answer(String),
    /// The connection broke.
    Connection(String),
}

/// Asks for `probe`'s position and checks the answer: a 200 whose body names
/// the cell that owns the position.
async fn ask(
    sender: &mut hyper::client::conn::http1::SendRequest<String>,
    host: &str,
    probe: &Probe,
) -> Result<(), Failure> {
    let request = Request::get(probe.uri.clone())
        .header(HOST, host)
        .body(String::new())
        .map_err(|e| Failure::Answer(format!("building the request: {e}")))?;
    sender
        .ready()
        .await
        .map_err(|e| Failure::Connection(format!("connection: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure::Connection(format!("{}: {e}", probe.uri)))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Connection(format!("{}: reading the body: {e}", probe.uri)))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(Failure::Answer(format!(
            "{}: {status}: {}",
            probe.uri,
            String::from_utf8_lossy(&body)
        )));
    }
    let located: Located = serde_json::from_slice(&body)
        .map_err(|e| Failure::Answer(format!("{}: not a located answer ({e})", probe.uri)))?;
    if located.cell != probe.cell {
        return Err(Failure::Answer(format!(
            "{}: answered {}, the owner is {}",
            probe.uri, located.cell, probe.cell
        )));
    }
    Ok(())
}

/// The calling thread's id in the kernel, from `/proc/thread-self`, which
/// links to `<pid>/task/<tid>`.
fn thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// The CPU time thread `tid` of this process has had: the nanoseconds on a CPU
/// of `schedstat`, else user and system time from `stat` (in the 1/100 s ticks
/// `/proc` counts in on Linux).
fn thread_cpu(tid: u32) -> Option<Duration> {
    let task = format!("/proc/self/task/{tid}");
    if let Some(ns) = std::fs::read_to_string(format!("{task}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
    {
        return Some(Duration::from_nanos(ns));
    }
    let stat = std::fs::read_to_string(format!("{task}/stat")).ok()?;
    // The fields after the command name (which may hold spaces, in parentheses):
    // state is the first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Locate answers the server's `fleetforge_gateway_requests_total` counted:
/// 200s, and everything else.
fn recorded_locates(exposition: &str) -> (u64, u64) {
    let name = fleetforge_obs::metrics::GATEWAY_REQUESTS;
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l.contains("route=\"locate\""))
        .filter_map(|l| {
            let count = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((l.contains("code=\"200\""), count))
        })
        .fold(
            (0, 0),
            |(ok, other), (is_ok, n)| {
                if is_ok { (ok + n, other) } else { (ok, other + n) }
            },
        )
}

/// The value at fraction `p` of sorted `values` (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A duration in microseconds, as printed.
fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_counts_are_read_from_the_exposition_by_code() {
        let text = "# TYPE fleetforge_gateway_requests_total counter\n\
            fleetforge_gateway_requests_total{route=\"locate\",code=\"200\"} 41\n\
            fleetforge_gateway_requests_total{route=\"locate\",code=\"503\"} 2\n\
            fleetforge_gateway_requests_total{route=\"topology\",code=\"200\"} 7\n";
        assert_eq!(recorded_locates(text), (41, 2));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_micros(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn probes_name_the_owner_of_their_position() {
        let bounds = Bounds::rect((0.0, 10_000.0), (0.0, 10_000.0)).unwrap();
        let directory = Directory::build(bounds, cells(&bounds, 100));
        let probes = probes(&directory).unwrap();
        assert_eq!(probes.len(), POSITIONS);
        let q = probes[0].uri.query().unwrap();
        let p = fleetforge_gateway::parse_locate(q, &bounds).unwrap();
        let owner = directory.locate(&p).map(|c| c.cell.id.to_string());
        assert_eq!(owner.as_deref(), Ok(probes[0].cell.as_str()));
    }
}
