//! `cargo xtask demo`: FleetForge on an embedded default. Starts the local control
//! plane, installs the WorldSpec CRD, applies the sample worlds from
//! `examples/worlds/`, plans each one with `fleetforge-core` and prints the cells it
//! starts with, then keeps the control plane up for `kubectl` until Ctrl-C.

use std::path::Path;

use anyhow::Context;
use fleetforge_core::{Action, Observed, Timestamp, plan};
use fleetforge_crd::{WorldSpec, to_world};
use fleetforge_testenv::{Profile, TestEnv};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

/// The field manager the demo applies the samples with.
const MANAGER: &str = "fleetforge-demo";

/// Entry point of `cargo xtask demo`. With `exit`, stops after printing instead of
/// waiting for Ctrl-C.
pub fn run(root: &Path, exit: bool) -> anyhow::Result<()> {
    crate::k8s::run(root, false)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(demo(root, exit))
}

async fn demo(root: &Path, exit: bool) -> anyhow::Result<()> {
    println!("starting the local control plane (etcd + kube-apiserver, RBAC and PodSecurity on) ...");
    let env = TestEnv::start(Profile::ApiServer).await?;
    println!(
        "control plane up in {:.1}s at {}; the WorldSpec CRD is installed",
        env.startup_time().as_secs_f64(),
        env.server_url()
    );
    let client = env.client().await?;

    let dir = root.join("examples").join("worlds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in &files {
        let text = std::fs::read_to_string(path)?;
        let ws: WorldSpec = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not a WorldSpec", path.display()))?;
        let ns = ws.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = ws.metadata.name.clone().context("a sample world has no name")?;
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
        }))?;
        Api::<Namespace>::all(client.clone())
            .patch(&ns, &PatchParams::apply(MANAGER), &Patch::Apply(&namespace))
            .await?;
        Api::<WorldSpec>::namespaced(client.clone(), &ns)
            .patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(&ws))
            .await
            .with_context(|| format!("applying {}", path.display()))?;
        println!("applied {} ({ns}/{name})", path.display());
    }

    // Read the worlds back as the operator will, and plan them.
    let worlds = Api::<WorldSpec>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for ws in &worlds.items {
        let world = match to_world(ws) {
            Ok(w) => w,
            Err(e) => {
                println!(
                    "world {}: invalid: {e}",
                    ws.metadata.name.as_deref().unwrap_or("?")
                );
                continue;
            }
        };
        let p = plan(&world, &Observed::default(), Timestamp(0));
        println!(
            "\nworld {} ({}-D, {} cells, up to {}):",
            world.name,
            world.bounds.dims(),
            world.initial_cells,
            world.policy.max_cells
        );
        for action in p.actions() {
            if let Action::Create { cell, bounds, .. } = action {
                println!("  {:<24} {bounds}", cell.process_name(&world.name));
            }
        }
    }

    let kubeconfig = env.admin_kubeconfig().display().to_string();
    println!("\nkubeconfig: {kubeconfig}");
    println!("try: kubectl --kubeconfig {kubeconfig} get worldspecs -A");
    if exit {
        return Ok(());
    }
    println!("the control plane stays up until Ctrl-C");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    Ok(())
}
