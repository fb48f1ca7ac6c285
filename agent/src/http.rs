//! The agent's HTTP endpoints: `GET /health`, `GET /state` (also `/slave(1)/state`, as Mesos serves it),
//! `/metrics/snapshot` and `/metrics`, and the sandbox `/files/*` routes of [`crate::files`].

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::core::AgentCore;

/// The agent's routes; sandboxes are served from under `work_dir`; `/metrics` includes the shell's `launches`.
pub fn router(
    core: Arc<Mutex<AgentCore>>,
    launches: Arc<crate::metrics::LaunchTimes>,
    work_dir: std::path::PathBuf,
) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/state", get(state))
        .route("/slave(1)/state", get(state))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics", get(metrics_prometheus).with_state((core.clone(), launches)))
        .with_state(core.clone())
        .merge(crate::files::router(work_dir))
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
