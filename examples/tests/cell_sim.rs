//! The cell simulator as the operator meets it: two real `cell-sim` processes on
//! their own loopback addresses, players added to one, every session handed over
//! to the other exactly once, and a clean stop on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use fleetforge_core::contract::{ExportReport, LoadReport, Session};
use fleetforge_core::{Bounds, Point};
use serde_json::{Value, json};
use tempfile::TempDir;

const TOKEN: &str = "world-token-7f3a";
const BOUNDS: &str = r#"{"x":{"min":0,"max":1000},"y":{"min":-500,"max":500}}"#;
/// How long anything may take before the test gives up (a hang guard, not a
/// timing assertion).
const DEADLINE: Duration = Duration::from_secs(60);

/// One `cell-sim` process, killed when dropped so a failed test leaves none behind.
struct Sim {
    child: Child,
    base: String,
    dir: TempDir,
}

impl Sim {
    fn start(ip: &str, pod: &str, drain_timeout_seconds: &str) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        std::fs::write(tokens.join("token"), format!("{TOKEN}\n")).unwrap();
        let log = File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cell-sim"))
            .env("FLEETFORGE_POD_IP", ip)
            // Port 0: the kernel picks a free one and the cell logs it.
            .env("FLEETFORGE_HTTP_PORT", "0")
            .env("FLEETFORGE_WORLD", "meadow")
            .env("FLEETFORGE_CELL_ID", "c0")
            .env("FLEETFORGE_CELL_INCARNATION", "0")
            .env("FLEETFORGE_POD_NAME", pod)
            .env("FLEETFORGE_CELL_BOUNDS", BOUNDS)
            .env("FLEETFORGE_CELL_CAPACITY", "400")
            .env("FLEETFORGE_TOKEN_DIR", &tokens)
            .env("FLEETFORGE_DRAIN_TIMEOUT_SECONDS", drain_timeout_seconds)
            .env("FLEETFORGE_LOG_FORMAT", "json")
            .env("FLEETFORGE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cell-sim starts");
        Sim {
            child,
            base: format!("http://{ip} (port not yet known)"),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn token_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The address the process logged it serves on, once it did.
    fn serving_address(&self) -> Option<String> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == "serving")
            .and_then(|line| line["address"].as_str().map(str::to_owned))
    }

    /// Waits until the process says where it serves and `/healthz` answers there;
    /// fails early if the process died.
    async fn wait_healthy(&mut self, http: &reqwest::Client) {
        let log = self.dir.path().join("log");
        let base = fleetforge_testenv::eventually(
            "cell-sim serving and healthy",
            DEADLINE,
            Duration::from_millis(50),
            || {
                let exited = self.child.try_wait().unwrap();
                let address = self.serving_address();
                let log = log.clone();
                async move {
                    if let Some(status) = exited {
                        panic!(
                            "cell-sim exited with {status} before serving:\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    let Some(address) = address else {
                        return Ok(None);
                    };
                    let base = format!("http://{address}");
                    let healthy = http
                        .get(format!("{base}/healthz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    Ok(healthy.then_some(base))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}:\n{}", self.log()));
        self.base = base;
    }

    /// Sends SIGTERM and waits for the process to exit.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let base = self.base.clone();
        fleetforge_testenv::eventually(
            &format!("{base} exits after SIGTERM"),
            DEADLINE,
            Duration::from_millis(50),
            || {
                let status = self.child.try_wait().unwrap();
                async move { Ok(status) }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}:\n{}", self.log()))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    http: &reqwest::Client,
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = match method {
        "GET" => http.get(url),
        _ => http.post(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn sessions(http: &reqwest::Client, sim: &Sim) -> Vec<Session> {
    let (status, body) = call(http, "GET", sim.url("/v1/admin/sessions"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body["sessions"].clone()).unwrap()
}

async fn load(http: &reqwest::Client, sim: &Sim) -> LoadReport {
    let (status, body) = call(http, "GET", sim.url("/v1/load"), None, None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn players(http: &reqwest::Client, sim: &Sim, body: Value) -> (u16, Value) {
    call(
        http,
        "POST",
        sim.url("/v1/admin/players"),
        Some(TOKEN),
        Some(body),
    )
    .await
}

fn ids(sessions: &[Session]) -> BTreeSet<String> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

#[tokio::test]
async fn sessions_move_exactly_once_and_an_empty_cell_stops_cleanly() {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let bounds: Bounds = serde_json::from_str(BOUNDS).unwrap();
    let mut a = Sim::start("127.0.0.2", "meadow-c0-0", "25");
    let mut b = Sim::start("127.0.0.3", "meadow-c1-0", "1");
    a.wait_healthy(&http).await;
    b.wait_healthy(&http).await;
    assert_eq!(call(&http, "GET", a.url("/readyz"), None, None).await.0, 200);

    // The hand-over and admin endpoints need the world's token; load does not.
    let export = json!({"targets": [{"address": b.base, "bounds": bounds}]});
    for token in [None, Some("wrong"), Some("")] {
        let (status, _) = call(&http, "GET", a.url("/v1/admin/sessions"), token, None).await;
        assert_eq!(status, 401, "token {token:?}");
        let (status, _) = call(
            &http,
            "POST",
            a.url("/v1/handoff/export"),
            token,
            Some(export.clone()),
        )
        .await;
        assert_eq!(status, 401, "token {token:?}");
        let (status, _) = call(
            &http,
            "POST",
            a.url("/v1/admin/players"),
            token,
            Some(json!({"add": 1})),
        )
        .await;
        assert_eq!(status, 401, "token {token:?}");
    }
    assert_eq!(load(&http, &a).await.players, 0);

    // Bad input is refused with the field named.
    let (status, body) = players(&http, &a, json!({"add": "many"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("add: "), "{body}");
    let (status, body) = players(
        &http,
        &a,
        json!({"add": 1, "distribution": {"around": {"center": {"x": 1}, "spread": -1}}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("spread"), "{body}");

    // Players: spread out, in a hot spot on the edge, and ramped into a box.
    let (status, body) = players(&http, &a, json!({"add": 300, "distribution": {"uniform": {}}})).await;
    assert_eq!((status, body["players"].as_u64()), (200, Some(300)), "{body}");
    let hot = json!({"around": {"center": {"x": 990, "y": 490}, "spread": 40}});
    let (status, _) = players(&http, &a, json!({"add": 100, "distribution": hot})).await;
    assert_eq!(status, 200);
    let within = json!({"within": {"x": {"min": 100, "max": 200}, "y": {"min": 0, "max": 10}}});
    let (status, _) = players(
        &http,
        &a,
        json!({"add": 60, "distribution": within, "rampSeconds": 0.5}),
    )
    .await;
    assert_eq!(status, 200);
    fleetforge_testenv::eventually(
        "the ramp finished",
        DEADLINE,
        Duration::from_millis(50),
        || async { Ok((load(&http, &a).await.players >= 460).then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}:\n{}", a.log()));
    let report = load(&http, &a).await;
    assert_eq!(
        (report.players, report.capacity, report.draining),
        (460, 400, false)
    );
    let h = report.histogram.expect("a histogram");
    assert_eq!((h.x.len(), h.y.len(), h.z.len()), (10, 10, 0));
    assert_eq!(h.x.iter().sum::<u32>(), 460);
    assert_eq!(h.y.iter().sum::<u32>(), 460);
    // The 60 ramped players sit in x bin 1 (100..200); the hot spot fills the last.
    assert!(h.x[1] >= 60, "{h:?}");
    assert!(h.x[9] >= 90, "{h:?}");

    // Players leave oldest first.
    let before = sessions(&http, &a).await;
    let (status, body) = players(&http, &a, json!({"remove": 10})).await;
    assert_eq!((status, body["players"].as_u64()), (200, Some(450)), "{body}");
    let held = sessions(&http, &a).await;
    assert_eq!(held.as_slice(), &before[10..]);
    assert_eq!(ids(&held).len(), 450, "ids are unique");
    for s in &held {
        assert!(s.id.starts_with("meadow-c0-0-"), "{}", s.id);
        assert!(bounds.contains(&s.position), "{s:?} outside the cell");
    }
    let (_, metrics) = call(&http, "GET", a.url("/metrics"), None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(metrics.contains("fleetforge_cell_players 450"), "{metrics}");
    assert!(metrics.contains("fleetforge_cell_capacity 400"), "{metrics}");

    // Without a target there is nothing to hand over to.
    let (status, body) = call(
        &http,
        "POST",
        a.url("/v1/handoff/export"),
        Some(TOKEN),
        Some(json!({"targets": []})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("targets"), "{body}");

    // Every session moves to B, exactly once.
    let (status, body) = call(
        &http,
        "POST",
        a.url("/v1/handoff/export"),
        Some(TOKEN),
        Some(export.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", a.log());
    let report: ExportReport = serde_json::from_value(body).unwrap();
    assert_eq!(
        report,
        ExportReport {
            total: 450,
            moved: vec![450],
            remaining: 0
        }
    );
    assert!(sessions(&http, &a).await.is_empty());
    let on_b = sessions(&http, &b).await;
    assert_eq!(on_b.len(), 450);
    assert_eq!(ids(&on_b), ids(&held));
    let position =
        |s: &[Session], id: &str| -> Option<Point> { s.iter().find(|s| s.id == id).map(|s| s.position) };
    assert!(held.iter().all(|s| position(&on_b, &s.id) == Some(s.position)));
    assert_eq!(load(&http, &b).await.players, 450);

    // A is handing over for good: not ready, no new players, no imports.
    assert_eq!(call(&http, "GET", a.url("/readyz"), None, None).await.0, 503);
    assert!(load(&http, &a).await.draining);
    assert_eq!(players(&http, &a, json!({"add": 1})).await.0, 503);
    let import = json!({"sessions": [{"id": "x-1", "position": {"x": 1, "y": 1}}]});
    let (status, _) = call(
        &http,
        "POST",
        a.url("/v1/handoff/import"),
        Some(TOKEN),
        Some(import.clone()),
    )
    .await;
    assert_eq!(status, 503);

    // Asking again moves nothing and duplicates nothing.
    let (status, body) = call(
        &http,
        "POST",
        a.url("/v1/handoff/export"),
        Some(TOKEN),
        Some(export),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let again: ExportReport = serde_json::from_value(body).unwrap();
    assert_eq!(
        again,
        ExportReport {
            total: 0,
            moved: vec![0],
            remaining: 0
        }
    );
    assert_eq!(sessions(&http, &b).await.len(), 450);

    // An import repeated (its first answer lost) is acknowledged, not duplicated.
    let first = &held[0];
    let repeat = json!({"sessions": [first, {"id": "x-1", "position": {"x": 1, "y": 1}}]});
    let (status, body) = call(
        &http,
        "POST",
        b.url("/v1/handoff/import"),
        Some(TOKEN),
        Some(repeat),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["players"].as_u64()),
        (Some(2), Some(451)),
        "{body}"
    );

    // The token rotates: the new one and the previous one are both accepted.
    std::fs::write(b.token_dir().join("token"), "rotated").unwrap();
    std::fs::write(b.token_dir().join("previous"), TOKEN).unwrap();
    for (token, status) in [("rotated", 200), (TOKEN, 200), ("other", 401)] {
        let got = call(&http, "GET", b.url("/v1/admin/sessions"), Some(token), None)
            .await
            .0;
        assert_eq!(got, status, "token {token}");
    }

    // The empty cell stops at once on SIGTERM; the full one after its drain
    // timeout; both successfully.
    let status = a.terminate().await;
    assert!(status.success(), "{status}:\n{}", a.log());
    assert!(a.log().contains("stopped with no session left"), "{}", a.log());
    let status = b.terminate().await;
    assert!(status.success(), "{status}:\n{}", b.log());
    assert!(b.log().contains("drain timeout passed"), "{}", b.log());
}
