//! The handlers: locate, topology, and the topology stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State as Extract};
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::cluster::WorldKey;
use crate::directory::LocateError;
use crate::http::answers::{self, Failure};
use crate::http::shared::Api;
use crate::query::{QueryError, parse_locate};
use crate::worlds::{Channel, WorldView};

/// The longest query string a locate reads: three coordinates need well under
/// 100 bytes.
pub const MAX_QUERY_BYTES: usize = 512;

/// `Retry-After` while the gateway reads the cluster for the first time.
const STARTING_RETRY: u32 = 1;
/// `Retry-After` when the owner of a position is not serving: a cell becomes
/// ready or is replaced within seconds.
const NOT_SERVING_RETRY: u32 = 1;
/// `Retry-After` when no cell owns a position: a failed cell's replacement takes
/// a few seconds to start.
const UNOWNED_RETRY: u32 = 2;
/// `Retry-After` when the gateway has as many open streams as it allows.
const STREAMS_RETRY: u32 = 5;

/// The world a request names, if the gateway publishes it now.
fn world(api: &Api, path: Result<Path<(String, String)>, PathRejection>) -> Result<Arc<WorldView>, Failure> {
    if !api.state.is_synced() {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the gateway is still reading the cluster",
        )
        .retry_after(STARTING_RETRY));
    }
    let Path((namespace, name)) =
        path.map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))?;
    let key = WorldKey::new(namespace, name);
    // Unpublished and unknown worlds get the same answer: what is not published
    // is not revealed.
    api.state.view(&key).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "unknown_world",
            format!("no published world {key}"),
        )
    })
}

/// `GET /v1/worlds/{namespace}/{world}/locate?x=..&y=..[&z=..]`.
pub async fn locate(
    Extract(api): Extract<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    match locate_in(&api, path, query.as_deref().unwrap_or("")) {
        Ok(located) => axum::Json(located).into_response(),
        Err(failure) => failure.into_response(),
    }
}

fn locate_in(
    api: &Api,
    path: Result<Path<(String, String)>, PathRejection>,
    query: &str,
) -> Result<answers::Located, Failure> {
    let view = world(api, path)?;
    if query.len() > MAX_QUERY_BYTES {
        return Err(Failure::new(
            StatusCode::URI_TOO_LONG,
            "query_too_long",
            format!("the query string is longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    let directory = &view.directory;
    let epoch = directory.epoch();
    let position = parse_locate(query, directory.world()).map_err(|e| {
        let status = match e {
            QueryError::OutsideWorld { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::Invalid { .. } => StatusCode::BAD_REQUEST,
        };
        let code = if e.is_outside_world() {
            "outside_world"
        } else {
            "invalid_parameter"
        };
        Failure::new(status, code, e.to_string()).parameter(e.parameter())
    })?;
    match directory.locate(&position) {
        Ok(cell) => answers::located(&view, cell).ok_or_else(|| {
            let id = cell.cell.id.to_string();
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_serving",
                format!("cell {id} owns this position but is not taking players right now"),
            )
            .cell(&id)
            .epoch(epoch)
            .retry_after(NOT_SERVING_RETRY)
        }),
        Err(e @ LocateError::Unowned) => {
            Err(
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, "unowned", e.to_string())
                    .epoch(epoch)
                    .retry_after(UNOWNED_RETRY),
            )
        }
        // The parser already refused positions outside the world.
        Err(e @ LocateError::OutsideWorld) => {
            Err(Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "outside_world", e.to_string()).epoch(epoch))
        }
    }
}

/// Whether a request asks for a stream of events (`Accept: text/event-stream`,
/// as a browser's `EventSource` sends).
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "text/event-stream")
        })
}

/// `GET /v1/worlds/{namespace}/{world}/topology`: the answer, or with
/// `Accept: text/event-stream` a stream of answers, one per change.
pub async fn topology(
    Extract(api): Extract<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let view = match world(&api, path) {
        Ok(view) => view,
        Err(failure) => return failure.into_response(),
    };
    if query.is_some_and(|q| !q.is_empty()) {
        return Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "topology takes no query parameters",
        )
        .into_response();
    }
    if !wants_stream(&headers) {
        return axum::Json(answers::topology(&view)).into_response();
    }
    let Ok(permit) = api.streams.clone().try_acquire_owned() else {
        return Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "the gateway follows as many topology streams as it allows; retry later or poll",
        )
        .retry_after(STREAMS_RETRY)
        .into_response();
    };
    let Some(channel) = api.state.subscribe(&view.key) else {
        return Failure::new(
            StatusCode::NOT_FOUND,
            "unknown_world",
            format!("no published world {}", view.key),
        )
        .into_response();
    };
    Sse::new(follow(channel, api.state.closing(), permit))
        .keep_alive(KeepAlive::new().interval(api.keep_alive))
        .into_response()
}

/// Streams a world's topology: the current one first, then one event per
/// change; an event `gone` and the end when the world stops being published,
/// and the end when the gateway shuts down. The permit is held while the stream
/// lives.
fn follow(
    channel: Channel,
    closing: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Follow {
        channel: Channel,
        closing: watch::Receiver<bool>,
        first: bool,
        done: bool,
        _permit: OwnedSemaphorePermit,
    }
    let state = Follow {
        channel,
        closing,
        first: true,
        done: false,
        _permit: permit,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        if !s.first {
            tokio::select! {
                changed = s.channel.changed() => if changed.is_err() {
                    return None;
                },
                _ = s.closing.wait_for(|closing| *closing) => return None,
            }
        }
        s.first = false;
        let view = s.channel.borrow_and_update().clone();
        let event = match view {
            Some(view) => Event::default()
                .event("topology")
                .id(view.directory.epoch().to_string())
                .json_data(answers::topology(&view))
                .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
            None => {
                s.done = true;
                Event::default()
                    .event("gone")
                    .data("the world is no longer published")
            }
        };
        Some((Ok(event), s))
    })
}

/// Every path the gateway does not serve.
pub async fn not_found() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/worlds/{namespace}/{world}/locate and .../topology",
    )
}

/// How long a stream may stay silent before a keep-alive comment: below the
/// idle timeouts of common load balancers (60 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
