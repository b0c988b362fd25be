//! The command line and environment: the operator configures a cell Pod only
//! through environment variables, so every flag also reads one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fleetforge_core::Bounds;
use fleetforge_core::contract::{self, env};
use fleetforge_crd::keys::decode_bounds;
use fleetforge_obs::LogFormat;

/// FleetForge cell simulator: an example game server serving one cell of a world.
///
/// Holds simulated player sessions, reports its load to the operator and hands
/// its sessions over to other cells when asked, as a real game server would.
#[derive(Debug, Clone, Parser)]
#[command(name = "cell-sim", version, about, long_about)]
pub struct Args {
    /// Address to bind: the Pod's IP, so the cell is reached where the operator
    /// expects it.
    #[arg(long, env = env::POD_IP, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED), value_name = "IP")]
    pub pod_ip: IpAddr,

    /// Port of the cell contract (health, load, hand-over, metrics).
    #[arg(
        long,
        env = env::HTTP_PORT,
        default_value_t = contract::HTTP_PORT,
        value_name = "PORT"
    )]
    pub http_port: u16,

    /// Name of the world the cell belongs to.
    #[arg(long, env = env::WORLD, value_name = "NAME")]
    pub world: Option<String>,

    /// Id of the cell (for example `c3-01`).
    #[arg(long, env = env::CELL_ID, value_name = "ID")]
    pub cell_id: Option<String>,

    /// Incarnation of the cell: 0 for its first process.
    #[arg(
        long,
        env = env::INCARNATION,
        default_value_t = 0,
        value_name = "N"
    )]
    pub cell_incarnation: u32,

    /// Name of the Pod, the prefix of every session id this process creates.
    /// Default: `<cell>-<incarnation>`.
    #[arg(long, env = env::POD_NAME, value_name = "NAME")]
    pub pod_name: Option<String>,

    /// The cell's space, as the JSON of the operator's bounds annotation:
    /// `{"x":{"min":0,"max":500},"y":{"min":0,"max":500}}`.
    #[arg(long, env = env::BOUNDS, value_name = "JSON")]
    pub cell_bounds: Option<String>,

    /// Players the cell is sized for.
    #[arg(
        long,
        env = env::CAPACITY,
        default_value_t = 100,
        value_name = "N"
    )]
    pub cell_capacity: u32,

    /// Directory holding the world's shared token in file `token` (and, during a
    /// rotation, the one before it in `previous`), as a Secret volume mounts them.
    /// Without it every authenticated endpoint answers 401.
    #[arg(long, env = env::TOKEN_DIR, value_name = "DIR")]
    pub token_dir: Option<PathBuf>,

    /// Seconds to wait after SIGTERM for the cell's sessions to be handed over
    /// before shutting down anyway.
    #[arg(
        long,
        env = "FLEETFORGE_DRAIN_TIMEOUT_SECONDS",
        default_value_t = 25.0,
        value_name = "SECONDS"
    )]
    pub drain_timeout_seconds: f64,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "FLEETFORGE_LOG_FORMAT", default_value_t = LogFormat::Json, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Log filter, such as `info` or `cell_sim=debug`.
    #[arg(long, env = "FLEETFORGE_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,
}

/// A setting that cannot be used, named by its environment variable because that
/// is how the operator sets it.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable (the flag has the same meaning).
    pub variable: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// The validated settings the simulator runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to serve.
    pub listen: SocketAddr,
    /// The world's name.
    pub world: String,
    /// The cell's id.
    pub cell_id: String,
    /// The cell's incarnation.
    pub incarnation: u32,
    /// Prefix of session ids.
    pub pod_name: String,
    /// The cell's space.
    pub bounds: Bounds,
    /// Players the cell is sized for.
    pub capacity: u32,
    /// Where the shared token is mounted, if anywhere.
    pub token_dir: Option<PathBuf>,
    /// How long a drain may take.
    pub drain_timeout: Duration,
}

impl Args {
    /// Checks what clap cannot and builds the configuration.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        // Checked here rather than by clap, whose message names only the flag
        // while the operator sets the variable.
        let required = |variable: &'static str, value: Option<String>| match value {
            Some(v) if !v.trim().is_empty() => Ok(v),
            Some(_) => Err(ConfigError {
                variable,
                problem: "must not be empty".to_owned(),
            }),
            None => Err(ConfigError {
                variable,
                problem: "required (or its flag)".to_owned(),
            }),
        };
        let world = required(env::WORLD, self.world)?;
        let cell_id = required(env::CELL_ID, self.cell_id)?;
        let raw_bounds = required(env::BOUNDS, self.cell_bounds)?;
        let bounds = decode_bounds(&raw_bounds).map_err(|e| ConfigError {
            variable: env::BOUNDS,
            // The annotation error names the annotation key, which means nothing
            // to whoever set the variable; keep only the problem.
            problem: format!("not valid bounds JSON ({}): {raw_bounds:?}", e.problem),
        })?;
        let pod_name = match self.pod_name {
            None => format!("{cell_id}-{}", self.cell_incarnation),
            name => required(env::POD_NAME, name)?,
        };
        let secs = self.drain_timeout_seconds;
        if !(0.0..=86_400.0).contains(&secs) {
            return Err(ConfigError {
                variable: "FLEETFORGE_DRAIN_TIMEOUT_SECONDS",
                problem: format!("must be a number of seconds between 0 and 86400, got {secs}"),
            });
        }
        Ok(Config {
            listen: SocketAddr::new(self.pod_ip, self.http_port),
            world,
            cell_id,
            incarnation: self.cell_incarnation,
            pod_name,
            bounds,
            capacity: self.cell_capacity,
            token_dir: self.token_dir,
            drain_timeout: Duration::from_secs_f64(secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec![
            "cell-sim",
            "--world",
            "meadow",
            "--cell-id",
            "c3",
            "--cell-incarnation",
            "2",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_fill_the_pod_name_and_address() {
        let c = args(&["--cell-bounds", r#"{"x":{"min":0,"max":10}}"#])
            .into_config()
            .unwrap();
        assert_eq!(c.pod_name, "c3-2");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.capacity, 100);
        assert_eq!(c.drain_timeout, Duration::from_secs(25));
        assert_eq!(c.bounds.dims(), 1);
    }

    #[test]
    fn bad_bounds_name_the_variable() {
        let e = args(&[]).into_config().unwrap_err();
        assert_eq!(e.to_string(), "FLEETFORGE_CELL_BOUNDS: required (or its flag)");
        let e = args(&["--cell-bounds", r#"{"x":{"min":5,"max":1}}"#])
            .into_config()
            .unwrap_err();
        assert_eq!(e.variable, "FLEETFORGE_CELL_BOUNDS");
        assert!(e.to_string().starts_with("FLEETFORGE_CELL_BOUNDS: "), "{e}");
        let e = args(&[
            "--cell-bounds",
            r#"{"x":{"min":0,"max":1}}"#,
            "--drain-timeout-seconds=-1",
        ])
        .into_config()
        .unwrap_err();
        assert_eq!(e.variable, "FLEETFORGE_DRAIN_TIMEOUT_SECONDS");
    }
}
