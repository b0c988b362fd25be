//! The exporting side of a hand-over: which target takes which session, the
//! batches they travel in, and sending one batch to an importing cell.

use std::time::Duration;

use fleetforge_core::Bounds;
use fleetforge_core::contract::{IMPORT, ImportReport, Session};
use fleetforge_core::handoff::assign;
use reqwest::Url;
use serde::Serialize;

/// Most sessions in one import request: keeps each request well under the
/// importer's body limit and each acknowledgement small enough to lose cheaply.
pub const BATCH: usize = 5000;
/// Time one import request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to establish a connection to an importer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The sessions of each target, in the targets' order, cut into batches of at
/// most `batch` sessions. Every session appears exactly once. `None` without
/// targets.
pub fn plan(sessions: Vec<Session>, targets: &[Bounds], batch: usize) -> Option<Vec<Vec<Vec<Session>>>> {
    let shares = assign(sessions, |s| s.position, targets)?;
    let batch = batch.max(1);
    Some(
        shares
            .into_iter()
            .map(|share| share.chunks(batch).map(<[Session]>::to_vec).collect())
            .collect(),
    )
}

/// The import endpoint of the cell at base URL `address`, or why it is unusable.
pub fn import_url(address: &str) -> Result<Url, String> {
    let url = Url::parse(address.trim_end_matches('/')).map_err(|e| format!("{address:?}: {e}"))?;
    // Cells are reached by Pod IP in plain HTTP; this client has no TLS stack.
    if url.scheme() != "http" {
        return Err(format!("{address:?}: only http:// addresses are supported"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{address:?}: must be a base URL without query or fragment"
        ));
    }
    let base = url.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}{IMPORT}")).map_err(|e| format!("{address:?}: {e}"))
}

/// An [`fleetforge_core::contract::ImportRequest`] borrowing its sessions, so a
/// batch is not copied to be sent.
#[derive(Serialize)]
struct ImportBody<'a> {
    sessions: &'a [Session],
}

/// The HTTP client for importers: bounded waits, and no proxy from the
/// environment, since cells talk to each other directly.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy()
        .build()
}

/// Sends `batch` to the importer at `url` with bearer `token`. `Ok` only when the
/// importer answered 200 and acknowledged every session of the batch: only then
/// may the exporter forget them.
pub async fn send_batch(
    client: &reqwest::Client,
    url: &Url,
    token: &str,
    batch: &[Session],
) -> Result<ImportReport, String> {
    let response = client
        .post(url.clone())
        .bearer_auth(token)
        .json(&ImportBody { sessions: batch })
        .send()
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        // The importer's message says why (draining, bad token, ...); keep it short.
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        return Err(format!("importer answered {status}: {text}"));
    }
    let report: ImportReport = response
        .json()
        .await
        .map_err(|e| format!("importer's answer is not an ImportReport: {}", chain(&e)))?;
    if usize::try_from(report.accepted).ok() != Some(batch.len()) {
        return Err(format!(
            "importer accepted {} of {} sessions",
            report.accepted,
            batch.len()
        ));
    }
    Ok(report)
}

/// `e` with its sources: reqwest's own message ("error sending request") leaves
/// out the cause (refused, timed out, reset) that says what to fix.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use fleetforge_core::{Axis, Point};

    use super::*;

    fn session(n: usize, x: f64) -> Session {
        Session {
            id: format!("s-{n}"),
            position: Point::new(x, 5.0, 0.0),
        }
    }

    #[test]
    fn every_session_goes_to_exactly_one_target_in_bounded_batches() {
        let cell = Bounds::rect((0.0, 100.0), (0.0, 10.0)).unwrap();
        let (lo, hi) = cell.split(Axis::X, 30.0).unwrap();
        // 0..=100 covers both halves, the shared face at 30 and the cell's upper
        // face; -5 and 140 are strays.
        let mut sessions: Vec<Session> = (0..=100).map(|n| session(n, n as f64)).collect();
        sessions.push(session(1000, -5.0));
        sessions.push(session(1001, 140.0));
        let plan = plan(sessions.clone(), &[lo, hi], 16).unwrap();
        assert_eq!(plan.len(), 2);
        let mut seen: Vec<String> = Vec::new();
        for (target, batches) in [lo, hi].iter().zip(&plan) {
            for batch in batches {
                assert!(!batch.is_empty() && batch.len() <= 16);
                for s in batch {
                    assert!(target.contains_closed(&s.position) || s.id.starts_with("s-100"));
                    seen.push(s.id.clone());
                }
            }
        }
        let count = |batches: &Vec<Vec<Session>>| batches.iter().map(Vec::len).sum::<usize>();
        // x in [0, 30) plus the stray at -5; x in [30, 100] plus the one at 140.
        assert_eq!((count(&plan[0]), count(&plan[1])), (31, 72));
        seen.sort();
        let mut all: Vec<String> = sessions.into_iter().map(|s| s.id).collect();
        all.sort();
        assert_eq!(seen, all, "each session exactly once");
        assert!(super::plan(vec![session(0, 0.0)], &[], BATCH).is_none());
        assert_eq!(super::plan(Vec::new(), &[cell], BATCH), Some(vec![Vec::new()]));
    }

    #[test]
    fn import_urls_are_plain_http_base_urls() {
        assert_eq!(
            import_url("http://10.1.2.3:8080").unwrap().as_str(),
            "http://10.1.2.3:8080/v1/handoff/import"
        );
        assert_eq!(
            import_url("http://cell.example/").unwrap().as_str(),
            "http://cell.example/v1/handoff/import"
        );
        assert!(import_url("https://10.1.2.3:8080").is_err());
        assert!(import_url("10.1.2.3:8080").is_err());
        assert!(import_url("http://h/?q=1").is_err());
        assert!(import_url("").is_err());
    }
}
