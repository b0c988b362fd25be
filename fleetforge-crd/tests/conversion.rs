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
        text.contains(
            "spec.capacity.memoryRequest: must not exceed the memory limit (spec.capacity.memoryLimit"
        ),
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
    // Same values spelled differently, under deprecated names, and fields a
    // cell is not started with.
    assert_eq!(r0, rev(&[("spec.capacity.memoryRequest", json!("0.5Gi"))]));
    assert_eq!(r0, rev(&[("spec.capacity.cpuRequestPerCell", json!("0.5"))]));
    assert_eq!(r0, rev(&[("spec.scaling.maxCells", json!(50))]));
    // A world stored before the resource fields lost their schema defaults has
    // them filled in; it must read as the same world, not roll out new cells.
    let stored_defaults = [
        ("spec.capacity.cpuLimit", json!("1")),
        ("spec.capacity.memoryLimit", json!("1Gi")),
        ("spec.capacity.cpuRequest", json!("500m")),
        ("spec.capacity.memoryRequest", json!("512Mi")),
    ];
    assert_eq!(r0, rev(&stored_defaults));
    // A limit alone now brings its request along (here 1, no longer 500m).
    assert_ne!(r0, rev(&[("spec.capacity.cpuLimit", json!("1000m"))]));
    assert_eq!(
        rev(&[("spec.capacity.cpuLimit", json!("1000m"))]),
        rev(&[
            ("spec.capacity.cpuLimitPerCell", json!(1)),
            ("spec.capacity.cpuRequest", json!("1"))
        ])
    );
}

/// The resources a cell gets, as `(cpu request, cpu limit, memory request,
/// memory limit)` strings, after names and defaults are resolved.
fn resources(obj: &Value) -> (String, String, String, String) {
    let ws: WorldSpec = serde_json::from_value(obj.clone()).unwrap();
    let r = ws.spec.capacity.resources();
    (
        r.cpu_request.quantity.0,
        r.cpu_limit.quantity.0,
        r.memory_request.quantity.0,
        r.memory_limit.quantity.0,
    )
}

#[test]
fn a_missing_request_is_the_limit_when_a_limit_is_given() {
    let q = |a: &str, b: &str, c: &str, d: &str| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned());
    assert_eq!(resources(&base()), q("500m", "1", "512Mi", "1Gi"));
    // The world of issue 21: only limits, below the default requests. Admitted,
    // so it must convert (it used to be marked InvalidSpec by the operator).
    let mut obj = base();
    set(&mut obj, "spec.capacity.cpuLimit", json!("250m"));
    set(&mut obj, "spec.capacity.memoryLimit", json!("256Mi"));
    assert_eq!(admission_errors(&obj), Vec::<String>::new());
    convert(&obj).unwrap();
    assert_eq!(resources(&obj), q("250m", "250m", "256Mi", "256Mi"));
    // The same under the original's names.
    let mut old = base();
    set(&mut old, "spec.capacity.cpuLimitPerCell", json!("250m"));
    set(&mut old, "spec.capacity.memoryLimitPerCell", json!("256Mi"));
    assert_eq!(admission_errors(&old), Vec::<String>::new());
    assert_eq!(convert(&old).unwrap().revision, convert(&obj).unwrap().revision);
    assert_eq!(resources(&old), q("250m", "250m", "256Mi", "256Mi"));
    // A request alone is checked against the default limit.
    let mut req = base();
    set(&mut req, "spec.capacity.cpuRequest", json!("2"));
    let err = convert(&req).unwrap_err();
    assert_eq!(err.paths().collect::<Vec<_>>(), ["spec.capacity.cpuRequest"]);
    assert!(!admission_errors(&req).is_empty());
}

#[test]
fn both_spellings_must_agree_and_the_rejection_names_both() {
    for (new, old) in [
        ("cpuLimit", "cpuLimitPerCell"),
        ("cpuRequest", "cpuRequestPerCell"),
        ("memoryLimit", "memoryLimitPerCell"),
        ("memoryRequest", "memoryRequestPerCell"),
    ] {
        let cpu = new.starts_with("cpu");
        let (a, same, other) = if cpu {
            ("500m", json!("0.5"), json!("250m"))
        } else {
            ("512Mi", json!("0.5Gi"), json!("256Mi"))
        };
        let mut obj = base();
        set(&mut obj, &format!("spec.capacity.{new}"), json!(a));
        set(&mut obj, &format!("spec.capacity.{old}"), same);
        assert_eq!(admission_errors(&obj), Vec::<String>::new(), "{new}");
        convert(&obj).unwrap_or_else(|e| panic!("{new}: {e}"));

        set(&mut obj, &format!("spec.capacity.{old}"), other);
        let admission = admission_errors(&obj);
        assert!(
            admission
                .iter()
                .any(|m| m.contains(&format!("spec.capacity.{old}"))
                    && m.contains(&format!("spec.capacity.{new}"))),
            "{new}: {admission:?}"
        );
        let err = convert(&obj).unwrap_err();
        assert_eq!(
            err.paths().collect::<Vec<_>>(),
            [format!("spec.capacity.{old}")],
            "{err}"
        );
        assert!(err.to_string().contains(&format!("spec.capacity.{new}")), "{err}");
    }
}

fn original(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/original")
        .join(name);
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn worlds_written_for_the_original_fleetforge_mean_the_same() {
    let sample = original("worldspec.yaml");
    assert_eq!(admission_errors(&sample), Vec::<String>::new());
    let w = convert(&sample).unwrap();
    assert_eq!((w.initial_cells, w.bounds.dims()), (2, 2));
    // Its 500 x 500 "preferred cell size" box is a floor of 500 on every axis,
    // and its 50 cells per cluster cap the 100 of scaling.maxCells.
    assert_eq!(w.min_cell_extent, Some(500.0));
    assert_eq!((w.policy.min_cells, w.policy.max_cells), (1, 50));
    assert_eq!(
        resources(&sample),
        ("500m".into(), "1000m".into(), "1Gi".into(), "2Gi".into())
    );
    // Written with today's names, it is the same world, cell for cell.
    let mut current = sample.clone();
    set(
        &mut current,
        "spec.capacity",
        json!({"maxPlayersPerCell": 100, "cpuLimit": "1", "memoryLimit": "2Gi", "cpuRequest": "500m", "memoryRequest": "1Gi"}),
    );
    set(&mut current, "spec.topology.cellSize", json!(500));
    assert_eq!(convert(&current).unwrap(), w);

    // The large one asks for placement across clusters, which does not exist:
    // refused at admission and by the conversion, naming that field only.
    let large = original("worldspec_large.yaml");
    let admission = admission_errors(&large);
    assert_eq!(admission.len(), 1, "{admission:?}");
    assert!(
        admission[0].starts_with("spec.multiClusterEnabled must be false"),
        "{admission:?}"
    );
    let err = convert(&large).unwrap_err();
    assert_eq!(err.paths().collect::<Vec<_>>(), ["spec.multiClusterEnabled"]);
    // Its owner's fix: the rest of it is a 3-D world of 10 cells.
    let mut one_cluster = large.clone();
    set(&mut one_cluster, "spec.multiClusterEnabled", json!(false));
    assert_eq!(admission_errors(&one_cluster), Vec::<String>::new());
    let w = convert(&one_cluster).unwrap();
    assert_eq!((w.initial_cells, w.bounds.dims()), (10, 3));
    assert_eq!(
        w.min_cell_extent,
        Some(500.0),
        "the smallest extent of 1000 x 1000 x 500"
    );
    assert_eq!((w.policy.min_cells, w.policy.max_cells), (5, 200));
    assert_eq!(
        resources(&one_cluster),
        ("2000m".into(), "4000m".into(), "4Gi".into(), "8Gi".into())
    );
}

#[test]
fn the_box_form_of_cell_size_is_checked_like_the_schema_checks_it() {
    let with_box = |b: Value| {
        let mut obj = base();
        set(&mut obj, "spec.topology.cellSize", b);
        obj
    };
    for (b, ok, path) in [
        (json!({"xMin": 0, "xMax": 40}), true, ""),
        (json!({"xMin": -10, "xMax": 40, "yMin": 0, "yMax": 20}), true, ""),
        (json!({"xMin": 0, "xMax": 40, "zMin": 0, "zMax": 20}), true, ""),
        (
            json!({"xMin": 10, "xMax": 40}),
            false,
            "spec.topology.cellSize.xMin",
        ),
        (
            json!({"xMin": 0, "xMax": 0}),
            false,
            "spec.topology.cellSize.xMax",
        ),
        (json!({"xMin": 0}), false, "spec.topology.cellSize.xMax"),
        (
            json!({"xMin": 0, "xMax": 40, "yMin": 0}),
            false,
            "spec.topology.cellSize.yMax",
        ),
        (
            json!({"xMin": 0, "xMax": 40, "zMax": 5}),
            false,
            "spec.topology.cellSize.zMin",
        ),
        (json!({}), false, "spec.topology.cellSize.xMin"),
    ] {
        let obj = with_box(b.clone());
        assert_eq!(
            admission_errors(&obj).is_empty(),
            ok,
            "{b}: {:?}",
            admission_errors(&obj)
        );
        match convert(&obj) {
            Ok(w) => {
                assert!(ok, "{b} converted");
                assert!(w.min_cell_extent.is_some_and(|e| e > 0.0), "{b}");
            }
            Err(e) => {
                assert!(!ok, "{b}: {e}");
                assert!(e.paths().any(|p| p == path), "{b}: {e}");
            }
        }
    }
    let floor = |b: Value| convert(&with_box(b)).unwrap().min_cell_extent;
    assert_eq!(floor(json!({"xMin": -10, "xMax": 40})), Some(50.0));
    assert_eq!(
        floor(json!({"xMin": 0, "xMax": 40, "yMin": -5, "yMax": 20})),
        Some(25.0)
    );
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
fn per_cluster_limit_caps_max_cells_and_multi_cluster_is_refused() {
    let mut obj = base();
    set(&mut obj, "spec.topology.maxCellsPerCluster", json!(40));
    assert_eq!(convert(&obj).unwrap().policy.max_cells, 40);
    // Placement across clusters does not exist: asking for it is an error, not
    // a flag that is accepted and then ignored.
    set(&mut obj, "spec.multiClusterEnabled", json!(true));
    let err = convert(&obj).unwrap_err();
    assert_eq!(err.paths().collect::<Vec<_>>(), ["spec.multiClusterEnabled"]);
    assert!(err.to_string().contains("not supported yet"), "{err}");
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
