//! The cell contract over HTTP, and the simulator's admin endpoints.
//!
//! One lock guards the sessions together with the cell's phase (serving,
//! draining, handing over), so an addition or import either lands before an
//! export takes its snapshot or is refused: no session can slip in behind an
//! export and be left stranded in a cell that is going away.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetforge_core::contract::{EXPORT, ExportReport, IMPORT, ImportReport, LOAD, LoadReport, Session};
use fleetforge_core::{Bounds, Point};
use fleetforge_obs::AdminState;
use reqwest::Url;
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::body;
use crate::config::Config;
use crate::export;
use crate::players::{Distribution, PlayersRequest, ramp_interval, ramp_steps};
use crate::sessions::SessionStore;
use crate::telemetry;
use crate::token::{TokenDir, bearer};

/// Adds or removes simulated players.
pub const ADMIN_PLAYERS: &str = "/v1/admin/players";
/// Lists every session held.
pub const ADMIN_SESSIONS: &str = "/v1/admin/sessions";

/// Largest request body: an import batch of [`export::BATCH`] sessions with long
/// ids is well under a megabyte, so this leaves room for importers that batch
/// more generously.
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The sessions and the phase of the cell, changed together under one lock.
#[derive(Debug)]
pub struct Cell {
    /// The sessions held.
    pub sessions: SessionStore,
    /// Set by SIGTERM: the process is about to stop.
    pub draining: bool,
    /// Set by the first export: the cell's sessions are leaving for good.
    pub handing_over: bool,
}

impl Cell {
    /// Whether new players and imports are taken.
    fn accepting(&self) -> bool {
        !self.draining && !self.handing_over
    }

    /// Why new players and imports are refused, when they are.
    fn refusal(&self) -> Option<ApiError> {
        let why = if self.handing_over {
            "the cell is handing its sessions over and takes no new ones"
        } else if self.draining {
            "the cell is draining and takes no new sessions"
        } else {
            return None;
        };
        Some(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why))
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// The settings the process runs with.
    pub config: Config,
    cell: Mutex<Cell>,
    /// Held for the length of an export, so two exports never send the same
    /// sessions at once.
    export_lock: tokio::sync::Mutex<()>,
    admin: AdminState,
    tokens: TokenDir,
    client: reqwest::Client,
}

/// The state as handlers hold it.
pub type Shared = Arc<AppState>;

impl AppState {
    /// State for a cell with no session yet; `admin` answers `/readyz` and
    /// `/metrics`.
    pub fn new(config: Config, admin: AdminState, client: reqwest::Client) -> Shared {
        Arc::new(Self {
            cell: Mutex::new(Cell {
                sessions: SessionStore::new(config.pod_name.clone()),
                draining: false,
                handing_over: false,
            }),
            tokens: TokenDir::new(config.token_dir.clone()),
            config,
            export_lock: tokio::sync::Mutex::new(()),
            admin,
            client,
        })
    }

    /// The cell, locked. A handler that panicked while holding the lock left
    /// the store consistent (every change is a single insert or removal), so a
    /// poisoned lock is used as is rather than taking the whole server down.
    pub fn lock(&self) -> MutexGuard<'_, Cell> {
        self.cell.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops taking players and imports for good (SIGTERM).
    pub fn start_draining(&self) {
        let mut cell = self.lock();
        cell.draining = true;
        self.stopped_accepting();
    }

    /// Marks the cell not ready; called with the cell lock held.
    fn stopped_accepting(&self) {
        self.admin.set_ready(false);
        telemetry::draining();
    }

    /// Whether the cell holds no session.
    pub fn is_empty(&self) -> bool {
        self.lock().sessions.is_empty()
    }

    /// Sessions held.
    pub fn players(&self) -> usize {
        self.lock().sessions.len()
    }
}

/// An error answer: a status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }))
    }
}

/// `value` as a JSON answer with `status`.
fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Every route: the contract, the simulator's admin endpoints, and `/healthz`,
/// `/readyz` and `/metrics` from `admin`.
pub fn router(state: Shared, admin: AdminState) -> Router {
    let authenticated = Router::new()
        .route(ADMIN_PLAYERS, post(players))
        .route(ADMIN_SESSIONS, get(sessions))
        .route(EXPORT, post(export))
        .route(IMPORT, post(import))
        // A route layer, so unknown paths answer 404 rather than 401.
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route(LOAD, get(load))
        .merge(authenticated)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
        .merge(fleetforge_obs::admin::router(admin))
}

/// Lets a request through only with an accepted bearer token.
async fn authenticate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if state.tokens.accepts(header).await {
        return next.run(request).await;
    }
    debug!(
        path = request.uri().path(),
        "refused a request without an accepted token"
    );
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required").into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    response
}

/// `GET /v1/load`.
async fn load(State(state): State<Shared>) -> Response {
    let report = {
        let cell = state.lock();
        LoadReport {
            players: cell.sessions.count(),
            capacity: state.config.capacity,
            histogram: Some(cell.sessions.histogram(&state.config.bounds)),
            draining: !cell.accepting(),
        }
    };
    json_response(StatusCode::OK, &report)
}

/// The answer of the players endpoint.
#[derive(Serialize)]
struct PlayersReport {
    players: u32,
}

/// `POST /v1/admin/players`.
async fn players(State(state): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let request = PlayersRequest::parse(&body, &state.config.bounds).map_err(ApiError::bad_request)?;
    let players = match request {
        PlayersRequest::Remove { count } => {
            let mut cell = state.lock();
            // Players may leave a draining cell (that is how a drain ends), but
            // not one handing over: a session removed after the export's
            // snapshot would reappear in the importing cell.
            if cell.handing_over {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the cell is handing its sessions over: its players cannot leave it meanwhile",
                ));
            }
            let removed = cell
                .sessions
                .remove_oldest(usize::try_from(count).unwrap_or(usize::MAX));
            let players = cell.sessions.count();
            telemetry::players(players);
            info!(removed, players, "players removed");
            players
        }
        PlayersRequest::Add {
            count,
            distribution,
            ramp,
        } => {
            if ramp.is_zero() {
                let players = add_players(&state, count, &distribution)?;
                info!(added = count, players, "players added");
                players
            } else {
                let players = {
                    let cell = state.lock();
                    if let Some(refusal) = cell.refusal() {
                        return Err(refusal);
                    }
                    cell.sessions.count()
                };
                info!(
                    count,
                    ramp_seconds = ramp.as_secs_f64(),
                    "adding players over a ramp"
                );
                tokio::spawn(ramp_up(state.clone(), count, distribution, ramp));
                players
            }
        }
    };
    Ok(json_response(StatusCode::OK, &PlayersReport { players }))
}

/// Adds `count` players placed by `distribution`; the number of players after,
/// or the refusal when the cell takes no new players.
fn add_players(state: &AppState, count: u32, distribution: &Distribution) -> Result<u32, ApiError> {
    // Positions are drawn before taking the lock, which a large request would
    // otherwise hold for the whole draw.
    let mut rng = rand::rng();
    let positions: Vec<Point> = (0..count)
        .map(|_| distribution.sample(&state.config.bounds, &mut rng))
        .collect();
    let mut cell = state.lock();
    if let Some(refusal) = cell.refusal() {
        return Err(refusal);
    }
    for p in positions {
        cell.sessions.add(p);
    }
    let players = cell.sessions.count();
    telemetry::players(players);
    Ok(players)
}

/// Adds `count` players in small steps over `ramp`, stopping early once the cell
/// takes no new players.
async fn ramp_up(state: Shared, count: u32, distribution: Distribution, ramp: std::time::Duration) {
    let mut interval = tokio::time::interval(ramp_interval());
    let mut added: u64 = 0;
    for step in ramp_steps(count, ramp) {
        interval.tick().await;
        if step == 0 {
            continue;
        }
        if add_players(&state, step, &distribution).is_err() {
            info!(added, of = count, "ramp stopped: the cell takes no new players");
            return;
        }
        added += u64::from(step);
    }
    info!(added, players = state.players(), "ramp finished");
}

/// The answer of the sessions endpoint.
#[derive(Serialize)]
struct SessionsReport {
    sessions: Vec<Session>,
}

/// `GET /v1/admin/sessions`.
async fn sessions(State(state): State<Shared>) -> Response {
    let sessions = state.lock().sessions.sessions();
    json_response(StatusCode::OK, &SessionsReport { sessions })
}

/// Reads an [`fleetforge_core::contract::ExportRequest`]: each target's import
/// URL and bounds. Unknown fields are ignored, as the contract may grow.
fn parse_export(body: &[u8], cell: &Bounds) -> Result<Vec<(Url, Bounds)>, String> {
    let mut fields = body::object(body)?;
    let targets = fields
        .remove("targets")
        .ok_or_else(|| "targets: required".to_owned())?;
    let targets = body::as_array(targets, "targets")?;
    if targets.is_empty() {
        return Err("targets: at least one target is required".to_owned());
    }
    targets
        .into_iter()
        .enumerate()
        .map(|(i, target)| {
            let path = format!("targets[{i}]");
            let mut fields = body::as_object(target, &path)?;
            let address: String = body::take(&mut fields, &path, "address")?
                .ok_or_else(|| format!("{path}.address: required"))?;
            let bounds: Bounds = body::take(&mut fields, &path, "bounds")?
                .ok_or_else(|| format!("{path}.bounds: required"))?;
            let url = export::import_url(&address).map_err(|e| format!("{path}.address: {e}"))?;
            if bounds.dims() != cell.dims() {
                return Err(format!(
                    "{path}.bounds: a {}-D box for a {}-D cell",
                    bounds.dims(),
                    cell.dims()
                ));
            }
            Ok((url, bounds))
        })
        .collect()
}

/// `POST /v1/handoff/export`.
async fn export(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let targets = parse_export(&body, &state.config.bounds).map_err(ApiError::bad_request)?;
    // Importers share the token: present the current one, or the one this
    // request was let in with when only the previous one is mounted.
    let token = match state.tokens.current().await {
        Some(token) => token,
        None => headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required"))?,
    };

    let _one_export_at_a_time = state.export_lock.lock().await;
    let snapshot = {
        let mut cell = state.lock();
        if !cell.handing_over {
            info!(
                sessions = cell.sessions.len(),
                "handing over: the cell takes no new sessions from now on"
            );
        }
        cell.handing_over = true;
        state.stopped_accepting();
        cell.sessions.sessions()
    };
    let total = snapshot.len();
    let bounds: Vec<Bounds> = targets.iter().map(|(_, b)| *b).collect();
    let plan = export::plan(snapshot, &bounds, export::BATCH)
        .ok_or_else(|| ApiError::bad_request("targets: at least one target is required".to_owned()))?;

    // Targets are served at once; dropping the set (the caller went away)
    // aborts them, and whatever was not acknowledged stays here for the next
    // export.
    let mut sends = JoinSet::new();
    for (i, ((url, _), batches)) in targets.into_iter().zip(plan).enumerate() {
        let (state, token) = (state.clone(), token.clone());
        sends.spawn(async move { (i, send_share(&state, &url, &token, batches).await) });
    }
    let mut moved = vec![0_u32; bounds.len()];
    while let Some(joined) = sends.join_next().await {
        match joined {
            Ok((i, n)) => {
                if let Some(slot) = moved.get_mut(i) {
                    *slot = n;
                }
            }
            Err(e) => warn!(error = %e, "a hand-over task failed"),
        }
    }
    let report = ExportReport {
        total: u32::try_from(total).unwrap_or(u32::MAX),
        moved,
        remaining: state.lock().sessions.count(),
    };
    info!(
        total = report.total,
        moved = ?report.moved,
        remaining = report.remaining,
        "export finished"
    );
    Ok(json_response(StatusCode::OK, &report))
}

/// Sends one target's batches in order, forgetting each batch once the importer
/// acknowledged it; stops at the first failure. Returns the sessions moved.
async fn send_share(state: &AppState, url: &Url, token: &str, batches: Vec<Vec<Session>>) -> u32 {
    let mut moved: usize = 0;
    for batch in batches {
        if let Err(e) = export::send_batch(&state.client, url, token, &batch).await {
            telemetry::export_failed();
            warn!(
                importer = %url,
                error = %e,
                moved,
                "hand-over to this importer stopped; what is left can be exported again"
            );
            break;
        }
        let removed = {
            let mut cell = state.lock();
            let removed = cell.sessions.remove_ids(batch.iter().map(|s| s.id.as_str()));
            telemetry::players(cell.sessions.count());
            removed
        };
        telemetry::exported(removed);
        moved += removed;
    }
    u32::try_from(moved).unwrap_or(u32::MAX)
}

/// Reads an [`fleetforge_core::contract::ImportRequest`], checking every
/// session. Unknown fields are ignored, as the contract may grow.
fn parse_import(body: &[u8]) -> Result<Vec<Session>, String> {
    let mut fields = body::object(body)?;
    let sessions = fields
        .remove("sessions")
        .ok_or_else(|| "sessions: required".to_owned())?;
    body::as_array(sessions, "sessions")?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let path = format!("sessions[{i}]");
            let s: Session = body::decode(v, &path)?;
            if s.id.is_empty() {
                return Err(format!("{path}.id: must not be empty"));
            }
            let p = s.position;
            if ![p.x, p.y, p.z].iter().all(|c| c.is_finite()) {
                return Err(format!("{path}.position: coordinates must be finite"));
            }
            Ok(s)
        })
        .collect()
}

/// `POST /v1/handoff/import`.
async fn import(State(state): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let sessions = parse_import(&body).map_err(ApiError::bad_request)?;
    let accepted = sessions.len();
    let (new, players) = {
        let mut cell = state.lock();
        if let Some(refusal) = cell.refusal() {
            return Err(refusal);
        }
        // A session already held came in an earlier attempt whose answer was
        // lost: it is acknowledged again, not duplicated.
        let mut new = 0_usize;
        for s in sessions {
            new += usize::from(cell.sessions.insert(s));
        }
        let players = cell.sessions.count();
        telemetry::players(players);
        (new, players)
    };
    telemetry::imported(new);
    info!(accepted, new, players, "sessions imported");
    let report = ImportReport {
        accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        players,
    };
    Ok(json_response(StatusCode::OK, &report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_requests_are_checked_target_by_target() {
        let cell = Bounds::rect((0.0, 10.0), (0.0, 10.0)).unwrap();
        let b = r#"{"x":{"min":0,"max":10},"y":{"min":0,"max":10}}"#;
        let ok = parse_export(
            format!(r#"{{"targets":[{{"address":"http://127.0.0.1:1","bounds":{b}}}]}}"#).as_bytes(),
            &cell,
        )
        .unwrap();
        assert_eq!(ok[0].0.as_str(), "http://127.0.0.1:1/v1/handoff/import");
        assert_eq!(ok[0].1, cell);
        let err = |json: String| parse_export(json.as_bytes(), &cell).unwrap_err();
        assert_eq!(
            err(r#"{"targets":[]}"#.into()),
            "targets: at least one target is required"
        );
        assert_eq!(err("{}".into()), "targets: required");
        assert!(
            err(format!(r#"{{"targets":[{{"address":"http://a","bounds":{b}}},{{"address":"ftp://b","bounds":{b}}}]}}"#))
                .starts_with("targets[1].address: ")
        );
        assert!(
            err(r#"{"targets":[{"address":"http://a","bounds":{"x":{"min":0,"max":1}}}]}"#.into())
                .starts_with("targets[0].bounds: a 1-D box")
        );
        assert!(
            err(r#"{"targets":[{"address":"http://a"}]}"#.into()).starts_with("targets[0].bounds: required")
        );
    }

    #[test]
    fn import_requests_are_checked_session_by_session() {
        let ok = parse_import(br#"{"sessions":[{"id":"a","position":{"x":1}}]}"#).unwrap();
        assert_eq!(ok[0].position, Point::new(1.0, 0.0, 0.0));
        let err = |json: &str| parse_import(json.as_bytes()).unwrap_err();
        assert!(
            err(r#"{"sessions":[{"id":"a","position":{"x":1}},{"id":"b"}]}"#).starts_with("sessions[1]: ")
        );
        assert!(err(r#"{"sessions":[{"id":"","position":{"x":1}}]}"#).starts_with("sessions[0].id: "));
        assert!(err(r#"{"sessions":{}}"#).starts_with("sessions: "));
    }
}
