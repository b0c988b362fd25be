//! Deterministic, Kubernetes-safe names.
//!
//! Names and label values hold at most 63 characters while a world's name may hold
//! 253, so long names are cut and given a stable hash of the full input. The hash
//! is FNV-1a: tiny, dependency-free and stable across releases and platforms, which
//! matters because names must be recomputed identically by every operator version.

/// Longest DNS-1123 label (and Kubernetes label value).
pub const MAX_LABEL_LEN: usize = 63;

/// Characters of hash appended to a shortened name.
const HASH_LEN: usize = 10;

/// A suffix longer than this is hashed too, so a shortened name keeps some prefix.
const MAX_KEPT_SUFFIX: usize = 40;

/// 64-bit FNV-1a of `bytes`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `HASH_LEN` base-36 digits of the stable hash of `s`.
fn hash_tag(s: &str) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut h = stable_hash(s.as_bytes());
    (0..HASH_LEN)
        .map(|_| {
            let d = DIGITS[(h % 36) as usize];
            h /= 36;
            d as char
        })
        .collect()
}

/// Lowercases and replaces every character a DNS-1123 label forbids with `-`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect()
}

/// Drops leading and trailing characters that may not start or end a label.
fn trim_edges(s: &str) -> &str {
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
}

/// Whether `s` is a valid DNS-1123 label: 1 to 63 characters of `[a-z0-9-]`,
/// starting and ending with an alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// Joins `prefix` and `suffix` with `-` into a DNS-1123 label.
///
/// When the joined name is valid as it is, it is returned unchanged. Otherwise the
/// prefix (and, if long, the suffix) is cut and a hash of the full input appended,
/// so distinct inputs keep distinct names and the same input always gives the same
/// name.
pub fn dns_label(prefix: &str, suffix: &str) -> String {
    let full = if prefix.is_empty() {
        suffix.to_owned()
    } else if suffix.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}-{suffix}")
    };
    if is_dns1123_label(&full) {
        return full;
    }
    let tag = hash_tag(&full);
    let suffix = sanitize(suffix);
    let suffix = trim_edges(&suffix);
    let kept_suffix = if suffix.len() <= MAX_KEPT_SUFFIX {
        suffix
    } else {
        ""
    };
    // Room for "<prefix>-<tag>[-<suffix>]".
    let reserved = HASH_LEN
        + 1
        + if kept_suffix.is_empty() {
            0
        } else {
            kept_suffix.len() + 1
        };
    let prefix = sanitize(prefix);
    let prefix = trim_edges(&prefix);
    let mut cut = &prefix[..prefix.len().min(MAX_LABEL_LEN - reserved)];
    cut = trim_edges(cut);
    let mut out = String::with_capacity(MAX_LABEL_LEN);
    if !cut.is_empty() {
        out.push_str(cut);
        out.push('-');
    }
    out.push_str(&tag);
    if !kept_suffix.is_empty() {
        out.push('-');
        out.push_str(kept_suffix);
    }
    out
}

/// A Kubernetes label value for `value`: unchanged when it already is a valid
/// label of at most 63 characters, otherwise shortened with a stable hash. Keep the
/// full value in an annotation beside it.
pub fn label_value(value: &str) -> String {
    dns_label(value, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_valid_names_are_kept() {
        assert_eq!(dns_label("arena", "c0-01"), "arena-c0-01");
        assert_eq!(label_value("arena"), "arena");
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let world = "a".repeat(200);
        let name = dns_label(&world, "c7-0101");
        assert!(is_dns1123_label(&name), "{name}");
        assert!(name.ends_with("-c7-0101"), "{name}");
        assert_eq!(name, dns_label(&world, "c7-0101"));
        assert_ne!(name, dns_label(&world, "c7-0100"));
    }

    #[test]
    fn invalid_characters_are_replaced_and_disambiguated() {
        let a = label_value("shard.eu.west");
        let b = label_value("shard-eu-west");
        assert!(is_dns1123_label(&a), "{a}");
        assert_eq!(b, "shard-eu-west");
        assert_ne!(a, b);
    }

    #[test]
    fn dns1123_check() {
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }
}
