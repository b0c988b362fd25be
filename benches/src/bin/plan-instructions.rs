//! Runs `plan` inside one function that the bench gate counts instructions of
//! under callgrind: over a fleet of worlds of 100 cells, steady or with 1 % of
//! cells hot; or over one world of the curve (`fleetforge_benches::curve`), to
//! see how the count grows with the cells of a world. Instruction counts do not
//! depend on what else the machine is doing, so the gate can hold them to a tight
//! tolerance where wall time cannot be.
//!
//! Usage:
//!
//! - `plan-instructions <steady|changing> <worlds>`: a fleet of `worlds` worlds of
//!   100 cells.
//! - `plan-instructions <steady|hot|merging>_<shallow|deep> <cells>`: one world of
//!   `cells` cells, as the curve benchmark's case of the same name
//!   (`steady_deep 10000`).
//!
//! Prints how many transitions were planned; fails if a curve world planned
//! other than its fixture expects.

use std::hint::black_box;

use fleetforge_benches::{Case, curve, curve_exists, fleet, parse_curve_name, plan_all};

/// The function whose instructions the bench gate counts.
#[inline(never)]
fn count_plan(cases: &[Case]) -> usize {
    plan_all(cases)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, n] = args.as_slice() else { usage() };
    let Ok(n) = n.parse::<u32>() else { usage() };
    if n == 0 {
        usage();
    }
    match kind.as_str() {
        "steady" | "changing" => {
            let hot = usize::from(kind == "changing");
            let cases = fleet(n as usize, 100, hot);
            let planned = black_box(count_plan(black_box(&cases)));
            println!("planned {planned} transitions over {n} worlds");
        }
        name => {
            let Some((shape, activity)) = parse_curve_name(name) else {
                usage()
            };
            if !curve_exists(shape, activity, n) {
                eprintln!("{name} has no world of {n} cells: it has no sibling leaves to merge");
                std::process::exit(2);
            }
            let c = curve(shape, activity, n).expect("the case exists");
            let planned = black_box(count_plan(black_box(std::slice::from_ref(&c.case))));
            println!("planned {planned} transitions in one {name} world of {n} cells");
            // The count alone, not a second plan: this runs under callgrind.
            if planned != c.expected_transitions() {
                eprintln!(
                    "{name}/{n}: planned {planned} transitions, the fixture expects {:?}",
                    c.expected
                );
                std::process::exit(1);
            }
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: plan-instructions <steady|changing> <worlds>\n       \
         plan-instructions <steady|hot|merging>_<shallow|deep> <cells>"
    );
    std::process::exit(2);
}
