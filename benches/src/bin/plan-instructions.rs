//! Runs `plan` over a fleet of worlds of 100 cells, steady or with 1 % of cells
//! hot, inside one function that the bench gate counts instructions of under
//! callgrind. Instruction counts do not depend on what else the machine is doing,
//! so the gate can hold them to a tight tolerance where wall time cannot be.
//!
//! Usage: `plan-instructions <steady|changing> <worlds>`.

use std::hint::black_box;

use fleetforge_benches::{Case, fleet, plan_all};

/// The function whose instructions the bench gate counts.
#[inline(never)]
fn count_plan(cases: &[Case]) -> usize {
    plan_all(cases)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (hot, worlds) = match args.as_slice() {
        [kind, n] => match (kind.as_str(), n.parse::<usize>()) {
            ("steady", Ok(n)) if n > 0 => (0, n),
            ("changing", Ok(n)) if n > 0 => (1, n),
            _ => usage(),
        },
        _ => usage(),
    };
    let cases = fleet(worlds, 100, hot);
    let planned = black_box(count_plan(black_box(&cases)));
    println!("planned {planned} transitions over {worlds} worlds");
}

fn usage() -> ! {
    eprintln!("usage: plan-instructions <steady|changing> <worlds>");
    std::process::exit(2);
}
