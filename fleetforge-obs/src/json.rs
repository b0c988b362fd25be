//! The JSON line writer: the event's fields and those of every enclosing span,
//! flattened into one object per line (see the [`logging`](crate::logging) module).

use std::io::Write as _;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Keys the logger writes itself; fields of these names are dropped so that a
/// collector can rely on them.
const RESERVED: [&str; 6] = ["timestamp", "level", "target", "span", "trace_id", "span_id"];

/// A span's fields as recorded so far, in the order they were first given.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, Value)>);

/// Writes each event as one JSON line to `W`.
pub(crate) struct JsonLayer<W> {
    make_writer: W,
    #[cfg(feature = "otlp")]
    trace_ids: Option<crate::trace_ids::TraceIds>,
}

impl<W> JsonLayer<W> {
    pub(crate) fn new(make_writer: W) -> Self {
        Self {
            make_writer,
            #[cfg(feature = "otlp")]
            trace_ids: None,
        }
    }

    /// Adds `trace_id` and `span_id` of the innermost span to every line.
    #[cfg(feature = "otlp")]
    pub(crate) fn with_trace_ids(mut self) -> Self {
        self.trace_ids = Some(crate::trace_ids::TraceIds::default());
        self
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    #[cfg(feature = "otlp")]
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        if let Some(trace_ids) = &self.trace_ids {
            trace_ids.register(subscriber);
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut FieldVisitor::new(&mut fields.0, false));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut FieldVisitor::new(&mut fields.0, false));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Events bridged from the `log` crate carry their real target and place in
        // `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        let mut timestamp = String::new();
        // Writing to a String cannot fail.
        let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
        let mut entries: Vec<(&'static str, Value)> = vec![
            ("timestamp", Value::String(timestamp)),
            ("level", Value::from(meta.level().as_str())),
        ];

        let mut event_fields = Vec::new();
        event.record(&mut FieldVisitor::new(&mut event_fields, normalized.is_some()));
        // The message reads best right after the level.
        if let Some(i) = event_fields.iter().position(|(k, _)| *k == "message") {
            let message = event_fields.remove(i);
            event_fields.insert(0, message);
        }
        entries.extend(event_fields.into_iter().filter(|(k, _)| !RESERVED.contains(k)));
        let event_end = entries.len();

        let mut innermost = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (key, value) in &fields.0 {
                        if RESERVED.contains(key) {
                            continue;
                        }
                        match entries.iter().position(|(k, _)| k == key) {
                            // The event's own field wins over any span's.
                            Some(i) if i < event_end => {}
                            // Spans come outermost first: the inner one wins.
                            Some(i) => entries[i].1 = value.clone(),
                            None => entries.push((key, value.clone())),
                        }
                    }
                }
                innermost = Some((span.id(), span.name()));
            }
        }

        entries.push(("target", Value::from(meta.target())));
        if let Some((_id, name)) = &innermost {
            entries.push(("span", Value::from(*name)));
        }
        #[cfg(feature = "otlp")]
        if let (Some(trace_ids), Some((id, _))) = (&self.trace_ids, &innermost)
            && let Some((trace_id, span_id)) = trace_ids.of(id)
        {
            entries.push(("trace_id", Value::String(trace_id)));
            entries.push(("span_id", Value::String(span_id)));
        }

        let mut line = Vec::with_capacity(256);
        line.push(b'{');
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            // Writing to a Vec fails only for maps with non-string keys, which
            // `Value`s built here never have.
            let _ = serde_json::to_writer(&mut line, key);
            line.push(b':');
            let _ = serde_json::to_writer(&mut line, value);
        }
        line.extend_from_slice(b"}\n");
        // One write per line, so that lines from several threads do not interleave.
        let _ = self.make_writer.make_writer_for(meta).write_all(&line);
    }
}

/// Records fields as JSON values; a field recorded again replaces its value.
struct FieldVisitor<'a> {
    fields: &'a mut Vec<(&'static str, Value)>,
    skip_log_fields: bool,
}

impl<'a> FieldVisitor<'a> {
    fn new(fields: &'a mut Vec<(&'static str, Value)>, skip_log_fields: bool) -> Self {
        Self {
            fields,
            skip_log_fields,
        }
    }

    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.skip_log_fields && name.starts_with("log.") {
            return;
        }
        match self.fields.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => self.fields.push((name, value)),
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}
