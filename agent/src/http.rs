//! The agent's HTTP endpoints: `GET /health`, `GET /state` (also `/slave(1)/state`, as Mesos serves it),
//! `/metrics/snapshot` and `/metrics`, the sandbox `/files/*` routes of [`crate::files`], and Mesos's v1 operator
//! API at `POST /api/v1` ([`crate::api`]); [`app`] joins them with `/monitor/statistics` and answers as Mesos does
//! what nothing serves: 404 for an unknown path, 405 (naming the allowed methods) for a known path asked with
//! another method.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::core::AgentCore;

/// Everything the agent serves on `port`: [`router`], `more` (the statistics routes) and the Mesos answers for the
/// rest.
pub fn app(
    core: Arc<Mutex<AgentCore>>,
    launches: Arc<crate::metrics::LaunchTimes>,
    config: &crate::Config,
    port: u16,
    more: Router,
) -> Router {
    let routes = router(core, launches, config, port).merge(more).fallback(agora_runtime::http::not_found);
    agora_runtime::http::explain_method_not_allowed(routes)
}

/// The agent's routes (it listens on `port`); sandboxes are served from under the work dir; `/metrics` includes
/// the shell's `launches`.
pub fn router(
    core: Arc<Mutex<AgentCore>>,
    launches: Arc<crate::metrics::LaunchTimes>,
    config: &crate::Config,
    port: u16,
) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/state", get(state))
        .route("/slave(1)/state", get(state))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics", get(metrics_prometheus).with_state((core.clone(), launches)))
        .with_state(core.clone())
        .merge(crate::files::router(config.work_dir.clone()))
        .merge(crate::api::router(core, config, port, metrics_now))
}

fn lock(core: &Mutex<AgentCore>) -> std::sync::MutexGuard<'_, AgentCore> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn metrics_now(core: &Mutex<AgentCore>) -> crate::metrics::Snapshot {
    let (state, gc) = {
        let core = lock(core);
        (core.state_json(), core.gc_counters())
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64());
    let mut snapshot = crate::metrics::snapshot(&state, now.unwrap_or_default());
    crate::metrics::add_gc(&mut snapshot, &gc);
    snapshot
}

async fn metrics_snapshot(State(core): State<Arc<Mutex<AgentCore>>>) -> Json<crate::metrics::Snapshot> {
    Json(metrics_now(&core))
}

async fn metrics_prometheus(
    State((core, launches)): State<(Arc<Mutex<AgentCore>>, Arc<crate::metrics::LaunchTimes>)>,
) -> impl axum::response::IntoResponse {
    let text = crate::metrics::prometheus(&metrics_now(&core), &launches.snapshot());
    ([(axum::http::header::CONTENT_TYPE, agora_proto::prometheus::CONTENT_TYPE)], text)
}

async fn state(State(core): State<Arc<Mutex<AgentCore>>>) -> Json<serde_json::Value> {
    let core = core.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Json(core.state_json())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::http::StatusCode;

    use super::*;

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405_as_mesos_answers() {
        let work = tempfile::tempdir().unwrap();
        let settings = crate::core::tests::settings(Instant::now());
        let core = Arc::new(Mutex::new(AgentCore::new(settings)));
        let more = Router::new().route("/monitor/statistics", get(|| async { "[]" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let work_dir = work.path().display().to_string();
        let flags = ["agora-agent", "--master", "127.0.0.1:5050", "--work-dir", &work_dir];
        let config = <crate::Flags as clap::Parser>::try_parse_from(flags).expect("flags").config().expect("config");
        let port = listener.local_addr().unwrap().port();
        let launches = Arc::new(crate::metrics::LaunchTimes::default());
        let server = tokio::spawn(axum::serve(listener, app(core, launches, &config, port, more)).into_future());
        let http = reqwest::Client::new();
        // (method, path, status, Allow, body); an empty body is Mesos's 404.
        let cases: &[(&str, &str, StatusCode, Option<&str>, &str)] = &[
            ("GET", "/health", StatusCode::OK, None, ""),
            ("GET", "/monitor/statistics", StatusCode::OK, None, "[]"),
            ("GET", "/nope", StatusCode::NOT_FOUND, None, ""),
            ("GET", "/slave(1)/nope", StatusCode::NOT_FOUND, None, ""),
            (
                "POST",
                "/state",
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET,HEAD"),
                "Expecting one of { 'GET', 'HEAD' }, but received 'POST'",
            ),
            (
                "DELETE",
                "/files/browse",
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET,HEAD"),
                "Expecting one of { 'GET', 'HEAD' }, but received 'DELETE'",
            ),
        ];
        for (method, path, status, allow, body) in cases {
            let r = http.request(method.parse().unwrap(), format!("{base}{path}")).send().await.unwrap();
            let got_allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
            let got = (r.status(), got_allow, r.text().await.unwrap());
            assert_eq!(got, (*status, allow.map(String::from), body.to_string()), "{method} {path}");
        }
        server.abort();
    }
}
