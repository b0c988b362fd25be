//! How the process is configured: the command line ([`cli`]) and the API client
//! it leads to ([`client`]). Both the operator and its one-off commands start
//! here.

pub mod cli;
pub mod client;
