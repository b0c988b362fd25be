//! The command line: every flag can also come from an environment variable, so a
//! Deployment configures the operator without rewriting its arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fleetforge_obs::LogFormat;

use crate::cells::sampling::SamplingConfig;

/// FleetForge operator: runs elastic game worlds (WorldSpecs) as cell Pods.
///
/// Watches WorldSpecs, creates and retires their cell Pods and headless Services,
/// splits hot cells and merges cold ones, and reports status and Events. Several
/// replicas may run: they elect a leader through a Lease and only the leader acts.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleetforge-operator", version, about, long_about)]
pub struct Cli {
    /// Kubeconfig file to use. Without it: in-cluster configuration, else
    /// $KUBECONFIG, else ~/.kube/config.
    #[arg(long, env = "FLEETFORGE_KUBECONFIG", value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: the file's current context).
    #[arg(long, env = "FLEETFORGE_CONTEXT", value_name = "NAME", global = true)]
    pub context: Option<String>,

    /// Namespaces to watch, comma-separated. Empty: all namespaces (needs
    /// cluster-wide read access to WorldSpecs, Pods and Services).
    #[arg(
        long,
        env = "FLEETFORGE_NAMESPACES",
        value_delimiter = ',',
        value_name = "NS,..."
    )]
    pub namespaces: Vec<String>,

    /// Worlds reconciled at once (per watched namespace).
    #[arg(long, env = "FLEETFORGE_CONCURRENCY", default_value_t = 8, value_name = "N")]
    pub concurrency: u16,

    /// Seconds after which a steady world is reconciled again even if nothing
    /// changed (a no-op: it writes nothing).
    #[arg(
        long,
        env = "FLEETFORGE_RESYNC_SECONDS",
        default_value_t = 300.0,
        value_name = "SECONDS"
    )]
    pub resync_seconds: f64,

    /// Seconds after which a world with work in progress is looked at again.
    #[arg(
        long,
        env = "FLEETFORGE_BUSY_REQUEUE_SECONDS",
        default_value_t = 2.0,
        value_name = "SECONDS"
    )]
    pub busy_requeue_seconds: f64,

    /// Elect a leader through a Lease; only the leader reconciles. Turn off only
    /// when exactly one instance runs.
    #[arg(long, env = "FLEETFORGE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "FLEETFORGE_LEASE_NAME",
        default_value = "fleetforge-operator",
        value_name = "NAME"
    )]
    pub lease_name: String,

    /// Namespace of the Lease: the operator's own. Default: the namespace it runs
    /// in (in a cluster), else `fleetforge-system`.
    #[arg(long, env = "FLEETFORGE_LEASE_NAMESPACE", value_name = "NS")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader that stopped renewing keeps the Lease (the takeover time
    /// when a leader dies without releasing it).
    #[arg(
        long,
        env = "FLEETFORGE_LEASE_DURATION_SECONDS",
        default_value_t = 15.0,
        value_name = "SECONDS"
    )]
    pub lease_duration_seconds: f64,

    /// Seconds a leader keeps trying to renew before it gives up and exits. Must
    /// be shorter than the lease duration.
    #[arg(
        long,
        env = "FLEETFORGE_RENEW_DEADLINE_SECONDS",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub renew_deadline_seconds: f64,

    /// Seconds between renewals (leader) and attempts (standby).
    #[arg(
        long,
        env = "FLEETFORGE_RETRY_PERIOD_SECONDS",
        default_value_t = 2.0,
        value_name = "SECONDS"
    )]
    pub retry_period_seconds: f64,

    /// This instance's identity in the Lease and in Events. Default: the Pod name
    /// ($POD_NAME), else the host name and process id.
    #[arg(long, env = "FLEETFORGE_IDENTITY", value_name = "ID")]
    pub identity: Option<String>,

    /// Address of the admin HTTP server (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "FLEETFORGE_ADMIN_ADDR",
        default_value = "0.0.0.0:8081",
        value_name = "ADDR"
    )]
    pub admin_addr: SocketAddr,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "FLEETFORGE_LOG_FORMAT", default_value_t = LogFormat::Json, value_name = "FORMAT", global = true)]
    pub log_format: LogFormat,

    /// Log filter, such as `info` or `fleetforge_operator=debug,kube=warn`.
    #[arg(
        long,
        env = "FLEETFORGE_LOG",
        default_value = "info",
        value_name = "FILTER",
        global = true
    )]
    pub log: String,

    /// Base address of an OpenTelemetry OTLP/HTTP receiver (such as
    /// `http://otel-collector.observability:4318`) to export traces of reconciles,
    /// plans, hand-overs and load sampling to. Unset: no traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Cells speak the cell contract: sample their load, and hand their sessions
    /// over on every split, merge and replacement. Turn off only for cell images
    /// that do not serve it; their health then comes from their Pods alone and no
    /// scaling happens on load.
    #[arg(long, env = "FLEETFORGE_CELL_CONTRACT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cell_contract: bool,

    /// Seconds between two load samples of every cell.
    #[arg(
        long,
        env = "FLEETFORGE_SAMPLE_INTERVAL_SECONDS",
        default_value_t = 1.0,
        value_name = "SECONDS"
    )]
    pub sample_interval_seconds: f64,

    /// Seconds one load sample may take before the cell counts as silent.
    #[arg(
        long,
        env = "FLEETFORGE_SAMPLE_TIMEOUT_SECONDS",
        default_value_t = 0.8,
        value_name = "SECONDS"
    )]
    pub sample_timeout_seconds: f64,

    /// Cells sampled at once.
    #[arg(
        long,
        env = "FLEETFORGE_SAMPLE_CONCURRENCY",
        default_value_t = 64,
        value_name = "N"
    )]
    pub sample_concurrency: u16,

    /// Seconds a cell that answered before may stay silent before it counts as
    /// dead and is replaced (its node died, its process hung).
    #[arg(
        long,
        env = "FLEETFORGE_DEAD_CELL_SECONDS",
        default_value_t = 5.0,
        value_name = "SECONDS"
    )]
    pub dead_cell_seconds: f64,

    /// Directory of the master key the worlds' cell tokens are derived from (a
    /// mounted Secret with `key` and, during a rotation, `previous-key`). Without
    /// it a random key is used, which changes with every restart and replica:
    /// for development only.
    #[arg(long, env = "FLEETFORGE_CELL_TOKEN_KEY_DIR", value_name = "DIR")]
    pub cell_token_key_dir: Option<PathBuf>,

    /// A one-off task instead of running the operator.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off tasks run with the same kubeconfig flags as the operator.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Writes every WorldSpec, with its namespace's labels and the layout of its
    /// cells, to one file.
    Backup(BackupArgs),
    /// Applies a backup: creates the namespaces that are missing and applies every
    /// world with its layout, which the running operator then rebuilds.
    Restore(RestoreArgs),
}

/// Arguments of `backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// File to write; `-` for standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,

    /// Namespaces to back up, comma-separated or repeated. Default: all.
    #[arg(long = "namespace", short = 'n', value_delimiter = ',', value_name = "NS")]
    pub namespaces: Vec<String>,
}

/// Arguments of `restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Backup file to apply; `-` for standard input.
    #[arg(long, short, value_name = "FILE")]
    pub input: PathBuf,

    /// Let the API server check every write without keeping any.
    #[arg(long)]
    pub dry_run: bool,

    /// Wait up to this many seconds for every restored world to be Ready with its
    /// layout's cells (0: do not wait). Fails when some are not.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub wait_seconds: f64,
}

/// Which namespaces the operator watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs cluster-wide list/watch).
    All,
    /// Only these (a Role in each is enough).
    Namespaces(Vec<String>),
}

impl Scope {
    /// The namespaces to watch, `None` standing for all of them.
    pub fn namespaces(&self) -> Vec<Option<String>> {
        match self {
            Scope::All => vec![None],
            Scope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
        }
    }
}

/// A flag's value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {problem}")]
pub struct FlagError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// `seconds` as a duration, or why not.
pub fn seconds(flag: &'static str, seconds: f64) -> Result<Duration, FlagError> {
    if seconds.is_finite() && seconds > 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(FlagError {
            flag,
            problem: format!("must be a positive number of seconds, got {seconds}"),
        })
    }
}

impl Cli {
    /// How cells are sampled, `None` when they do not speak the cell contract.
    /// Call after [`Cli::validate`].
    pub fn sampling(&self) -> Option<SamplingConfig> {
        self.cell_contract.then(|| SamplingConfig {
            interval: Duration::from_secs_f64(self.sample_interval_seconds),
            timeout: Duration::from_secs_f64(self.sample_timeout_seconds),
            concurrency: usize::from(self.sample_concurrency),
            dead_after: Duration::from_secs_f64(self.dead_cell_seconds),
        })
    }

    /// The namespaces to watch.
    pub fn scope(&self) -> Scope {
        let list: Vec<String> = self
            .namespaces
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            Scope::All
        } else {
            Scope::Namespaces(list)
        }
    }

    /// Checks what clap cannot: positive durations, and a renew deadline inside
    /// the lease duration.
    pub fn validate(&self) -> Result<(), FlagError> {
        seconds("resync-seconds", self.resync_seconds)?;
        seconds("busy-requeue-seconds", self.busy_requeue_seconds)?;
        let lease = seconds("lease-duration-seconds", self.lease_duration_seconds)?;
        let renew = seconds("renew-deadline-seconds", self.renew_deadline_seconds)?;
        let retry = seconds("retry-period-seconds", self.retry_period_seconds)?;
        if renew >= lease {
            return Err(FlagError {
                flag: "renew-deadline-seconds",
                problem: format!("must be shorter than --lease-duration-seconds ({lease:?}), got {renew:?}"),
            });
        }
        if retry >= renew {
            return Err(FlagError {
                flag: "retry-period-seconds",
                problem: format!("must be shorter than --renew-deadline-seconds ({renew:?}), got {retry:?}"),
            });
        }
        let interval = seconds("sample-interval-seconds", self.sample_interval_seconds)?;
        let timeout = seconds("sample-timeout-seconds", self.sample_timeout_seconds)?;
        let dead = seconds("dead-cell-seconds", self.dead_cell_seconds)?;
        if self.cell_contract && dead <= interval.max(timeout) {
            return Err(FlagError {
                flag: "dead-cell-seconds",
                problem: format!(
                    "must be longer than --sample-interval-seconds and --sample-timeout-seconds, got {dead:?}"
                ),
            });
        }
        if self.sample_concurrency == 0 {
            return Err(FlagError {
                flag: "sample-concurrency",
                problem: "must be at least 1".to_owned(),
            });
        }
        if self.concurrency == 0 {
            return Err(FlagError {
                flag: "concurrency",
                problem: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_watch_every_namespace_and_elect_a_leader() {
        let cli = Cli::try_parse_from(["fleetforge-operator"]).unwrap();
        assert_eq!(cli.scope(), Scope::All);
        assert!(cli.leader_elect);
        cli.validate().unwrap();
        let sampling = cli.sampling().expect("cells speak the contract by default");
        assert!(sampling.dead_after > sampling.interval);
        let off = Cli::try_parse_from(["fleetforge-operator", "--cell-contract", "false"]).unwrap();
        assert!(off.sampling().is_none());
    }

    #[test]
    fn namespaces_are_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["fleetforge-operator", "--namespaces", "games, arena,"]).unwrap();
        assert_eq!(
            cli.scope(),
            Scope::Namespaces(vec!["games".into(), "arena".into()])
        );
    }

    #[test]
    fn a_renew_deadline_past_the_lease_duration_is_refused_by_name() {
        let cli = Cli::try_parse_from([
            "fleetforge-operator",
            "--lease-duration-seconds",
            "5",
            "--renew-deadline-seconds",
            "6",
        ])
        .unwrap();
        let err = cli.validate().unwrap_err();
        assert_eq!(err.flag, "renew-deadline-seconds");
        let cli = Cli::try_parse_from(["fleetforge-operator", "--dead-cell-seconds", "0.5"]).unwrap();
        assert_eq!(cli.validate().unwrap_err().flag, "dead-cell-seconds");
        let err = seconds("resync-seconds", -1.0).unwrap_err();
        assert!(err.to_string().starts_with("--resync-seconds:"), "{err}");
    }

    #[test]
    fn backup_and_restore_take_the_global_kubeconfig_flags() {
        let cli = Cli::try_parse_from([
            "fleetforge-operator",
            "backup",
            "--kubeconfig",
            "admin.yaml",
            "-o",
            "-",
            "-n",
            "games,arena",
        ])
        .unwrap();
        assert_eq!(
            cli.kubeconfig.as_deref(),
            Some(std::path::Path::new("admin.yaml"))
        );
        match cli.command {
            Some(Command::Backup(args)) => {
                assert_eq!(args.output, PathBuf::from("-"));
                assert_eq!(args.namespaces, vec!["games", "arena"]);
            }
            other => panic!("expected backup, got {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["fleetforge-operator", "restore", "-i", "b.yaml", "--dry-run"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Restore(RestoreArgs { dry_run: true, .. }))
        ));
        assert!(
            Cli::try_parse_from(["fleetforge-operator", "restore"]).is_err(),
            "--input is required"
        );
    }

    #[test]
    fn an_unknown_log_format_is_refused() {
        let err = Cli::try_parse_from(["fleetforge-operator", "--log-format", "xml"]).unwrap_err();
        assert!(err.to_string().contains("unknown log format"), "{err}");
    }
}
