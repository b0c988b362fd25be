//! The correlation id of a reconcile: on every log line (the `reconcile` span
//! carries it), in every Event's note, and as the `Audit-ID` header of every API
//! call the reconcile makes, so the API server's audit log joins the operator's
//! logs by it.
//!
//! The id rides on the `reconcile` span itself (an extension of its entry in the
//! subscriber's registry) rather than in a task-local: kube's client hands each
//! request to a buffer worker on another task, and what crosses that boundary is
//! the caller's tracing span.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::{HeaderValue, Request};
use tower::util::MapRequestLayer;
use tracing::Span;
use tracing_subscriber::registry::{LookupSpan as _, Registry};

/// The header kube-apiserver takes as the audit event's id when a client sends
/// one.
pub const AUDIT_ID_HEADER: &str = "Audit-ID";

/// What a reconcile span carries: its id and how many API calls it made.
struct Correlation {
    id: String,
    calls: AtomicU32,
}

/// A fresh id: 16 hex digits, unique within the process and unlikely to repeat
/// across processes.
pub fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", RandomState::new().hash_one(n))
}

/// Ties `id` to `span`: code running in it or in any span inside it finds the id.
/// Without a registry-based subscriber (or with the span filtered out) there is
/// nothing to tie it to, and nothing downstream finds an id.
pub fn attach(span: &Span, id: &str) {
    span.with_subscriber(|(span_id, dispatch)| {
        if let Some(span) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(span_id))
        {
            span.extensions_mut().insert(Correlation {
                id: id.to_owned(),
                calls: AtomicU32::new(0),
            });
        }
    });
}

/// Runs `f` on the correlation of the current span or the nearest span around
/// it that has one.
fn with_current<T>(f: impl Fn(&Correlation) -> T) -> Option<T> {
    Span::current()
        .with_subscriber(|(span_id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(span_id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<Correlation>().map(&f))
        })
        .flatten()
}

/// The current correlation id, if the current span is inside an attached one.
pub fn current() -> Option<String> {
    with_current(|c| c.id.clone())
}

/// The `Audit-ID` of the next API call: the correlation id and the call's number
/// within the reconcile, so every audit event of one reconcile starts with it
/// while each call keeps an id of its own.
fn next_audit_id() -> Option<String> {
    with_current(|c| format!("{}-{}", c.id, c.calls.fetch_add(1, Ordering::Relaxed) + 1))
}

/// Adds the `Audit-ID` header to requests made inside a correlated span; others
/// go as they are (the API server then makes an id up).
pub fn audit_id<B>(mut request: Request<B>) -> Request<B> {
    if let Some(id) = next_audit_id()
        && let Ok(value) = HeaderValue::from_str(&id)
    {
        request.headers_mut().insert(AUDIT_ID_HEADER, value);
    }
    request
}

/// The client layer that applies [`audit_id`].
pub fn layer<B>() -> MapRequestLayer<fn(Request<B>) -> Request<B>> {
    MapRequestLayer::new(audit_id::<B>)
}

/// `note` with the current correlation id appended, for an Event.
pub fn annotate_note(note: String) -> String {
    match current() {
        Some(id) => format!("{note} (correlation id {id})"),
        None => note,
    }
}

#[cfg(test)]
mod tests {
    use tracing::info_span;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn calls_in_a_correlated_span_carry_numbered_audit_ids_and_others_none() {
        let subscriber = tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO);
        tracing::subscriber::with_default(subscriber, || {
            let outside = audit_id(Request::new(()));
            assert!(outside.headers().get(AUDIT_ID_HEADER).is_none());
            assert_eq!(annotate_note("n".into()), "n");

            let reconcile = info_span!("reconcile");
            attach(&reconcile, "abc");
            let _in = reconcile.enter();
            let a = audit_id(Request::new(()));
            // A span inside the reconcile (plan, apply, handoff) finds it too.
            let b = info_span!("apply").in_scope(|| audit_id(Request::new(())));
            assert_eq!(annotate_note("split".into()), "split (correlation id abc)");
            let ids = [a, b].map(|r| r.headers()[AUDIT_ID_HEADER].to_str().unwrap().to_owned());
            assert_eq!(ids, ["abc-1".to_owned(), "abc-2".to_owned()]);
        });
        assert_ne!(new_id(), new_id());
    }
}
