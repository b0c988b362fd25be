//! What the gateway knows of the cluster, and the views it answers from.
//!
//! The watches feed [`Worlds`] with what they read (a cell Pod applied or
//! deleted, a WorldSpec applied or deleted, or a full re-list of either); every
//! change rebuilds the directory of the one world it touched and, when the
//! answer changed, publishes a new [`WorldView`] on that world's channel.
//! Requests read the latest view without waiting for the watches; topology
//! streams follow the channel, which keeps only the newest view, so a slow
//! reader skips views instead of queueing them.
//!
//! No I/O and no clock here: the caller says what happened and measures time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use fleetforge_core::{CellRef, Timestamp};
use tokio::sync::watch;

use crate::cluster::{Publication, WorldKey};
use crate::directory::{CellEntry, Directory};
use crate::topology;

/// One published world as the gateway answers for it: immutable, shared by the
/// requests that read it.
#[derive(Debug)]
pub struct WorldView {
    /// The world.
    pub key: WorldKey,
    /// What its WorldSpec publishes.
    pub publication: Publication,
    /// Its authoritative cells and epoch.
    pub directory: Directory,
    neighbours: OnceLock<Vec<Vec<usize>>>,
}

impl WorldView {
    /// For each of [`Directory::authoritative`], the positions of its face
    /// neighbours in the same list (computed on first use: locate never needs
    /// them).
    pub fn neighbours(&self) -> &[Vec<usize>] {
        self.neighbours.get_or_init(|| {
            let boxes: Vec<_> = self.directory.authoritative().iter().map(|c| c.bounds).collect();
            topology::neighbours(&boxes)
        })
    }

    fn same_answers(&self, other: &Directory, publication: &Publication) -> bool {
        self.publication == *publication
            && self.directory.epoch() == other.epoch()
            && self.directory.authoritative() == other.authoritative()
    }
}

/// The latest view of a world, or `None` while it is not published (no
/// WorldSpec, not opted in, or unreadable).
pub type Channel = watch::Receiver<Option<Arc<WorldView>>>;

#[derive(Debug)]
struct WorldState {
    publication: Option<Publication>,
    /// Cells by Pod name.
    cells: BTreeMap<String, CellEntry>,
    view: watch::Sender<Option<Arc<WorldView>>>,
}

impl WorldState {
    fn new() -> Self {
        Self {
            publication: None,
            cells: BTreeMap::new(),
            view: watch::Sender::new(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.publication.is_none() && self.cells.is_empty()
    }
}

/// What a change did to the published worlds, for the caller's metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// Activation times of the cells that became authoritative, in the worlds
    /// whose view changed: the caller measures the directory's lag from them.
    pub newly_authoritative: Vec<Timestamp>,
}

impl Published {
    fn absorb(&mut self, other: Published) {
        self.newly_authoritative.extend(other.newly_authoritative);
    }
}

/// Every world the gateway has heard of, by key.
#[derive(Debug, Default)]
pub struct Worlds {
    worlds: HashMap<WorldKey, WorldState>,
    /// Which world each cell Pod (`namespace`, `name`) was filed under, so a
    /// deletion or an unreadable update finds it.
    pods: HashMap<(String, String), WorldKey>,
}

impl Worlds {
    /// Knows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest view of `key`, if it is published.
    pub fn view(&self, key: &WorldKey) -> Option<Arc<WorldView>> {
        self.worlds.get(key).and_then(|w| w.view.borrow().clone())
    }

    /// A channel of `key`'s views, if it is published now.
    pub fn subscribe(&self, key: &WorldKey) -> Option<Channel> {
        let world = self.worlds.get(key)?;
        world.view.borrow().is_some().then(|| world.view.subscribe())
    }

    /// How many worlds are published.
    pub fn published(&self) -> usize {
        self.worlds.values().filter(|w| w.view.borrow().is_some()).count()
    }

    /// How many authoritative cells the published worlds have.
    pub fn authoritative_cells(&self) -> usize {
        self.worlds
            .values()
            .filter_map(|w| {
                w.view
                    .borrow()
                    .as_ref()
                    .map(|v| v.directory.authoritative().len())
            })
            .sum()
    }

    /// A WorldSpec was read: `publication` is what it publishes (`None`: not
    /// opted in, or unreadable).
    pub fn set_world(&mut self, key: WorldKey, publication: Option<Publication>) -> Published {
        self.worlds
            .entry(key.clone())
            .or_insert_with(WorldState::new)
            .publication = publication;
        self.refresh(&key)
    }

    /// A WorldSpec was deleted.
    pub fn remove_world(&mut self, key: &WorldKey) -> Published {
        match self.worlds.get_mut(key) {
            Some(world) => {
                world.publication = None;
                self.refresh(key)
            }
            None => Published::default(),
        }
    }

    /// A cell Pod was read: it runs `entry` of `world`.
    pub fn set_cell(&mut self, namespace: &str, pod: &str, world: WorldKey, entry: CellEntry) -> Published {
        let mut published = Published::default();
        let id = (namespace.to_owned(), pod.to_owned());
        if let Some(previous) = self.pods.get(&id).filter(|w| **w != world).cloned() {
            // A Pod does not move between worlds, but an edited annotation can say it did.
            published.absorb(self.remove_cell(namespace, pod));
            debug_assert!(!self.pods.contains_key(&id), "{previous}");
        }
        self.pods.insert(id, world.clone());
        self.worlds
            .entry(world.clone())
            .or_insert_with(WorldState::new)
            .cells
            .insert(pod.to_owned(), entry);
        published.absorb(self.refresh(&world));
        published
    }

    /// A cell Pod was deleted, or can no longer be read (it must then not keep
    /// answering with what it said before).
    pub fn remove_cell(&mut self, namespace: &str, pod: &str) -> Published {
        let Some(world) = self.pods.remove(&(namespace.to_owned(), pod.to_owned())) else {
            return Published::default();
        };
        if let Some(state) = self.worlds.get_mut(&world) {
            state.cells.remove(pod);
        }
        self.refresh(&world)
    }

    /// A full list of the WorldSpecs replaces everything known of them.
    pub fn replace_worlds(
        &mut self,
        worlds: impl IntoIterator<Item = (WorldKey, Option<Publication>)>,
    ) -> Published {
        let listed: HashMap<WorldKey, Option<Publication>> = worlds.into_iter().collect();
        let mut keys: Vec<WorldKey> = self.worlds.keys().cloned().collect();
        keys.extend(listed.keys().cloned());
        keys.sort();
        keys.dedup();
        let mut published = Published::default();
        for key in keys {
            let publication = listed.get(&key).copied().flatten();
            let state = self.worlds.entry(key.clone()).or_insert_with(WorldState::new);
            if state.publication != publication {
                state.publication = publication;
                published.absorb(self.refresh(&key));
            }
        }
        published
    }

    /// A full list of the cell Pods (`namespace`, `name`, what they run)
    /// replaces everything known of them.
    pub fn replace_cells(
        &mut self,
        cells: impl IntoIterator<Item = (String, String, WorldKey, CellEntry)>,
    ) -> Published {
        let mut by_world: HashMap<WorldKey, BTreeMap<String, CellEntry>> = HashMap::new();
        self.pods.clear();
        for (namespace, pod, world, entry) in cells {
            self.pods.insert((namespace, pod.clone()), world.clone());
            by_world.entry(world).or_default().insert(pod, entry);
        }
        let mut keys: Vec<WorldKey> = self.worlds.keys().cloned().collect();
        keys.extend(by_world.keys().cloned());
        keys.sort();
        keys.dedup();
        let mut published = Published::default();
        for key in keys {
            let cells = by_world.remove(&key).unwrap_or_default();
            let state = self.worlds.entry(key.clone()).or_insert_with(WorldState::new);
            if state.cells != cells {
                state.cells = cells;
                published.absorb(self.refresh(&key));
            }
        }
        published
    }

    /// Rebuilds `key`'s view from what is known of it and publishes it if the
    /// answers changed; forgets a world nothing is known of any more.
    fn refresh(&mut self, key: &WorldKey) -> Published {
        let Some(state) = self.worlds.get_mut(key) else {
            return Published::default();
        };
        let mut published = Published::default();
        match state.publication {
            None => {
                if state.view.borrow().is_some() {
                    state.view.send_replace(None);
                }
            }
            Some(publication) => {
                let directory = Directory::build(publication.bounds, state.cells.values().cloned());
                let previous = state.view.borrow().clone();
                let unchanged = previous
                    .as_ref()
                    .is_some_and(|v| v.same_answers(&directory, &publication));
                if !unchanged {
                    // A set: a world of many cells would make a list quadratic, and
                    // this runs under the state's write lock.
                    let before: HashSet<&CellRef> = previous
                        .as_ref()
                        .map(|v| v.directory.authoritative().iter().map(|c| &c.cell).collect())
                        .unwrap_or_default();
                    published.newly_authoritative = directory
                        .authoritative()
                        .iter()
                        .filter(|c| !before.contains(&&c.cell))
                        .filter_map(CellEntry::active_since)
                        .collect();
                    state.view.send_replace(Some(Arc::new(WorldView {
                        key: key.clone(),
                        publication,
                        directory,
                        neighbours: OnceLock::new(),
                    })));
                }
            }
        }
        if state.is_empty() && state.view.receiver_count() == 0 {
            self.worlds.remove(key);
        }
        published
    }
}

#[cfg(test)]
mod tests {
    use fleetforge_core::{Bounds, CellId, Role};

    use super::*;

    fn world() -> Bounds {
        Bounds::rect((0.0, 100.0), (0.0, 100.0)).unwrap()
    }

    fn publication() -> Publication {
        Publication {
            bounds: world(),
            game_port: 7777,
        }
    }

    fn cell(id: &str, bounds: Bounds, since: Option<u64>) -> CellEntry {
        CellEntry {
            cell: CellRef::first(id.parse::<CellId>().unwrap()),
            bounds,
            role: since.map_or(Role::Incoming, |ms| Role::Active {
                since: Timestamp::from_millis(ms),
            }),
            ready: true,
            terminating: false,
            address: Some("10.0.0.1".parse().unwrap()),
            stamped_epoch: None,
        }
    }

    fn key() -> WorldKey {
        WorldKey::new("games", "w")
    }

    #[test]
    fn a_world_is_published_only_while_its_worldspec_opts_in() {
        let mut worlds = Worlds::new();
        worlds.set_cell("games", "w-c0", key(), cell("c0", world(), Some(10)));
        assert!(worlds.view(&key()).is_none(), "cells without a WorldSpec");
        worlds.set_world(key(), Some(publication()));
        let view = worlds.view(&key()).unwrap();
        assert_eq!(view.directory.authoritative().len(), 1);
        assert_eq!((worlds.published(), worlds.authoritative_cells()), (1, 1));
        worlds.set_world(key(), None);
        assert!(worlds.view(&key()).is_none(), "opted out");
        worlds.set_world(key(), Some(publication()));
        worlds.remove_world(&key());
        assert!(worlds.view(&key()).is_none(), "deleted");
        assert_eq!(worlds.published(), 0);
    }

    #[test]
    fn a_stream_sees_a_new_view_only_when_the_answers_change() {
        let mut worlds = Worlds::new();
        worlds.set_world(key(), Some(publication()));
        worlds.set_cell("games", "w-c0", key(), cell("c0", world(), Some(10)));
        let mut channel = worlds.subscribe(&key()).unwrap();
        channel.mark_unchanged();
        let (left, right) = world().split(fleetforge_core::Axis::X, 50.0).unwrap();
        let published = worlds.set_cell("games", "w-c0-0", key(), cell("c0-0", left, None));
        assert!(
            !channel.has_changed().unwrap(),
            "an incoming cell changes no answer"
        );
        assert!(published.newly_authoritative.is_empty());
        worlds.set_cell("games", "w-c0-0", key(), cell("c0-0", left, Some(20)));
        assert!(channel.has_changed().unwrap());
        let view = channel.borrow_and_update().clone().unwrap();
        assert_eq!(
            view.directory.authoritative().len(),
            2,
            "the parent keeps the right half"
        );
        let published = worlds.set_cell("games", "w-c0-1", key(), cell("c0-1", right, Some(21)));
        assert_eq!(published.newly_authoritative, vec![Timestamp::from_millis(21)]);
        assert!(channel.has_changed().unwrap());
        assert_eq!(
            channel
                .borrow_and_update()
                .as_ref()
                .unwrap()
                .directory
                .authoritative()
                .len(),
            2
        );
        worlds.remove_cell("games", "w-c0");
        assert!(
            !channel.has_changed().unwrap(),
            "deleting a shadowed parent changes no answer"
        );
        worlds.remove_world(&key());
        assert!(channel.has_changed().unwrap());
        assert!(
            channel.borrow_and_update().is_none(),
            "the stream learns the world is gone"
        );
    }

    #[test]
    fn a_relist_replaces_what_was_known() {
        let mut worlds = Worlds::new();
        worlds.set_world(key(), Some(publication()));
        worlds.set_cell("games", "w-c0", key(), cell("c0", world(), Some(10)));
        let (left, right) = world().split(fleetforge_core::Axis::X, 50.0).unwrap();
        let published = worlds.replace_cells([
            (
                "games".to_owned(),
                "w-c0-0".to_owned(),
                key(),
                cell("c0-0", left, Some(20)),
            ),
            (
                "games".to_owned(),
                "w-c0-1".to_owned(),
                key(),
                cell("c0-1", right, Some(20)),
            ),
        ]);
        assert_eq!(published.newly_authoritative.len(), 2);
        let view = worlds.view(&key()).unwrap();
        let ids: Vec<String> = view
            .directory
            .authoritative()
            .iter()
            .map(|c| c.cell.to_string())
            .collect();
        assert_eq!(ids, ["c0-0", "c0-1"]);
        worlds.remove_cell("games", "w-c0");
        assert_eq!(
            worlds.view(&key()).unwrap().directory.authoritative().len(),
            2,
            "c0 was forgotten"
        );
        worlds.replace_worlds([]);
        assert!(worlds.view(&key()).is_none());
    }

    #[test]
    fn a_pod_that_names_another_world_leaves_the_first() {
        let mut worlds = Worlds::new();
        let other = WorldKey::new("games", "v");
        worlds.set_world(key(), Some(publication()));
        worlds.set_world(other.clone(), Some(publication()));
        worlds.set_cell("games", "p", key(), cell("c0", world(), Some(10)));
        worlds.set_cell("games", "p", other.clone(), cell("c0", world(), Some(10)));
        assert!(worlds.view(&key()).unwrap().directory.authoritative().is_empty());
        assert_eq!(worlds.view(&other).unwrap().directory.authoritative().len(), 1);
    }
}
