//! Calls from the operator to cells, over the cell contract
//! ([`fleetforge_core::contract`]), at each cell Pod's IP: exactly how it would
//! reach them in any cluster, with no Service or proxy in between.

use std::net::IpAddr;
use std::time::Duration;

use fleetforge_core::contract::{self, ExportReport, ExportRequest, LoadReport};
use reqwest::StatusCode;
use thiserror::Error;

use crate::cells::tokens::WorldTokens;

/// Why a call to a cell failed. Never carries the token.
#[derive(Debug, Error)]
pub enum CellError {
    /// No answer in time.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// What was called.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// No connection (the process is gone, or the network is cut).
    #[error("{url}: cannot connect: {source}")]
    Connect {
        /// What was called.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// An answer other than success.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// What was called.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the answer's body, for the log.
        body: String,
    },
    /// An answer that is not the contract's JSON.
    #[error("{url}: unreadable answer: {source}")]
    Body {
        /// What was called.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
}

impl CellError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CellError::Timeout { .. } => "timeout",
            CellError::Connect { .. } => "connect",
            CellError::Status { .. } => "status",
            CellError::Body { .. } => "body",
        }
    }
}

/// The base URL of the cell contract at a Pod IP.
pub fn cell_base_url(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("http://[{v6}]:{}", contract::HTTP_PORT),
        _ => format!("http://{ip}:{}", contract::HTTP_PORT),
    }
}

/// A shared HTTP client for cells, with the time limits of each kind of call.
#[derive(Debug, Clone)]
pub struct CellClient {
    http: reqwest::Client,
    /// Limit of one load sample.
    pub sample_timeout: Duration,
    /// Limit of one cell's whole hand-over (it imports into every target).
    pub handoff_timeout: Duration,
}

impl CellClient {
    /// A client whose samples give up after `sample_timeout` and hand-overs after
    /// `handoff_timeout`.
    pub fn new(sample_timeout: Duration, handoff_timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(sample_timeout)
            // Cells come and go by the thousand: do not hold idle connections to
            // processes that may have been retired.
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build()
            .unwrap_or_default();
        Self {
            http,
            sample_timeout,
            handoff_timeout,
        }
    }

    /// Reads the load of the cell at `ip`.
    pub async fn load(&self, ip: &str) -> Result<LoadReport, CellError> {
        let url = format!("{}{}", cell_base_url(ip), contract::LOAD);
        let response = self.http.get(&url).timeout(self.sample_timeout).send().await;
        decode(url, self.sample_timeout, response).await
    }

    /// Asks the cell at `ip` to hand its sessions to `request`'s targets. Tries the
    /// world's current token, then the previous one if the cell refuses the first
    /// (its copy of the Secret may predate a key rotation).
    pub async fn export(
        &self,
        ip: &str,
        tokens: &WorldTokens,
        request: &ExportRequest,
    ) -> Result<ExportReport, CellError> {
        let url = format!("{}{}", cell_base_url(ip), contract::EXPORT);
        let mut last = None;
        for token in tokens.candidates() {
            let response = self
                .http
                .post(&url)
                .bearer_auth(token)
                .json(request)
                .timeout(self.handoff_timeout)
                .send()
                .await;
            match decode(url.clone(), self.handoff_timeout, response).await {
                Err(CellError::Status { status, .. }) if status == StatusCode::UNAUTHORIZED => {
                    last = Some(CellError::Status {
                        url: url.clone(),
                        status,
                        body: "the cell refused the world's token".to_owned(),
                    });
                }
                other => return other,
            }
        }
        Err(last.unwrap_or(CellError::Status {
            url,
            status: StatusCode::UNAUTHORIZED,
            body: "no token".to_owned(),
        }))
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    url: String,
    timeout: Duration,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, CellError> {
    let response = response.map_err(|e| classify(url.clone(), timeout, e))?;
    let status = response.status();
    if !status.is_success() {
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(200);
        return Err(CellError::Status { url, status, body });
    }
    response.json::<T>().await.map_err(|e| {
        if e.is_timeout() {
            CellError::Timeout { url, timeout }
        } else {
            CellError::Body { url, source: e }
        }
    })
}

fn classify(url: String, timeout: Duration, e: reqwest::Error) -> CellError {
    if e.is_timeout() {
        CellError::Timeout { url, timeout }
    } else {
        CellError::Connect { url, source: e }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_ip_family() {
        assert_eq!(cell_base_url("127.1.0.5"), "http://127.1.0.5:8080");
        assert_eq!(cell_base_url("fd00::5"), "http://[fd00::5]:8080");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error_not_an_empty_cell() {
        // Nothing listens on port 8080 of this loopback address.
        let client = CellClient::new(Duration::from_millis(500), Duration::from_secs(1));
        let err = client.load("127.0.0.254").await.unwrap_err();
        assert!(matches!(err.reason(), "connect" | "timeout"), "{err}");
    }
}
