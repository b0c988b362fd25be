//! From the API object to the core model.
//!
//! The model's rules live in [`World::validate`]; this module maps the object,
//! adds only what the API shape itself can get wrong (a bound without its pair, a
//! malformed quantity or override annotation, a missing name), and names every
//! violation by its path in the object so it can be shown as it is in a condition
//! and an Event.

use std::fmt;
use std::time::Duration;

use fleetforge_core::geometry::GeometryError;
use fleetforge_core::naming::stable_hash;
use fleetforge_core::{Axis, Bounds, CellId, Overrides, Prediction, Range, ScalingPolicy, World, WorldField};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

use crate::keys::{
    ANNOTATION_FORCE_MERGE, ANNOTATION_FORCE_SPLIT, ANNOTATION_RESTORE_LAYOUT, decode_restore_layout,
    parse_cell_list,
};
use crate::quantity::parse_quantity;
use crate::spec::{Capacity, CellSize, Persistence, Resolved, WorldBoundaries, WorldSpec};

/// One broken rule, located in the API object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field at fault, such as `spec.scaling.scaleUpThreshold` or
    /// `metadata.annotations[fleetforge.io/force-split]`.
    pub path: String,
    /// What is wrong, in words that stand alone.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// A `WorldSpec` that cannot become a [`World`]: every violation found, each
/// naming its field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid WorldSpec: {}", join(.violations))]
pub struct SpecError {
    /// The violations, in the order of the spec's fields; never empty.
    pub violations: Vec<Violation>,
}

fn join(v: &[Violation]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl SpecError {
    /// The paths of the fields at fault, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.violations.iter().map(|v| v.path.as_str())
    }
}

/// Spec path of each field of the core model.
pub fn field_path(field: WorldField) -> String {
    use WorldField as F;
    let p = match field {
        F::Name => "metadata.name",
        F::Bounds(a) => return format!("spec.topology.worldBoundaries.{a}Min"),
        F::InitialCells => "spec.topology.initialCells",
        F::MinCellExtent => "spec.topology.cellSize",
        F::PlayersPerCell => "spec.capacity.maxPlayersPerCell",
        F::ScaleUpThreshold => "spec.scaling.scaleUpThreshold",
        F::ScaleDownThreshold => "spec.scaling.scaleDownThreshold",
        F::MinCells => "spec.scaling.minCells",
        F::MaxCells => "spec.scaling.maxCells",
        F::StabilizationWindow => "spec.scaling.stabilizationWindowSeconds",
        F::Cooldown => "spec.scaling.cooldownSeconds",
        F::MaxTransitions => "spec.scaling.maxTransitions",
        F::RateLimitPeriod => "spec.scaling.rateLimitPeriodSeconds",
        F::TransitionTimeout => "spec.scaling.transitionTimeoutSeconds",
        F::PredictionHorizon => "spec.scaling.predictionHorizonSeconds",
        F::PredictionMinSamples => "spec.scaling.predictionMinSamples",
        F::RestoreLayout => return format!("metadata.annotations[{ANNOTATION_RESTORE_LAYOUT}]"),
    };
    p.to_owned()
}

/// Collects violations while the object is mapped.
#[derive(Default)]
struct Violations(Vec<Violation>);

impl Violations {
    fn push(&mut self, path: impl Into<String>, problem: impl Into<String>) {
        self.0.push(Violation {
            path: path.into(),
            problem: problem.into(),
        });
    }
}

/// Converts a `WorldSpec` into the validated core [`World`].
///
/// Never panics; on any problem returns every violation found, each naming its
/// path in the object. The world's [`World::revision`] is a stable digest of the
/// game-server image and the cell resources, so changing either replaces the
/// cells; [`World::overrides`] come from the force-split and force-merge
/// annotations (force-merge entries as written: see [`resolve_force_merge`]).
pub fn to_world(ws: &WorldSpec) -> Result<World, SpecError> {
    let mut errs = Violations::default();
    let spec = &ws.spec;

    let name = ws.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        errs.push("metadata.name", "must be set");
    }

    let topo = &spec.topology;
    let bounds = bounds(&topo.world_boundaries, &mut errs);

    if spec.multi_cluster_enabled {
        errs.push(
            "spec.multiClusterEnabled",
            "must be false: placing a world's cells across clusters is not supported yet",
        );
    }
    let mut max_cells = spec.scaling.max_cells;
    if let Some(per_cluster) = topo.max_cells_per_cluster {
        if per_cluster < 1 {
            errs.push("spec.topology.maxCellsPerCluster", "must be at least 1");
        } else if per_cluster < topo.initial_cells {
            errs.push(
                "spec.topology.maxCellsPerCluster",
                format!(
                    "must be at least spec.topology.initialCells ({}), got {per_cluster}",
                    topo.initial_cells
                ),
            );
        } else {
            // Every cell runs in this cluster: its limit caps the world's.
            max_cells = max_cells.min(per_cluster);
        }
    }
    let min_cell_extent = topo.cell_size.as_ref().and_then(|c| cell_size(c, &mut errs));

    let revision = revision(&spec.game_server_image, &spec.capacity, &mut errs);
    persistence(&spec.persistence, &mut errs);
    let overrides = overrides(ws, &mut errs);

    let s = &spec.scaling;
    let prediction = Prediction {
        horizon: Duration::from_secs(s.prediction_horizon_seconds.into()),
        min_samples: usize::try_from(s.prediction_min_samples).unwrap_or(usize::MAX),
    };
    // With bad bounds a placeholder lets the core still check every other field;
    // the world is not returned then (bad bounds have left a violation behind).
    let Some(world_bounds) = bounds.or_else(|| Bounds::line((0.0, 1.0)).ok()) else {
        return Err(SpecError { violations: errs.0 });
    };
    let world = World {
        name,
        bounds: world_bounds,
        initial_cells: topo.initial_cells,
        min_cell_extent,
        players_per_cell: spec.capacity.max_players_per_cell,
        policy: ScalingPolicy {
            scale_up_threshold: s.scale_up_threshold,
            scale_down_threshold: s.scale_down_threshold,
            min_cells: s.min_cells,
            max_cells,
            stabilization_window: Duration::from_secs(s.stabilization_window_seconds.into()),
            cooldown: Duration::from_secs(s.cooldown_seconds.into()),
            max_transitions: s.max_transitions,
            rate_limit_period: Duration::from_secs(s.rate_limit_period_seconds.into()),
            transition_timeout: Duration::from_secs(s.transition_timeout_seconds.into()),
            prediction: s.predictive_enabled.then_some(prediction),
        },
        revision,
        overrides,
    };

    // The prediction settings are part of the API even while prediction is off,
    // so they are checked either way: a spec that turns it on later must not
    // become invalid by that alone.
    let mut checked = world.clone();
    checked.policy.prediction = Some(prediction);
    if let Err(invalid) = checked.validate() {
        for e in invalid {
            errs.push(field_path(e.field), e.problem);
        }
    }

    if errs.0.is_empty() {
        Ok(world)
    } else {
        Err(SpecError { violations: errs.0 })
    }
}

impl TryFrom<&WorldSpec> for World {
    type Error = SpecError;

    fn try_from(ws: &WorldSpec) -> Result<Self, Self::Error> {
        to_world(ws)
    }
}

const BOUNDS: &str = "spec.topology.worldBoundaries";

fn bounds(b: &WorldBoundaries, errs: &mut Violations) -> Option<Bounds> {
    let before = errs.0.len();
    let pair = |axis: &str, min: Option<f64>, max: Option<f64>, errs: &mut Violations| match (min, max) {
        (Some(min), Some(max)) => Some(Range::new(min, max)),
        (None, None) => None,
        (Some(_), None) => {
            errs.push(
                format!("{BOUNDS}.{axis}Max"),
                format!("must be given together with {axis}Min"),
            );
            None
        }
        (None, Some(_)) => {
            errs.push(
                format!("{BOUNDS}.{axis}Min"),
                format!("must be given together with {axis}Max"),
            );
            None
        }
    };
    let y = pair("y", b.y_min, b.y_max, errs);
    let z = pair("z", b.z_min, b.z_max, errs);
    if (b.z_min.is_some() || b.z_max.is_some()) && (b.y_min.is_none() || b.y_max.is_none()) {
        errs.push(
            format!("{BOUNDS}.zMin"),
            "z bounds require yMin and yMax (a 3-D world needs y bounds)",
        );
    }
    // Check each given axis on its own so that every bad axis is reported.
    for (axis, range) in Axis::ALL
        .into_iter()
        .zip([Some(Range::new(b.x_min, b.x_max)), y, z])
    {
        let Some(r) = range else { continue };
        match Bounds::new(r, None, None) {
            Ok(_) => {
                if !(r.max - r.min).is_finite() {
                    errs.push(
                        format!("{BOUNDS}.{axis}Max"),
                        "the extent max - min is too large to compute",
                    );
                }
            }
            Err(GeometryError::NotFinite { .. }) => {
                errs.push(format!("{BOUNDS}.{axis}Min"), "bounds must be finite numbers");
            }
            Err(_) => errs.push(
                format!("{BOUNDS}.{axis}Min"),
                format!("must be less than {axis}Max ({}), got {}", r.max, r.min),
            ),
        }
    }
    if errs.0.len() > before {
        return None;
    }
    match Bounds::new(Range::new(b.x_min, b.x_max), y, z) {
        Ok(bounds) => Some(bounds),
        Err(e) => {
            errs.push(BOUNDS, e.to_string());
            None
        }
    }
}

const CELL_SIZE: &str = "spec.topology.cellSize";

/// The floor on a cell's extent that `topology.cellSize` asks for. The number
/// form is that floor (its range is the core model's to check). The original
/// FleetForge's box form gave a preferred size per axis; one floor for every
/// axis honours it as closely as the model allows by taking the smallest extent
/// the box gives, so no split the box would allow along any axis is refused.
/// The box is checked exactly as the schema checks it: x required, y and z in
/// pairs, every min at most 0 and every max above 0.
fn cell_size(c: &CellSize, errs: &mut Violations) -> Option<f64> {
    let b = match c {
        CellSize::Extent(v) => return Some(*v),
        CellSize::Box(b) => b,
    };
    let before = errs.0.len();
    let mut extents = Vec::new();
    for (axis, min, max, required) in [
        ("x", b.x_min, b.x_max, true),
        ("y", b.y_min, b.y_max, false),
        ("z", b.z_min, b.z_max, false),
    ] {
        match (min, max) {
            (Some(min), Some(max)) => {
                if min > 0.0 || min.is_nan() {
                    errs.push(
                        format!("{CELL_SIZE}.{axis}Min"),
                        format!("must be at most 0 in the box form of cellSize, got {min}"),
                    );
                }
                if max <= 0.0 || max.is_nan() {
                    errs.push(
                        format!("{CELL_SIZE}.{axis}Max"),
                        format!("must be above 0 in the box form of cellSize, got {max}"),
                    );
                }
                extents.push(max - min);
            }
            (None, None) if !required => {}
            (None, _) => errs.push(
                format!("{CELL_SIZE}.{axis}Min"),
                format!("must be given with {axis}Max in the box form of cellSize"),
            ),
            (Some(_), None) => errs.push(
                format!("{CELL_SIZE}.{axis}Max"),
                format!("must be given with {axis}Min in the box form of cellSize"),
            ),
        }
    }
    if errs.0.len() > before {
        return None;
    }
    extents.into_iter().reduce(f64::min)
}

/// One resource field as written, checked on its own: `None` when the field is
/// absent, `Some(None)` when it is malformed or out of range (a limit must be
/// above zero, a request zero or more; the violation is recorded), else its
/// value.
fn checked_quantity(
    field: &str,
    q: Option<&Quantity>,
    limit: bool,
    errs: &mut Violations,
) -> Option<Option<f64>> {
    let q = &q?.0;
    Some(match parse_quantity(q) {
        Ok(v) if v < 0.0 || (limit && v == 0.0) => {
            let want = if limit {
                "greater than zero"
            } else {
                "zero or more"
            };
            errs.push(
                format!("spec.capacity.{field}"),
                format!("must be {want}, got {q}"),
            );
            None
        }
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(format!("spec.capacity.{field}"), e.to_string());
            None
        }
    })
}

/// One resource of a cell (CPU or memory) as the spec gives it: its limit and
/// request fields, each under its current and its deprecated name.
struct ResourceFields<'a> {
    what: &'static str,
    default_limit: &'static str,
    limit: (&'static str, Option<&'a Quantity>),
    limit_old: (&'static str, Option<&'a Quantity>),
    request: (&'static str, Option<&'a Quantity>),
    request_old: (&'static str, Option<&'a Quantity>),
}

/// The values a cell gets for one resource, checked: every field given is a
/// quantity in range, a field and its deprecated name agree, and a request
/// given does not exceed the effective limit. The rules and messages mirror the
/// CRD's CEL rules on `spec.capacity`. Returns (request, limit), each `None`
/// when invalid.
fn resource_values(
    f: &ResourceFields<'_>,
    request: &Resolved,
    limit: &Resolved,
    errs: &mut Violations,
) -> (Option<f64>, Option<f64>) {
    let mut in_range = std::collections::BTreeMap::new();
    for ((name, q), is_limit) in [
        (f.limit, true),
        (f.request, false),
        (f.limit_old, true),
        (f.request_old, false),
    ] {
        if let Some(v) = checked_quantity(name, q, is_limit, errs) {
            in_range.insert(name, v);
        }
    }
    for ((new, a), (old, b)) in [(f.limit, f.limit_old), (f.request, f.request_old)] {
        // Compared as written, in range or not, as the CEL rule does.
        let parsed = |q: Option<&Quantity>| q.and_then(|q| parse_quantity(&q.0).ok());
        if let (Some(a), Some(b)) = (parsed(a), parsed(b))
            && a != b
        {
            errs.push(
                format!("spec.capacity.{old}"),
                format!(
                    "differs from spec.capacity.{new}: {old} is the deprecated name of {new}, give one of them"
                ),
            );
        }
    }
    let value = |r: &Resolved| match r.field {
        Some(name) => in_range.get(name).copied().flatten(),
        None => parse_quantity(&r.quantity.0).ok(),
    };
    let (request_value, limit_value) = (value(request), value(limit));
    let given_request = request
        .field
        .filter(|name| *name == f.request.0 || *name == f.request_old.0);
    if let Some(name) = given_request
        && let (Some(r), Some(l)) = (request_value, limit_value)
        && r > l
    {
        errs.push(
            format!("spec.capacity.{name}"),
            format!(
                "must not exceed the {} limit (spec.capacity.{}, or its deprecated name {}; default {})",
                f.what, f.limit.0, f.limit_old.0, f.default_limit
            ),
        );
    }
    (request_value, limit_value)
}

/// Checks the cell resources and digests what a cell process is started with.
fn revision(image: &str, c: &Capacity, errs: &mut Violations) -> String {
    if image.trim().is_empty() {
        errs.push("spec.gameServerImage", "must name a container image");
    }
    let r = c.resources();
    let cpu = ResourceFields {
        what: "CPU",
        default_limit: "1",
        limit: ("cpuLimit", c.cpu_limit.as_ref()),
        limit_old: ("cpuLimitPerCell", c.cpu_limit_per_cell.as_ref()),
        request: ("cpuRequest", c.cpu_request.as_ref()),
        request_old: ("cpuRequestPerCell", c.cpu_request_per_cell.as_ref()),
    };
    let memory = ResourceFields {
        what: "memory",
        default_limit: "1Gi",
        limit: ("memoryLimit", c.memory_limit.as_ref()),
        limit_old: ("memoryLimitPerCell", c.memory_limit_per_cell.as_ref()),
        request: ("memoryRequest", c.memory_request.as_ref()),
        request_old: ("memoryRequestPerCell", c.memory_request_per_cell.as_ref()),
    };
    let (cpu_request, cpu_limit) = resource_values(&cpu, &r.cpu_request, &r.cpu_limit, errs);
    let (memory_request, memory_limit) = resource_values(&memory, &r.memory_request, &r.memory_limit, errs);
    // Values, not spellings, are digested: `1` and `1000m` are the same limit and
    // must not replace every cell, nor must writing it under its deprecated name.
    let value = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:e}"));
    let canonical = format!(
        "image={image}\ncpuRequest={}\ncpuLimit={}\nmemoryRequest={}\nmemoryLimit={}",
        value(cpu_request),
        value(cpu_limit),
        value(memory_request),
        value(memory_limit)
    );
    format!("{:016x}", stable_hash(canonical.as_bytes()))
}

fn persistence(p: &Persistence, errs: &mut Violations) {
    for (field, value) in [
        ("checkpointInterval", &p.checkpoint_interval),
        ("retentionPeriod", &p.retention_period),
    ] {
        match parse_duration(value) {
            Some(secs) if secs > 0.0 => {}
            Some(_) => errs.push(
                format!("spec.persistence.{field}"),
                format!("must be longer than zero, got {value:?}"),
            ),
            None => errs.push(
                format!("spec.persistence.{field}"),
                format!("{value:?} is not a duration such as 30s, 5m, 1h30m or 7d"),
            ),
        }
    }
    if let Some(class) = &p.storage_class
        && class.is_empty()
    {
        errs.push("spec.persistence.storageClass", "must not be empty when set");
    }
}

/// Seconds in a duration of the form the CRD's rule accepts: one or more
/// `<number><unit>` with units ns, us, ms, s, m, h (`1h30m`, `1.5s`), at most
/// about 292 years (the API server's own limit), or a whole number of days from
/// 1 to 99999 (`7d`, as the original FleetForge wrote retention periods). Our own
/// parser, because the general one panics on values past that limit.
fn parse_duration(s: &str) -> Option<f64> {
    const MAX_SECS: f64 = 9.2e9;
    if let Some(days) = s.strip_suffix('d') {
        // Exactly the rule's `^0*[1-9][0-9]{0,4}d$`: leading zeros, then 1 to 5 digits.
        let significant = days.trim_start_matches('0');
        let ok = days.bytes().all(|b| b.is_ascii_digit()) && (1..=5).contains(&significant.len());
        return ok
            .then(|| significant.parse::<u32>().ok())
            .flatten()
            .map(|d| f64::from(d) * 86_400.0);
    }
    let mut rest = s;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .position(|b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(n);
        let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
        if int.is_empty() || frac.is_empty() || frac.contains('.') {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let (scale, unit_len) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        .find(|(u, _)| tail.starts_with(u))
        .map(|(u, f)| (f, u.len()))?;
        total += value * scale;
        if !(total.is_finite() && total <= MAX_SECS) {
            return None;
        }
        rest = &tail[unit_len..];
    }
    Some(total)
}

fn overrides(ws: &WorldSpec, errs: &mut Violations) -> Overrides {
    let mut out = Overrides::default();
    let Some(annotations) = ws.metadata.annotations.as_ref() else {
        return out;
    };
    for (key, set) in [
        (ANNOTATION_FORCE_SPLIT, &mut out.force_split),
        (ANNOTATION_FORCE_MERGE, &mut out.force_merge),
    ] {
        if let Some(value) = annotations.get(key) {
            match parse_cell_list(key, value) {
                Ok(ids) => *set = ids,
                Err(e) => errs.push(format!("metadata.annotations[{key}]"), e.problem),
            }
        }
    }
    if let Some(value) = annotations.get(ANNOTATION_RESTORE_LAYOUT) {
        match decode_restore_layout(value) {
            Ok(cells) => out.restore_layout = cells,
            Err(e) => errs.push(
                format!("metadata.annotations[{ANNOTATION_RESTORE_LAYOUT}]"),
                e.problem,
            ),
        }
    }
    out
}

/// Resolves force-merge entries against the live layout: an entry that is
/// itself a live cell means "merge this cell with its sibling", that is, its
/// parent. Entries that are not live cells are parents already and stay as they
/// are (the planner reports those it cannot merge).
pub fn resolve_force_merge(overrides: &mut Overrides, is_live: impl Fn(&CellId) -> bool) {
    overrides.force_merge = std::mem::take(&mut overrides.force_merge)
        .into_iter()
        .map(|id| match id.parent() {
            Some(parent) if is_live(&id) => parent,
            _ => id,
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_like_the_api_server() {
        assert_eq!(parse_duration("90s"), Some(90.0));
        assert_eq!(parse_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_duration("1.5s"), Some(1.5));
        assert_eq!(parse_duration("250ms"), Some(0.25));
        assert_eq!(parse_duration("0s"), Some(0.0));
        assert_eq!(parse_duration("7d"), Some(7.0 * 86_400.0));
        assert_eq!(parse_duration("007d"), Some(7.0 * 86_400.0));
        assert_eq!(parse_duration("99999d"), Some(99_999.0 * 86_400.0));
        for bad in [
            "0d",
            "000d",
            "d",
            "100000d",
            "1.5d",
            "1d12h",
            "-1d",
            "",
            "5",
            "m",
            "1.s",
            ".5s",
            "1x",
            "-5m",
            "+5m",
            "1h30",
            "99999999999999999999h",
            "1e3s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
