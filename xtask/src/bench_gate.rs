//! `cargo xtask bench-gate`: runs the planner benchmarks and fails when a figure is
//! worse than the committed baseline (`benches/baseline.json`) by more than the
//! tolerance stated there. `--update` records the run as the new baseline.
//!
//! Three kinds of figure: criterion's median wall time of `plan`, which a busy
//! machine can double, so its tolerance only catches gross regressions; the
//! instructions `plan` executes, counted under callgrind and the same from run to
//! run, so a small tolerance catches real ones; and the planner's memory per 100
//! cells, counted by an allocator, equally exact.
//!
//! Time and instructions are taken over a fleet of 1000 worlds of 100 cells, and
//! over single worlds of 1,000 and 10,000 cells from the `curve` benchmark, where
//! a planner that grows faster than the cells of a world shows: its instructions
//! per plan, and their growth from 1,000 to 10,000 cells (10 when linear).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The committed baseline.
#[derive(Debug, Serialize, Deserialize)]
struct Baseline {
    /// Why the tolerances are what they are, for whoever edits them.
    note: String,
    /// Allowed slowdown of a timing figure, as a fraction (0.75 = 75 % slower).
    time_tolerance: f64,
    /// Allowed growth of a memory figure, as a fraction.
    memory_tolerance: f64,
    /// Allowed growth of an instruction count, as a fraction.
    instructions_tolerance: f64,
    /// Figure name to value: nanoseconds for `plan/*` and `plan_curve/*`, bytes
    /// for `memory/*`, instructions (or a ratio of two counts) for
    /// `instructions/*`.
    figures: BTreeMap<String, f64>,
}

/// The criterion benchmarks whose median is gated, as `group/function`.
const TIMED: [&str; 2] = ["plan/steady_1000x100", "plan/changing_1pct_1000x100"];

/// Worlds of 100 cells the instruction count runs over (per-world figures are
/// reported, so the count only trades run time against rounding).
const COUNTED_WORLDS: usize = 100;

/// Figure name, and the fleet `plan-instructions` plans for it.
const COUNTED: [(&str, &str); 2] = [
    ("instructions/plan_steady_per_world", "steady"),
    ("instructions/plan_changing_per_world", "changing"),
];

/// The cases of the `curve` benchmark the gate measures, as `<activity>_<shape>`
/// and cells: one world of 1,000 and one of 10,000 cells, steady, in both tree
/// shapes, and a deep one with 1 % of its cells splitting. Each gives a wall-time
/// figure ([`curve_time_figure`]) and an instruction count per plan
/// ([`curve_instructions_figure`]).
const CURVE: [(&str, u32); 5] = [
    ("steady_shallow", 1_000),
    ("steady_shallow", 10_000),
    ("steady_deep", 1_000),
    ("steady_deep", 10_000),
    ("hot_deep", 10_000),
];

/// A figure of how instructions grow with the cells of a world: its name, the
/// curve case, and the smaller and larger world (both in [`CURVE`]) whose counts
/// it divides. 10 for a planner linear in the cells.
const GROWTH: (&str, &str, u32, u32) = (
    "instructions/curve_steady_deep_10000_over_1000",
    "steady_deep",
    1_000,
    10_000,
);

/// The criterion median of a curve case: `plan_curve/<case>/<cells>`, its
/// benchmark id.
fn curve_time_figure(case: &str, cells: u32) -> String {
    format!("plan_curve/{case}/{cells}")
}

/// The instructions of one plan of a curve case's world.
fn curve_instructions_figure(case: &str, cells: u32) -> String {
    format!("instructions/curve_{case}_{cells}")
}

/// The cargo target directory (`$CARGO_TARGET_DIR` or `target/`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The cargo that runs xtask.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The median, in nanoseconds, criterion recorded for `bench` in its last run.
fn criterion_median(target: &Path, bench: &str) -> anyhow::Result<f64> {
    let path = target
        .join("criterion")
        .join(bench)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    v["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{} has no median.point_estimate", path.display()))
}

/// Runs the benchmarks (the fleet, the gated cases of the curve, memory, the
/// instruction counts) and returns every figure.
fn measure(root: &Path, short: bool) -> anyhow::Result<BTreeMap<String, f64>> {
    let target = target_dir(root);
    let mut figures = BTreeMap::new();

    let mut bench = Command::new(cargo());
    bench.current_dir(root).args([
        "bench",
        "--package",
        "fleetforge-benches",
        "--bench",
        "plan",
        "--",
    ]);
    if short {
        bench.args([
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
            "--sample-size",
            "10",
        ]);
    }
    run(&mut bench)?;
    for name in TIMED {
        figures.insert(name.to_owned(), criterion_median(&target, name)?);
    }

    // Only the gated cases of the curve: criterion's filter is a regex on the id.
    let ids: Vec<String> = CURVE
        .iter()
        .map(|&(case, cells)| format!("{case}/{cells}"))
        .collect();
    let filter = format!("^plan_curve/({})$", ids.join("|"));
    let mut curve = Command::new(cargo());
    curve.current_dir(root).args([
        "bench",
        "--package",
        "fleetforge-benches",
        "--bench",
        "curve",
        "--",
        &filter,
    ]);
    // The benchmark's own settings are 10 samples, 1 s of warm-up and 2 s of
    // measurement; the full gate takes more samples, the short one less time.
    if short {
        curve.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    } else {
        curve.args(["--sample-size", "20", "--measurement-time", "5"]);
    }
    run(&mut curve)?;
    for (case, cells) in CURVE {
        let name = curve_time_figure(case, cells);
        figures.insert(name.clone(), criterion_median(&target, &name)?);
    }

    let out_dir = target.join("fleetforge-bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("memory.json");
    run(Command::new(cargo())
        .current_dir(root)
        .env("FLEETFORGE_BENCH_OUT", &out)
        .args(["bench", "--package", "fleetforge-benches", "--bench", "memory"]))?;
    let mem: BTreeMap<String, f64> = serde_json::from_str(
        &std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?,
    )?;
    figures.extend(mem);
    figures.extend(count_instructions(root, &target)?);
    Ok(figures)
}

/// Instructions `plan` executes per world of the fleets, and per plan of the
/// curve's worlds, counted by callgrind inside `plan-instructions`' `count_plan`;
/// and the growth figure, from two of the latter.
fn count_instructions(root: &Path, target: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    run(Command::new(cargo()).current_dir(root).args([
        "build",
        "--release",
        "--package",
        "fleetforge-benches",
        "--bin",
        "plan-instructions",
    ]))?;
    let bin = target.join("release").join("plan-instructions");
    let out_dir = target.join("fleetforge-bench");
    let mut figures = BTreeMap::new();
    for (name, fleet) in COUNTED {
        let total = callgrind(&bin, &out_dir, fleet, &COUNTED_WORLDS.to_string())?;
        figures.insert(name.to_owned(), total / COUNTED_WORLDS as f64);
    }
    for (case, cells) in CURVE {
        let total = callgrind(&bin, &out_dir, case, &cells.to_string())?;
        figures.insert(curve_instructions_figure(case, cells), total);
    }
    let (name, case, small, large) = GROWTH;
    let count = |cells| {
        figures
            .get(&curve_instructions_figure(case, cells))
            .copied()
            .with_context(|| format!("{case}/{cells} is not among the counted curve cases"))
    };
    let growth = count(large)? / count(small)?;
    figures.insert(name.to_owned(), growth);
    Ok(figures)
}

/// Instructions executed inside `count_plan` by `plan-instructions <kind> <n>`,
/// under callgrind.
fn callgrind(bin: &Path, out_dir: &Path, kind: &str, n: &str) -> anyhow::Result<f64> {
    let out = out_dir.join(format!("callgrind.{kind}.{n}.out"));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--toggle-collect=*count_plan*")
        .arg(bin)
        .arg(kind)
        .arg(n)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("cannot start valgrind (install it: the Debian package is `valgrind`)")?;
    if !status.success() {
        bail!(
            "valgrind --tool=callgrind {} {kind} {n} failed with {status} \
             (run it without valgrind to see why)",
            bin.display()
        );
    }
    let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let total: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{} has no summary line", out.display()))?;
    if total == 0.0 {
        bail!("callgrind counted no instructions in count_plan ({kind} {n}): was it inlined away?");
    }
    Ok(total)
}

/// Entry point of `cargo xtask bench-gate`.
pub fn run_gate(root: &Path, short: bool, update: bool) -> anyhow::Result<()> {
    let path = root.join("benches").join("baseline.json");
    let figures = measure(root, short)?;
    if update {
        let previous: Option<Baseline> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let baseline = Baseline {
            note: previous.as_ref().map_or_else(
                || "Figures from `cargo xtask bench-gate --update`.".into(),
                |b| b.note.clone(),
            ),
            time_tolerance: previous.as_ref().map_or(2.0, |b| b.time_tolerance),
            memory_tolerance: previous.as_ref().map_or(0.10, |b| b.memory_tolerance),
            instructions_tolerance: previous.as_ref().map_or(0.10, |b| b.instructions_tolerance),
            figures,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&baseline)? + "\n")?;
        println!("baseline written to {}", path.display());
        return Ok(());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (create it with --update)", path.display()))?;
    let baseline: Baseline =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let failed = compare(&baseline, &figures);
    if !failed.is_empty() {
        bail!("bench gate failed:\n  {}", failed.join("\n  "));
    }
    println!("bench gate: every figure within tolerance");
    Ok(())
}

/// Prints each baseline figure beside its measurement and returns one line per
/// figure that is missing, worse than its tolerance allows, or measured but not
/// in the baseline (a new figure is not gated until `--update` records it, so
/// the gate says so rather than pass it over).
fn compare(baseline: &Baseline, figures: &BTreeMap<String, f64>) -> Vec<String> {
    println!(
        "{:<50} {:>14} {:>14} {:>9} {:>9}",
        "figure", "baseline", "measured", "change", "allowed"
    );
    let mut failed = Vec::new();
    for (name, &base) in &baseline.figures {
        let Some(&now) = figures.get(name) else {
            failed.push(format!("{name}: not measured"));
            continue;
        };
        let tolerance = if name.starts_with("memory/") {
            baseline.memory_tolerance
        } else if name.starts_with("instructions/") {
            baseline.instructions_tolerance
        } else {
            baseline.time_tolerance
        };
        let change = now / base - 1.0;
        println!(
            "{name:<50} {:>14} {:>14} {:>8.1}% {:>8.0}%",
            value(base),
            value(now),
            change * 100.0,
            tolerance * 100.0
        );
        if change > tolerance {
            failed.push(format!(
                "{name}: {} is {:.1}% above the baseline {} (allowed {:.0}%)",
                value(now),
                change * 100.0,
                value(base),
                tolerance * 100.0
            ));
        }
    }
    for (name, &now) in figures {
        if !baseline.figures.contains_key(name) {
            println!("{name:<50} {:>14} {:>14}", "-", value(now));
            failed.push(format!(
                "{name}: {} measured, but the baseline has no such figure \
                 (record it with `cargo xtask bench-gate --update`)",
                value(now)
            ));
        }
    }
    failed
}

/// A figure as printed: whole units, or two decimals for a small one (a ratio).
fn value(v: f64) -> String {
    if v.abs() < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> Baseline {
        Baseline {
            note: String::new(),
            time_tolerance: 0.75,
            memory_tolerance: 0.10,
            instructions_tolerance: 0.10,
            figures: [
                ("plan/steady".to_owned(), 100.0),
                ("memory/model".to_owned(), 1000.0),
            ]
            .into(),
        }
    }

    fn measured(time: f64, memory: f64) -> BTreeMap<String, f64> {
        [
            ("plan/steady".to_owned(), time),
            ("memory/model".to_owned(), memory),
        ]
        .into()
    }

    #[test]
    fn figures_within_tolerance_pass() {
        assert!(compare(&baseline(), &measured(170.0, 1090.0)).is_empty());
        assert!(compare(&baseline(), &measured(40.0, 500.0)).is_empty());
    }

    #[test]
    fn each_kind_of_figure_fails_past_its_own_tolerance() {
        let failed = compare(&baseline(), &measured(180.0, 1000.0));
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].starts_with("plan/steady: 180 is 80.0% above"),
            "{failed:?}"
        );
        let failed = compare(&baseline(), &measured(100.0, 1101.0));
        assert_eq!(failed.len(), 1);
        assert!(failed[0].starts_with("memory/model"), "{failed:?}");
    }

    #[test]
    fn a_figure_missing_from_the_baseline_fails_and_says_how_to_record_it() {
        let mut m = measured(100.0, 1000.0);
        m.insert("instructions/curve_steady_deep_10000_over_1000".to_owned(), 10.3);
        assert_eq!(
            compare(&baseline(), &m),
            vec![
                "instructions/curve_steady_deep_10000_over_1000: 10.30 measured, but the baseline has \
                 no such figure (record it with `cargo xtask bench-gate --update`)"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn the_gated_curve_cases_include_both_ends_of_the_growth_figure() {
        let (_, case, small, large) = GROWTH;
        assert!(small < large);
        for cells in [small, large] {
            assert!(CURVE.contains(&(case, cells)), "{case}/{cells} is not counted");
        }
    }

    #[test]
    fn a_figure_no_longer_measured_fails() {
        let mut m = measured(100.0, 1000.0);
        m.remove("memory/model");
        assert_eq!(
            compare(&baseline(), &m),
            vec!["memory/model: not measured".to_owned()]
        );
    }
}
