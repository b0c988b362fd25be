//! Why a reconcile failed, with a stable label per kind of failure: the label is
//! what metrics count and what decides whether users get a new Warning Event (one
//! per kind, not one per retry).

use fleetforge_obs::metrics as m;

use crate::mapping::cell_pod::DesiredError;

/// Why a reconcile failed; it is retried with the world's backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{verb} {object}: {source}")]
    Api {
        /// The verb (`apply`, `delete`, `patch`, ...).
        verb: &'static str,
        /// What it was called on.
        object: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The desired objects could not be built.
    #[error(transparent)]
    Desired(#[from] DesiredError),
}

impl Error {
    /// A failed API call of `verb` on `object`, counted by verb and status code.
    pub fn api(verb: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        let code = match &source {
            kube::Error::Api(s) => s.code.to_string(),
            _ => "none".to_owned(),
        };
        metrics::counter!(m::API_ERRORS, "verb" => verb, "code" => code).increment(1);
        Self::Api {
            verb,
            object: object.into(),
            source,
        }
    }

    /// The kind of failure, a stable label: what an operator of the operator acts
    /// on differs between them (a conflict resolves itself, a forbidden call needs
    /// RBAC, an unreachable server needs the network).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api {
                source: kube::Error::Api(s),
                ..
            } => match s.code {
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                422 => "invalid",
                429 => "throttled",
                500..=599 => "server_error",
                _ => "api_other",
            },
            Error::Api { .. } => "unreachable",
            Error::Desired(_) => "desired_object",
        }
    }

    /// Every value [`Error::kind`] can take, so the failure counter can start at
    /// zero for each.
    pub const KINDS: &'static [&'static str] = &[
        "forbidden",
        "not_found",
        "conflict",
        "invalid",
        "throttled",
        "server_error",
        "api_other",
        "unreachable",
        "desired_object",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        Error::api(
            "apply",
            "pod games/meadow-c0",
            kube::Error::Api(Box::new(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure", "message": format!("mocked {code}"), "reason": "Mocked", "code": code,
                }))
                .unwrap(),
            )),
        )
    }

    #[test]
    fn each_kind_of_failure_has_its_own_known_label() {
        let errors = [
            api_error(403),
            api_error(404),
            api_error(409),
            api_error(422),
            api_error(429),
            api_error(503),
            api_error(418),
            Error::Desired(DesiredError::MissingMetadata("uid")),
        ];
        let kinds: Vec<&str> = errors.iter().map(Error::kind).collect();
        for kind in &kinds {
            assert!(Error::KINDS.contains(kind), "{kind} is not in KINDS");
        }
        let distinct: std::collections::BTreeSet<&str> = kinds.iter().copied().collect();
        assert_eq!(distinct.len(), kinds.len(), "{kinds:?}");
    }
}
