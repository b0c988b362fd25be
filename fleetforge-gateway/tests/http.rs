//! The player API as a client sees it, on a state fed by hand: every answer's
//! status, headers and body, the rate limit, and the topology stream. The same
//! router the binary serves, driven without a socket.
#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::http::header::{ACCEPT, RETRY_AFTER};
use axum::http::{Method, Request, StatusCode};
use fleetforge_core::{Axis, Bounds, CellId, CellRef, Role, Timestamp};
use fleetforge_gateway::CellEntry;
use fleetforge_gateway::cluster::{Publication, WorldKey};
use fleetforge_gateway::http::answers::{ErrorBody, Located, Topology};
use fleetforge_gateway::http::{Limits, router};
use fleetforge_gateway::state::State;
use futures::StreamExt;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

fn world() -> Bounds {
    Bounds::rect((0.0, 1000.0), (0.0, 500.0)).unwrap()
}

fn key() -> WorldKey {
    WorldKey::new("games", "frontier")
}

fn cell(id: &str, bounds: Bounds, since: Option<u64>, ip: &str) -> CellEntry {
    CellEntry {
        cell: CellRef::first(id.parse::<CellId>().unwrap()),
        bounds,
        role: since.map_or(Role::Incoming, |ms| Role::Active {
            since: Timestamp::from_millis(ms),
        }),
        ready: true,
        terminating: false,
        address: Some(ip.parse().unwrap()),
        stamped_epoch: None,
    }
}

/// A synced state with world `games/frontier` split in two along x at 500, and
/// an unpublished world `games/hidden`.
fn fixture() -> Arc<State> {
    let state = State::new();
    {
        let mut worlds = state.write();
        let publication = Publication {
            bounds: world(),
            game_port: 7777,
        };
        worlds.set_world(key(), Some(publication));
        worlds.set_world(WorldKey::new("games", "hidden"), None);
        let (left, right) = world().split(Axis::X, 500.0).unwrap();
        worlds.set_cell(
            "games",
            "frontier-c0-0",
            key(),
            cell("c0-0", left, Some(10), "10.0.0.1"),
        );
        worlds.set_cell(
            "games",
            "frontier-c0-1",
            key(),
            cell("c0-1", right, Some(10), "10.0.0.2"),
        );
        worlds.set_cell(
            "games",
            "hidden-c0",
            WorldKey::new("games", "hidden"),
            cell("c0", world(), Some(10), "10.0.0.3"),
        );
    }
    state.set_synced();
    state
}

fn app(state: Arc<State>, limits: &Limits) -> Router {
    router(state, limits).unwrap().layer(peer([192, 0, 2, 1]))
}

/// Requests from `ip`, as a server with connection info sees them (the rate
/// limit keys on it).
fn peer(ip: [u8; 4]) -> Extension<ConnectInfo<SocketAddr>> {
    Extension(ConnectInfo(SocketAddr::from((ip, 40_000))))
}

fn generous() -> Limits {
    Limits {
        rate_per_second: 1e6,
        burst: 1_000_000,
        ..Limits::default()
    }
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Option<String>, Value) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {body:?}"));
    (status, retry, json)
}

/// The error of an answer that is not a success.
fn error(body: Value) -> fleetforge_gateway::http::answers::ErrorDetail {
    serde_json::from_value::<ErrorBody>(body).unwrap().error
}

const LOCATE: &str = "/v1/worlds/games/frontier/locate";

#[tokio::test]
async fn a_position_is_located_to_the_cell_that_owns_it_with_the_epoch() {
    let app = app(fixture(), &generous());
    let (status, _, body) = get(&app, &format!("{LOCATE}?x=250&y=100")).await;
    assert_eq!(status, StatusCode::OK);
    let located: Located = serde_json::from_value(body).unwrap();
    assert_eq!((located.cell.as_str(), located.incarnation), ("c0-0", 0));
    assert_eq!(located.address.ip.to_string(), "10.0.0.1");
    assert_eq!(located.address.port, 7777);
    assert_eq!(located.epoch.mark, 10);
    // On the face between the two cells: the upper one, as the cells' half-open
    // rule says; on the world's upper face: the cell that reaches it.
    let (_, _, body) = get(&app, &format!("{LOCATE}?x=500&y=100")).await;
    assert_eq!(body["cell"], "c0-1");
    let (_, _, body) = get(&app, &format!("{LOCATE}?x=1000&y=500")).await;
    assert_eq!(body["cell"], "c0-1");
}

#[tokio::test]
async fn bad_input_gets_its_status_and_names_the_parameter() {
    let app = app(fixture(), &generous());
    let cases: &[(&str, StatusCode, &str, Option<&str>)] = &[
        ("y=1", StatusCode::BAD_REQUEST, "invalid_parameter", Some("x")),
        ("x=1", StatusCode::BAD_REQUEST, "invalid_parameter", Some("y")),
        (
            "x=NaN&y=1",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("x"),
        ),
        (
            "x=inf&y=1",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("x"),
        ),
        (
            "x=1&y=1e999",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("y"),
        ),
        (
            "x=1&y=2&z=3",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("z"),
        ),
        (
            "x=1&y=2&who=me",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("who"),
        ),
        (
            "x=1&x=2&y=2",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("x"),
        ),
        (
            "x=ten&y=2",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("x"),
        ),
        ("", StatusCode::BAD_REQUEST, "invalid_parameter", Some("x")),
        (
            "x=1001&y=2",
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside_world",
            Some("x"),
        ),
        (
            "x=1&y=-0.5",
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside_world",
            Some("y"),
        ),
    ];
    for &(query, status, code, parameter) in cases {
        let (got, _, body) = get(&app, &format!("{LOCATE}?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        let e = error(body);
        assert_eq!(e.code, code, "{query}");
        assert_eq!(e.parameter.as_deref(), parameter, "{query}");
        assert!(!e.message.is_empty());
    }
    let long = format!("{LOCATE}?x=1&y=1&{}", "a".repeat(600));
    let (status, _, body) = get(&app, &long).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    assert_eq!(error(body).code, "query_too_long");
}

#[tokio::test]
async fn unknown_and_unpublished_worlds_are_the_same_404() {
    let app = app(fixture(), &generous());
    for uri in [
        "/v1/worlds/games/nowhere/locate?x=1&y=1",
        "/v1/worlds/games/hidden/locate?x=1&y=1",
        "/v1/worlds/other/frontier/topology",
        "/v1/worlds/games/hidden/topology",
    ] {
        let (status, _, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        let e = error(body);
        assert_eq!(e.code, "unknown_world", "{uri}");
        assert!(e.message.starts_with("no published world "), "{}", e.message);
    }
    let (status, _, body) = get(&app, "/v1/worlds").await;
    assert_eq!(
        (status, error(body).code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test]
async fn a_space_whose_owner_is_not_serving_is_503_with_retry_after() {
    let state = fixture();
    let (left, right) = world().split(Axis::X, 500.0).unwrap();
    let mut unready = cell("c0-0", left, Some(10), "10.0.0.1");
    unready.ready = false;
    state.write().set_cell("games", "frontier-c0-0", key(), unready);
    let app = app(Arc::clone(&state), &generous());
    let (status, retry, body) = get(&app, &format!("{LOCATE}?x=1&y=1")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("1"));
    let e = error(body);
    assert_eq!(
        (e.code.as_str(), e.cell.as_deref()),
        ("not_serving", Some("c0-0"))
    );
    assert!(e.epoch.is_some());

    // A failed cell's Pod deleted before its replacement exists: nobody owns the space.
    state.write().remove_cell("games", "frontier-c0-0");
    let (status, retry, body) = get(&app, &format!("{LOCATE}?x=1&y=1")).await;
    assert_eq!(
        (status, retry.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("2"))
    );
    assert_eq!(error(body).code, "unowned");
    // The other half still answers.
    let (status, _, _) = get(&app, &format!("{LOCATE}?x=600&y=1")).await;
    assert_eq!(status, StatusCode::OK);
    let _ = right;
}

#[tokio::test]
async fn before_the_first_lists_every_world_is_503() {
    let app = app(State::new(), &generous());
    let (status, retry, body) = get(&app, &format!("{LOCATE}?x=1&y=1")).await;
    assert_eq!(
        (status, retry.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
    );
    assert_eq!(error(body).code, "starting");
}

#[tokio::test]
async fn only_get_is_served() {
    let app = app(fixture(), &generous());
    let response = app
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri(format!("{LOCATE}?x=1&y=1"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_request_with_a_body_over_the_bound_is_413() {
    let app = app(fixture(), &generous());
    let response = app
        .oneshot(
            Request::get(format!("{LOCATE}?x=1&y=1"))
                .header("content-length", "2048")
                .body(Body::from(vec![b'a'; 2048]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_and_others_do_not() {
    let limits = Limits {
        rate_per_second: 1.0,
        burst: 3,
        ..Limits::default()
    };
    let state = fixture();
    let app = app(Arc::clone(&state), &limits);
    let uri = format!("{LOCATE}?x=1&y=1");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&app, &uri).await.0);
    }
    assert_eq!(&statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    let (status, retry, body) = get(&app, &uri).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.unwrap().parse::<u32>().unwrap() >= 1);
    assert_eq!(error(body).code, "rate_limited");

    // Another address has its own budget.
    let other = router(state, &limits).unwrap().layer(peer([198, 51, 100, 7]));
    assert_eq!(get(&other, &uri).await.0, StatusCode::OK);
}

#[tokio::test]
async fn topology_lists_every_authoritative_cell_with_its_neighbours() {
    let app = app(fixture(), &generous());
    let (status, _, body) = get(&app, "/v1/worlds/games/frontier/topology").await;
    assert_eq!(status, StatusCode::OK);
    let topology: Topology = serde_json::from_value(body).unwrap();
    assert_eq!(topology.bounds, world());
    let mut cells: Vec<(String, Vec<String>, bool)> = topology
        .cells
        .into_iter()
        .map(|c| (c.cell, c.neighbours, c.serving))
        .collect();
    cells.sort();
    assert_eq!(
        cells,
        [
            ("c0-0".to_owned(), vec!["c0-1".to_owned()], true),
            ("c0-1".to_owned(), vec!["c0-0".to_owned()], true)
        ]
    );
    let (status, _, body) = get(&app, "/v1/worlds/games/frontier/topology?watch=1").await;
    assert_eq!(
        (status, error(body).code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_parameter")
    );
}

/// Reads server-sent events off a body: `(event, id, data)` each.
async fn next_event(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buf: &mut String,
) -> Option<(String, String, String)> {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .filter_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if block.lines().all(|l| l.starts_with(':')) {
                continue; // a keep-alive comment
            }
            return Some((field("event"), field("id"), field("data")));
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")?
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_topology_stream_sends_the_layout_then_each_change_then_gone() {
    let state = fixture();
    let app = app(Arc::clone(&state), &generous());
    let response = app
        .oneshot(
            Request::get("/v1/worlds/games/frontier/topology")
                .header(ACCEPT, "text/event-stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut buf = String::new();

    let (event, id, data) = next_event(&mut body, &mut buf).await.unwrap();
    assert_eq!(event, "topology");
    let first: Topology = serde_json::from_str(&data).unwrap();
    assert_eq!(id, first.epoch.to_string());
    assert_eq!(first.cells.len(), 2);

    // The left child splits again: its children activate, and the stream follows.
    let (left, _) = world().split(Axis::X, 500.0).unwrap();
    let (bottom, top) = left.split(Axis::Y, 250.0).unwrap();
    {
        let mut worlds = state.write();
        worlds.set_cell(
            "games",
            "frontier-c0-00",
            key(),
            cell("c0-00", bottom, Some(20), "10.0.0.4"),
        );
        worlds.set_cell(
            "games",
            "frontier-c0-01",
            key(),
            cell("c0-01", top, Some(20), "10.0.0.5"),
        );
    }
    // The channel keeps only the newest view: the stream may skip the view with
    // one child active, never the last one.
    let mut last = first.clone();
    while last.cells.len() != 3 {
        let (event, _, data) = next_event(&mut body, &mut buf).await.unwrap();
        assert_eq!(event, "topology");
        let next: Topology = serde_json::from_str(&data).unwrap();
        assert!(next.epoch > last.epoch, "epochs grow along the stream");
        last = next;
    }
    assert_eq!(last.epoch.mark, 20);

    state.write().set_world(key(), None);
    let (event, _, _) = next_event(&mut body, &mut buf).await.unwrap();
    assert_eq!(event, "gone");
    assert!(next_event(&mut body, &mut buf).await.is_none(), "the stream ends");
}

#[tokio::test]
async fn streams_beyond_the_cap_are_refused_and_shutdown_ends_them() {
    let state = fixture();
    let limits = Limits {
        max_streams: 1,
        ..generous()
    };
    let app = app(Arc::clone(&state), &limits);
    let open = || {
        app.clone().oneshot(
            Request::get("/v1/worlds/games/frontier/topology")
                .header(ACCEPT, "text/event-stream")
                .body(Body::empty())
                .unwrap(),
        )
    };
    let first = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = open().await.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key(RETRY_AFTER));

    let mut body = first.into_body().into_data_stream();
    let mut buf = String::new();
    assert!(next_event(&mut body, &mut buf).await.is_some());
    state.close();
    assert!(
        next_event(&mut body, &mut buf).await.is_none(),
        "closing ends the stream"
    );
    drop(body);
    // Its permit is back.
    let third = open().await.unwrap();
    assert_eq!(third.status(), StatusCode::OK);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the query string, the answer is a success or a 4xx that says
    /// what is wrong (and names the parameter when one is at fault), never a
    /// panic or a 5xx.
    #[test]
    fn any_query_gets_a_located_cell_or_a_4xx_naming_the_problem(query in "[xyz0-9a-z=&%.+eE-]{0,40}") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let app = runtime.block_on(async { app(fixture(), &generous()) });
        let (status, _, body) = runtime.block_on(get(&app, &format!("{LOCATE}?{query}")));
        if status == StatusCode::OK {
            prop_assert!(serde_json::from_value::<Located>(body).is_ok());
        } else {
            prop_assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{query}: {status}"
            );
            let e = error(body);
            // (An empty name, as in `=1`, is named as the empty string.)
            prop_assert!(e.parameter.is_some(), "{query}");
            prop_assert!(!e.message.is_empty());
        }
    }
}
