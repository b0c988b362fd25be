//! The reconcile's writes besides cell Pods: the world's token Secret and
//! headless Service, its PodDisruptionBudget, its status, and the annotation patches that settle override
//! requests and a restore layout. Each writes only when the cluster differs.

use fleetforge_core::plan::{OverrideRequest, OverrideResult, Plan};
use fleetforge_core::{Observed, World};
use fleetforge_crd::keys::{
    ANNOTATION_FORCE_MERGE, ANNOTATION_FORCE_SPLIT, ANNOTATION_RESTORE_LAYOUT, FIELD_MANAGER,
    annotation_pointer,
};
use fleetforge_crd::{WorldSpec, WorldSpecStatus};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::info;

use crate::mapping::budget::desired_budget;
use crate::mapping::cell_pod::{desired_service, desired_token_secret, token_secret_name};
use crate::mapping::diff::covers;
use crate::mapping::events::{self, event};
use crate::mapping::overrides::{removal_patch, requester, settled};
use crate::reconcile::audit;
use crate::reconcile::context::Context;
use crate::reconcile::report;
use crate::runtime::error::Error;
use crate::runtime::expectations::Expected;

/// Applies the world's PodDisruptionBudget when the cached one differs from what
/// its cell Pods call for ([`desired_budget`]): one cell at a time, at rest only.
pub async fn apply_budget(ctx: &Context, ws: &WorldSpec, pods: &[Pod]) -> Result<(), Error> {
    let desired = desired_budget(ws, pods)?;
    let namespace = desired.metadata.namespace.clone().unwrap_or_default();
    let name = desired.metadata.name.clone().unwrap_or_default();
    let live = ctx.kube.budgets.get(&ObjectRef::new(&name).within(&namespace));
    if let Some(live) = live
        && let (Ok(l), Ok(d)) = (serde_json::to_value(&*live), serde_json::to_value(&desired))
        && covers(&l, &d)
    {
        return Ok(());
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.kube.client.clone(), &namespace);
    budgets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|e| Error::api("apply", format!("poddisruptionbudget {namespace}/{name}"), e))?;
    info!(budget = %name, min_available = ?desired.spec.and_then(|s| s.min_available), "applied the world's PodDisruptionBudget");
    Ok(())
}

/// Applies the world's token Secret and headless Service when the Service is
/// missing or differs. The Service carries the fingerprint of the tokens, so a
/// new master key shows as a Service that differs: the Secret is written first,
/// then the Service records that it was. The operator never reads the Secret.
pub async fn apply_service_and_token(ctx: &Context, ws: &WorldSpec) -> Result<(), Error> {
    let tokens = ctx.cells.world_tokens(ws);
    let desired = desired_service(ws, &tokens.fingerprint())?;
    let namespace = desired.metadata.namespace.clone().unwrap_or_default();
    let name = desired.metadata.name.clone().unwrap_or_default();
    let live = ctx.kube.services.get(&ObjectRef::new(&name).within(&namespace));
    if let Some(live) = live
        && let (Ok(l), Ok(d)) = (serde_json::to_value(&*live), serde_json::to_value(&desired))
        && covers(&l, &d)
    {
        return Ok(());
    }
    let secret = desired_token_secret(ws, &tokens.current, tokens.previous.as_deref())?;
    let secret_name = token_secret_name(&ws.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.client.clone(), &namespace);
    secrets
        .patch(
            &secret_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| Error::api("apply", format!("secret {namespace}/{secret_name}"), e))?;
    info!(secret = %secret_name, "applied the world's cell token Secret");
    audit::record(
        ws,
        audit::Action::WriteToken,
        &[],
        &ctx.identity,
        &format!(
            "cell token Secret {secret_name} written (fingerprint {})",
            tokens.fingerprint()
        ),
    );
    let api: Api<Service> = Api::namespaced(ctx.kube.client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|e| Error::api("apply", format!("service {namespace}/{name}"), e))?;
    info!(service = %name, "applied the world's headless Service");
    Ok(())
}

/// Applies `status` to the world's status subresource unless it already has it.
/// Returns whether it wrote.
pub async fn apply_status(
    ctx: &Context,
    ws: &WorldSpec,
    status: &WorldSpecStatus,
    expected: &mut Expected,
) -> Result<bool, Error> {
    let desired = serde_json::to_value(status).unwrap_or_default();
    let live = ws.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
    if live.as_ref() == Some(&desired) {
        return Ok(false);
    }
    let namespace = ws.namespace().unwrap_or_default();
    let name = ws.name_any();
    let api: Api<WorldSpec> = Api::namespaced(ctx.kube.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": WorldSpec::api_version(&()),
        "kind": WorldSpec::kind(&()),
        "status": desired,
    });
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::api("apply", format!("worldspec {namespace}/{name} status"), e))?;
    expected.wrote_world(
        ws.metadata.resource_version.as_deref(),
        written.metadata.resource_version.as_deref(),
    );
    Ok(true)
}

/// Applies a JSON patch of the world's annotations (one whose `test` operations
/// guard what the plan saw).
pub async fn patch_annotations(
    ctx: &Context,
    ws: &WorldSpec,
    patch: Value,
    expected: &mut Expected,
) -> Result<(), Error> {
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap_or_default();
    let namespace = ws.namespace().unwrap_or_default();
    let name = ws.name_any();
    let api: Api<WorldSpec> = Api::namespaced(ctx.kube.client.clone(), &namespace);
    let written = api
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(|e| Error::api("patch", format!("worldspec {namespace}/{name} annotations"), e))?;
    expected.wrote_world(
        ws.metadata.resource_version.as_deref(),
        written.metadata.resource_version.as_deref(),
    );
    Ok(())
}

/// Removes the restore layout once the world has cells of its partition: from
/// then on it only matters if every cell vanished, and a layout that old should
/// not come back.
pub async fn settle_restore_layout(
    ctx: &Context,
    ws: &WorldSpec,
    world: &World,
    observed: &Observed,
    expected: &mut Expected,
) -> Result<(), Error> {
    let Some(value) = ws.annotations().get(ANNOTATION_RESTORE_LAYOUT) else {
        return Ok(());
    };
    let key = world.layout_key();
    if !observed.cells.iter().any(|c| c.layout == key) {
        return Ok(());
    }
    let path = annotation_pointer(ANNOTATION_RESTORE_LAYOUT);
    let patch = json!([
        {"op": "test", "path": path, "value": value},
        {"op": "remove", "path": path},
    ]);
    patch_annotations(ctx, ws, patch, expected).await?;
    info!(
        cells = world.overrides.restore_layout.len(),
        "restore layout in place; annotation removed"
    );
    Ok(())
}

/// Removes the override requests the plan is done with from the world's
/// annotations and records an Event naming who asked.
pub async fn settle_overrides(
    ctx: &Context,
    ws: &WorldSpec,
    plan: &Plan,
    expected: &mut Expected,
) -> Result<(), Error> {
    let done = settled(&plan.overrides);
    let Some(patch) = removal_patch(ws, &done) else {
        return Ok(());
    };
    patch_annotations(ctx, ws, patch, expected).await?;
    for outcome in done {
        let (key, what) = match &outcome.request {
            OverrideRequest::Split(id) => (ANNOTATION_FORCE_SPLIT, format!("force-split of {id}")),
            OverrideRequest::Merge(id) => (ANNOTATION_FORCE_MERGE, format!("force-merge into {id}")),
        };
        let who = requester(ws, key).unwrap_or_else(|| "an unknown field manager".to_owned());
        let ev = match &outcome.result {
            OverrideResult::Rejected(why) => event(
                EventType::Warning,
                events::OVERRIDE_REJECTED,
                "Override",
                format!("{what} requested by {who} rejected: {why}"),
            ),
            _ => event(
                EventType::Normal,
                events::OVERRIDE_APPLIED,
                "Override",
                format!("{what} requested by {who} started"),
            ),
        };
        info!(requester = %who, "{}", ev.note.as_deref().unwrap_or_default());
        audit::record(
            ws,
            audit::Action::Override,
            &[],
            &ctx.identity,
            &format!("{what} requested by field manager {who}: {:?}", outcome.result),
        );
        report::publish(ctx, ws, ev).await;
    }
    Ok(())
}
