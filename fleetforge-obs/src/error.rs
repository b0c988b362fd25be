//! The crate's errors, in a module of their own so that every module can name them
//! without importing the module that set logging or telemetry up.

use tracing_subscriber::filter::ParseError;

/// Why logging could not be set up, or its filter not changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A directive of the filter did not parse.
    #[error("invalid log filter directive {directive:?} in {filter:?}: {source}")]
    Filter {
        /// The whole filter as given.
        filter: String,
        /// The directive in it that did not parse.
        directive: String,
        /// What was wrong with it.
        source: ParseError,
    },
    /// The filter has no directive at all.
    #[error("empty log filter: give a level such as \"info\", or \"off\" for no logs")]
    EmptyFilter,
    /// A global subscriber is already set.
    #[error("a global log subscriber is already installed")]
    AlreadySet,
    /// The subscriber the filter belonged to no longer exists.
    #[error("the log subscriber this filter belonged to is gone")]
    SubscriberGone,
}

/// Why telemetry could not be set up or shut down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter or the subscriber could not be set up.
    #[error(transparent)]
    Logging(#[from] LoggingError),
    /// An OTLP endpoint was given to a build without the `otlp` feature.
    #[error("OTLP export to {endpoint:?} was asked for, but this build has no `otlp` feature")]
    OtlpNotBuilt {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The OTLP exporter could not be built.
    #[error("setting up OTLP export to {endpoint:?}: {reason}")]
    Otlp {
        /// The endpoint as given.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The last spans could not be sent at shutdown.
    #[error("flushing traces: {0}")]
    Flush(String),
}
