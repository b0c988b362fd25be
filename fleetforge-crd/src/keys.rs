//! Label and annotation keys, and the encoding of the values the operator stores
//! under them.
//!
//! A cell Pod carries everything needed to rebuild the world's layout from the
//! cluster (id, incarnation, bounds, layout key, revision, role), so the layout
//! never lives only in the operator's memory. Labels are for selection and hold at
//! most 63 characters; full values go in annotations.

use std::collections::{BTreeMap, BTreeSet};

use fleetforge_core::naming::label_value;
use fleetforge_core::{Bounds, CellId, LayoutCell, Role, Timestamp};
use thiserror::Error;

/// Standard label: the application a resource belongs to.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Value of [`LABEL_NAME`] on cell Pods and the world's Service.
pub const APP_NAME: &str = "fleetforge-cell";
/// Standard label: the tool managing a resource.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on everything the operator creates.
pub const MANAGER: &str = "fleetforge";
/// The one field manager every write of the operator goes under, so a
/// server-side apply of its own owns exactly the fields it wrote before.
pub const FIELD_MANAGER: &str = MANAGER;
/// Label: the world (WorldSpec name) a resource belongs to, shortened by
/// [`label_value`] when longer than 63 characters; the full name is in
/// [`ANNOTATION_WORLD`].
pub const LABEL_WORLD: &str = "fleetforge.io/world";
/// Label: the cell id of a cell Pod (for example `c3-01`), shortened like
/// [`LABEL_WORLD`] when needed; the full id is in [`ANNOTATION_CELL`].
pub const LABEL_CELL: &str = "fleetforge.io/cell";

/// Annotation on cell Pods: the full name of the world.
pub const ANNOTATION_WORLD: &str = "fleetforge.io/world-name";
/// Annotation on a world's headless Service: a digest of the cell tokens the
/// operator last wrote into the world's token Secret, so it knows without reading
/// the Secret back whether it must write it again.
pub const ANNOTATION_TOKEN_FINGERPRINT: &str = "fleetforge.io/cell-token-fingerprint";
/// Annotation on cell Pods: the full cell id.
pub const ANNOTATION_CELL: &str = "fleetforge.io/cell-id";
/// Annotation on cell Pods: the incarnation (0 for the first process of a cell).
pub const ANNOTATION_INCARNATION: &str = "fleetforge.io/incarnation";
/// Annotation on cell Pods: the cell's bounds as JSON, `{"x":{"min":..,"max":..},"y":..}`.
pub const ANNOTATION_BOUNDS: &str = "fleetforge.io/bounds";
/// Annotation on cell Pods: the world layout key the cell was created under (16 hex digits).
pub const ANNOTATION_LAYOUT: &str = "fleetforge.io/layout";
/// Annotation on cell Pods: the world revision the cell was started with.
pub const ANNOTATION_REVISION: &str = "fleetforge.io/revision";
/// Annotation on cell Pods: `active` or `incoming`.
pub const ANNOTATION_ROLE: &str = "fleetforge.io/role";
/// Annotation on active cell Pods: when the cell took over its space, in
/// milliseconds since the Unix epoch.
pub const ANNOTATION_ACTIVE_SINCE: &str = "fleetforge.io/active-since";
/// Annotation on active cell Pods: the layout epoch the operator stamped when it
/// last activated the cell, a decimal number. It orders activations that share a
/// millisecond, which [`ANNOTATION_ACTIVE_SINCE`] cannot; see the module docs of
/// the gateway's directory (`fleetforge_gateway::directory`, "The layout epoch")
/// for what a stamp must satisfy.
pub const ANNOTATION_EPOCH: &str = "fleetforge.io/epoch";

/// Annotation on a WorldSpec: cells to split now, comma-separated ids
/// (`c0,c3-01`).
pub const ANNOTATION_FORCE_SPLIT: &str = "fleetforge.io/force-split";
/// Annotation on a WorldSpec: merges to start now, comma-separated. Each entry is
/// a parent id (merge its two children) or a live child id (merge it with its
/// sibling into their parent); see [`crate::resolve_force_merge`].
pub const ANNOTATION_FORCE_MERGE: &str = "fleetforge.io/force-merge";

/// Annotation on a WorldSpec, written by `fleetforge-operator restore`: the cell
/// layout (a JSON list of `{"id", "bounds"}`) the world starts from when it has no
/// cells, so a restored world gets back the cells it had split into. The operator
/// removes it once the world has cells.
pub const ANNOTATION_RESTORE_LAYOUT: &str = "fleetforge.io/restore-layout";

/// Annotation on a WorldSpec naming the user whose request last changed its spec,
/// stamped by the admission policy in `deploy/audit/`; audit records name it.
pub const ANNOTATION_CHANGED_BY: &str = "fleetforge.io/changed-by";

/// [`ANNOTATION_ROLE`] value of a cell serving its space.
pub const ROLE_ACTIVE: &str = "active";
/// [`ANNOTATION_ROLE`] value of a cell waiting for sessions.
pub const ROLE_INCOMING: &str = "incoming";

/// Labels every resource of world `world` carries.
pub fn world_labels(world: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_WORLD.to_owned(), label_value(world)),
    ])
}

/// Labels of the Pod of cell `cell` in world `world`.
pub fn cell_labels(world: &str, cell: &CellId) -> BTreeMap<String, String> {
    let mut labels = world_labels(world);
    labels.insert(LABEL_CELL.to_owned(), label_value(&cell.to_string()));
    labels
}

/// Label selector (`k=v,...`) matching every cell Pod of world `world`.
pub fn world_selector(world: &str) -> String {
    world_labels(world)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Label selector (`k=v,...`) matching everything the operator creates for any
/// world (cell Pods, Services, Secrets): what its caches and a cell runner watch.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_NAME}={APP_NAME}")
}

/// The JSON pointer (RFC 6901) of annotation `key` in an object, for JSON patches:
/// `~` and the `/` every prefixed key has are escaped.
pub fn annotation_pointer(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

/// Why an annotation value could not be read.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("annotation {key}: {problem}")]
pub struct AnnotationError {
    /// The annotation key.
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl AnnotationError {
    fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }
}

/// Value of [`ANNOTATION_BOUNDS`].
pub fn encode_bounds(bounds: &Bounds) -> String {
    // Bounds holds only finite numbers, which always serialize.
    serde_json::to_string(bounds).unwrap_or_default()
}

/// Reads [`ANNOTATION_BOUNDS`]; the bounds are validated as the core builds them.
pub fn decode_bounds(value: &str) -> Result<Bounds, AnnotationError> {
    serde_json::from_str(value).map_err(|e| AnnotationError::new(ANNOTATION_BOUNDS, e.to_string()))
}

/// Value of [`ANNOTATION_RESTORE_LAYOUT`].
pub fn encode_restore_layout(cells: &[LayoutCell]) -> String {
    // Ids and finite bounds always serialize.
    serde_json::to_string(cells).unwrap_or_default()
}

/// Reads [`ANNOTATION_RESTORE_LAYOUT`]; whether the layout fits the world is
/// checked as the core validates the world.
pub fn decode_restore_layout(value: &str) -> Result<Vec<LayoutCell>, AnnotationError> {
    serde_json::from_str(value).map_err(|e| AnnotationError::new(ANNOTATION_RESTORE_LAYOUT, e.to_string()))
}

/// Value of [`ANNOTATION_LAYOUT`].
pub fn encode_layout(layout: u64) -> String {
    format!("{layout:016x}")
}

/// Reads [`ANNOTATION_LAYOUT`].
pub fn decode_layout(value: &str) -> Result<u64, AnnotationError> {
    u64::from_str_radix(value, 16).map_err(|e| {
        AnnotationError::new(
            ANNOTATION_LAYOUT,
            format!("{value:?} is not a hex layout key: {e}"),
        )
    })
}

/// Value of [`ANNOTATION_EPOCH`].
pub fn encode_epoch(epoch: u64) -> String {
    epoch.to_string()
}

/// Reads [`ANNOTATION_EPOCH`].
pub fn decode_epoch(value: &str) -> Result<u64, AnnotationError> {
    value
        .parse()
        .map_err(|e| AnnotationError::new(ANNOTATION_EPOCH, format!("{value:?} is not a layout epoch: {e}")))
}

/// Reads [`ANNOTATION_INCARNATION`].
pub fn decode_incarnation(value: &str) -> Result<u32, AnnotationError> {
    value.parse().map_err(|e| {
        AnnotationError::new(
            ANNOTATION_INCARNATION,
            format!("{value:?} is not an incarnation number: {e}"),
        )
    })
}

/// Values of [`ANNOTATION_ROLE`] and, for an active cell, [`ANNOTATION_ACTIVE_SINCE`].
pub fn encode_role(role: Role) -> (&'static str, Option<String>) {
    match role {
        Role::Active { since } => (ROLE_ACTIVE, Some(since.as_millis().to_string())),
        Role::Incoming => (ROLE_INCOMING, None),
    }
}

/// Reads [`ANNOTATION_ROLE`] and [`ANNOTATION_ACTIVE_SINCE`].
pub fn decode_role(role: &str, since: Option<&str>) -> Result<Role, AnnotationError> {
    match role {
        ROLE_INCOMING => Ok(Role::Incoming),
        ROLE_ACTIVE => {
            let since = since
                .ok_or_else(|| AnnotationError::new(ANNOTATION_ACTIVE_SINCE, "missing on an active cell"))?;
            let millis = since.parse::<u64>().map_err(|e| {
                AnnotationError::new(
                    ANNOTATION_ACTIVE_SINCE,
                    format!("{since:?} is not milliseconds: {e}"),
                )
            })?;
            Ok(Role::Active {
                since: Timestamp::from_millis(millis),
            })
        }
        other => Err(AnnotationError::new(
            ANNOTATION_ROLE,
            format!("{other:?} is neither {ROLE_ACTIVE:?} nor {ROLE_INCOMING:?}"),
        )),
    }
}

/// Parses a comma-separated list of cell ids (an override annotation's value).
/// Blank entries and surrounding spaces are ignored; the first bad entry is an error.
pub fn parse_cell_list(key: &'static str, value: &str) -> Result<BTreeSet<CellId>, AnnotationError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<CellId>()
                .map_err(|e| AnnotationError::new(key, e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetforge_core::naming::is_dns1123_label;

    #[test]
    fn labels_of_a_long_world_stay_valid_and_distinct() {
        let long = "w".repeat(200);
        let labels = cell_labels(&long, &"c3-01".parse().unwrap());
        let world = &labels[LABEL_WORLD];
        assert!(world.len() <= 63 && is_dns1123_label(world), "{world}");
        assert_ne!(
            world,
            &cell_labels(&format!("{long}x"), &CellId::root(0))[LABEL_WORLD]
        );
        assert_eq!(labels[LABEL_CELL], "c3-01");
        assert_eq!(labels[LABEL_MANAGED_BY], "fleetforge");
        assert_eq!(cell_labels("arena", &CellId::root(0))[LABEL_WORLD], "arena");
    }

    #[test]
    fn selector_lists_every_world_label() {
        assert_eq!(
            world_selector("arena"),
            "app.kubernetes.io/managed-by=fleetforge,app.kubernetes.io/name=fleetforge-cell,fleetforge.io/world=arena"
        );
    }

    #[test]
    fn the_managed_selector_matches_every_world_and_nothing_else() {
        let selector = managed_selector();
        let world = world_labels("arena");
        for term in selector.split(',') {
            let (k, v) = term.split_once('=').unwrap();
            assert_eq!(world.get(k).map(String::as_str), Some(v), "{term}");
        }
        assert!(!selector.contains(LABEL_WORLD), "{selector}");
    }

    #[test]
    fn annotation_pointers_escape_slashes_and_tildes() {
        assert_eq!(
            annotation_pointer(ANNOTATION_FORCE_SPLIT),
            "/metadata/annotations/fleetforge.io~1force-split"
        );
        assert_eq!(annotation_pointer("a~b/c"), "/metadata/annotations/a~0b~1c");
    }

    #[test]
    fn annotation_values_round_trip() {
        let b = Bounds::cuboid((0.0, 1.5), (-2.0, 2.0), (3.0, 4.0)).unwrap();
        assert_eq!(decode_bounds(&encode_bounds(&b)).unwrap(), b);
        assert_eq!(decode_layout(&encode_layout(0xdead_beef)).unwrap(), 0xdead_beef);
        assert_eq!(encode_layout(1), "0000000000000001");
        for role in [Role::Incoming, Role::Active { since: Timestamp(42) }] {
            let (r, since) = encode_role(role);
            assert_eq!(decode_role(r, since.as_deref()).unwrap(), role);
        }
        assert_eq!(decode_incarnation("7").unwrap(), 7);
        for epoch in [0, 1, 1_700_000_000_000, u64::MAX] {
            assert_eq!(decode_epoch(&encode_epoch(epoch)).unwrap(), epoch);
        }
        assert_eq!(encode_epoch(1_700_000_000_001), "1700000000001");
    }

    #[test]
    fn bad_annotation_values_name_their_key() {
        assert_eq!(
            decode_bounds(r#"{"x":{"min":2,"max":1}}"#).unwrap_err().key,
            ANNOTATION_BOUNDS
        );
        assert_eq!(decode_bounds("nope").unwrap_err().key, ANNOTATION_BOUNDS);
        assert_eq!(decode_layout("xyz").unwrap_err().key, ANNOTATION_LAYOUT);
        assert_eq!(decode_incarnation("-1").unwrap_err().key, ANNOTATION_INCARNATION);
        assert_eq!(
            decode_role("active", None).unwrap_err().key,
            ANNOTATION_ACTIVE_SINCE
        );
        assert_eq!(
            decode_role("active", Some("soon")).unwrap_err().key,
            ANNOTATION_ACTIVE_SINCE
        );
        assert_eq!(decode_role("leader", None).unwrap_err().key, ANNOTATION_ROLE);
        for garbage in ["", "-1", "soon", "1.5", " 7", "0x10", "18446744073709551616"] {
            let err = decode_epoch(garbage).unwrap_err();
            assert_eq!(err.key, ANNOTATION_EPOCH, "{garbage:?}");
            assert!(err.to_string().contains(ANNOTATION_EPOCH), "{err}");
        }
    }

    #[test]
    fn cell_lists_parse_loosely_but_reject_bad_ids() {
        let ids = parse_cell_list(ANNOTATION_FORCE_SPLIT, " c0, c3-01,,c0 ").unwrap();
        assert_eq!(
            ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["c0", "c3-01"]
        );
        assert!(parse_cell_list(ANNOTATION_FORCE_SPLIT, "").unwrap().is_empty());
        let err = parse_cell_list(ANNOTATION_FORCE_MERGE, "c0,c3-2").unwrap_err();
        assert_eq!(err.key, ANNOTATION_FORCE_MERGE);
        assert!(err.to_string().contains("c3-2"), "{err}");
    }
}
