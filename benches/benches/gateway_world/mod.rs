//! Gateway worlds for the gateway benchmark and the memory benchmark: the cells
//! of a [`split_layout`] as the gateway's watches read them from cell Pods, and
//! the [`Worlds`] they make. (A directory module, so that cargo does not take
//! it for a benchmark of its own.)

use std::net::{IpAddr, Ipv4Addr};

use fleetforge_benches::{LAYOUT_SEED, LaidOutCell, split_layout};
use fleetforge_core::{Bounds, CellRef, Role};
use fleetforge_gateway::CellEntry;
use fleetforge_gateway::cluster::{Publication, WorldKey};
use fleetforge_gateway::worlds::Worlds;

/// The namespace of every benchmark world.
pub const NAMESPACE: &str = "games";

/// The bounds of every benchmark world: the planner fixtures' 10 km square.
pub fn bounds() -> Bounds {
    Bounds::rect((0.0, 10_000.0), (0.0, 10_000.0)).expect("valid bounds")
}

/// What every benchmark world's WorldSpec publishes.
pub fn publication() -> Publication {
    Publication {
        bounds: bounds(),
        game_port: 7777,
    }
}

/// The `index`-th cell of a layout as a ready, active cell Pod with its own
/// address.
pub fn entry(cell: &LaidOutCell, index: usize) -> CellEntry {
    let [_, _, b, c] = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
    CellEntry {
        cell: CellRef::first(cell.id.clone()),
        bounds: cell.bounds,
        role: Role::Active {
            since: cell.activated,
        },
        ready: true,
        terminating: false,
        address: Some(IpAddr::V4(Ipv4Addr::new(10, 42, b, c))),
        stamped_epoch: None,
    }
}

/// The cell Pods (namespace, name, world, entry) of world `key` laid out in
/// `cells` cells from `seed`, as [`Worlds::replace_cells`] takes them.
pub fn pods(key: &WorldKey, cells: u32, seed: u64) -> Vec<(String, String, WorldKey, CellEntry)> {
    split_layout(&bounds(), cells, seed)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                key.namespace.clone(),
                format!("{}-{}", key.name, c.id),
                key.clone(),
                entry(c, i),
            )
        })
        .collect()
}

/// Worlds named `w0`, `w1`, ... of the given cell counts, each published, laid
/// out from [`LAYOUT_SEED`] plus its index, fed as the first lists are: one
/// re-list of the WorldSpecs and one of the cell Pods.
pub fn worlds(cells: &[u32]) -> Worlds {
    let keys: Vec<WorldKey> = (0..cells.len())
        .map(|i| WorldKey::new(NAMESPACE, format!("w{i}")))
        .collect();
    let mut worlds = Worlds::new();
    worlds.replace_worlds(keys.iter().map(|k| (k.clone(), Some(publication()))));
    worlds.replace_cells(
        keys.iter()
            .zip(cells)
            .enumerate()
            .flat_map(|(i, (k, &n))| pods(k, n, LAYOUT_SEED + i as u64)),
    );
    worlds
}
