//! Running as one of several replicas: Lease-based [`leader`] election, and the
//! startup permission [`selfcheck`] that fails fast on missing RBAC and warns on
//! excess.

pub mod leader;
pub mod selfcheck;
