//! `cargo xtask k8s`: builds the local control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok) from the pinned wrapper Go modules in
//! `xtask/k8s/` into a cache outside the repository, and reuses it when nothing changed.
//!
//! Layout of the cache (`$FLEETFORGE_CACHE`, else `$HOME/.cache/fleetforge`):
//! `k8s-<version>/bin/` (the binaries), `k8s-<version>/kwok-stages/` (the kwok stage
//! YAMLs, so tests need no Go module cache) and `k8s-<version>/stamps/` (one stamp per
//! component: a hash of its go.mod, go.sum, build flags and Go version).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use sha2::{Digest as _, Sha256};

/// kwok's stage files that the test clusters load, relative to the kwok module root.
/// `kustomize/stage/fast` lists exactly these (node fast + heartbeat with lease + pod
/// fast); the chaos stages are left out because node-initialize would undo them.
const KWOK_STAGES: &[&str] = &[
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
];

/// One Go build: a wrapper module and the binaries it produces.
struct Component {
    /// Name used for the stamp and in progress messages.
    name: &'static str,
    /// Directory of the wrapper module under `xtask/k8s/`.
    module_dir: &'static str,
    /// Packages to build (`.` for the wrapper's own main package).
    packages: &'static [&'static str],
    /// Binaries the build leaves in `bin/`.
    outputs: &'static [&'static str],
    /// Whether the Kubernetes build tags and version ldflags apply.
    kubernetes: bool,
}

const COMPONENTS: &[Component] = &[
    Component {
        name: "etcd",
        module_dir: "etcd",
        packages: &["."],
        outputs: &["etcd"],
        kubernetes: false,
    },
    Component {
        name: "kwok",
        module_dir: "kwok",
        packages: &["sigs.k8s.io/kwok/cmd/kwok"],
        outputs: &["kwok"],
        kubernetes: false,
    },
    Component {
        name: "kubernetes",
        module_dir: "kubernetes",
        packages: &[
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
        ],
        outputs: &["kube-apiserver", "kube-controller-manager", "kube-scheduler"],
        kubernetes: true,
    },
];

/// Builds what is missing or stale, then prints where the cache is (or, with
/// `print_dir`, only the bin directory on stdout; progress always goes to stderr).
pub fn run(root: &Path, print_dir: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let wrappers = root.join("xtask/k8s");
    let version = kubernetes_version(&wrappers.join("kubernetes/go.mod"))?;
    let cache = cache_dir(&version)?;
    let bin = cache.join("bin");
    fs::create_dir_all(cache.join("stamps")).with_context(|| format!("creating {}", cache.display()))?;
    fs::create_dir_all(&bin)?;

    // Two concurrent runs (say, CI jobs sharing a cache) would build the same binaries
    // twice on two cores and race on the outputs; the second one waits and then reuses.
    let lock = fs::File::create(cache.join(".lock"))?;
    lock.lock().context("locking the control-plane cache")?;

    let go_version = go_version()?;
    for component in COMPONENTS {
        check_go_is_new_enough(&go_version, &wrappers.join(component.module_dir).join("go.mod"))?;
    }
    let mut built = Vec::new();
    for component in COMPONENTS {
        let dir = wrappers.join(component.module_dir);
        let flags = build_args(component, &version, &bin);
        let stamp = stamp_for(&dir, &flags, &go_version)?;
        let stamp_path = cache.join("stamps").join(component.name);
        let fresh = fs::read_to_string(&stamp_path).is_ok_and(|s| s.trim() == stamp)
            && component.outputs.iter().all(|o| bin.join(o).is_file())
            && (component.name != "kwok" || stages_present(&cache));
        if fresh {
            continue;
        }
        // A half-written stamp must never vouch for a half-built binary.
        let _ = fs::remove_file(&stamp_path);
        build(component, &dir, &flags)?;
        if component.kubernetes {
            for output in component.outputs {
                verify_version(&bin.join(output), &version)?;
            }
        }
        if component.name == "kwok" {
            copy_kwok_stages(&dir, &cache)?;
        }
        fs::write(&stamp_path, format!("{stamp}\n"))?;
        built.push(component.name);
    }

    if print_dir {
        println!("{}", bin.display());
    } else {
        if built.is_empty() {
            println!(
                "control plane {version} is up to date ({:.2?})",
                started.elapsed()
            );
        } else {
            println!("built {} in {:.0?}", built.join(", "), started.elapsed());
        }
        println!("cache: {}", cache.display());
        println!("binaries: {}", bin.display());
    }
    Ok(())
}

/// The Kubernetes version pinned by the wrapper module: the cache key.
fn kubernetes_version(go_mod: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(go_mod).with_context(|| format!("reading {}", go_mod.display()))?;
    text.lines()
        .map(str::trim)
        .map(|l| l.strip_prefix("require ").unwrap_or(l))
        .find_map(|l| l.strip_prefix("k8s.io/kubernetes "))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
        .filter(|v| v.starts_with('v'))
        .with_context(|| {
            format!(
                "no `k8s.io/kubernetes vX.Y.Z` requirement in {}",
                go_mod.display()
            )
        })
}

/// `$FLEETFORGE_CACHE/k8s-<version>`, else `$HOME/.cache/fleetforge/k8s-<version>`;
/// fleetforge-testenv resolves the same path.
fn cache_dir(version: &str) -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("FLEETFORGE_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").context("neither FLEETFORGE_CACHE nor HOME is set")?;
            PathBuf::from(home).join(".cache/fleetforge")
        }
    };
    Ok(base.join(format!("k8s-{version}")))
}

fn go_version() -> anyhow::Result<String> {
    let out = Command::new("go")
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run `go` ({e}): the control plane is built from Go modules, so install \
                 Go (the version named by the `go` line in xtask/k8s/*/go.mod or newer) and put \
                 it on PATH"
            )
        })?;
    ensure!(
        out.status.success(),
        "`go version` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// With `GOTOOLCHAIN=local` Go will not fetch a newer toolchain, so a Go older than
/// a wrapper's `go` line fails; say so up front rather than after minutes of download.
fn check_go_is_new_enough(go_version: &str, go_mod: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(go_mod).with_context(|| format!("reading {}", go_mod.display()))?;
    let Some(required) = text.lines().find_map(|l| l.trim().strip_prefix("go ")) else {
        return Ok(());
    };
    // `go version go1.26.8 linux/amd64`
    let have = go_version
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .trim_start_matches("go");
    ensure!(
        version_parts(have) >= version_parts(required),
        "{} needs Go {required} or newer, but `go version` says {go_version:?}: install a newer Go",
        go_mod.display()
    );
    Ok(())
}

fn version_parts(v: &str) -> Vec<u32> {
    // A pre-release (`1.26rc1`) counts as below its release: stop at the first letter.
    let v = v
        .split(|c: char| c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0))
        .take(3)
        .collect()
}

/// The `go build` arguments; part of the stamp, so a change of flags rebuilds.
fn build_args(component: &Component, version: &str, bin: &Path) -> Vec<String> {
    let mut args = vec!["build".to_owned(), "-trimpath".to_owned()];
    let mut ldflags = String::from("-s -w");
    if component.kubernetes {
        args.push("-tags=selinux,notest".to_owned());
        let (major, minor) = major_minor(version);
        for pkg in ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"] {
            ldflags.push_str(&format!(
                " -X {pkg}.gitVersion={version} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} \
                 -X {pkg}.gitTreeState=clean -X {pkg}.gitCommit=0000000000000000000000000000000000000000 \
                 -X {pkg}.buildDate=1970-01-01T00:00:00Z"
            ));
        }
    }
    args.push("-ldflags".to_owned());
    args.push(ldflags);
    args.push("-o".to_owned());
    if let [only] = component.outputs {
        args.push(bin.join(only).display().to_string());
    } else {
        // With several packages `-o` must name a directory, with the trailing slash.
        args.push(format!("{}/", bin.display()));
    }
    args.extend(component.packages.iter().map(|p| (*p).to_owned()));
    args
}

fn major_minor(version: &str) -> (String, String) {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("0").to_owned();
    let minor = parts.next().unwrap_or("0").to_owned();
    (major, minor)
}

fn stamp_for(dir: &Path, args: &[String], go_version: &str) -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    for file in ["go.mod", "go.sum"] {
        let path = dir.join(file);
        hash.update(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        hash.update([0]);
    }
    for arg in args {
        hash.update(arg.as_bytes());
        hash.update([0]);
    }
    hash.update(go_version.as_bytes());
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The environment every Go command here runs with: the wrapper's go.mod is the whole
/// truth (no workspace, no toolchain download), static binaries, and a module cache
/// that `rm -rf` can clean.
fn go_command(dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-modcacherw");
    cmd
}

fn build(component: &Component, dir: &Path, args: &[String]) -> anyhow::Result<()> {
    let what = component.outputs.join(", ");
    let hint = if component.kubernetes {
        " (about 15 min cold on 2 cores)"
    } else {
        ""
    };
    eprintln!("[xtask k8s] building {what} from {}{hint}", dir.display());
    let started = Instant::now();

    // CI has no TTY and kills jobs that stay silent; a heartbeat shows the build lives.
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = Arc::clone(&done);
        let what = what.clone();
        thread::spawn(move || {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(30) {
                    last = Instant::now();
                    eprintln!("[xtask k8s]   still building {what} ({:.0?})", started.elapsed());
                }
            }
        })
    };
    let output = go_command(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `go build`")
        .and_then(|child| child.wait_with_output().context("waiting for `go build`"));
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    let output = output?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Go prints "go: downloading ..." lines here: useful progress on a cold cache.
    let _ = std::io::stderr().write_all(stderr.as_bytes());
    if !output.status.success() {
        bail!(
            "`go {}` in {} failed ({})",
            args.join(" "),
            dir.display(),
            output.status
        );
    }
    eprintln!("[xtask k8s] built {what} in {:.0?}", started.elapsed());
    Ok(())
}

fn verify_version(binary: &Path, version: &str) -> anyhow::Result<()> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.trim() == format!("Kubernetes {version}"),
        "{} --version printed {:?}, expected `Kubernetes {version}`: the version ldflags did not apply",
        binary.display(),
        text.trim()
    );
    Ok(())
}

fn stages_present(cache: &Path) -> bool {
    KWOK_STAGES
        .iter()
        .all(|s| cache.join("kwok-stages").join(stage_file_name(s)).is_file())
}

fn stage_file_name(stage: &str) -> &str {
    stage.rsplit('/').next().unwrap_or(stage)
}

/// Copies kwok's stage YAMLs out of the Go module cache, at exactly the version the
/// kwok wrapper pins, so tests need neither Go nor the module cache.
fn copy_kwok_stages(kwok_dir: &Path, cache: &Path) -> anyhow::Result<()> {
    let out = go_command(kwok_dir)
        .args(["mod", "download", "-json", "sigs.k8s.io/kwok"])
        .stderr(Stdio::inherit())
        .output()
        .context("running `go mod download sigs.k8s.io/kwok`")?;
    ensure!(
        out.status.success(),
        "`go mod download -json sigs.k8s.io/kwok` failed"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `go mod download -json`")?;
    let module = info["Dir"]
        .as_str()
        .context("`go mod download -json` gave no Dir for sigs.k8s.io/kwok")?;
    let dest = cache.join("kwok-stages");
    fs::create_dir_all(&dest)?;
    for stage in KWOK_STAGES {
        let from = Path::new(module).join(stage);
        fs::copy(&from, dest.join(stage_file_name(stage)))
            .with_context(|| format!("copying kwok stage {}", from.display()))?;
    }
    eprintln!(
        "[xtask k8s] copied {} kwok stages ({}) to {}",
        KWOK_STAGES.len(),
        info["Version"].as_str().unwrap_or("?"),
        dest.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_kubernetes_version() -> anyhow::Result<()> {
        let go_mod = workspace_go_mod();
        let version = kubernetes_version(&go_mod)?;
        assert!(version.starts_with("v1."), "{version}");
        Ok(())
    }

    #[test]
    fn kubernetes_flags_carry_the_version() {
        let args = build_args(&COMPONENTS[2], "v1.37.2", Path::new("/cache/bin"));
        let ld = args
            .iter()
            .find(|a| a.contains("gitVersion"))
            .map(String::as_str)
            .unwrap_or("");
        assert!(ld.contains("k8s.io/component-base/version.gitVersion=v1.37.2"));
        assert!(ld.contains("k8s.io/client-go/pkg/version.gitMinor=37"));
        assert!(args.contains(&"/cache/bin/".to_owned()));
        assert!(args.contains(&"-tags=selinux,notest".to_owned()));
    }

    #[test]
    fn go_version_comparison() {
        assert!(version_parts("1.26.8") >= version_parts("1.26.0"));
        assert!(version_parts("1.27") >= version_parts("1.26.0"));
        assert!(version_parts("1.25.9") < version_parts("1.26.0"));
        assert!(version_parts("1.26rc1") < version_parts("1.26.0"));
    }

    fn workspace_go_mod() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/kubernetes/go.mod")
    }
}
