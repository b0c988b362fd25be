//! The Kubernetes Events the operator records on a WorldSpec: one reason per kind
//! of thing that happened, so `kubectl get events --field-selector reason=CellSplit`
//! finds every split.

use fleetforge_core::plan::{Transition, TransitionKind};
use kube::runtime::events::{Event, EventType};

/// The world's first cells were created.
pub const WORLD_INITIALIZED: &str = "WorldInitialized";
/// The world moved to a new root partition (bounds or initial cells changed).
pub const WORLD_REPARTITIONED: &str = "WorldRepartitioned";
/// A cell Pod was created.
pub const CELL_CREATED: &str = "CellCreated";
/// A cell was handed its space and serves it now.
pub const CELL_ACTIVATED: &str = "CellActivated";
/// A hot cell started splitting into two children.
pub const CELL_SPLIT: &str = "CellSplit";
/// Two cold siblings started merging back into their parent.
pub const CELL_MERGED: &str = "CellMerged";
/// A cell Pod was retired (deleted) after its space was handed over.
pub const CELL_RETIRED: &str = "CellRetired";
/// A failed or vanished cell is being replaced.
pub const CELL_REPLACED: &str = "CellReplaced";
/// A cell is being replaced by one of the world's new revision.
pub const CELL_ROLLED_OUT: &str = "CellRolledOut";
/// A cell being shut down by someone else (an eviction, a node drain, a Pod
/// deleted by hand) is being drained into its replacement, sessions handed over.
pub const CELL_DRAINED: &str = "CellDrained";
/// A split, merge, replacement or repartition was undone: its new cells never
/// became ready in time.
pub const TRANSITION_ROLLED_BACK: &str = "TransitionRolledBack";
/// A split was undone: a child did not become ready in time (or failed), so the
/// children were deleted and the parent kept serving.
pub const SPLIT_ROLLED_BACK: &str = "SplitRolledBack";
/// A merge was undone: the merged cell did not become ready in time.
pub const MERGE_ROLLED_BACK: &str = "MergeRolledBack";
/// Sessions moved from one cell to others (a split, merge or roll-out).
pub const SESSIONS_HANDED_OVER: &str = "SessionsHandedOver";
/// A cell died before handing its sessions over; its last reported players are
/// lost.
pub const SESSIONS_LOST: &str = "SessionsLost";
/// Left-over cells no transition needs were retired.
pub const CELLS_CLEANED_UP: &str = "CellsCleanedUp";
/// The startup self-check found permissions beyond the documented set (Warning,
/// on the operator's own Pod).
pub const EXCESS_PERMISSIONS: &str = "ExcessPermissions";
/// The spec cannot be planned; the field is named in the note.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// A reconcile of the world failed and is retried with backoff (Warning, once
/// per kind of failure in a row; the kind is named in the note).
pub const RECONCILE_FAILED: &str = "ReconcileFailed";
/// A manual override (force-split / force-merge) was acted on.
pub const OVERRIDE_APPLIED: &str = "OverrideApplied";
/// A manual override can never be done as asked and was removed.
pub const OVERRIDE_REJECTED: &str = "OverrideRejected";

/// Longest note this module writes: the API server accepts 1024 bytes, and the
/// controller appends the reconcile's correlation id (about 36 more).
const MAX_NOTE: usize = 960;

/// The reason recorded when `transition` starts.
pub fn started_reason(transition: &Transition) -> &'static str {
    match transition.kind {
        TransitionKind::Initialize => WORLD_INITIALIZED,
        TransitionKind::Repartition => WORLD_REPARTITIONED,
        TransitionKind::Split => CELL_SPLIT,
        TransitionKind::Merge => CELL_MERGED,
        TransitionKind::Replace | TransitionKind::Fill => CELL_REPLACED,
        TransitionKind::Rollout => CELL_ROLLED_OUT,
        TransitionKind::Drain => CELL_DRAINED,
        TransitionKind::RollBack => match transition.undoes {
            Some(TransitionKind::Split) => SPLIT_ROLLED_BACK,
            Some(TransitionKind::Merge) => MERGE_ROLLED_BACK,
            _ => TRANSITION_ROLLED_BACK,
        },
        TransitionKind::Cleanup => CELLS_CLEANED_UP,
    }
}

/// An Event: `reason`, a note cut to what the API server accepts, and the action
/// in the operator's words.
pub fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    let note = if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &note[..end])
    } else {
        note
    };
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let e = event(EventType::Normal, CELL_CREATED, "Create", "é".repeat(1000));
        let note = e.note.unwrap();
        assert!(note.len() <= MAX_NOTE && note.ends_with("..."), "{}", note.len());
    }

    #[test]
    fn every_transition_kind_has_its_own_reason_except_fill_and_replace() {
        use TransitionKind::*;
        let t = |kind, undoes| Transition {
            kind,
            undoes,
            continues: false,
            reason: String::new(),
            actions: Vec::new(),
        };
        let transitions = [
            t(Initialize, None),
            t(Fill, None),
            t(Split, None),
            t(Merge, None),
            t(Replace, None),
            t(Rollout, None),
            t(Repartition, None),
            t(RollBack, None),
            t(RollBack, Some(Split)),
            t(RollBack, Some(Merge)),
            t(Cleanup, None),
        ];
        let reasons: std::collections::BTreeSet<_> = transitions.iter().map(started_reason).collect();
        assert_eq!(reasons.len(), transitions.len() - 1);
        assert_eq!(started_reason(&t(RollBack, Some(Split))), SPLIT_ROLLED_BACK);
    }
}
