//! Cell identity: a cell is named by its path in the partition tree.
//!
//! A root cell is one of the world's initial cells (`c0`, `c1`, ...). Each split
//! adds one digit, `0` for the lower half and `1` for the upper half along the cut,
//! so `c3-01` is the upper half of the lower half of root 3. Siblings differ only in
//! their last digit and a merge knows its parent by dropping it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::naming::dns_label;

/// Deepest partition tree the planner builds. Deep enough for any world a cluster
/// can hold (2^48 leaves under one root) while keeping names short.
pub const MAX_DEPTH: usize = 48;

/// The identity of a cell: its root (initial cell index) and its split path.
///
/// The path is packed into one word (one bit per split, the first split the most
/// significant), so ids are cheap to copy, hash and compare: the planner keys its
/// maps by them. Ids order by root, then by path with a prefix before its
/// extensions, so a cell's descendants sort right after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CellId {
    root: u32,
    depth: u8,
    /// The split digits, the last split in the lowest bit; bits above `depth` are 0.
    bits: u64,
}

/// Why a string is not a cell id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid cell id {input:?}: {reason}")]
pub struct ParseCellIdError {
    input: String,
    reason: &'static str,
}

impl CellId {
    /// The root cell with index `index`.
    pub fn root(index: u32) -> Self {
        Self {
            root: index,
            depth: 0,
            bits: 0,
        }
    }

    /// Index of the initial cell this one descends from.
    pub fn root_index(&self) -> u32 {
        self.root
    }

    /// The split path: one digit (0 lower, 1 upper) per split below the root.
    pub fn path(&self) -> Vec<u8> {
        (0..self.depth)
            .rev()
            .map(|k| ((self.bits >> k) & 1) as u8)
            .collect()
    }

    /// Number of splits between the root and this cell.
    pub fn depth(&self) -> usize {
        usize::from(self.depth)
    }

    /// The child on `side` (0 lower, 1 upper) of this cell. Children of a cell
    /// at [`MAX_DEPTH`] are not cells the planner makes; asking for one is a bug
    /// and saturates at that depth.
    pub fn child(&self, side: u8) -> Self {
        if self.depth() >= MAX_DEPTH {
            return self.clone();
        }
        Self {
            root: self.root,
            depth: self.depth + 1,
            bits: (self.bits << 1) | u64::from(side.min(1)),
        }
    }

    /// Both children, lower first.
    pub fn children(&self) -> [CellId; 2] {
        [self.child(0), self.child(1)]
    }

    /// The parent, or `None` for a root cell.
    pub fn parent(&self) -> Option<CellId> {
        (self.depth > 0).then(|| Self {
            root: self.root,
            depth: self.depth - 1,
            bits: self.bits >> 1,
        })
    }

    /// The other child of this cell's parent, or `None` for a root cell.
    pub fn sibling(&self) -> Option<CellId> {
        (self.depth > 0).then_some(Self {
            root: self.root,
            depth: self.depth,
            bits: self.bits ^ 1,
        })
    }

    /// Which side of its parent this cell is (0 lower, 1 upper); `None` for a root.
    pub fn side(&self) -> Option<u8> {
        (self.depth > 0).then_some((self.bits & 1) as u8)
    }

    /// Whether `self` is a strict ancestor of `other`.
    pub fn is_ancestor_of(&self, other: &CellId) -> bool {
        self.root == other.root
            && other.depth > self.depth
            && other.bits >> (other.depth - self.depth) == self.bits
    }

    /// The Kubernetes-safe name of this cell within `world`: a DNS-1123 label of at
    /// most 63 characters, shortened with a stable hash when it would be longer.
    pub fn name(&self, world: &str) -> String {
        dns_label(world, &self.to_string())
    }
}

impl Ord for CellId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let common = self.depth.min(other.depth);
        let prefix = |c: &CellId| c.bits >> (c.depth - common);
        self.root
            .cmp(&other.root)
            .then_with(|| prefix(self).cmp(&prefix(other)))
            .then_with(|| self.depth.cmp(&other.depth))
    }
}

impl PartialOrd for CellId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.root)?;
        if self.depth > 0 {
            f.write_str("-")?;
            for d in self.path() {
                write!(f, "{d}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CellId {
    type Err = ParseCellIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseCellIdError {
            input: s.to_owned(),
            reason,
        };
        let rest = s.strip_prefix('c').ok_or_else(|| err("must start with 'c'"))?;
        let (root, path) = match rest.split_once('-') {
            Some((root, path)) if !path.is_empty() => (root, path),
            Some(_) => return Err(err("empty split path after '-'")),
            None => (rest, ""),
        };
        if root.is_empty()
            || !root.bytes().all(|b| b.is_ascii_digit())
            || (root.len() > 1 && root.starts_with('0'))
        {
            return Err(err("root index must be a decimal number without leading zeros"));
        }
        let root = root.parse().map_err(|_| err("root index is too large"))?;
        if path.len() > MAX_DEPTH {
            return Err(err("split path is deeper than the planner allows"));
        }
        let mut id = Self::root(root);
        for b in path.bytes() {
            match b {
                b'0' => id = id.child(0),
                b'1' => id = id.child(1),
                _ => return Err(err("split path digits must be 0 or 1")),
            }
        }
        Ok(id)
    }
}

impl TryFrom<String> for CellId {
    type Error = ParseCellIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CellId> for String {
    fn from(id: CellId) -> String {
        id.to_string()
    }
}

/// One running incarnation of a cell. Replacing a cell (new image, failed process)
/// creates the next incarnation beside the old one, so both can exist while sessions
/// move across.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellRef {
    /// The cell.
    pub id: CellId,
    /// 0 for the first process of this cell, incremented on each replacement.
    #[serde(default)]
    pub incarnation: u32,
}

impl CellRef {
    /// The first incarnation of `id`.
    pub fn first(id: CellId) -> Self {
        Self { id, incarnation: 0 }
    }

    /// The name of this incarnation's process (the Pod name): the cell name, with
    /// `-r<n>` appended for replacements. A DNS-1123 label of at most 63 characters.
    pub fn process_name(&self, world: &str) -> String {
        if self.incarnation == 0 {
            self.id.name(world)
        } else {
            dns_label(world, &format!("{}-r{}", self.id, self.incarnation))
        }
    }
}

impl fmt::Display for CellRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.incarnation == 0 {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}#{}", self.id, self.incarnation)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = CellId::root(3).child(0).child(1);
        assert_eq!(id.to_string(), "c3-01");
        assert_eq!("c3-01".parse::<CellId>().unwrap(), id);
        assert_eq!("c12".parse::<CellId>().unwrap(), CellId::root(12));
    }

    #[test]
    fn parse_rejects_malformed_ids() {
        for bad in ["", "c", "3-01", "c3-", "c3-012", "c03", "cx", "c3-0a"] {
            assert!(bad.parse::<CellId>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn family_relations() {
        let p = CellId::root(1).child(1);
        let [lo, hi] = p.children();
        assert_eq!(lo.sibling(), Some(hi.clone()));
        assert_eq!(hi.parent(), Some(p.clone()));
        assert!(p.is_ancestor_of(&lo.child(0)));
        assert!(!p.is_ancestor_of(&p));
        assert!(!CellId::root(2).is_ancestor_of(&lo));
        assert_eq!(CellId::root(0).parent(), None);
    }

    #[test]
    fn ids_order_by_root_then_path_with_descendants_right_after_their_ancestor() {
        let ids: Vec<CellId> = [
            "c0", "c0-0", "c0-00", "c0-01", "c0-1", "c0-10", "c1", "c1-0", "c2",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut shuffled = ids.clone();
        shuffled.reverse();
        shuffled.sort();
        assert_eq!(shuffled, ids);
        let by_path = |a: &CellId, b: &CellId| (a.root_index(), a.path()).cmp(&(b.root_index(), b.path()));
        for a in &ids {
            for b in &ids {
                assert_eq!(a.cmp(b), by_path(a, b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn process_names_distinguish_incarnations() {
        let id = CellId::root(0).child(1);
        assert_eq!(CellRef::first(id.clone()).process_name("arena"), "arena-c0-1");
        let next = CellRef { id, incarnation: 2 };
        assert_eq!(next.process_name("arena"), "arena-c0-1-r2");
    }
}
