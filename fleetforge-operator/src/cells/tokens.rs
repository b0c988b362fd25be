//! The token that protects a world's cell endpoints (admin and hand-over).
//!
//! The operator never reads a Secret from the API server. It derives each world's
//! token from a master key mounted into its own Pod (an HMAC-SHA256 of the world's
//! UID), writes it into a per-world Secret that the world's cell Pods mount, and
//! presents it when it calls a cell. The Pod spec only names the Secret, and the
//! token never reaches a log: [`WorldTokens`] prints as `<redacted>`.
//!
//! Rotation without a restart: the key files are read again whenever they change
//! on disk (a kubelet swaps a mounted Secret's files atomically), so a new master
//! key yields new world tokens on the next reconcile, which applies them to the
//! world Secrets. While the kubelet has not yet refreshed a cell's copy, the cell
//! still holds the old token: the master key Secret keeps the old key as
//! `previous-key`, world Secrets carry both tokens, cells accept either, and the
//! operator retries a refused call with the previous token.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use fleetforge_core::naming::stable_hash;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

/// File of the current master key in the key directory.
pub const KEY_FILE: &str = "key";
/// File of the previous master key, kept during a rotation.
pub const PREVIOUS_KEY_FILE: &str = "previous-key";

/// Shortest master key accepted, in bytes: an HMAC-SHA256 key should carry at
/// least 128 bits of entropy.
const MIN_KEY_LEN: usize = 16;

/// Separates this use of the master key from any other.
const CONTEXT: &[u8] = b"fleetforge.io/cell-token/v1\0";

/// Why the master key could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cell token key {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file is too short to be a key.
    #[error("cell token key {path}: {len} bytes, at least {MIN_KEY_LEN} needed")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length after trimming whitespace.
        len: usize,
    },
    /// The system random generator failed (ephemeral key).
    #[error("cannot generate an ephemeral cell token key")]
    Random,
}

/// A world's tokens: the current one and, during a key rotation, the previous.
#[derive(Clone, PartialEq, Eq)]
pub struct WorldTokens {
    /// The token cells must accept and the operator presents first.
    pub current: String,
    /// The token of the previous master key, if one is kept.
    pub previous: Option<String>,
}

impl fmt::Debug for WorldTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorldTokens(<redacted>)")
    }
}

impl WorldTokens {
    /// A short, non-reversible digest of both tokens: written next to the world's
    /// objects so the operator can tell, without reading the Secret back, whether
    /// the Secret already holds these tokens.
    pub fn fingerprint(&self) -> String {
        let mut bytes = self.current.as_bytes().to_vec();
        bytes.push(0);
        bytes.extend(self.previous.as_deref().unwrap_or_default().as_bytes());
        format!("{:016x}", stable_hash(&bytes))
    }

    /// The tokens to present, in order.
    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current.as_str()).chain(self.previous.as_deref())
    }
}

/// Where master keys come from.
pub struct TokenKeys {
    source: Source,
}

enum Source {
    /// Files in a mounted Secret, re-read when they change.
    Dir { dir: PathBuf, loaded: Mutex<Loaded> },
    /// A key that lives as long as the process (development only).
    Ephemeral(Keys),
}

#[derive(Clone)]
struct Keys {
    current: hmac::Key,
    previous: Option<hmac::Key>,
}

struct Loaded {
    stamp: Vec<Option<(SystemTime, u64)>>,
    keys: Keys,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Dir { dir, .. } => write!(f, "TokenKeys(dir {})", dir.display()),
            Source::Ephemeral(_) => f.write_str("TokenKeys(ephemeral)"),
        }
    }
}

impl TokenKeys {
    /// Keys read from `dir` (a mounted Secret with [`KEY_FILE`] and optionally
    /// [`PREVIOUS_KEY_FILE`]). Fails naming the file when the key is missing or
    /// too short.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let dir = dir.into();
        let (stamp, keys) = read_keys(&dir)?;
        Ok(Self {
            source: Source::Dir {
                dir,
                loaded: Mutex::new(Loaded { stamp, keys }),
            },
        })
    }

    /// A random key held in memory only. Every restart, and every other replica,
    /// has another: for development, where no key Secret is mounted.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Self {
            source: Source::Ephemeral(Keys {
                current: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
                previous: None,
            }),
        })
    }

    /// Re-reads the key files if they changed since they were last read. Returns
    /// whether new keys were loaded: every world's tokens then change, and the
    /// caller wakes the worlds so that each writes its Secret now rather than at
    /// its next resync (a rotation must not wait minutes for a steady world).
    pub fn refresh(&self) -> Result<bool, KeyError> {
        let Source::Dir { dir, loaded } = &self.source else {
            return Ok(false);
        };
        let mut loaded = loaded.lock().unwrap_or_else(|p| p.into_inner());
        if stamps(dir) == loaded.stamp {
            return Ok(false);
        }
        let (stamp, keys) = read_keys(dir)?;
        *loaded = Loaded { stamp, keys };
        Ok(true)
    }

    /// The tokens of the world with `uid`, from the keys as they are on disk now.
    /// When the files changed and can no longer be read, the keys last read keep
    /// serving (and the error is returned alongside, to be reported).
    pub fn world_tokens(&self, uid: &str) -> (WorldTokens, Option<KeyError>) {
        let (keys, error) = match &self.source {
            Source::Ephemeral(keys) => (keys.clone(), None),
            Source::Dir { dir, loaded } => {
                let mut loaded = loaded.lock().unwrap_or_else(|p| p.into_inner());
                let mut error = None;
                if stamps(dir) != loaded.stamp {
                    match read_keys(dir) {
                        Ok((stamp, keys)) => *loaded = Loaded { stamp, keys },
                        Err(e) => error = Some(e),
                    }
                }
                (loaded.keys.clone(), error)
            }
        };
        let tokens = WorldTokens {
            current: derive(&keys.current, uid),
            previous: keys.previous.as_ref().map(|k| derive(k, uid)),
        };
        (tokens, error)
    }
}

fn derive(key: &hmac::Key, uid: &str) -> String {
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(uid.as_bytes());
    let tag = hmac::sign(key, &message);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn key_paths(dir: &Path) -> [PathBuf; 2] {
    [dir.join(KEY_FILE), dir.join(PREVIOUS_KEY_FILE)]
}

/// Modification time and length of each key file (following the symlinks a
/// Secret volume uses), `None` for a file that is absent.
fn stamps(dir: &Path) -> Vec<Option<(SystemTime, u64)>> {
    key_paths(dir)
        .iter()
        .map(|p| {
            fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn read_key(path: &Path) -> Result<hmac::Key, KeyError> {
    let bytes = fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let key = bytes.trim_ascii();
    if key.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort {
            path: path.to_owned(),
            len: key.len(),
        });
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, key))
}

type Stamped = (Vec<Option<(SystemTime, u64)>>, Keys);

fn read_keys(dir: &Path) -> Result<Stamped, KeyError> {
    let stamp = stamps(dir);
    let [current, previous] = key_paths(dir);
    let current = read_key(&current)?;
    let previous = if previous.exists() {
        Some(read_key(&previous)?)
    } else {
        None
    };
    Ok((stamp, Keys { current, previous }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, content: &str) {
        // A Secret volume replaces files, never edits them in place.
        let tmp = dir.join(format!(".{file}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, dir.join(file)).unwrap();
    }

    #[test]
    fn tokens_are_per_world_stable_and_follow_key_rotation() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), KEY_FILE, "first-master-key-0123456789\n");
        let keys = TokenKeys::from_dir(dir.path()).unwrap();

        let (a, err) = keys.world_tokens("uid-a");
        assert!(err.is_none());
        let (b, _) = keys.world_tokens("uid-b");
        assert_ne!(a.current, b.current, "each world has its own token");
        assert_eq!(a.current.len(), 64);
        assert_eq!(keys.world_tokens("uid-a").0, a, "the same world keeps its token");
        assert_eq!(a.previous, None);

        // Rotate: the new key becomes current, the old one previous. Make sure the
        // change is visible even on a filesystem with coarse timestamps.
        write(dir.path(), KEY_FILE, "second-master-key-0123456789-longer\n");
        write(dir.path(), PREVIOUS_KEY_FILE, "first-master-key-0123456789\n");
        let (rotated, err) = keys.world_tokens("uid-a");
        assert!(err.is_none());
        assert_ne!(rotated.current, a.current);
        assert_eq!(rotated.previous.as_deref(), Some(a.current.as_str()));
        assert_ne!(rotated.fingerprint(), a.fingerprint());
        assert_eq!(rotated.candidates().count(), 2);
    }

    #[test]
    fn a_short_or_missing_key_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = TokenKeys::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("key"), "{err}");
        write(dir.path(), KEY_FILE, "short");
        let err = TokenKeys::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("5 bytes"), "{err}");
    }

    #[test]
    fn a_broken_rotation_keeps_the_last_good_key() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), KEY_FILE, "first-master-key-0123456789");
        let keys = TokenKeys::from_dir(dir.path()).unwrap();
        let (good, _) = keys.world_tokens("w");
        write(dir.path(), KEY_FILE, "tiny");
        let (still, err) = keys.world_tokens("w");
        assert_eq!(still, good);
        assert!(matches!(err, Some(KeyError::TooShort { .. })));
    }

    #[test]
    fn tokens_never_print() {
        let keys = TokenKeys::ephemeral().unwrap();
        let (t, _) = keys.world_tokens("w");
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.current), "{shown}");
    }
}
