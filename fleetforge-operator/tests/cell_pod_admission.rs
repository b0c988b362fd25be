//! The cell Pod and headless Service as a real API server admits them: PodSecurity
//! `restricted` enforced on the namespace, and the Pod read back from the server
//! observed as the cell it was built for.

mod common;

use anyhow::{Context as _, bail, ensure};
use common::sample_world;
use fleetforge_core::{Action, Health, Observed, Role, Timestamp, plan};
use fleetforge_crd::{WorldSpec, to_world};
use fleetforge_operator::cells::tokens::TokenKeys;
use fleetforge_operator::mapping::cell_pod::{desired_pod, desired_service, desired_token_secret};
use fleetforge_operator::mapping::observe::observed_cell;
use fleetforge_testenv::{Profile, TestEnv};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, PostParams};

#[tokio::test]
async fn cell_pod_and_service_are_admitted_under_restricted_pod_security() -> anyhow::Result<()> {
    let env = TestEnv::shared(Profile::ApiServer).await?;
    let client = env.client().await?;
    let ns = env.create_restricted_namespace("cell-pod-restricted").await?;

    // The sample world, created in the test's namespace.
    let ws = sample_world(&ns, "meadow")?;
    let worlds: Api<WorldSpec> = Api::namespaced(client.clone(), &ns);
    let ws = worlds.create(&PostParams::default(), &ws).await?;
    let world = to_world(&ws)?;

    // The first cell the planner creates for it.
    let now = Timestamp::from_millis(1_700_000_000_000);
    let first = plan(&world, &Observed::default(), now);
    let Some((cell, bounds, active)) = first.actions().find_map(|a| match a {
        Action::Create { cell, bounds, active } => Some((cell.clone(), *bounds, *active)),
        _ => None,
    }) else {
        bail!("the plan of a new world creates no cell: {first:?}");
    };
    let role = if active {
        Role::Active { since: now }
    } else {
        Role::Incoming
    };
    // An active cell carries its layout epoch; the first one in a world is `now`.
    let epoch = active.then_some(now.as_millis());
    let desired = desired_pod(&ws, &world, &cell, &bounds, role, epoch)?;
    // The token Secret the Pod mounts; only its name is in the Pod spec.
    let tokens = TokenKeys::ephemeral()?
        .world_tokens(ws.metadata.uid.as_deref().unwrap_or_default())
        .0;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &desired_token_secret(&ws, &tokens.current, tokens.previous.as_deref())?,
        )
        .await?;
    let spec_json = serde_json::to_string(&desired.spec)?;
    ensure!(
        !spec_json.contains(&tokens.current),
        "the token leaked into the Pod spec"
    );

    // Admitted (a PodSecurity violation is a 403 on create), and observed back as
    // the same cell. No scheduler runs in this profile, so it stays Pending.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created = pods.create(&PostParams::default(), &desired).await?;
    let name = created.metadata.name.clone().context("created pod has no name")?;
    let read = pods.get(&name).await?;
    let observed = observed_cell(&read)?;
    assert_eq!(observed.cell, cell);
    assert_eq!(observed.bounds, bounds);
    assert_eq!(observed.layout, world.layout_key());
    assert_eq!(observed.revision, world.revision);
    assert_eq!(observed.role, role);
    assert_eq!(observed.health, Health::Starting);
    let owner = &read.metadata.owner_references.clone().unwrap_or_default();
    ensure!(
        owner.len() == 1 && Some(&owner[0].uid) == ws.metadata.uid.as_ref(),
        "owner references {owner:?}"
    );

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc = services
        .create(
            &PostParams::default(),
            &desired_service(&ws, &tokens.fingerprint())?,
        )
        .await?;
    let spec = svc.spec.context("service has no spec")?;
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.ports.unwrap_or_default()[0].port, 8080);

    // The check is live: the same Pod allowing privilege escalation is refused.
    let mut privileged = desired;
    privileged.metadata.name = Some(format!("{name}-privileged"));
    let container = privileged
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
        .context("desired pod has no container")?;
    if let Some(sc) = container.security_context.as_mut() {
        sc.allow_privilege_escalation = Some(true);
    }
    match pods.create(&PostParams::default(), &privileged).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("PodSecurity") && status.message.contains("allowPrivilegeEscalation"),
                "{}",
                status.message
            );
        }
        Err(e) => bail!("expected a PodSecurity rejection, got {e}"),
        Ok(_) => bail!("a pod allowing privilege escalation was admitted under enforce=restricted"),
    }
    Ok(())
}
