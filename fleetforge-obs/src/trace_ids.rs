//! The OpenTelemetry ids of a tracing span (feature `otlp`), which the JSON writer
//! puts on log lines to join them to the exported traces.
//!
//! Apart from the exporter: the JSON writer needs the ids, not the export.

use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use tracing::Dispatch;
use tracing::dispatcher::WeakDispatch;
use tracing::span::Id;

/// Finds the OpenTelemetry ids of a tracing span, for log lines.
#[derive(Default)]
pub(crate) struct TraceIds {
    // Weak: the subscriber owns the layer that owns this.
    dispatch: OnceLock<WeakDispatch>,
}

impl TraceIds {
    /// Remembers the subscriber whose spans carry the OpenTelemetry context.
    pub(crate) fn register(&self, dispatch: &Dispatch) {
        // A layer belongs to one subscriber: only the first registration counts.
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    /// The trace id and span id of `span`, in lowercase hex, if it is traced.
    pub(crate) fn of(&self, span: &Id) -> Option<(String, String)> {
        // The dispatch handed to the layer, not the current one: while an event is
        // being dispatched, `tracing` hides the current dispatcher from the layers.
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(span, &dispatch)?;
        let otel_span = cx.span();
        let ids = otel_span.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    }
}
