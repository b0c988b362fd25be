//! The operator binary's one-off commands, beside running the operator: backup
//! and restore of worlds ([`backup`]). They need the configuration and the pure
//! mapping, never the running operator.

pub mod backup;
