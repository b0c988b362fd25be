//! Metric names, descriptions and the Prometheus recorder.
//!
//! Names follow the Prometheus conventions: a `fleetforge_` prefix, counters end in
//! `_total`, durations are histograms in seconds. Labels stay bounded: `world`,
//! never `cell`.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Reconciles finished, by `result` (`ok`, `error`, `invalid_spec`).
pub const RECONCILES: &str = "fleetforge_reconciles_total";
/// Time one reconcile took, in seconds.
pub const RECONCILE_DURATION: &str = "fleetforge_reconcile_duration_seconds";
/// Worlds by `phase`.
pub const WORLDS: &str = "fleetforge_worlds";
/// Worlds due for a reconcile that has not started yet (triggered by a watch event,
/// a load sample or a requeue whose time has come).
pub const RECONCILE_QUEUE_DEPTH: &str = "fleetforge_reconcile_queue_depth";
/// Active cells of each `world`.
pub const ACTIVE_CELLS: &str = "fleetforge_active_cells";
/// Players on each `world`, by the latest load samples.
pub const PLAYERS: &str = "fleetforge_players";
/// Transitions started, by `kind` (split, merge, replace, ...).
pub const TRANSITIONS: &str = "fleetforge_transitions_total";
/// Cell Pods created.
pub const CELLS_CREATED: &str = "fleetforge_cells_created_total";
/// Cell Pods retired.
pub const CELLS_RETIRED: &str = "fleetforge_cells_retired_total";
/// Failed Kubernetes API calls, by `verb` and HTTP `code`.
pub const API_ERRORS: &str = "fleetforge_api_errors_total";
/// Failed reconciles, by `kind` of failure (`conflict`, `throttled`,
/// `forbidden`, ...): what to do about a failure depends on its kind.
pub const RECONCILE_ERRORS: &str = "fleetforge_reconcile_errors_total";
/// 1 while this instance holds the leader lease, else 0.
pub const LEADER: &str = "fleetforge_leader";
/// Permissions the operator holds beyond its documented set (startup self-check).
pub const EXCESS_PERMISSIONS: &str = "fleetforge_excess_permissions";
/// Leader elections this instance won.
pub const LEADER_ACQUISITIONS: &str = "fleetforge_leader_acquisitions_total";
/// Splits completed (the parent retired after its sessions were handed over).
pub const SPLITS: &str = "fleetforge_splits_total";
/// Merges completed (the children retired after their sessions were handed over).
pub const MERGES: &str = "fleetforge_merges_total";
/// Time from the start of a split to its parent's retirement, in seconds.
pub const SPLIT_DURATION: &str = "fleetforge_split_duration_seconds";
/// Time from the start of a merge to its children's retirement, in seconds.
pub const MERGE_DURATION: &str = "fleetforge_merge_duration_seconds";
/// Time one cell took to hand all its sessions over, in seconds.
pub const HANDOFF_DURATION: &str = "fleetforge_handoff_duration_seconds";
/// Player sessions moved from one cell to another by a hand-over.
pub const SESSIONS_HANDED_OVER: &str = "fleetforge_sessions_handed_over_total";
/// Player sessions lost with a cell that died before handing them over (its last
/// reported players).
pub const SESSIONS_LOST: &str = "fleetforge_sessions_lost_total";
/// Time from a cell Pod's creation to the cell serving (Ready and, with the cell
/// contract, answering its load endpoint), in seconds.
pub const CELL_READY_DURATION: &str = "fleetforge_cell_ready_duration_seconds";
/// Load samples taken from cells.
pub const LOAD_SAMPLES: &str = "fleetforge_load_samples_total";
/// Load samples that failed (no answer in time, or an unreadable answer), by `reason`.
pub const LOAD_SAMPLING_ERRORS: &str = "fleetforge_load_sampling_errors_total";

/// Requests the player gateway answered, by `route` (`locate`, `topology`,
/// `topology_stream`, `other`) and HTTP `code`.
pub const GATEWAY_REQUESTS: &str = "fleetforge_gateway_requests_total";
/// Time the gateway took to answer a request, by `route`, in seconds (for a
/// stream: until its first event).
pub const GATEWAY_REQUEST_DURATION: &str = "fleetforge_gateway_request_duration_seconds";
/// Worlds the gateway publishes (their WorldSpec opts in and can be read).
pub const GATEWAY_WORLDS: &str = "fleetforge_gateway_worlds";
/// Authoritative cells of the worlds the gateway publishes.
pub const GATEWAY_CELLS: &str = "fleetforge_gateway_cells";
/// Time from a cell becoming authoritative in the cluster (its activation) to the
/// gateway answering with it, in seconds.
pub const GATEWAY_DIRECTORY_LAG: &str = "fleetforge_gateway_directory_lag_seconds";
/// Cell Pods and WorldSpecs the gateway could not read, by `kind` (`pod`,
/// `worldspec`): they are left out of the directory, never guessed at.
pub const GATEWAY_UNREADABLE: &str = "fleetforge_gateway_unreadable_objects_total";

/// The metrics only the gateway exports (a part of [`ALL`]): the operator's
/// process never has them.
pub const GATEWAY: &[&str] = &[
    GATEWAY_REQUESTS,
    GATEWAY_REQUEST_DURATION,
    GATEWAY_WORLDS,
    GATEWAY_CELLS,
    GATEWAY_DIRECTORY_LAG,
    GATEWAY_UNREADABLE,
];

/// Every metric FleetForge exports (the operator and the gateway), by its base name (a histogram also exports
/// `_bucket`, `_sum` and `_count` series). Dashboards and alert rules may use only
/// these; a test holds them to it.
pub const ALL: &[&str] = &[
    RECONCILES,
    RECONCILE_DURATION,
    RECONCILE_QUEUE_DEPTH,
    WORLDS,
    ACTIVE_CELLS,
    PLAYERS,
    TRANSITIONS,
    CELLS_CREATED,
    CELLS_RETIRED,
    CELL_READY_DURATION,
    API_ERRORS,
    RECONCILE_ERRORS,
    LEADER,
    EXCESS_PERMISSIONS,
    LEADER_ACQUISITIONS,
    SPLITS,
    MERGES,
    SPLIT_DURATION,
    MERGE_DURATION,
    HANDOFF_DURATION,
    SESSIONS_HANDED_OVER,
    SESSIONS_LOST,
    LOAD_SAMPLES,
    LOAD_SAMPLING_ERRORS,
    GATEWAY_REQUESTS,
    GATEWAY_REQUEST_DURATION,
    GATEWAY_WORLDS,
    GATEWAY_CELLS,
    GATEWAY_DIRECTORY_LAG,
    GATEWAY_UNREADABLE,
];

/// Buckets for reconcile durations: a steady world takes well under a millisecond
/// of planning, a reconcile that writes takes a few API round trips.
const RECONCILE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for split and merge durations: creating cells, waiting for them to be
/// ready and handing over take seconds; the prototype's target was under 10 s.
const TRANSITION_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0];

/// Buckets for a cell's time to serve: kwok starts a Pod in well under a second,
/// a real node pulls an image and starts a game server in seconds to a minute.
const CELL_READY_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// Buckets for one cell's hand-over: a few thousand sessions take milliseconds to
/// a second.
const HANDOFF_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets for the gateway's answers: a lookup is microseconds in the process,
/// the 1 ms target of a locate leaves room for the network.
const GATEWAY_REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Buckets for the gateway's directory lag: a watch event reaches it well within
/// a second; the alert fires when answers trail the cluster by seconds.
const DIRECTORY_LAG_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How often histogram samples are folded in when nothing scrapes `/metrics`.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Describes every metric to the installed recorder, so `/metrics` carries help
/// texts and units.
pub fn describe() {
    describe_counter!(RECONCILES, "Reconciles of a WorldSpec, by result.");
    describe_histogram!(
        RECONCILE_DURATION,
        Unit::Seconds,
        "Time one WorldSpec reconcile took."
    );
    describe_gauge!(WORLDS, "WorldSpecs by phase.");
    describe_gauge!(ACTIVE_CELLS, "Active cells of a world.");
    describe_gauge!(
        PLAYERS,
        "Players on a world's active cells, by their latest load samples."
    );
    describe_counter!(
        TRANSITIONS,
        "Transitions started (split, merge, replace, ...), by kind."
    );
    describe_counter!(CELLS_CREATED, "Cell Pods created.");
    describe_counter!(CELLS_RETIRED, "Cell Pods retired.");
    describe_counter!(
        API_ERRORS,
        "Failed Kubernetes API calls, by verb and HTTP status code."
    );
    describe_counter!(
        RECONCILE_ERRORS,
        "Failed reconciles, by kind of failure (conflict, throttled, forbidden, ...)."
    );
    describe_gauge!(LEADER, "1 while this instance holds the leader lease, else 0.");
    describe_counter!(LEADER_ACQUISITIONS, "Leader elections this instance won.");
    describe_counter!(
        SPLITS,
        "Splits completed: the parent retired after its sessions were handed over."
    );
    describe_counter!(
        MERGES,
        "Merges completed: the children retired after their sessions were handed over."
    );
    describe_histogram!(
        SPLIT_DURATION,
        Unit::Seconds,
        "Time from the start of a split to its parent's retirement."
    );
    describe_histogram!(
        MERGE_DURATION,
        Unit::Seconds,
        "Time from the start of a merge to its children's retirement."
    );
    describe_histogram!(
        HANDOFF_DURATION,
        Unit::Seconds,
        "Time one cell took to hand all its sessions over."
    );
    describe_counter!(
        SESSIONS_HANDED_OVER,
        "Player sessions moved from one cell to another by a hand-over."
    );
    describe_counter!(
        SESSIONS_LOST,
        "Player sessions lost with a cell that died before handing them over."
    );
    describe_gauge!(
        RECONCILE_QUEUE_DEPTH,
        "Worlds due for a reconcile that has not started yet."
    );
    describe_histogram!(
        CELL_READY_DURATION,
        Unit::Seconds,
        "Time from a cell Pod's creation to the cell serving."
    );
    describe_counter!(LOAD_SAMPLES, "Load samples taken from cells.");
    describe_counter!(
        LOAD_SAMPLING_ERRORS,
        "Load samples that failed, by reason (timeout, connect, status, body)."
    );
    describe_counter!(
        GATEWAY_REQUESTS,
        "Requests the player gateway answered, by route and HTTP status code."
    );
    describe_histogram!(
        GATEWAY_REQUEST_DURATION,
        Unit::Seconds,
        "Time the gateway took to answer a request, by route."
    );
    describe_gauge!(GATEWAY_WORLDS, "Worlds the gateway publishes.");
    describe_gauge!(
        GATEWAY_CELLS,
        "Authoritative cells of the worlds the gateway publishes."
    );
    describe_histogram!(
        GATEWAY_DIRECTORY_LAG,
        Unit::Seconds,
        "Time from a cell's activation in the cluster to the gateway answering with it."
    );
    describe_counter!(
        GATEWAY_UNREADABLE,
        "Cell Pods and WorldSpecs the gateway could not read, by kind."
    );
    describe_gauge!(
        EXCESS_PERMISSIONS,
        "Permissions the operator holds beyond its documented set, found by the startup self-check."
    );
}

/// Installs the global Prometheus recorder with this crate's histogram buckets,
/// describes every metric, and returns the handle that renders `/metrics`.
///
/// Fails when a recorder is already installed in this process.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RECONCILE_DURATION.to_owned()), RECONCILE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(SPLIT_DURATION.to_owned()), TRANSITION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(MERGE_DURATION.to_owned()), TRANSITION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(HANDOFF_DURATION.to_owned()), HANDOFF_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(CELL_READY_DURATION.to_owned()), CELL_READY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(GATEWAY_REQUEST_DURATION.to_owned()),
            GATEWAY_REQUEST_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(GATEWAY_DIRECTORY_LAG.to_owned()),
            DIRECTORY_LAG_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    // Histograms keep their samples until drained: by a scrape, or by this upkeep.
    // Without it a process nobody scrapes grows with every request it answers.
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep; histograms are drained by scrapes only");
    }
    Ok(handle)
}
