//! Child processes that cannot outlive the test binary.
//!
//! Each component runs under a tiny `sh` supervisor whose stdin is a pipe from this
//! process. When the pipe closes — because [`Supervised`] was dropped, or because the
//! test binary exited or was killed and never ran any destructor (a `static` shared
//! environment, a panic=abort, SIGKILL) — the supervisor sends SIGTERM to the
//! component, then SIGKILL after a grace period. This needs no `unsafe` (no
//! `prctl(PR_SET_PDEATHSIG)` in `pre_exec`), which the workspace forbids.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The supervisor. fd 3 keeps the pipe, because a background list's stdin is
/// /dev/null in a non-interactive shell. The watcher ends the component when the pipe
/// reaches EOF; the supervisor exits with the component's status, so `try_wait` on it
/// tells whether the component died.
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" </dev/null &
c=$!
(
  read _ <&3
  kill -TERM "$c" 2>/dev/null
  i=0
  while kill -0 "$c" 2>/dev/null && [ "$i" -lt 20 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$c" 2>/dev/null
) &
w=$!
exec 3<&-
wait "$c"
st=$?
kill "$w" 2>/dev/null
exit "$st"
"#;

/// Removes the environment's directory once every supervisor listed in `pids` has
/// gone, so a `static` environment leaves no temp files behind either.
const JANITOR: &str = r#"
read _
for p in $(cat "$2" 2>/dev/null); do
  i=0
  while kill -0 "$p" 2>/dev/null && [ "$i" -lt 200 ]; do sleep 0.1; i=$((i+1)); done
done
[ -n "$3" ] || rm -rf "$1"
"#;

/// A running component.
pub(crate) struct Supervised {
    pub(crate) name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) log: PathBuf,
}

impl Supervised {
    /// Starts `program args…` with its output in `log` and extra environment `envs`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &Path)],
        log: PathBuf,
        pid_file: &Path,
    ) -> anyhow::Result<Supervised> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(SUPERVISOR).arg(name).arg(program).args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        append_pid(pid_file, child.id())?;
        let stdin = child.stdin.take();
        Ok(Supervised {
            name: name.to_owned(),
            child,
            stdin,
            log,
        })
    }

    /// `Some(status)` once the component has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks the supervisor to stop the component (non-blocking).
    pub(crate) fn signal_stop(&mut self) {
        self.stdin.take();
    }

    /// Waits for the supervisor to exit after [`Self::signal_stop`]; kills it if it
    /// takes far longer than its own grace period.
    pub(crate) fn wait_stopped(&mut self, deadline: Instant) {
        self.signal_stop();
        loop {
            if self.exited().is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the component's log, for error messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.wait_stopped(Instant::now() + Duration::from_secs(15));
    }
}

/// The janitor process for an environment directory.
pub(crate) struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Janitor {
    /// Starts a janitor that removes `dir` (unless `keep`) once the processes listed in
    /// `pid_file` are gone and this process has dropped it or exited.
    pub(crate) fn spawn(dir: &Path, pid_file: &Path, keep: bool) -> anyhow::Result<Janitor> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(JANITOR)
            .arg("fleetforge-testenv-janitor")
            .arg(dir)
            .arg(pid_file)
            .arg(if keep { "keep" } else { "" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the cleanup process (sh)")?;
        let stdin = child.stdin.take();
        Ok(Janitor { child, stdin })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

fn append_pid(pid_file: &Path, pid: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = fs::OpenOptions::new().create(true).append(true).open(pid_file)?;
    writeln!(f, "{pid}")?;
    Ok(())
}
