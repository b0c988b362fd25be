//! The `WorldSpec` v1 resource: what a world's owner writes.
//!
//! Doc comments on these types become the schema descriptions that `kubectl
//! explain worldspec.spec` prints, so they state units, defaults and ranges.
//! Single-field ranges are schema bounds; rules that relate two fields are CEL
//! `x-kubernetes-validations`, each message naming the field it blames. The same
//! rules are checked again by [`crate::to_world`] (through the core model's
//! validation) because a spec may reach the operator without the API server having
//! enforced them (an older CRD, a test, another client).
//!
//! The same `fleetforge.io/v1` was first served by the original FleetForge (Go),
//! whose worlds are still in clusters and Git repositories. Its spellings stay
//! accepted here as deprecated ones: the `*PerCell` resource names of
//! [`Capacity`] and the box form of [`CellSize`]. `docs/api.md` describes how
//! they are carried and how the API evolves.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::WorldSpecStatus;

/// Desired state of a game world: its space, the size and resources of one cell,
/// and when cells split and merge.
// One `printcolumn(...)` per column repeats keys such as `type_`, which the
// lint takes for a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fleetforge.io",
    version = "v1",
    kind = "WorldSpec",
    plural = "worldspecs",
    singular = "worldspec",
    shortname = "ws",
    namespaced,
    status = "WorldSpecStatus",
    derive = "PartialEq",
    doc = "A game world partitioned into cells, one game-server Pod per cell, split and merged with player load.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Initializing, Running, Scaling or Degraded"
    ),
    printcolumn(
        name = "Cells",
        type_ = "integer",
        json_path = ".status.activeCells",
        description = "Cells serving their space"
    ),
    printcolumn(
        name = "Players",
        type_ = "integer",
        json_path = ".status.totalPlayers",
        description = "Players on active cells"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self.scaling.minCells <= self.topology.initialCells")
        .message("spec.scaling.minCells must not exceed spec.topology.initialCells")
        .field_path(".scaling.minCells"),
    validation = Rule::new("self.topology.initialCells <= self.scaling.maxCells")
        .message("spec.scaling.maxCells must be at least spec.topology.initialCells")
        .field_path(".scaling.maxCells"),
    validation = Rule::new(
        "!has(self.topology.maxCellsPerCluster) || self.topology.maxCellsPerCluster >= self.topology.initialCells"
    )
    .message("spec.topology.maxCellsPerCluster must be at least spec.topology.initialCells")
    .field_path(".topology.maxCellsPerCluster"),
)]
#[serde(rename_all = "camelCase")]
pub struct WorldSpecSpec {
    /// The world's space and its initial partition into cells.
    pub topology: Topology,
    /// Players and compute resources of one cell. Every field is optional and has a
    /// default.
    #[serde(default)]
    pub capacity: Capacity,
    /// When and how fast cells split and merge. Every field has a default.
    #[serde(default)]
    pub scaling: Scaling,
    /// Periodic checkpoints of cell state. Disabled by default.
    #[serde(default)]
    pub persistence: Persistence,
    /// Container image every cell Pod runs (for example `game/server:1.4`).
    /// Changing it replaces every cell, one at a time, handing sessions over.
    #[schemars(length(min = 1))]
    pub game_server_image: String,
    /// Whether the world may span several clusters. Not supported yet: must be
    /// false (the default). Every cell of a world runs in the cluster that holds
    /// its WorldSpec, so `topology.maxCellsPerCluster` bounds the whole world.
    // A rule on the field itself, not on the spec: the API server ratchets it,
    // so a world stored with `true` before this rule existed can still have its
    // status and metadata written while its owner fixes the field.
    #[x_kube(validation = Rule::new("!self")
        .message("spec.multiClusterEnabled must be false: placing a world's cells across clusters is not supported yet"))]
    #[serde(default)]
    pub multi_cluster_enabled: bool,
    /// How players find the world's cells through the FleetForge gateway.
    /// Unpublished by default: the gateway answers only for worlds that opt in.
    #[serde(default)]
    pub gateway: Gateway,
}

/// The world's space and its initial partition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// Number of cells the world starts with, laid out as a balanced grid over
    /// every axis of `worldBoundaries`. 1 to 1000. Changing it re-partitions the
    /// world.
    #[schemars(range(min = 1, max = 1000))]
    pub initial_cells: u32,
    /// Most cells of this world one cluster may hold. Optional; when set it caps
    /// `scaling.maxCells` (all of a world's cells run in one cluster) and must be
    /// at least `initialCells`. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_cells_per_cluster: Option<u32>,
    /// The world's extent in world units: x always, y for a 2-D world, and z (with
    /// y) for a 3-D world.
    pub world_boundaries: WorldBoundaries,
    /// Smallest extent, in world units, a split may leave a cell along any axis;
    /// a split that would make a narrower cell is not made. Optional (no floor).
    /// A number greater than 0, such as `50`. Deprecated form: a box
    /// `{xMin, xMax, yMin, yMax, zMin, zMax}` as the original FleetForge wrote
    /// it (its "preferred cell size"), each min at most 0 and each max above 0,
    /// y and z optional pairs; it stands for its smallest extent (max - min) over
    /// the axes it gives. Write the number instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cell_size_schema")]
    pub cell_size: Option<CellSize>,
}

/// `topology.cellSize`: the documented number, or the original FleetForge's box.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum CellSize {
    /// The smallest extent a split may leave a cell along any axis, in world units.
    Extent(f64),
    /// Deprecated: the original's bounds object, read for the extent of each axis.
    Box(CellSizeBox),
}

/// The original FleetForge's `cellSize`: a box whose extents are the preferred
/// size of a cell along each axis. Every field is optional here so that any
/// stored object parses; the schema and [`crate::to_world`] say which are required.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CellSizeBox {
    /// Lower edge along x; at most 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_min: Option<f64>,
    /// Upper edge along x; above 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_max: Option<f64>,
    /// Lower edge along y; at most 0, given with `y_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_min: Option<f64>,
    /// Upper edge along y; above 0, given with `y_min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_max: Option<f64>,
    /// Lower edge along z; at most 0, given with `z_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_min: Option<f64>,
    /// Upper edge along z; above 0, given with `z_min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_max: Option<f64>,
}

/// Schema of `topology.cellSize`: a number or the original's box under one name.
///
/// A structural schema gives a field one type, so the field has none and keeps
/// its content (`x-kubernetes-preserve-unknown-fields`). CEL cannot see an
/// untyped field, so the two forms are told apart by OpenAPI value validations
/// alone, which apply to the kinds of value they are about and pass any other:
/// `not: {maximum: 0}` holds for a number above 0 and nothing else, and
/// `not: {minProperties: 1, maxProperties: 0}` for any object and nothing else.
/// Relations between two fields cannot be stated this way, so instead of
/// `min < max` each box edge is bounded on its own (min at most 0, max above 0),
/// which implies it; the pair rules are `required` sets.
fn cell_size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let edge = |max: bool, axis: &str| {
        if max {
            schemars::json_schema!({
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": true,
                "description": format!("Deprecated box form: upper edge along {axis}, in world units; above 0."),
            })
        } else {
            schemars::json_schema!({
                "type": "number",
                "maximum": 0,
                "description": format!("Deprecated box form: lower edge along {axis}, in world units; at most 0."),
            })
        }
    };
    let pair = |min: &str, max: &str| {
        schemars::json_schema!({
            "anyOf": [
                {"required": [min, max]},
                {"not": {"anyOf": [{"required": [min]}, {"required": [max]}]}},
            ]
        })
    };
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "xMin": edge(false, "x"),
            "xMax": edge(true, "x"),
            "yMin": edge(false, "y"),
            "yMax": edge(true, "y"),
            "zMin": edge(false, "z"),
            "zMax": edge(true, "z"),
        },
        "anyOf": [
            {"not": {"maximum": 0}},
            {
                "required": ["xMin", "xMax"],
                "not": {"minProperties": 1, "maxProperties": 0},
                "allOf": [pair("yMin", "yMax"), pair("zMin", "zMax")],
            },
        ],
    })
}

/// An axis-aligned box in world units. Each axis is given as a min/max pair with
/// min below max; y is optional, z is optional and only allowed with y.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.xMin < self.xMax")
        .message("spec.topology.worldBoundaries.xMin must be less than spec.topology.worldBoundaries.xMax")
        .field_path(".xMin"),
    validation = Rule::new("has(self.yMin) == has(self.yMax)")
        .message("spec.topology.worldBoundaries.yMin and spec.topology.worldBoundaries.yMax must be given together"),
    validation = Rule::new("!has(self.yMin) || !has(self.yMax) || self.yMin < self.yMax")
        .message("spec.topology.worldBoundaries.yMin must be less than spec.topology.worldBoundaries.yMax")
        .field_path(".yMin"),
    validation = Rule::new("has(self.zMin) == has(self.zMax)")
        .message("spec.topology.worldBoundaries.zMin and spec.topology.worldBoundaries.zMax must be given together"),
    validation = Rule::new("!has(self.zMin) || !has(self.zMax) || self.zMin < self.zMax")
        .message("spec.topology.worldBoundaries.zMin must be less than spec.topology.worldBoundaries.zMax")
        .field_path(".zMin"),
    validation = Rule::new("(!has(self.zMin) && !has(self.zMax)) || (has(self.yMin) && has(self.yMax))")
        .message("spec.topology.worldBoundaries.zMin and zMax require spec.topology.worldBoundaries.yMin and yMax (a 3-D world needs y bounds)"),
)]
#[serde(rename_all = "camelCase")]
pub struct WorldBoundaries {
    /// Lower edge of the world along x, in world units.
    pub x_min: f64,
    /// Upper edge of the world along x, in world units; greater than `xMin`.
    pub x_max: f64,
    /// Lower edge along y, in world units. Give with `yMax` for a 2-D or 3-D world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_min: Option<f64>,
    /// Upper edge along y, in world units; greater than `yMin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_max: Option<f64>,
    /// Lower edge along z, in world units. Give with `zMax`, and only with y, for a 3-D world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_min: Option<f64>,
    /// Upper edge along z, in world units; greater than `zMin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_max: Option<f64>,
}

/// The effective limit of one resource in CEL, as a string: the current name,
/// else the deprecated one, else the default.
macro_rules! cel_limit {
    ($new:literal, $old:literal, $default:literal) => {
        concat!(
            "(has(self.",
            $new,
            ") ? string(self.",
            $new,
            ") : has(self.",
            $old,
            ") ? string(self.",
            $old,
            ") : '",
            $default,
            "')"
        )
    };
}

/// CEL: a field and its deprecated name, when both are given, hold the same
/// quantity. Malformed values pass here: their own field rules report them.
macro_rules! cel_same_quantity {
    ($new:literal, $old:literal) => {
        concat!(
            "!has(self.",
            $new,
            ") || !has(self.",
            $old,
            ") || !isQuantity(string(self.",
            $new,
            ")) || !isQuantity(string(self.",
            $old,
            ")) || quantity(string(self.",
            $new,
            ")).compareTo(quantity(string(self.",
            $old,
            "))) == 0"
        )
    };
}

/// CEL: the request read from `$req` (when `$guard` lets the rule look at it)
/// does not exceed the effective limit. Malformed or out-of-range values pass
/// here: their own field rules report them.
macro_rules! cel_request_within_limit {
    ($guard:literal, $req:literal, $limit:expr) => {
        concat!(
            $guard,
            "!isQuantity(string(self.",
            $req,
            ")) || !isQuantity(",
            $limit,
            ") || !quantity(",
            $limit,
            ").isGreaterThan(quantity('0')) || !quantity(string(self.",
            $req,
            ")).isGreaterThan(quantity(",
            $limit,
            "))"
        )
    };
}

/// CEL on a limit field: a quantity above zero.
const LIMIT_RULE: &str = "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))";
/// CEL on a request field: a quantity of zero or more.
const REQUEST_RULE: &str = "isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))";

/// Players and compute resources of one cell.
///
/// Each resource has a current name and, deprecated, the original FleetForge's
/// `*PerCell` name; [`Capacity::resources`] says which value a cell gets. The
/// resource fields have no schema default: the API server would otherwise fill
/// in `cpuLimit` next to a stored `cpuLimitPerCell` (defaults are applied on
/// every read) and the two would disagree. Their defaults are applied by
/// [`Capacity::resources`] instead, with the same values the schema gave before,
/// so a world stored with the defaults filled in reads the same.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new(cel_same_quantity!("cpuLimit", "cpuLimitPerCell"))
        .message("spec.capacity.cpuLimitPerCell and spec.capacity.cpuLimit are both given and differ: cpuLimitPerCell is the deprecated name of cpuLimit, give one of them")
        .field_path(".cpuLimitPerCell"),
    validation = Rule::new(cel_same_quantity!("cpuRequest", "cpuRequestPerCell"))
        .message("spec.capacity.cpuRequestPerCell and spec.capacity.cpuRequest are both given and differ: cpuRequestPerCell is the deprecated name of cpuRequest, give one of them")
        .field_path(".cpuRequestPerCell"),
    validation = Rule::new(cel_same_quantity!("memoryLimit", "memoryLimitPerCell"))
        .message("spec.capacity.memoryLimitPerCell and spec.capacity.memoryLimit are both given and differ: memoryLimitPerCell is the deprecated name of memoryLimit, give one of them")
        .field_path(".memoryLimitPerCell"),
    validation = Rule::new(cel_same_quantity!("memoryRequest", "memoryRequestPerCell"))
        .message("spec.capacity.memoryRequestPerCell and spec.capacity.memoryRequest are both given and differ: memoryRequestPerCell is the deprecated name of memoryRequest, give one of them")
        .field_path(".memoryRequestPerCell"),
    validation = Rule::new(cel_request_within_limit!(
        "!has(self.cpuRequest) || ", "cpuRequest", cel_limit!("cpuLimit", "cpuLimitPerCell", "1")
    ))
    .message("spec.capacity.cpuRequest must not exceed the CPU limit (spec.capacity.cpuLimit, or its deprecated name cpuLimitPerCell; default 1)")
    .field_path(".cpuRequest"),
    validation = Rule::new(cel_request_within_limit!(
        "has(self.cpuRequest) || !has(self.cpuRequestPerCell) || ", "cpuRequestPerCell",
        cel_limit!("cpuLimit", "cpuLimitPerCell", "1")
    ))
    .message("spec.capacity.cpuRequestPerCell must not exceed the CPU limit (spec.capacity.cpuLimit, or its deprecated name cpuLimitPerCell; default 1)")
    .field_path(".cpuRequestPerCell"),
    validation = Rule::new(cel_request_within_limit!(
        "!has(self.memoryRequest) || ", "memoryRequest", cel_limit!("memoryLimit", "memoryLimitPerCell", "1Gi")
    ))
    .message("spec.capacity.memoryRequest must not exceed the memory limit (spec.capacity.memoryLimit, or its deprecated name memoryLimitPerCell; default 1Gi)")
    .field_path(".memoryRequest"),
    validation = Rule::new(cel_request_within_limit!(
        "has(self.memoryRequest) || !has(self.memoryRequestPerCell) || ", "memoryRequestPerCell",
        cel_limit!("memoryLimit", "memoryLimitPerCell", "1Gi")
    ))
    .message("spec.capacity.memoryRequestPerCell must not exceed the memory limit (spec.capacity.memoryLimit, or its deprecated name memoryLimitPerCell; default 1Gi)")
    .field_path(".memoryRequestPerCell"),
)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Players one cell is sized for; a cell's occupancy is its players divided by
    /// this. 1 to 10000, default 100.
    #[schemars(range(min = 1, max = 10000))]
    #[serde(default = "defaults::max_players_per_cell")]
    pub max_players_per_cell: u32,
    /// CPU limit of a cell's game-server container, as a Kubernetes quantity
    /// (for example `1` or `1500m`); greater than zero. Default `1`.
    #[x_kube(validation = Rule::new(LIMIT_RULE)
        .message("spec.capacity.cpuLimit must be a Kubernetes quantity greater than zero, such as 500m or 2"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu_limit: Option<Quantity>,
    /// Memory limit of a cell's game-server container, as a Kubernetes quantity
    /// (for example `1Gi`); greater than zero. Default `1Gi`.
    #[x_kube(validation = Rule::new(LIMIT_RULE)
        .message("spec.capacity.memoryLimit must be a Kubernetes quantity greater than zero, such as 512Mi or 2Gi"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory_limit: Option<Quantity>,
    /// CPU request of a cell's game-server container, as a Kubernetes quantity; at
    /// most the CPU limit. Default: the CPU limit when one is given (as for any
    /// Kubernetes container), else `500m`.
    #[x_kube(validation = Rule::new(REQUEST_RULE)
        .message("spec.capacity.cpuRequest must be a Kubernetes quantity of zero or more, such as 250m"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu_request: Option<Quantity>,
    /// Memory request of a cell's game-server container, as a Kubernetes quantity;
    /// at most the memory limit. Default: the memory limit when one is given (as
    /// for any Kubernetes container), else `512Mi`.
    #[x_kube(validation = Rule::new(REQUEST_RULE)
        .message("spec.capacity.memoryRequest must be a Kubernetes quantity of zero or more, such as 256Mi"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory_request: Option<Quantity>,
    /// Deprecated: use `cpuLimit`. The original FleetForge's name for the CPU
    /// limit, still accepted; when both are given they must be equal.
    #[x_kube(validation = Rule::new(LIMIT_RULE)
        .message("spec.capacity.cpuLimitPerCell must be a Kubernetes quantity greater than zero, such as 500m or 2"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu_limit_per_cell: Option<Quantity>,
    /// Deprecated: use `memoryLimit`. The original FleetForge's name for the
    /// memory limit, still accepted; when both are given they must be equal.
    #[x_kube(validation = Rule::new(LIMIT_RULE)
        .message("spec.capacity.memoryLimitPerCell must be a Kubernetes quantity greater than zero, such as 512Mi or 2Gi"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory_limit_per_cell: Option<Quantity>,
    /// Deprecated: use `cpuRequest`. The original FleetForge's name for the CPU
    /// request, still accepted; when both are given they must be equal.
    #[x_kube(validation = Rule::new(REQUEST_RULE)
        .message("spec.capacity.cpuRequestPerCell must be a Kubernetes quantity of zero or more, such as 250m"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu_request_per_cell: Option<Quantity>,
    /// Deprecated: use `memoryRequest`. The original FleetForge's name for the
    /// memory request, still accepted; when both are given they must be equal.
    #[x_kube(validation = Rule::new(REQUEST_RULE)
        .message("spec.capacity.memoryRequestPerCell must be a Kubernetes quantity of zero or more, such as 256Mi"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory_request_per_cell: Option<Quantity>,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_players_per_cell: defaults::max_players_per_cell(),
            cpu_limit: None,
            memory_limit: None,
            cpu_request: None,
            memory_request: None,
            cpu_limit_per_cell: None,
            memory_limit_per_cell: None,
            cpu_request_per_cell: None,
            memory_request_per_cell: None,
        }
    }
}

/// Where the value of one resource of a cell comes from, after names and
/// defaults are resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The quantity the cell's container gets.
    pub quantity: Quantity,
    /// The spec field it was read from (such as `cpuLimitPerCell`), or `None`
    /// when it is a default.
    pub field: Option<&'static str>,
}

/// The resources of a cell's game-server container, resolved from a [`Capacity`].
#[derive(Clone, Debug, PartialEq)]
pub struct CellResources {
    /// CPU request.
    pub cpu_request: Resolved,
    /// CPU limit.
    pub cpu_limit: Resolved,
    /// Memory request.
    pub memory_request: Resolved,
    /// Memory limit.
    pub memory_limit: Resolved,
}

impl Capacity {
    /// The requests and limits a cell's container gets. Each value is read from
    /// its current name, else its deprecated `*PerCell` name. A missing limit is
    /// the default (`1` CPU, `1Gi`); a missing request is the limit when a limit
    /// is given, as Kubernetes defaults a container's request, else the default
    /// (`500m`, `512Mi`). Whether the values are valid and consistent is
    /// [`crate::to_world`]'s to say.
    pub fn resources(&self) -> CellResources {
        fn pick(
            new: (&'static str, &Option<Quantity>),
            old: (&'static str, &Option<Quantity>),
        ) -> Option<Resolved> {
            [new, old].into_iter().find_map(|(field, q)| {
                q.as_ref().map(|q| Resolved {
                    quantity: q.clone(),
                    field: Some(field),
                })
            })
        }
        let default = |quantity: Quantity| Resolved {
            quantity,
            field: None,
        };
        let cpu_limit = pick(
            ("cpuLimit", &self.cpu_limit),
            ("cpuLimitPerCell", &self.cpu_limit_per_cell),
        );
        let memory_limit = pick(
            ("memoryLimit", &self.memory_limit),
            ("memoryLimitPerCell", &self.memory_limit_per_cell),
        );
        let cpu_request = pick(
            ("cpuRequest", &self.cpu_request),
            ("cpuRequestPerCell", &self.cpu_request_per_cell),
        )
        .or_else(|| cpu_limit.clone())
        .unwrap_or_else(|| default(defaults::cpu_request()));
        let memory_request = pick(
            ("memoryRequest", &self.memory_request),
            ("memoryRequestPerCell", &self.memory_request_per_cell),
        )
        .or_else(|| memory_limit.clone())
        .unwrap_or_else(|| default(defaults::memory_request()));
        CellResources {
            cpu_request,
            cpu_limit: cpu_limit.unwrap_or_else(|| default(defaults::cpu_limit())),
            memory_request,
            memory_limit: memory_limit.unwrap_or_else(|| default(defaults::memory_limit())),
        }
    }
}

/// Schema of a quantity field: int or string in the quantity format, and never
/// null (the API server drops a null instead of storing it).
fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "pattern": QUANTITY_PATTERN,
        // Set explicitly, or the CRD generator marks optional int-or-string fields nullable.
        "nullable": false,
        "x-kubernetes-int-or-string": true,
    })
}

/// The format of a Kubernetes quantity, as the API server's own types declare it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Thresholds, pacing and limits for splitting and merging cells.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.scaleDownThreshold < self.scaleUpThreshold")
        .message("spec.scaling.scaleDownThreshold must be less than spec.scaling.scaleUpThreshold")
        .field_path(".scaleDownThreshold"),
)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Occupancy (players / maxPlayersPerCell) above which a cell is hot and is
    /// split once it stays there for `stabilizationWindowSeconds`. Between 0 and 1
    /// (exclusive), greater than `scaleDownThreshold`. Default 0.8.
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 1, "exclusiveMaximum" = true))]
    #[serde(default = "defaults::scale_up_threshold")]
    pub scale_up_threshold: f64,
    /// Combined occupancy of two sibling cells below which they merge back into
    /// their parent. Between 0 and 1 (exclusive), less than `scaleUpThreshold`.
    /// Default 0.3.
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 1, "exclusiveMaximum" = true))]
    #[serde(default = "defaults::scale_down_threshold")]
    pub scale_down_threshold: f64,
    /// Split ahead of `scaleUpThreshold` when the trend of recent load samples
    /// says it will be crossed within `predictionHorizonSeconds`. Default false.
    #[serde(default)]
    pub predictive_enabled: bool,
    /// Fewest active cells the world keeps; at least 1 and at most
    /// `topology.initialCells`. Default 1.
    #[schemars(range(min = 1))]
    #[serde(default = "defaults::min_cells")]
    pub min_cells: u32,
    /// Most active cells the world may grow to; at least `topology.initialCells`.
    /// Default 100.
    #[schemars(range(min = 1))]
    #[serde(default = "defaults::max_cells")]
    pub max_cells: u32,
    /// Seconds a threshold must hold, on every load sample, before a cell is split
    /// or merged. Default 30.
    #[serde(default = "defaults::stabilization_window_seconds")]
    pub stabilization_window_seconds: u32,
    /// Seconds a cell created by a split or merge is left alone. Default 60.
    #[serde(default = "defaults::cooldown_seconds")]
    pub cooldown_seconds: u32,
    /// Most splits and merges the world may start within `rateLimitPeriodSeconds`.
    /// At least 1, default 10.
    #[schemars(range(min = 1))]
    #[serde(default = "defaults::max_transitions")]
    pub max_transitions: u32,
    /// Length, in seconds, of the sliding window of the `maxTransitions` rate
    /// limit. At least 1, default 60.
    #[schemars(range(min = 1))]
    #[serde(default = "defaults::rate_limit_period_seconds")]
    pub rate_limit_period_seconds: u32,
    /// Seconds new cells may take to become ready before a split or merge is
    /// rolled back. At least 1, default 120.
    #[schemars(range(min = 1))]
    #[serde(default = "defaults::transition_timeout_seconds")]
    pub transition_timeout_seconds: u32,
    /// How far ahead, in seconds, predictive scaling projects the load trend. At
    /// least 1, default 60. Used only when `predictiveEnabled` is true.
    #[schemars(range(min = 1))]
    #[serde(default = "defaults::prediction_horizon_seconds")]
    pub prediction_horizon_seconds: u32,
    /// Fewest load samples a trend is fitted on. At least 2, default 5. Used only
    /// when `predictiveEnabled` is true.
    #[schemars(range(min = 2))]
    #[serde(default = "defaults::prediction_min_samples")]
    pub prediction_min_samples: u32,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            scale_up_threshold: defaults::scale_up_threshold(),
            scale_down_threshold: defaults::scale_down_threshold(),
            predictive_enabled: false,
            min_cells: defaults::min_cells(),
            max_cells: defaults::max_cells(),
            stabilization_window_seconds: defaults::stabilization_window_seconds(),
            cooldown_seconds: defaults::cooldown_seconds(),
            max_transitions: defaults::max_transitions(),
            rate_limit_period_seconds: defaults::rate_limit_period_seconds(),
            transition_timeout_seconds: defaults::transition_timeout_seconds(),
            prediction_horizon_seconds: defaults::prediction_horizon_seconds(),
            prediction_min_samples: defaults::prediction_min_samples(),
        }
    }
}

/// Publication of the world through the player gateway, which tells a player's
/// client which cell serves a position (see `docs/gateway.md`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// Whether the gateway answers for this world. Default false: a world that
    /// does not opt in is answered `404`, exactly like one that does not exist.
    #[serde(default)]
    pub enabled: bool,
    /// The port the world's game servers take players on; the gateway answers a
    /// cell's address as its Pod IP and this port. 1-65535, default 7777.
    #[schemars(range(min = 1, max = 65535))]
    #[serde(default = "defaults::game_port")]
    pub game_port: u16,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            enabled: false,
            game_port: defaults::game_port(),
        }
    }
}

/// Periodic checkpoints of cell state to a volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// Whether cells checkpoint their state. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Time between checkpoints of one cell, as a duration such as `30s`, `5m`,
    /// `1h30m` or `1d`; greater than zero. Default `5m`.
    #[x_kube(validation = Rule::new(DURATION_RULE)
        .message("spec.persistence.checkpointInterval must be a duration greater than zero, such as 5m or 1d"))]
    #[schemars(length(max = 32))]
    #[serde(default = "defaults::checkpoint_interval")]
    pub checkpoint_interval: String,
    /// How long checkpoints are kept, as a duration such as `24h`, `168h` or
    /// `7d`; greater than zero. Default `168h` (7 days).
    #[x_kube(validation = Rule::new(DURATION_RULE)
        .message("spec.persistence.retentionPeriod must be a duration greater than zero, such as 168h or 7d"))]
    #[schemars(length(max = 32))]
    #[serde(default = "defaults::retention_period")]
    pub retention_period: String,
    /// StorageClass of the checkpoint volumes. Optional: the cluster's default
    /// StorageClass when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            enabled: false,
            checkpoint_interval: defaults::checkpoint_interval(),
            retention_period: defaults::retention_period(),
            storage_class: None,
        }
    }
}

/// A positive duration in the API server's format (`90s`, `1h30m`), or a whole
/// number of days from 1 to 99999 (`7d`), which the original FleetForge wrote
/// for retention periods and CEL's `duration()` does not read. The pattern
/// comes first so a malformed value fails the rule, with its message, instead
/// of failing `duration()` with a parser error; the length bound on the field
/// keeps the rule's estimated cost low.
const DURATION_RULE: &str = r"self.matches('^0*[1-9][0-9]{0,4}d$') || (self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s'))";

/// Default values, one function per field because serde and the schema take
/// field defaults as paths (the derived schema needs them per field).
mod defaults {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    pub fn game_port() -> u16 {
        7777
    }
    pub fn max_players_per_cell() -> u32 {
        100
    }
    pub fn cpu_limit() -> Quantity {
        Quantity("1".into())
    }
    pub fn memory_limit() -> Quantity {
        Quantity("1Gi".into())
    }
    pub fn cpu_request() -> Quantity {
        Quantity("500m".into())
    }
    pub fn memory_request() -> Quantity {
        Quantity("512Mi".into())
    }
    pub fn scale_up_threshold() -> f64 {
        0.8
    }
    pub fn scale_down_threshold() -> f64 {
        0.3
    }
    pub fn min_cells() -> u32 {
        1
    }
    pub fn max_cells() -> u32 {
        100
    }
    pub fn stabilization_window_seconds() -> u32 {
        30
    }
    pub fn cooldown_seconds() -> u32 {
        60
    }
    pub fn max_transitions() -> u32 {
        10
    }
    pub fn rate_limit_period_seconds() -> u32 {
        60
    }
    pub fn transition_timeout_seconds() -> u32 {
        120
    }
    pub fn prediction_horizon_seconds() -> u32 {
        60
    }
    pub fn prediction_min_samples() -> u32 {
        5
    }
    pub fn checkpoint_interval() -> String {
        "5m".into()
    }
    pub fn retention_period() -> String {
        "168h".into()
    }
}
