//! The world's shared bearer token, read from a Secret volume.
//!
//! The Secret rotates: the kubelet swaps the files in place, and during a
//! rotation the old token stays valid in `previous` so that cells which have not
//! seen the new one yet can still talk to those that have. The files are read
//! again on every check, so a rotation takes effect without a restart. Without a
//! readable, non-empty token nothing is accepted: the cell is never open by
//! default.

use std::path::{Path, PathBuf};

/// File holding the current token.
pub const CURRENT: &str = fleetforge_core::contract::TOKEN_FILE;
/// File holding the token before the last rotation, while it is still accepted.
pub const PREVIOUS: &str = fleetforge_core::contract::PREVIOUS_TOKEN_FILE;

/// Where the tokens are mounted.
#[derive(Debug, Clone)]
pub struct TokenDir {
    dir: Option<PathBuf>,
}

impl TokenDir {
    /// Tokens in `dir`; `None` accepts nothing.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The current token, to present to other cells.
    pub async fn current(&self) -> Option<String> {
        read_token(self.dir.as_deref()?, CURRENT).await
    }

    /// Whether `header` (the value of `Authorization`) carries an accepted token.
    pub async fn accepts(&self, header: Option<&[u8]>) -> bool {
        let (Some(dir), Some(presented)) = (self.dir.as_deref(), header.and_then(bearer)) else {
            return false;
        };
        let current = read_token(dir, CURRENT).await;
        let previous = read_token(dir, PREVIOUS).await;
        // Both are compared whatever the first gives, so the time taken does not
        // tell which one matched.
        let a = current.is_some_and(|t| constant_time_eq(t.as_bytes(), presented));
        let b = previous.is_some_and(|t| constant_time_eq(t.as_bytes(), presented));
        a | b
    }
}

/// A token file's content without surrounding whitespace (Secrets written by
/// hand often end in a newline); `None` when missing, unreadable or empty.
async fn read_token(dir: &Path, file: &str) -> Option<String> {
    let text = tokio::fs::read_to_string(dir.join(file)).await.ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme is
/// case-insensitive (RFC 9110); anything else is no token.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() <= SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = header[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `a` and `b` are equal, taking time that depends only on their
/// lengths, so an attacker cannot find the token byte by byte from response
/// times. A length difference is folded into the result rather than returned
/// early.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    // Keeps the optimiser from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret2"));
        assert!(!constant_time_eq(b"s3cret", b""));
        // A prefix padded with the zeros the loop compares against is still shorter.
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn bearer_takes_the_token_of_the_bearer_scheme_only() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b""), None);
    }

    #[tokio::test]
    async fn either_mounted_token_is_accepted_and_a_missing_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = TokenDir::new(Some(dir.path().to_owned()));
        assert!(!tokens.accepts(Some(b"Bearer anything")).await);
        std::fs::write(dir.path().join(CURRENT), "new\n").unwrap();
        std::fs::write(dir.path().join(PREVIOUS), "old").unwrap();
        assert!(tokens.accepts(Some(b"Bearer new")).await);
        assert!(tokens.accepts(Some(b"Bearer old")).await);
        assert!(!tokens.accepts(Some(b"Bearer other")).await);
        assert!(!tokens.accepts(None).await);
        assert_eq!(tokens.current().await.as_deref(), Some("new"));
        // An empty token file must not make the empty string a password.
        std::fs::write(dir.path().join(CURRENT), "\n").unwrap();
        std::fs::remove_file(dir.path().join(PREVIOUS)).unwrap();
        assert!(!tokens.accepts(Some(b"Bearer ")).await);
        assert!(!TokenDir::new(None).accepts(Some(b"Bearer new")).await);
    }
}
