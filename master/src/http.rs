//! The master's HTTP endpoints, on the same port as gRPC: `/health`, `/version`, `/master/state` (also `/state`,
//! `/state.json`, `/master/state.json`) and `/master/redirect` (also `/redirect`).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::oneshot;

use crate::server::{Handle, Input};

pub(crate) fn router(handle: Handle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/master/health", get(health))
        .route("/version", get(version))
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/state", get(state))
        .route("/state.json", get(state))
        .route("/master/redirect", get(redirect))
        .route("/redirect", get(redirect))
        .with_state(handle.clone())
        .merge(crate::web::router(handle))
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "version": agora_proto::model::VERSION,
        "build_date": "",
        "build_user": "",
    }))
}

async fn state(State(handle): State<Handle>) -> Response {
    let (reply, rx) = oneshot::channel();
    handle.send(Input::State { reply });
    match rx.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down").into_response(),
    }
}

/// Mesos's `/master/redirect`: 307 to the leading master (this one, in standalone mode).
async fn redirect(State(handle): State<Handle>) -> Response {
    let location = format!("//{}:{}", handle.info.hostname, handle.info.port);
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
