//! The kernel every reconcile and background task shares: the clock, the error
//! type, per-world bookkeeping (backoff, read-your-writes expectations, the
//! queue-depth count, the worlds-by-phase and time-to-serve gauges) and the
//! correlation id of a reconcile.
//!
//! It knows nothing of reconciles, cells or the process: everything above imports
//! it, it imports only the pure [`crate::mapping`] (for the error of a desired
//! object).

pub mod backoff;
pub mod clock;
pub mod correlation;
pub mod error;
pub mod expectations;
pub mod gauges;
pub mod queue;
