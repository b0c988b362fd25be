//! The embedding example, run as a user would run it.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_plan-world"))
        .current_dir(root)
        .args(args)
        .output()
        .expect("plan-world runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hot_cell_in_the_sample_world_is_split_where_its_players_are() {
    let (ok, stdout, stderr) = run(&["worlds/small.yaml", "loads/small-hot.json"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("world meadow: 4 cells active"), "{stdout}");
    assert!(stdout.contains("Split: splitting c0 at x="), "{stdout}");
    assert!(stdout.contains("create meadow-c0-0 (incoming)"), "{stdout}");
    assert!(
        stdout.contains("hand sessions over from [c0] to [c0-0, c0-1]"),
        "{stdout}"
    );
    assert!(stdout.contains("retire meadow-c0"), "{stdout}");
    // The histogram puts most players in the lowest x bins of c0 (x in 0..500):
    // the cut falls well left of the middle (250).
    let at: f64 = stdout
        .split("at x=")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .expect("cut coordinate");
    assert!(at > 50.0 && at < 150.0, "cut at {at}");
}

#[test]
fn the_json_plan_lists_the_actions_in_capacity_safe_order() {
    let (ok, stdout, stderr) = run(&["worlds/small.yaml", "loads/small-hot.json", "--json"]);
    assert!(ok, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON plan");
    let actions: Vec<&str> = plan["transitions"][0]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, ["create", "create", "handOver", "retire"]);
}

#[test]
fn an_unknown_cell_in_the_loads_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("plan-world-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let loads = dir.join("loads.json");
    std::fs::write(
        &loads,
        r#"{"now": 10, "cells": {"c7": [{"at": 0, "players": 1}]}}"#,
    )
    .unwrap();
    let (ok, _, stderr) = run(&["worlds/small.yaml", loads.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("the world has no cell c7"), "{stderr}");
}

#[test]
fn every_sample_world_converts_into_a_valid_world() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("worlds");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let spec: fleetforge_crd::WorldSpec = serde_yaml_ng::from_str(&text).unwrap();
        let world = fleetforge_crd::to_world(&spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(world.validate(), Ok(()));
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the small, large and 3-D samples, found {seen}"
    );
}
