//! Carrying a plan out: each transition's actions in order, stopping a transition
//! at a hand-over whose targets are not ready yet (the next reconcile resumes it
//! from what it observes).
//!
//! The executor writes cell Pods only (create, activate, retire); the hand-over
//! itself is the cells room's, and what is told about it is [`report`]'s.

use fleetforge_core::plan::{Action as PlanAction, Plan, Target, Transition, TransitionKind};
use fleetforge_core::{Bounds, CellRef, Health, Observed, ObservedCell, Role, Timestamp, World};
use fleetforge_crd::WorldSpec;
use fleetforge_crd::keys::{
    ANNOTATION_ACTIVE_SINCE, ANNOTATION_EPOCH, ANNOTATION_ROLE, FIELD_MANAGER, encode_epoch, encode_role,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tracing::{debug, info};

use crate::cells::handover::{self, Destination, Source};
use crate::mapping::cell_pod::desired_pod;
use crate::mapping::observe::mark;
use crate::reconcile::context::Context;
use crate::reconcile::report;
use crate::runtime::error::Error;
use crate::runtime::expectations::Expected;

/// What executing a plan left for later.
#[derive(Debug, Default)]
pub struct Progress {
    /// A step waits for something the API server will report (a Pod to finish
    /// terminating, hand-over targets to become ready).
    pub waiting: bool,
}

/// Executes one world's plan; records every write in the world's expectations.
pub struct Executor<'a> {
    ctx: &'a Context,
    ws: &'a WorldSpec,
    world: &'a World,
    observed: &'a Observed,
    pods: &'a [Pod],
    now: Timestamp,
    /// The highest mark among the world's cell Pods and the stamps this executor
    /// wrote: the next activation is stamped above it ([`next_epoch`]).
    highest_mark: Option<u64>,
    expected: &'a mut Expected,
    namespace: String,
    world_name: String,
    progress: Progress,
}

impl<'a> Executor<'a> {
    /// An executor for `ws` (converted to `world`), whose cells were observed as
    /// `observed` from `pods`, at `now`.
    pub fn new(
        ctx: &'a Context,
        ws: &'a WorldSpec,
        world: &'a World,
        observed: &'a Observed,
        pods: &'a [Pod],
        now: Timestamp,
        expected: &'a mut Expected,
    ) -> Self {
        Self {
            ctx,
            ws,
            world,
            observed,
            pods,
            now,
            highest_mark: pods.iter().filter_map(mark).max(),
            expected,
            namespace: ws.namespace().unwrap_or_default(),
            world_name: ws.name_any(),
            progress: Progress::default(),
        }
    }

    /// The layout epoch to stamp on a cell this reconcile activates now. Raising
    /// the floor with it makes the next activation of the same reconcile, even
    /// within the same millisecond, come out higher still.
    fn stamp(&mut self) -> u64 {
        let stamp = next_epoch(self.now, self.highest_mark);
        self.highest_mark = Some(stamp);
        stamp
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.kube.client.clone(), &self.namespace)
    }

    fn pod_named(&self, name: &str) -> Option<&'a Pod> {
        self.pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }

    /// Whether a hand-over target is ready and is the process the plan means: a
    /// cell of that name with other bounds (its name taken by a process the plan
    /// did not see) must not receive sessions that are not in its space.
    fn is_ready_target(&self, target: &Target) -> bool {
        self.observed_cell(&target.cell)
            .is_some_and(|c| c.health == Health::Ready && c.bounds == target.bounds)
    }

    fn observed_cell(&self, cell: &CellRef) -> Option<&'a ObservedCell> {
        self.observed.cells.iter().find(|c| &c.cell == cell)
    }

    /// The Pod IP of a cell's process, if it has one yet.
    fn pod_ip(&self, cell: &CellRef) -> Option<&'a str> {
        self.pod_named(&cell.process_name(&self.world_name))?
            .status
            .as_ref()?
            .pod_ip
            .as_deref()
            .filter(|ip| !ip.is_empty())
    }

    /// Runs every transition of `plan`. Creations that follow one another run
    /// concurrently.
    pub async fn run(mut self, plan: &Plan) -> Result<Progress, Error> {
        for transition in &plan.transitions {
            self.run_transition(transition).await?;
        }
        Ok(self.progress)
    }

    async fn run_transition(&mut self, transition: &Transition) -> Result<(), Error> {
        // A roll-back is planned from what it finds (it "continues" what went
        // wrong) until its cells are gone: it is told once, when it deletes them.
        let rolls_back = transition.kind == TransitionKind::RollBack;
        if !transition.continues && !rolls_back {
            self.started(transition).await;
        }
        // Whole-world transitions are told by their one Event; per-cell Events
        // would bury it.
        let per_cell_events = !matches!(
            transition.kind,
            TransitionKind::Initialize | TransitionKind::Repartition | TransitionKind::Cleanup
        );
        let mut creates = Vec::new();
        let mut handed_over: Option<&[Target]> = None;
        let mut retired = false;
        for action in &transition.actions {
            if let PlanAction::Create { cell, bounds, active } = action {
                creates.push((cell, bounds, *active));
                continue;
            }
            self.create(&creates, per_cell_events).await?;
            creates.clear();
            match action {
                PlanAction::HandOver { from, to } => {
                    if !to.iter().all(|t| self.is_ready_target(t)) || !self.hand_over(from, to).await {
                        self.progress.waiting = true;
                        return Ok(());
                    }
                    for target in to {
                        self.activate(transition, &target.cell).await?;
                    }
                    handed_over = Some(to);
                }
                PlanAction::Retire { cell } => retired |= self.retire(cell, per_cell_events).await?,
                PlanAction::Create { .. } => {}
            }
        }
        self.create(&creates, per_cell_events).await?;
        if retired && let Some(targets) = handed_over {
            self.completed(transition.kind, targets);
        }
        if retired && rolls_back {
            self.started(transition).await;
        }
        Ok(())
    }

    /// Counts, logs and records the Event of a transition that begins.
    async fn started(&self, transition: &Transition) {
        report::transition_started(self.ctx, self.ws, &self.world_name, transition).await;
    }

    /// Records a split or merge whose old cells are now retired.
    fn completed(&self, kind: TransitionKind, targets: &[Target]) {
        let started = self
            .observed
            .history
            .iter()
            .filter(|r| r.cells.iter().any(|id| targets.iter().any(|t| &t.cell.id == id)))
            .map(|r| r.at)
            .max();
        report::transition_completed(kind, started, self.now);
    }

    /// Moves every session of the `from` cells to the `to` cells that own their
    /// positions (see [`handover`]). Returns `false` when it cannot complete now:
    /// the sources keep serving and the next reconcile asks again.
    async fn hand_over(&mut self, from: &[CellRef], to: &[Target]) -> bool {
        let Some(client) = self.ctx.cells.client.as_ref() else {
            // Cells that do not speak the contract hold nothing to move.
            return true;
        };
        let sources: Vec<Source<'_>> = from
            .iter()
            .filter_map(|cell| {
                let observed = self.observed_cell(cell)?;
                Some(Source {
                    cell,
                    health: observed.health,
                    ip: self.pod_ip(cell),
                })
            })
            .collect();
        let targets: Vec<Destination<'_>> = to
            .iter()
            .map(|t| Destination {
                cell: &t.cell,
                bounds: t.bounds,
                ip: self.pod_ip(&t.cell),
            })
            .collect();
        let tokens = self.ctx.cells.world_tokens(self.ws);
        let outcome = handover::hand_over(client, &tokens, &sources, &targets).await;
        for exported in &outcome.exported {
            report::handed_over(self.ctx, self.ws, exported, to).await;
        }
        outcome.complete
    }

    /// Creates the Pods of `creates` by server-side apply.
    async fn create(
        &mut self,
        creates: &[(&CellRef, &Bounds, bool)],
        per_cell_events: bool,
    ) -> Result<(), Error> {
        if creates.is_empty() {
            return Ok(());
        }
        let mut desired = Vec::with_capacity(creates.len());
        for (cell, bounds, active) in creates {
            let name = cell.process_name(&self.world_name);
            if let Some(old) = self.pod_named(&name) {
                // The name of a Pod still terminating: applying now would only
                // touch the dying Pod. Its deletion wakes the world again.
                debug!(pod = %name, terminating = old.metadata.deletion_timestamp.is_some(), "cell Pod name still taken");
                self.progress.waiting = true;
                continue;
            }
            let (role, epoch) = self.created_role(*active);
            let pod = desired_pod(self.ws, self.world, cell, bounds, role, epoch)?;
            desired.push((name, pod));
        }
        // Expected before the calls: one that fails after the server acted still
        // shows up in the cache.
        self.expected
            .created
            .extend(desired.iter().map(|(name, _)| name.clone()));
        let api = self.pods_api();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let namespace = &self.namespace;
        let created: Vec<String> = futures::stream::iter(desired)
            .map(|(name, pod)| {
                let (api, params) = (api.clone(), params.clone());
                async move {
                    api.patch(&name, &params, &Patch::Apply(&pod))
                        .await
                        .map(|_| name.clone())
                        .map_err(|e| Error::api("apply", format!("pod {namespace}/{name}"), e))
                }
            })
            .buffer_unordered(self.ctx.timing.create_concurrency.max(1))
            .try_collect()
            .await?;
        report::cells_created(self.ctx, self.ws, &created, per_cell_events).await;
        Ok(())
    }

    /// The role and stamp of a cell created now: one created active is activated
    /// by its creation and is stamped like any other activation.
    fn created_role(&mut self, active: bool) -> (Role, Option<u64>) {
        if active {
            (Role::Active { since: self.now }, Some(self.stamp()))
        } else {
            (Role::Incoming, None)
        }
    }

    /// Hands `cell` its space: the role annotations of its Pod change to active,
    /// with a fresh stamp (a re-activation too: it changes who owns the space).
    ///
    /// Only the annotations are patched. A Pod's spec cannot change once it runs,
    /// and the cell may have been created under an older spec (a split started
    /// before an image change, say): re-applying the whole Pod could only be
    /// refused or restart the cell.
    async fn activate(&mut self, transition: &Transition, cell: &CellRef) -> Result<(), Error> {
        let name = cell.process_name(&self.world_name);
        if self.pod_named(&name).is_none() {
            return Ok(());
        }
        let (role, since) = encode_role(Role::Active { since: self.now });
        let epoch = self.stamp();
        let patch = json!({"metadata": {"annotations": {
            ANNOTATION_ROLE: role,
            ANNOTATION_ACTIVE_SINCE: since,
            ANNOTATION_EPOCH: encode_epoch(epoch),
        }}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.pods_api()
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::api("patch", format!("pod {}/{name}", self.namespace), e))?;
        self.expected.activated.insert(name.clone(), epoch);
        info!(pod = %name, kind = %transition.kind, epoch, "cell took over its space");
        Ok(())
    }

    /// Deletes the Pod of `cell`, if it is still the incarnation the plan means.
    /// Returns whether this call deleted it.
    async fn retire(&mut self, cell: &CellRef, per_cell_event: bool) -> Result<bool, Error> {
        let name = cell.process_name(&self.world_name);
        let Some(live) = self.pod_named(&name) else {
            return Ok(false);
        };
        self.account_lost(cell, live).await;
        if live.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let uid = live.metadata.uid.clone().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pods_api().delete(&name, &params).await {
            Ok(_) => {
                self.expected.deleted.insert(name.clone(), uid);
            }
            // Gone already, or replaced by a Pod of the same name: nothing to retire.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(false),
            Err(e) => return Err(Error::api("delete", format!("pod {}/{name}", self.namespace), e)),
        }
        report::cell_retired(self.ctx, self.ws, &name, per_cell_event).await;
        Ok(true)
    }

    /// Counts the sessions of a cell that died while serving: the players it last
    /// reported, once per process.
    async fn account_lost(&self, cell: &CellRef, live: &Pod) {
        let Some(observed) = self.observed_cell(cell) else {
            return;
        };
        if observed.health != Health::Failed || !observed.is_active() {
            return;
        }
        let uid = live.metadata.uid.as_deref().unwrap_or_default();
        if let Some(lost) = self.ctx.cells.samples.take_lost(uid).filter(|&n| n > 0) {
            report::sessions_lost(self.ctx, self.ws, cell, lost).await;
        }
    }
}

/// The layout epoch to stamp on a cell activated at `now`, given the marks of the
/// world's cells (`marks`, the stamps of earlier activations of the same reconcile
/// among them): `max(now in ms, highest mark + 1)`.
///
/// Above every mark, so the cell wins every point it covers in the gateway's
/// directory and the world's epoch grows even when activations share a
/// millisecond; and never below `now`, so stamps stay on the scale of activation
/// times, which unstamped cells are marked by. A mark of `u64::MAX`, which no
/// clock reaches, can only be tied.
fn next_epoch(now: Timestamp, marks: impl IntoIterator<Item = u64>) -> u64 {
    let above = marks.into_iter().max().map_or(0, |m| m.saturating_add(1));
    above.max(now.as_millis())
}

#[cfg(test)]
mod tests {
    use super::next_epoch;
    use fleetforge_core::Timestamp;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn a_stamp_is_now_unless_a_mark_reaches_it() {
        assert_eq!(next_epoch(Timestamp(NOW), []), NOW);
        assert_eq!(next_epoch(Timestamp(NOW), [NOW - 5, 3]), NOW);
        assert_eq!(next_epoch(Timestamp(NOW), [NOW - 1]), NOW);
        assert_eq!(next_epoch(Timestamp(NOW), [NOW]), NOW + 1);
        // A clock behind the world's marks (another operator's, before a restart).
        assert_eq!(next_epoch(Timestamp(NOW), [NOW + 40, NOW - 2]), NOW + 41);
        assert_eq!(next_epoch(Timestamp(0), []), 0);
        assert_eq!(next_epoch(Timestamp(NOW), [u64::MAX]), u64::MAX);
    }

    /// A small deterministic generator (xorshift), so the property below covers
    /// many cases without a dependency.
    fn numbers(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn stamps_exceed_every_mark_reach_now_and_grow_within_a_reconcile() {
        let mut next = numbers(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            // Marks and clocks near one another, so ties and clocks behind the
            // marks come up often.
            let base = NOW + next() % 1_000;
            let near = |n: &mut dyn FnMut() -> u64| base - 20 + n() % 40;
            let now = Timestamp(near(&mut next));
            let marks: Vec<u64> = (0..next() % 6).map(|_| near(&mut next)).collect();
            // One reconcile activating several cells in the same millisecond.
            let mut highest = marks.iter().copied().max();
            let mut last = None;
            for _ in 0..1 + next() % 4 {
                let stamp = next_epoch(now, highest);
                assert!(marks.iter().all(|&m| stamp > m), "{stamp} vs {marks:?}");
                assert!(stamp >= now.as_millis(), "{stamp} before {now:?}");
                assert!(last.is_none_or(|l| stamp > l), "{stamp} after {last:?}");
                assert_eq!(
                    stamp,
                    next_epoch(now, marks.iter().copied().chain(last)),
                    "the floor stands for every mark and earlier stamp"
                );
                highest = Some(stamp);
                last = Some(stamp);
            }
        }
    }
}
