//! Conversion into the core model: the sample worlds, error paths, overrides and
//! the revision digest.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{admission_errors, base, convert, set};
use fleetforge_core::partition::initial_partition;
use fleetforge_core::{CellId, LayoutCell, Overrides};
use fleetforge_crd::keys::encode_restore_layout;
use fleetforge_crd::{WorldSpec, resolve_force_merge, to_world};
use serde_json::{Value, json};

fn sample(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/worlds")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn sample_worlds_are_admitted_and_convert() {
    for (file, cells, dims) in [("small.yaml", 4, 2), ("large.yaml", 64, 2), ("3d.yaml", 8, 3)] {
        let obj = sample(file);
        assert_eq!(admission_errors(&obj), Vec::<String>::new(), "{file}");
        let ws: WorldSpec = serde_json::from_value(obj).unwrap();
        let w = to_world(&ws).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((w.initial_cells, w.bounds.dims()), (cells, dims), "{file}");
        assert!(
            fleetforge_core::plan(&w, &Default::default(), fleetforge_core::Timestamp(0))
                .actions()
                .count()
                >= cells as usize
        );
    }
    let large = convert(&sample("large.yaml")).unwrap();
    assert_eq!(large.policy.prediction.unwrap().horizon.as_secs(), 90);
    assert_eq!(large.min_cell_extent, Some(125.0));
}

#[test]
fn every_violation_is_reported_with_its_path() {
    let mut obj = base();
    set(&mut obj, "metadata.name", json!(""));
    set(&mut obj, "spec.scaling.scaleDownThreshold", json!(0.9));
    set(&mut obj, "spec.scaling.maxCells", json!(2));
    set(&mut obj, "spec.capacity.cpuLimit", json!("lots"));
    set(&mut obj, "spec.capacity.memoryRequest", json!("2Gi"));
    set(&mut obj, "spec.persistence.retentionPeriod", json!("forever"));
    set(&mut obj, "spec.topology.worldBoundaries.zMin", json!(3));
    set(
        &mut obj,
        "metadata.annotations",
        json!({"fleetforge.io/force-split": "c0,bogus"}),
    );
    let err = convert(&obj).unwrap_err();
    let paths: Vec<&str> = err.paths().collect();
    assert_eq!(
        paths,
        [
            "metadata.name",
            "spec.topology.worldBoundaries.zMax",
            "spec.capacity.cpuLimit",
            "spec.capacity.memoryRequest",
            "spec.persistence.retentionPeriod",
            "metadata.annotations[fleetforge.io/force-split]",
            "metadata.name",
            "spec.scaling.scaleDownThreshold",
            "spec.scaling.maxCells",
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("invalid WorldSpec: metadata.name: must be set"),
        "{text}"
    );
    assert!(
        text.contains("spec.capacity.cpuLimit: \"lots\" is not a Kubernetes quantity"),
        "{text}"
    );
    assert!(
        text.contains("spec.capacity.memoryRequest: must not exceed spec.capacity.memoryLimit"),
        "{text}"
    );
}

#[test]
fn quantities_are_checked() {
    for (field, value, ok) in [
        ("cpuLimit", json!(2), true),
        ("cpuLimit", json!("0"), false),
        ("cpuRequest", json!("0"), true),
        ("cpuRequest", json!("-1"), false),
        ("cpuRequest", json!("1500m"), false),
        ("memoryLimit", json!("1.5Gi"), true),
        ("memoryLimit", json!("1GB"), false),
    ] {
        let mut obj = base();
        set(&mut obj, &format!("spec.capacity.{field}"), value.clone());
        match convert(&obj) {
            Ok(_) => assert!(ok, "{field}={value} should be rejected"),
            Err(e) => {
                assert!(!ok, "{field}={value}: {e}");
                assert!(e.paths().any(|p| p == format!("spec.capacity.{field}")), "{e}");
            }
        }
    }
}

#[test]
fn revision_follows_image_and_resource_values_only() {
    let rev = |edits: &[(&str, Value)]| {
        let mut obj = base();
        for (p, v) in edits {
            set(&mut obj, p, v.clone());
        }
        convert(&obj).unwrap().revision
    };
    let r0 = rev(&[]);
    assert_eq!(r0.len(), 16);
    assert!(r0.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r0, rev(&[]));
    assert_ne!(r0, rev(&[("spec.gameServerImage", json!("game/server:1.1"))]));
    assert_ne!(r0, rev(&[("spec.capacity.memoryLimit", json!("2Gi"))]));
    // Same values spelled differently, and fields a cell is not started with.
    assert_eq!(r0, rev(&[("spec.capacity.cpuLimit", json!("1000m"))]));
    assert_eq!(r0, rev(&[("spec.capacity.memoryRequest", json!("0.5Gi"))]));
    assert_eq!(r0, rev(&[("spec.scaling.maxCells", json!(50))]));
}

#[test]
fn override_annotations_become_overrides() {
    let mut obj = base();
    set(
        &mut obj,
        "metadata.annotations",
        json!({"fleetforge.io/force-split": " c1, c2-0 ", "fleetforge.io/force-merge": "c3,c0-01"}),
    );
    let w = convert(&obj).unwrap();
    let ids = |s: &[&str]| s.iter().map(|s| s.parse::<CellId>().unwrap()).collect();
    assert_eq!(w.overrides.force_split, ids(&["c1", "c2-0"]));
    assert_eq!(w.overrides.force_merge, ids(&["c3", "c0-01"]));

    let mut o = Overrides {
        force_split: Default::default(),
        force_merge: ids(&["c3", "c0-01", "c1-1"]),
        ..Default::default()
    };
    // c0-01 is a live cell: merge it with its sibling into c0-0. c1-1 is split
    // further (not live), so it is the parent already; c3 is a root.
    let live: std::collections::BTreeSet<CellId> = ids(&["c0-00", "c0-01", "c1-10", "c1-11", "c3-0", "c3-1"]);
    resolve_force_merge(&mut o, |id| live.contains(id));
    assert_eq!(o.force_merge, ids(&["c0-0", "c1-1", "c3"]));
}

#[test]
fn per_cluster_limit_caps_max_cells_in_one_cluster_only() {
    let mut obj = base();
    set(&mut obj, "spec.topology.maxCellsPerCluster", json!(40));
    assert_eq!(convert(&obj).unwrap().policy.max_cells, 40);
    set(&mut obj, "spec.multiClusterEnabled", json!(true));
    assert_eq!(convert(&obj).unwrap().policy.max_cells, 100);
}

#[test]
fn hostile_values_are_errors_not_panics() {
    let mut obj = base();
    set(&mut obj, "spec.topology.worldBoundaries.xMin", json!(-1.7e308));
    set(&mut obj, "spec.topology.worldBoundaries.xMax", json!(1.7e308));
    set(&mut obj, "spec.capacity.cpuLimit", json!("9e99999"));
    set(&mut obj, "spec.topology.initialCells", json!(u32::MAX));
    set(&mut obj, "spec.scaling.predictionMinSamples", json!(u32::MAX));
    set(
        &mut obj,
        "spec.persistence.checkpointInterval",
        json!("99999999999999999999h"),
    );
    let err = convert(&obj).unwrap_err();
    assert!(
        err.paths().any(|p| p == "spec.topology.worldBoundaries.xMax"),
        "{err}"
    );
    assert!(err.paths().any(|p| p == "spec.capacity.cpuLimit"), "{err}");
    assert!(err.paths().any(|p| p == "spec.topology.initialCells"), "{err}");
    assert!(
        err.paths().any(|p| p == "spec.persistence.checkpointInterval"),
        "{err}"
    );
}

#[test]
fn a_yaml_nan_is_rejected_by_field() {
    let yaml = r#"
apiVersion: fleetforge.io/v1
kind: WorldSpec
metadata: {name: w}
spec:
  gameServerImage: img
  topology:
    initialCells: 1
    cellSize: .nan
    worldBoundaries: {xMin: .nan, xMax: 1}
  scaling: {scaleUpThreshold: .nan}
"#;
    let ws: WorldSpec = serde_yaml_ng::from_str(yaml).unwrap();
    let err = to_world(&ws).unwrap_err();
    let paths: Vec<&str> = err.paths().collect();
    assert!(paths.contains(&"spec.topology.worldBoundaries.xMin"), "{err}");
    assert!(paths.contains(&"spec.topology.cellSize"), "{err}");
    assert!(paths.contains(&"spec.scaling.scaleUpThreshold"), "{err}");
}

#[test]
fn a_restore_layout_annotation_is_read_and_a_bad_one_names_the_annotation() {
    const KEY: &str = "metadata.annotations[fleetforge.io/restore-layout]";
    let mut obj = base();
    let w = convert(&obj).unwrap();
    // The root partition is itself a layout the planner could have built.
    let layout: Vec<LayoutCell> = initial_partition(&w.bounds, w.initial_cells)
        .into_iter()
        .map(|(id, bounds)| LayoutCell { id, bounds })
        .collect();
    let annotate = |obj: &mut Value, layout: &[LayoutCell]| {
        set(
            obj,
            "metadata.annotations",
            json!({"fleetforge.io/restore-layout": encode_restore_layout(layout)}),
        );
    };
    annotate(&mut obj, &layout);
    assert_eq!(convert(&obj).unwrap().overrides.restore_layout, layout);

    annotate(&mut obj, &layout[1..]);
    let err = convert(&obj).unwrap_err();
    assert!(err.paths().any(|p| p == KEY), "{err}");
    assert!(err.to_string().contains("some space has no cell"), "{err}");

    set(
        &mut obj,
        "metadata.annotations",
        json!({"fleetforge.io/restore-layout": "[{\"id\":"}),
    );
    let err = convert(&obj).unwrap_err();
    assert!(err.paths().any(|p| p == KEY), "{err}");
}
