//! Carrying a plan out against the API server: each transition's actions in
//! order, stopping a transition at a hand-over whose targets are not ready yet
//! (the next reconcile resumes it from what it observes).

use fleetforge_core::plan::{Action as PlanAction, Plan, Transition, TransitionKind};
use fleetforge_core::{Bounds, CellRef, Health, Observed, Role, Timestamp, World};
use fleetforge_crd::WorldSpec;
use fleetforge_obs::metrics as m;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use tracing::{debug, info};

use crate::cell_pod::{desired_pod, keep_live_template};
use crate::controller::{Context, Error, FIELD_MANAGER, publish};
use crate::events::{self, event, started_reason};
use crate::expectations::Expected;

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
            expected,
            namespace: ws.namespace().unwrap_or_default(),
            world_name: ws.name_any(),
            progress: Progress::default(),
        }
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn pod_named(&self, name: &str) -> Option<&'a Pod> {
        self.pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }

    fn is_ready(&self, cell: &CellRef) -> bool {
        self.observed
            .cells
            .iter()
            .any(|c| &c.cell == cell && c.health == Health::Ready)
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
        if !transition.continues {
            info!(kind = %transition.kind, reason = %transition.reason, "transition started");
            metrics::counter!(m::TRANSITIONS, "kind" => transition.kind.to_string()).increment(1);
            let ev = event(
                EventType::Normal,
                started_reason(transition.kind),
                &transition.kind.to_string(),
                transition.reason.clone(),
            );
            publish(self.ctx, self.ws, ev).await;
        }
        // Whole-world transitions are told by their one Event; per-cell Events
        // would bury it.
        let per_cell_events = !matches!(
            transition.kind,
            TransitionKind::Initialize | TransitionKind::Repartition | TransitionKind::Cleanup
        );
        let mut creates = Vec::new();
        for action in &transition.actions {
            if let PlanAction::Create { cell, bounds, active } = action {
                creates.push((cell, bounds, *active));
                continue;
            }
            self.create(&creates, per_cell_events).await?;
            creates.clear();
            match action {
                PlanAction::HandOver { to, .. } => {
                    if !to.iter().all(|t| self.is_ready(&t.cell)) {
                        self.progress.waiting = true;
                        return Ok(());
                    }
                    for target in to {
                        self.activate(transition, &target.cell, &target.bounds).await?;
                    }
                }
                PlanAction::Retire { cell } => self.retire(cell, per_cell_events).await?,
                PlanAction::Create { .. } => {}
            }
        }
        self.create(&creates, per_cell_events).await
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
            let role = if *active {
                Role::Active { since: self.now }
            } else {
                Role::Incoming
            };
            let pod = desired_pod(self.ws, self.world, cell, bounds, role)?;
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Some(old) = self.pod_named(&name) {
                // The name of a Pod still terminating: applying now would only
                // touch the dying Pod. Its deletion wakes the world again.
                debug!(pod = %name, terminating = old.metadata.deletion_timestamp.is_some(), "cell Pod name still taken");
                self.progress.waiting = true;
                continue;
            }
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
        metrics::counter!(m::CELLS_CREATED).increment(created.len() as u64);
        for name in &created {
            info!(pod = %name, "cell created");
        }
        if per_cell_events && !created.is_empty() {
            let note = format!("created cell Pod {}", created.join(", "));
            publish(
                self.ctx,
                self.ws,
                event(EventType::Normal, events::CELL_CREATED, "Create", note),
            )
            .await;
        }
        Ok(())
    }

    /// Hands `cell` its space: its Pod is re-applied with role active, keeping
    /// the template it runs.
    async fn activate(
        &mut self,
        transition: &Transition,
        cell: &CellRef,
        bounds: &Bounds,
    ) -> Result<(), Error> {
        let desired = desired_pod(
            self.ws,
            self.world,
            cell,
            bounds,
            Role::Active { since: self.now },
        )?;
        let name = desired.metadata.name.clone().unwrap_or_default();
        let Some(live) = self.pod_named(&name) else {
            return Ok(());
        };
        let pod = keep_live_template(desired, live);
        self.pods_api()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&pod),
            )
            .await
            .map_err(|e| Error::api("apply", format!("pod {}/{name}", self.namespace), e))?;
        self.expected.activated.insert(name.clone());
        info!(pod = %name, kind = %transition.kind, "cell took over its space");
        Ok(())
    }

    /// Deletes the Pod of `cell`, if it is still the incarnation the plan means.
    async fn retire(&mut self, cell: &CellRef, per_cell_event: bool) -> Result<(), Error> {
        let name = cell.process_name(&self.world_name);
        let Some(live) = self.pod_named(&name) else {
            return Ok(());
        };
        if live.metadata.deletion_timestamp.is_some() {
            return Ok(());
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
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
            Err(e) => return Err(Error::api("delete", format!("pod {}/{name}", self.namespace), e)),
        }
        metrics::counter!(m::CELLS_RETIRED).increment(1);
        info!(pod = %name, "cell retired");
        if per_cell_event {
            let note = format!("retired cell Pod {name}");
            publish(
                self.ctx,
                self.ws,
                event(EventType::Normal, events::CELL_RETIRED, "Retire", note),
            )
            .await;
        }
        Ok(())
    }
}
