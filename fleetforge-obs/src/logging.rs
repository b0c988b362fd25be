//! Log set-up: `tracing` events as JSON lines (for collectors) or human-readable
//! text (for a terminal), filtered by an `EnvFilter` directive that can be changed
//! while the process runs (see [`LogControl`]).
//!
//! A JSON line carries, at its top level, the fields of the event and of every span
//! it happened in, so that a line logged deep inside a reconcile still has the
//! reconcile's `correlation_id`:
//!
//! ```json
//! {"timestamp":"…","level":"INFO","message":"cell created","cell":"c-3",
//!  "correlation_id":"5f0c…","world":"…","generation":4,"span":"apply",
//!  "target":"fleetforge_operator::reconcile::executor"}
//! ```
//!
//! On a name clash the innermost value wins (the event's own fields, then the
//! innermost span's). `timestamp`, `level`, `target`, `span` (the innermost span's
//! name) and, with OTLP export on, `trace_id` and `span_id` are written by the
//! logger and take precedence over fields of the same name.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Dispatch;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt as _};
use tracing_subscriber::{EnvFilter, Registry, reload};

pub use crate::error::LoggingError;
use crate::json::JsonLayer;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, with the fields of the event and of all the spans
    /// it happened in.
    #[default]
    Json,
    /// Human-readable text, with the chain of spans before the message.
    Text,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(format!(
                "unknown log format {other:?}: expected \"json\" or \"text\""
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Text => "text",
        })
    }
}

/// Parses an `EnvFilter` directive list, naming the directive at fault on error.
pub(crate) fn parse_filter(filter: &str) -> Result<EnvFilter, LoggingError> {
    let filter = filter.trim();
    if filter.split(',').all(|d| d.trim().is_empty()) {
        return Err(LoggingError::EmptyFilter);
    }
    EnvFilter::from_str(filter).map_err(|source| {
        // EnvFilter reports what is wrong but not where: find the culprit the same
        // way it splits the list.
        let directive = filter
            .split(',')
            .filter(|d| !d.is_empty())
            .find(|d| Directive::from_str(d).is_err())
            .unwrap_or(filter);
        LoggingError::Filter {
            filter: filter.to_owned(),
            directive: directive.to_owned(),
            source,
        }
    })
}

/// Reads and changes the log filter of a running process: a handle on the filter
/// of the subscriber it came from. Cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    // The directive as given: `EnvFilter`'s own rendering reorders and rewrites
    // it, which would surprise whoever set it.
    current: Arc<Mutex<String>>,
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogControl")
            .field("filter", &self.filter())
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// A reloadable filter layer for the bottom of a subscriber, and its handle.
    pub(crate) fn new(filter: &str) -> Result<(reload::Layer<EnvFilter, Registry>, Self), LoggingError> {
        let env_filter = parse_filter(filter)?;
        let (layer, handle) = reload::Layer::new(env_filter);
        let control = Self {
            handle,
            current: Arc::new(Mutex::new(filter.trim().to_owned())),
        };
        Ok((layer, control))
    }

    /// The filter directive in force, such as `info` or
    /// `fleetforge_operator=debug,kube=warn`.
    pub fn filter(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the filter; on error the one in force stays. The change itself is
    /// logged at `info` (through the old filter, so that it is seen where the old
    /// level showed `info`).
    pub fn set_filter(&self, filter: &str) -> Result<(), LoggingError> {
        let env_filter = parse_filter(filter)?;
        let filter = filter.trim();
        // Held across the reload so that concurrent changes apply in one order and
        // `filter()` always names the filter in force.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        tracing::info!(from = %*current, to = %filter, "changing the log filter");
        self.handle
            .reload(env_filter)
            .map_err(|_| LoggingError::SubscriberGone)?;
        filter.clone_into(&mut current);
        Ok(())
    }
}

/// Installs the global subscriber: `filter` is an `EnvFilter` directive such as
/// `info` or `fleetforge_operator=debug,kube=warn`; logs go to standard error.
///
/// For programs that neither change the filter at run time nor export traces; the
/// others use [`Telemetry::init`](crate::Telemetry::init).
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    // Nobody will change this filter: the handle can go.
    let (filter, _control) = LogControl::new(filter)?;
    install(Dispatch::new(subscriber(format, filter, std::io::stderr, false)))
}

/// The subscriber under every filter: what the reload layer is built against.
type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// The subscriber that writes logs, on which telemetry may stack a trace layer.
pub(crate) type LogSubscriber = Layered<Box<dyn Layer<Filtered> + Send + Sync>, Filtered>;

/// The reloadable filter, then the log output. `trace_ids` puts the OpenTelemetry
/// ids on JSON lines, for a subscriber that exports traces; without the `otlp`
/// feature nothing is traced and it is ignored.
pub(crate) fn subscriber<W>(
    format: LogFormat,
    filter: reload::Layer<EnvFilter, Registry>,
    make_writer: W,
    trace_ids: bool,
) -> LogSubscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match format {
        LogFormat::Json => {
            let json = JsonLayer::new(make_writer);
            #[cfg(feature = "otlp")]
            let json = if trace_ids { json.with_trace_ids() } else { json };
            Box::new(json)
        }
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_writer(make_writer)),
    };
    #[cfg(not(feature = "otlp"))]
    let _ = trace_ids;
    Registry::default().with(filter).with(output)
}

/// Makes `dispatch` the global subscriber, and `log` records its events.
pub(crate) fn install(dispatch: Dispatch) -> Result<(), LoggingError> {
    tracing::dispatcher::set_global_default(dispatch).map_err(|_| LoggingError::AlreadySet)?;
    // Fails only if another `log` logger is set; tracing's own events still flow.
    let _ = tracing_log::LogTracer::init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        for format in [LogFormat::Json, LogFormat::Text] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn the_control_can_be_shared() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<LogControl>();
    }

    #[test]
    fn a_bad_directive_is_named() {
        let err = parse_filter("info,kube=loud,hyper=warn").unwrap_err();
        match &err {
            LoggingError::Filter {
                filter, directive, ..
            } => {
                assert_eq!(filter, "info,kube=loud,hyper=warn");
                assert_eq!(directive, "kube=loud");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("\"kube=loud\""), "{err}");
    }

    #[test]
    fn an_empty_filter_is_rejected() {
        for filter in ["", "  ", ",", " , "] {
            assert!(
                matches!(parse_filter(filter), Err(LoggingError::EmptyFilter)),
                "{filter:?}"
            );
        }
        assert!(parse_filter("off").is_ok());
        assert!(parse_filter(" info, ").is_ok());
    }
}
