//! Every schema bound and CEL rule of the generated CRD, checked offline the way
//! the API server applies them, and the conversion agreeing with each.
#![allow(clippy::unwrap_used)]

mod common;

use common::{admission_errors, admitted, base, convert, remove, schema, set};
use serde_json::{Value, json};

#[test]
fn base_object_is_admitted_and_converts() {
    assert_eq!(admission_errors(&base()), Vec::<String>::new());
    let w = convert(&base()).unwrap();
    assert_eq!(w.name, "arena");
    assert_eq!(w.bounds.dims(), 2);
}

/// Every `x-kubernetes-validations` entry of the schema.
fn rules() -> Vec<Value> {
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
                    out.extend(rules.iter().cloned());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(schema(), &mut out);
    out
}

#[test]
fn every_cel_rule_compiles() {
    let rules = rules();
    // Six boundary rules, one scaling rule, three spec rules, two persistence
    // rules, one on multiClusterEnabled, eight on the capacity (both spellings
    // agree, requests within limits) and one on each of its eight quantities.
    assert_eq!(rules.len(), 29, "a rule was added or lost");
    for r in rules {
        let rule = r["rule"].as_str().unwrap();
        if let Err(e) = kube::core::cel::cel::Program::compile(rule) {
            panic!("{rule}: {e:?}");
        }
    }
}

#[test]
fn every_cel_message_names_a_spec_field() {
    for r in rules() {
        let m = r["message"].as_str().unwrap();
        assert!(m.starts_with("spec."), "{m}");
    }
}

/// One mutation of the base object, whether the API server admits it, the
/// message (or schema path) it reports, and the spec path conversion blames.
struct Case {
    what: &'static str,
    edits: Vec<(&'static str, Option<Value>)>,
    admitted: bool,
    admission_says: &'static str,
    conversion_path: &'static str,
}

fn case(
    what: &'static str,
    edits: Vec<(&'static str, Option<Value>)>,
    admission_says: &'static str,
    conversion_path: &'static str,
) -> Case {
    Case {
        what,
        edits,
        admitted: false,
        admission_says,
        conversion_path,
    }
}

fn ok(what: &'static str, edits: Vec<(&'static str, Option<Value>)>) -> Case {
    Case {
        what,
        edits,
        admitted: true,
        admission_says: "",
        conversion_path: "",
    }
}

fn cases() -> Vec<Case> {
    let v = |x: Value| Some(x);
    vec![
        // --- CEL: thresholds
        case(
            "scale down above scale up",
            vec![
                ("spec.scaling.scaleUpThreshold", v(json!(0.5))),
                ("spec.scaling.scaleDownThreshold", v(json!(0.6))),
            ],
            "spec.scaling.scaleDownThreshold must be less than spec.scaling.scaleUpThreshold",
            "spec.scaling.scaleDownThreshold",
        ),
        case(
            "scale down equal to scale up",
            vec![
                ("spec.scaling.scaleUpThreshold", v(json!(0.5))),
                ("spec.scaling.scaleDownThreshold", v(json!(0.5))),
            ],
            "spec.scaling.scaleDownThreshold must be less than spec.scaling.scaleUpThreshold",
            "spec.scaling.scaleDownThreshold",
        ),
        case(
            "scale down above the default scale up",
            vec![("spec.scaling.scaleDownThreshold", v(json!(0.85)))],
            "spec.scaling.scaleDownThreshold must be less than spec.scaling.scaleUpThreshold",
            "spec.scaling.scaleDownThreshold",
        ),
        ok(
            "thresholds just apart",
            vec![("spec.scaling.scaleUpThreshold", v(json!(0.31)))],
        ),
        // --- schema: thresholds in (0, 1)
        case(
            "scale up of 1",
            vec![("spec.scaling.scaleUpThreshold", v(json!(1.0)))],
            ".spec.scaling.scaleUpThreshold: above",
            "spec.scaling.scaleUpThreshold",
        ),
        case(
            "scale down of 0",
            vec![("spec.scaling.scaleDownThreshold", v(json!(0.0)))],
            ".spec.scaling.scaleDownThreshold: below",
            "spec.scaling.scaleDownThreshold",
        ),
        case(
            "negative scale up",
            vec![("spec.scaling.scaleUpThreshold", v(json!(-0.5)))],
            ".spec.scaling.scaleUpThreshold: below",
            "spec.scaling.scaleUpThreshold",
        ),
        // --- CEL: cell counts
        case(
            "minCells above initialCells",
            vec![("spec.scaling.minCells", v(json!(5)))],
            "spec.scaling.minCells must not exceed spec.topology.initialCells",
            "spec.scaling.minCells",
        ),
        case(
            "maxCells below initialCells",
            vec![("spec.scaling.maxCells", v(json!(3)))],
            "spec.scaling.maxCells must be at least spec.topology.initialCells",
            "spec.scaling.maxCells",
        ),
        case(
            "initialCells above the default maxCells",
            vec![("spec.topology.initialCells", v(json!(101)))],
            "spec.scaling.maxCells must be at least spec.topology.initialCells",
            "spec.scaling.maxCells",
        ),
        case(
            "minCells above maxCells",
            vec![
                ("spec.scaling.minCells", v(json!(5))),
                ("spec.scaling.maxCells", v(json!(3))),
            ],
            "spec.scaling.minCells must not exceed spec.topology.initialCells",
            "spec.scaling.minCells",
        ),
        ok(
            "min = initial = max",
            vec![
                ("spec.scaling.minCells", v(json!(4))),
                ("spec.scaling.maxCells", v(json!(4))),
            ],
        ),
        // --- CEL: per-cluster limit
        case(
            "maxCellsPerCluster below initialCells",
            vec![("spec.topology.maxCellsPerCluster", v(json!(3)))],
            "spec.topology.maxCellsPerCluster must be at least spec.topology.initialCells",
            "spec.topology.maxCellsPerCluster",
        ),
        case(
            "maxCellsPerCluster of 0",
            vec![("spec.topology.maxCellsPerCluster", v(json!(0)))],
            ".spec.topology.maxCellsPerCluster: below",
            "spec.topology.maxCellsPerCluster",
        ),
        ok(
            "maxCellsPerCluster equal to initialCells",
            vec![("spec.topology.maxCellsPerCluster", v(json!(4)))],
        ),
        // --- CEL: placement across clusters does not exist
        case(
            "multi-cluster",
            vec![("spec.multiClusterEnabled", v(json!(true)))],
            "spec.multiClusterEnabled must be false: placing a world's cells across clusters is not supported yet",
            "spec.multiClusterEnabled",
        ),
        ok(
            "single cluster said so",
            vec![("spec.multiClusterEnabled", v(json!(false)))],
        ),
        // --- schema: counts
        case(
            "initialCells of 0",
            vec![("spec.topology.initialCells", v(json!(0)))],
            ".spec.topology.initialCells: below",
            "spec.topology.initialCells",
        ),
        case(
            "initialCells of 1001",
            vec![
                ("spec.topology.initialCells", v(json!(1001))),
                ("spec.scaling.maxCells", v(json!(2000))),
            ],
            ".spec.topology.initialCells: above",
            "spec.topology.initialCells",
        ),
        ok(
            "initialCells of 1000",
            vec![
                ("spec.topology.initialCells", v(json!(1000))),
                ("spec.scaling.maxCells", v(json!(1000))),
            ],
        ),
        case(
            "no players per cell",
            vec![("spec.capacity.maxPlayersPerCell", v(json!(0)))],
            ".spec.capacity.maxPlayersPerCell: below",
            "spec.capacity.maxPlayersPerCell",
        ),
        case(
            "too many players per cell",
            vec![("spec.capacity.maxPlayersPerCell", v(json!(10001)))],
            ".spec.capacity.maxPlayersPerCell: above",
            "spec.capacity.maxPlayersPerCell",
        ),
        ok(
            "10000 players per cell",
            vec![("spec.capacity.maxPlayersPerCell", v(json!(10000)))],
        ),
        case(
            "minCells of 0",
            vec![("spec.scaling.minCells", v(json!(0)))],
            ".spec.scaling.minCells: below",
            "spec.scaling.minCells",
        ),
        case(
            "maxTransitions of 0",
            vec![("spec.scaling.maxTransitions", v(json!(0)))],
            ".spec.scaling.maxTransitions: below",
            "spec.scaling.maxTransitions",
        ),
        case(
            "zero rate-limit period",
            vec![("spec.scaling.rateLimitPeriodSeconds", v(json!(0)))],
            ".spec.scaling.rateLimitPeriodSeconds: below",
            "spec.scaling.rateLimitPeriodSeconds",
        ),
        case(
            "zero transition timeout",
            vec![("spec.scaling.transitionTimeoutSeconds", v(json!(0)))],
            ".spec.scaling.transitionTimeoutSeconds: below",
            "spec.scaling.transitionTimeoutSeconds",
        ),
        case(
            "zero prediction horizon",
            vec![("spec.scaling.predictionHorizonSeconds", v(json!(0)))],
            ".spec.scaling.predictionHorizonSeconds: below",
            "spec.scaling.predictionHorizonSeconds",
        ),
        case(
            "one prediction sample",
            vec![("spec.scaling.predictionMinSamples", v(json!(1)))],
            ".spec.scaling.predictionMinSamples: below",
            "spec.scaling.predictionMinSamples",
        ),
        ok(
            "no stabilisation or cooldown",
            vec![
                ("spec.scaling.stabilizationWindowSeconds", v(json!(0))),
                ("spec.scaling.cooldownSeconds", v(json!(0))),
            ],
        ),
        // --- schema: cellSize, a number or the original's box
        case(
            "zero cell size",
            vec![("spec.topology.cellSize", v(json!(0.0)))],
            ".spec.topology.cellSize: must validate at least one schema (anyOf)",
            "spec.topology.cellSize",
        ),
        case(
            "negative cell size",
            vec![("spec.topology.cellSize", v(json!(-2)))],
            ".spec.topology.cellSize: must validate at least one schema (anyOf)",
            "spec.topology.cellSize",
        ),
        ok(
            "integer cell size",
            vec![("spec.topology.cellSize", v(json!(25)))],
        ),
        ok(
            "the original's cell size box",
            vec![(
                "spec.topology.cellSize",
                v(json!({"xMin": 0.0, "xMax": 50.0, "yMin": 0.0, "yMax": 50.0})),
            )],
        ),
        case(
            "a cell size box off the origin",
            vec![("spec.topology.cellSize", v(json!({"xMin": 10.0, "xMax": 50.0})))],
            ".spec.topology.cellSize.xMin: above the maximum 0",
            "spec.topology.cellSize.xMin",
        ),
        case(
            "a cell size box without xMax",
            vec![("spec.topology.cellSize", v(json!({"xMin": 0.0})))],
            ".spec.topology.cellSize: must validate at least one schema (anyOf)",
            "spec.topology.cellSize.xMax",
        ),
        case(
            "a cell size box with yMin alone",
            vec![(
                "spec.topology.cellSize",
                v(json!({"xMin": 0.0, "xMax": 5.0, "yMin": 0.0})),
            )],
            ".spec.topology.cellSize: must validate at least one schema (anyOf)",
            "spec.topology.cellSize.yMax",
        ),
        // --- capacity: deprecated names, agreement, requests within limits
        ok(
            "the original's resource names",
            vec![
                ("spec.capacity.cpuLimitPerCell", v(json!("1000m"))),
                ("spec.capacity.memoryLimitPerCell", v(json!("2Gi"))),
                ("spec.capacity.cpuRequestPerCell", v(json!("500m"))),
                ("spec.capacity.memoryRequestPerCell", v(json!("1Gi"))),
            ],
        ),
        ok(
            "both spellings, the same value spelled twice",
            vec![
                ("spec.capacity.cpuLimit", v(json!("1"))),
                ("spec.capacity.cpuLimitPerCell", v(json!("1000m"))),
            ],
        ),
        case(
            "both spellings, different values",
            vec![
                ("spec.capacity.cpuLimit", v(json!("1"))),
                ("spec.capacity.cpuLimitPerCell", v(json!("2"))),
            ],
            "spec.capacity.cpuLimitPerCell and spec.capacity.cpuLimit are both given and differ",
            "spec.capacity.cpuLimitPerCell",
        ),
        case(
            "both request spellings, different values",
            vec![
                ("spec.capacity.memoryRequest", v(json!("128Mi"))),
                ("spec.capacity.memoryRequestPerCell", v(json!("256Mi"))),
            ],
            "spec.capacity.memoryRequestPerCell and spec.capacity.memoryRequest are both given and differ",
            "spec.capacity.memoryRequestPerCell",
        ),
        ok(
            "a limit alone, below the default request",
            vec![("spec.capacity.cpuLimit", v(json!("250m")))],
        ),
        ok(
            "an old-name limit alone, below the default request",
            vec![("spec.capacity.memoryLimitPerCell", v(json!("256Mi")))],
        ),
        case(
            "a request above its limit",
            vec![
                ("spec.capacity.cpuLimit", v(json!("250m"))),
                ("spec.capacity.cpuRequest", v(json!("500m"))),
            ],
            "spec.capacity.cpuRequest must not exceed the CPU limit",
            "spec.capacity.cpuRequest",
        ),
        case(
            "an old-name request above an old-name limit",
            vec![
                ("spec.capacity.memoryLimitPerCell", v(json!("1Gi"))),
                ("spec.capacity.memoryRequestPerCell", v(json!("2Gi"))),
            ],
            "spec.capacity.memoryRequestPerCell must not exceed the memory limit",
            "spec.capacity.memoryRequestPerCell",
        ),
        case(
            "a request above the default limit",
            vec![("spec.capacity.cpuRequest", v(json!(2)))],
            "spec.capacity.cpuRequest must not exceed the CPU limit",
            "spec.capacity.cpuRequest",
        ),
        case(
            "a zero limit",
            vec![("spec.capacity.cpuLimitPerCell", v(json!("0")))],
            "spec.capacity.cpuLimitPerCell must be a Kubernetes quantity greater than zero",
            "spec.capacity.cpuLimitPerCell",
        ),
        case(
            "a negative request",
            vec![("spec.capacity.cpuRequest", v(json!("-1")))],
            "spec.capacity.cpuRequest must be a Kubernetes quantity of zero or more",
            "spec.capacity.cpuRequest",
        ),
        ok(
            "a zero request",
            vec![("spec.capacity.memoryRequest", v(json!(0)))],
        ),
        case(
            "a malformed quantity",
            vec![("spec.capacity.memoryLimit", v(json!("1GB")))],
            ".spec.capacity.memoryLimit: does not match the pattern",
            "spec.capacity.memoryLimit",
        ),
        case(
            "empty image",
            vec![("spec.gameServerImage", v(json!("")))],
            ".spec.gameServerImage: at least 1",
            "spec.gameServerImage",
        ),
        // --- CEL: bounds
        case(
            "x reversed",
            vec![("spec.topology.worldBoundaries.xMin", v(json!(200.0)))],
            "spec.topology.worldBoundaries.xMin must be less than",
            "spec.topology.worldBoundaries.xMin",
        ),
        case(
            "x empty",
            vec![("spec.topology.worldBoundaries.xMin", v(json!(100.0)))],
            "spec.topology.worldBoundaries.xMin must be less than",
            "spec.topology.worldBoundaries.xMin",
        ),
        case(
            "y reversed",
            vec![("spec.topology.worldBoundaries.yMax", v(json!(-1)))],
            "spec.topology.worldBoundaries.yMin must be less than",
            "spec.topology.worldBoundaries.yMin",
        ),
        case(
            "yMin alone",
            vec![("spec.topology.worldBoundaries.yMax", None)],
            "yMin and spec.topology.worldBoundaries.yMax must be given together",
            "spec.topology.worldBoundaries.yMax",
        ),
        case(
            "yMax alone",
            vec![("spec.topology.worldBoundaries.yMin", None)],
            "yMin and spec.topology.worldBoundaries.yMax must be given together",
            "spec.topology.worldBoundaries.yMin",
        ),
        ok(
            "1-D world",
            vec![
                ("spec.topology.worldBoundaries.yMin", None),
                ("spec.topology.worldBoundaries.yMax", None),
            ],
        ),
        ok(
            "3-D world",
            vec![
                ("spec.topology.worldBoundaries.zMin", v(json!(-5))),
                ("spec.topology.worldBoundaries.zMax", v(json!(5))),
            ],
        ),
        case(
            "z reversed",
            vec![
                ("spec.topology.worldBoundaries.zMin", v(json!(5))),
                ("spec.topology.worldBoundaries.zMax", v(json!(-5))),
            ],
            "spec.topology.worldBoundaries.zMin must be less than",
            "spec.topology.worldBoundaries.zMin",
        ),
        case(
            "zMin alone",
            vec![("spec.topology.worldBoundaries.zMin", v(json!(5)))],
            "zMin and spec.topology.worldBoundaries.zMax must be given together",
            "spec.topology.worldBoundaries.zMax",
        ),
        case(
            "z without y",
            vec![
                ("spec.topology.worldBoundaries.yMin", None),
                ("spec.topology.worldBoundaries.yMax", None),
                ("spec.topology.worldBoundaries.zMin", v(json!(0))),
                ("spec.topology.worldBoundaries.zMax", v(json!(1))),
            ],
            "require spec.topology.worldBoundaries.yMin and yMax",
            "spec.topology.worldBoundaries.zMin",
        ),
        // --- CEL: persistence durations
        case(
            "bad checkpoint interval",
            vec![("spec.persistence.checkpointInterval", v(json!("soon")))],
            "spec.persistence.checkpointInterval must be a duration",
            "spec.persistence.checkpointInterval",
        ),
        case(
            "zero retention",
            vec![("spec.persistence.retentionPeriod", v(json!("0s")))],
            "spec.persistence.retentionPeriod must be a duration",
            "spec.persistence.retentionPeriod",
        ),
        ok(
            "compound duration",
            vec![("spec.persistence.checkpointInterval", v(json!("1h30m")))],
        ),
        ok(
            "days, as the original wrote them",
            vec![("spec.persistence.retentionPeriod", v(json!("30d")))],
        ),
        case(
            "zero days",
            vec![("spec.persistence.retentionPeriod", v(json!("0d")))],
            "spec.persistence.retentionPeriod must be a duration",
            "spec.persistence.retentionPeriod",
        ),
        case(
            "fractional days",
            vec![("spec.persistence.checkpointInterval", v(json!("1.5d")))],
            "spec.persistence.checkpointInterval must be a duration",
            "spec.persistence.checkpointInterval",
        ),
        // --- schema: required fields
        case(
            "no image",
            vec![("spec.gameServerImage", None)],
            ".spec.gameServerImage: required",
            "",
        ),
        case(
            "no initial cells",
            vec![("spec.topology.initialCells", None)],
            ".spec.topology.initialCells: required",
            "",
        ),
        ok("integer quantity", vec![("spec.capacity.cpuLimit", v(json!(2)))]),
    ]
}

fn apply(edits: &[(&str, Option<Value>)]) -> Value {
    let mut obj = base();
    for (path, value) in edits {
        match value {
            Some(v) => set(&mut obj, path, v.clone()),
            None => remove(&mut obj, path),
        }
    }
    obj
}

#[test]
fn each_rule_rejects_what_it_should_and_conversion_blames_the_same_field() {
    let mut failures = Vec::new();
    for c in cases() {
        let obj = apply(&c.edits);
        let errors = admission_errors(&obj);
        if c.admitted != errors.is_empty() {
            failures.push(format!(
                "{}: admitted should be {}, got {errors:?}",
                c.what, c.admitted
            ));
            continue;
        }
        if !c.admitted && !errors.iter().any(|e| e.contains(c.admission_says)) {
            failures.push(format!(
                "{}: expected {:?} among {errors:?}",
                c.what, c.admission_says
            ));
        }
        // Missing required fields fail to parse at all; the rest must convert or not.
        let Ok(ws) = serde_json::from_value::<fleetforge_crd::WorldSpec>(obj) else {
            if c.conversion_path.is_empty() {
                continue;
            }
            failures.push(format!("{}: did not parse", c.what));
            continue;
        };
        match (fleetforge_crd::to_world(&ws), c.admitted) {
            (Ok(_), true) => {}
            (Err(e), true) => failures.push(format!("{}: admitted but conversion failed: {e}", c.what)),
            (Ok(_), false) => failures.push(format!("{}: rejected but conversion accepted it", c.what)),
            (Err(e), false) => {
                if !e.paths().any(|p| p == c.conversion_path) {
                    failures.push(format!(
                        "{}: conversion should blame {}, said {e}",
                        c.what, c.conversion_path
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn omitted_sections_take_their_defaults() {
    let w = convert(&base()).unwrap();
    assert_eq!(w.players_per_cell, 100);
    assert_eq!(w.policy.scale_up_threshold, 0.8);
    assert_eq!(w.policy.scale_down_threshold, 0.3);
    assert_eq!(w.policy.stabilization_window.as_secs(), 30);
    assert_eq!(w.policy.cooldown.as_secs(), 60);
    assert_eq!(
        (w.policy.max_transitions, w.policy.rate_limit_period.as_secs()),
        (10, 60)
    );
    assert_eq!(w.policy.transition_timeout.as_secs(), 120);
    assert_eq!(w.policy.prediction, None);
    let defaults = kube::core::cel::apply_defaults(schema(), &base());
    assert_eq!(defaults["spec"]["scaling"]["cooldownSeconds"], 60);
    assert_eq!(defaults["spec"]["capacity"]["maxPlayersPerCell"], 100);
    // The resource quantities have no schema default (the API server would put
    // one next to a deprecated spelling): their defaults are the conversion's.
    assert_eq!(defaults["spec"]["capacity"].get("memoryLimit"), None);
    assert!(admitted(&defaults));
}
