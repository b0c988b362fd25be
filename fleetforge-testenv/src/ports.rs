//! A port for a server that must be told its port before it starts and cannot be
//! handed a bound listener.
//!
//! Where a server can, the harness avoids choosing ports at all: etcd serves its
//! clients on a unix socket and its (unused) peer listener on port 0, and the
//! controller-manager and scheduler serve nothing (`--secure-port=0`). That leaves
//! kube-apiserver: it refuses `--secure-port=0` ("It cannot be turned off with
//! 0"), has no flag to inherit a listening socket (its `Listener` option exists
//! only for Go programs embedding it), and serves only TCP. So its port is
//! chosen here, the server is started on it, and a start that fails with
//! "address already in use" is tried again on another ([`is_port_clash`]).
//!
//! Binding port 0, reading the port and closing the socket (the usual trick) is
//! not done: the port then lies in the kernel's ephemeral range, where the next
//! `bind(:0)` or outgoing connection of any process, the control plane's own
//! clients included, may take it before the server binds it. A [`candidate`] lies
//! below that range, where only a server asking for that very port can hold it.

use std::hash::{BuildHasher as _, RandomState};

/// Lowest port handed out: above the well-known and most registered service ports.
const LOWEST: u16 = 10_000;
/// Start of Linux's default ephemeral range, when the kernel's cannot be read.
const DEFAULT_EPHEMERAL_START: u16 = 32_768;

/// A port to try, picked at random in `[10000, start of the ephemeral range)`. A
/// server may already listen on it: start, and on [`is_port_clash`] pick again.
pub(crate) fn candidate() -> u16 {
    let high = ephemeral_start();
    // An ephemeral range starting lower leaves no port free of it: take the
    // registered range and rely on the retry.
    let high = if high > LOWEST + 1_000 { high } else { u16::MAX };
    // A fresh `RandomState` is seeded differently in every process and every call.
    let random = RandomState::new().hash_one(std::process::id());
    let span = u64::from(high - LOWEST);
    LOWEST + u16::try_from(random % span).unwrap_or(0)
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

/// Whether a server's output (or an error quoting it) says its port was taken, as
/// Go's `listen tcp 127.0.0.1:N: bind: address already in use` does.
pub(crate) fn is_port_clash(output: &str) -> bool {
    output.to_ascii_lowercase().contains("address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_lie_below_the_ephemeral_range_and_vary() {
        let high = ephemeral_start();
        let picks: std::collections::BTreeSet<u16> = (0..50).map(|_| candidate()).collect();
        assert!(picks.len() > 40, "{picks:?}");
        if high > LOWEST + 1_000 {
            assert!(picks.iter().all(|p| (LOWEST..high).contains(p)), "{picks:?}");
        }
    }

    #[test]
    fn a_clash_is_recognised_in_go_and_rust_wording() {
        assert!(is_port_clash(
            "E0101 run.go:72] \"command failed\" err=\"failed to create listener: failed to listen on \
             127.0.0.1:20000: listen tcp 127.0.0.1:20000: bind: address already in use\""
        ));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let again = std::net::TcpListener::bind(taken.local_addr().unwrap()).unwrap_err();
        assert!(is_port_clash(&again.to_string()), "{again}");
        assert!(!is_port_clash("connection refused"));
    }
}
