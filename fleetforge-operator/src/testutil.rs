//! Shared fixtures of the unit tests.

use fleetforge_core::World;
use fleetforge_crd::{WorldSpec, to_world};
use serde_json::json;

/// A WorldSpec as read from the API server (namespace and uid set), and its world.
pub fn world_spec(name: &str) -> (WorldSpec, World) {
    let ws: WorldSpec = serde_json::from_value(json!({
        "apiVersion": "fleetforge.io/v1",
        "kind": "WorldSpec",
        "metadata": {"name": name, "namespace": "games", "uid": "0b5c8a52-0000-4000-8000-000000000001"},
        "spec": {
            "gameServerImage": "game/server:1.0",
            "topology": {"initialCells": 4, "worldBoundaries": {"xMin": 0, "xMax": 1000, "yMin": 0, "yMax": 1000}},
            "capacity": {"cpuRequest": "250m", "cpuLimit": "500m", "memoryRequest": "128Mi", "memoryLimit": "256Mi"},
        }
    }))
    .expect("fixture WorldSpec parses");
    let world = to_world(&ws).expect("fixture WorldSpec is valid");
    (ws, world)
}
