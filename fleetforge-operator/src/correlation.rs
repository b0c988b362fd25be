//! The correlation id of a reconcile: on every log line (the `reconcile` span
//! carries it), in every Event's note, and as the `Audit-ID` header of every API
//! call the reconcile makes, so the API server's audit log joins the operator's
//! logs by it.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::{HeaderValue, Request};
use tower::util::MapRequestLayer;

/// The header kube-apiserver takes as the audit event's id when a client sends
/// one.
pub const AUDIT_ID_HEADER: &str = "Audit-ID";

tokio::task_local! {
    static CURRENT: Current;
}

struct Current {
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

/// Runs `f` with `id` as the current correlation id.
pub async fn scope<F: Future>(id: String, f: F) -> F::Output {
    CURRENT
        .scope(
            Current {
                id,
                calls: AtomicU32::new(0),
            },
            f,
        )
        .await
}

/// The current correlation id, if running inside [`scope`].
pub fn current() -> Option<String> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// The `Audit-ID` of the next API call: the correlation id and the call's number
/// within the reconcile, so every audit event of one reconcile starts with it
/// while each call keeps an id of its own.
fn next_audit_id() -> Option<String> {
    CURRENT
        .try_with(|c| format!("{}-{}", c.id, c.calls.fetch_add(1, Ordering::Relaxed) + 1))
        .ok()
}

/// Adds the `Audit-ID` header to requests made inside a [`scope`]; others go as
/// they are (the API server then makes an id up).
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
    use super::*;

    #[tokio::test]
    async fn calls_in_a_scope_carry_numbered_audit_ids_and_others_none() {
        let outside = audit_id(Request::new(()));
        assert!(outside.headers().get(AUDIT_ID_HEADER).is_none());
        assert_eq!(annotate_note("n".into()), "n");

        let ids = scope("abc".into(), async {
            let a = audit_id(Request::new(()));
            let b = audit_id(Request::new(()));
            assert_eq!(annotate_note("split".into()), "split (correlation id abc)");
            [a, b].map(|r| r.headers()[AUDIT_ID_HEADER].to_str().unwrap().to_owned())
        })
        .await;
        assert_eq!(ids, ["abc-1".to_owned(), "abc-2".to_owned()]);
        assert_ne!(new_id(), new_id());
    }
}
