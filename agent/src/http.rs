//! The agent's HTTP endpoints: `GET /health` and `GET /state` (also `/slave(1)/state`, as Mesos serves it).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::core::AgentCore;

pub fn router(core: Arc<Mutex<AgentCore>>) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/state", get(state))
        .route("/slave(1)/state", get(state))
        .with_state(core)
}

async fn state(State(core): State<Arc<Mutex<AgentCore>>>) -> Json<serde_json::Value> {
    let core = core.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Json(core.state_json())
}
