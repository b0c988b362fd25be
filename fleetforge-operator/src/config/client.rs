//! The API client the operator and its commands use: from the command line's
//! kubeconfig and context, with every request carrying the `Audit-ID` of the
//! reconcile that made it.

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::config::cli::Cli;
use crate::runtime::correlation;

/// The API client: from `--kubeconfig` (and `--context`) when given, else the
/// standard inference (in-cluster, `$KUBECONFIG`, `~/.kube/config`).
pub async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer()
            .await
            .context("finding a Kubernetes configuration")?,
    };
    let client = kube::client::ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&correlation::layer())
        .build();
    Ok(client)
}
