//! The simulator's metrics. Names follow the Prometheus conventions of the
//! operator's (`fleetforge_` prefix, `_total` counters) with a `cell_` part, and
//! carry no labels: each cell is its own scrape target, which already says which
//! world, cell and Pod the numbers are about.

use metrics::{counter, describe_counter, describe_gauge, gauge};

/// Sessions the cell holds.
pub const PLAYERS: &str = "fleetforge_cell_players";
/// Players the cell is sized for.
pub const CAPACITY: &str = "fleetforge_cell_capacity";
/// 1 once the cell takes no new players (draining or handing over), else 0.
pub const DRAINING: &str = "fleetforge_cell_draining";
/// Sessions this cell handed over and saw acknowledged.
pub const SESSIONS_EXPORTED: &str = "fleetforge_cell_sessions_exported_total";
/// Sessions this cell took over that it did not hold already.
pub const SESSIONS_IMPORTED: &str = "fleetforge_cell_sessions_imported_total";
/// Import requests to other cells that failed or were not fully acknowledged.
pub const EXPORT_FAILURES: &str = "fleetforge_cell_export_failures_total";

/// Describes every metric and sets the ones known at start.
pub fn init(capacity: u32) {
    describe_gauge!(PLAYERS, "Player sessions the cell holds.");
    describe_gauge!(CAPACITY, "Players the cell is sized for.");
    describe_gauge!(
        DRAINING,
        "1 once the cell takes no new players (draining or handing over), else 0."
    );
    describe_counter!(
        SESSIONS_EXPORTED,
        "Sessions handed over to other cells and acknowledged by them."
    );
    describe_counter!(
        SESSIONS_IMPORTED,
        "Sessions taken over from other cells (repeats of a session already held are not counted)."
    );
    describe_counter!(
        EXPORT_FAILURES,
        "Import requests to other cells that failed or were not fully acknowledged."
    );
    gauge!(CAPACITY).set(f64::from(capacity));
    gauge!(PLAYERS).set(0.0);
    gauge!(DRAINING).set(0.0);
    counter!(SESSIONS_EXPORTED).absolute(0);
    counter!(SESSIONS_IMPORTED).absolute(0);
    counter!(EXPORT_FAILURES).absolute(0);
}

/// Records the number of sessions held.
pub fn players(n: u32) {
    gauge!(PLAYERS).set(f64::from(n));
}

/// Records that the cell stopped taking players.
pub fn draining() {
    gauge!(DRAINING).set(1.0);
}

/// Counts sessions exported.
pub fn exported(n: usize) {
    counter!(SESSIONS_EXPORTED).increment(n as u64);
}

/// Counts sessions imported.
pub fn imported(n: usize) {
    counter!(SESSIONS_IMPORTED).increment(n as u64);
}

/// Counts a failed import request.
pub fn export_failed() {
    counter!(EXPORT_FAILURES).increment(1);
}
