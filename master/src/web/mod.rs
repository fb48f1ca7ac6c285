//! What operators look at: the status page at `/` (static assets embedded in the binary), the JSON it reads
//! (`/master/summary`, `/master/agents`, `/master/frameworks`, `/master/tasks`, `/master/tasks/{id}`), sandbox access
//! through the master (`/master/tasks/{id}/sandbox`, `/master/agents/{id}/files/{browse,read,download}`, a proxy to
//! the agent's `/files/*`, so the browser never addresses agents), and metrics (`/metrics/snapshot`, `/metrics`).
//!
//! Handlers are thin: they send the actor an [`Input::Inspect`] carrying a pure query from [`query`] or
//! [`crate::metrics`] and serve the answer; only the proxy does I/O of its own.

pub mod query;

use std::time::Duration;

use crate::actor::Handle;
use crate::core::{Master, Now};
use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// How long the master waits for an agent's files or state.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct WebState {
    handle: Handle,
    http: reqwest::Client,
}

pub(crate) fn router(handle: Handle) -> Router {
    let http = reqwest::Client::builder().timeout(AGENT_TIMEOUT).build().unwrap_or_default();
    Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/assets/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/assets/style.css", get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics", get(metrics_prometheus))
        .route("/master/summary", get(summary))
        .route("/master/agents", get(agents))
        .route("/master/frameworks", get(frameworks))
        .route("/master/tasks", get(tasks))
        .route("/master/tasks/{task_id}", get(task))
        .route("/master/tasks/{task_id}/sandbox", get(sandbox))
        .route("/master/agents/{agent_id}/files/{op}", get(agent_files))
        .with_state(WebState { handle, http })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// Runs a read-only query on the actor.
async fn inspect<T: Send + 'static>(
    handle: &Handle,
    query: impl FnOnce(&Master, Now) -> T + Send + 'static,
) -> Result<T, Response> {
    handle.inspect(query).await.ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "master is shutting down"))
}

async fn json_query(handle: &Handle, query: impl FnOnce(&Master, Now) -> Value + Send + 'static) -> Response {
    match inspect(handle, query).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn metrics_snapshot(State(s): State<WebState>) -> Response {
    match s.handle.metrics().await {
        Some(snapshot) => axum::Json(json!(snapshot)).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "master is shutting down"),
    }
}

async fn metrics_prometheus(State(s): State<WebState>) -> Response {
    match s.handle.prometheus().await {
        Some(text) => ([(header::CONTENT_TYPE, agora_proto::prometheus::CONTENT_TYPE)], text).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "master is shutting down"),
    }
}

async fn summary(State(s): State<WebState>) -> Response {
    json_query(&s.handle, query::summary).await
}

async fn agents(State(s): State<WebState>) -> Response {
    json_query(&s.handle, |m, _| query::agents(m)).await
}

async fn frameworks(State(s): State<WebState>) -> Response {
    json_query(&s.handle, |m, _| query::frameworks(m)).await
}

async fn tasks(State(s): State<WebState>, Query(q): Query<query::TaskQuery>) -> Response {
    json_query(&s.handle, move |m, _| query::tasks(m, &q)).await
}

#[derive(Debug, Default, Deserialize)]
struct FrameworkParam {
    framework_id: Option<String>,
}

async fn task(State(s): State<WebState>, Path(task_id): Path<String>, Query(p): Query<FrameworkParam>) -> Response {
    let id = task_id.clone();
    match inspect(&s.handle, move |m, _| query::task(m, &id, p.framework_id.as_deref())).await {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("the master does not know task '{task_id}'")),
        Err(r) => r,
    }
}

/// `{"agent_id", "framework_id", "directory"}` of a task's latest sandbox, asked of its agent.
async fn sandbox(State(s): State<WebState>, Path(task_id): Path<String>, Query(p): Query<FrameworkParam>) -> Response {
    let id = task_id.clone();
    let found = inspect(&s.handle, move |m, _| {
        let (agent_id, framework_id) = query::task_location(m, &id, p.framework_id.as_deref())?;
        let url = query::agent_url(m, &agent_id);
        Some((agent_id, framework_id, url))
    })
    .await;
    let (agent_id, framework_id, url) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("the master does not know task '{task_id}'")),
        Err(r) => return r,
    };
    let Some(url) = url else {
        return error(StatusCode::NOT_FOUND, format!("agent '{agent_id}' of task '{task_id}' is gone"));
    };
    let request =
        s.http.get(format!("{url}/files/sandbox")).query(&[("framework_id", &framework_id), ("task_id", &task_id)]);
    match request.send().await {
        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
            Ok(v) => axum::Json(json!({
                "agent_id": agent_id,
                "framework_id": framework_id,
                "directory": v["directory"],
            }))
            .into_response(),
            Err(e) => error(StatusCode::BAD_GATEWAY, format!("agent '{agent_id}' at {url} sent bad JSON: {e}")),
        },
        Ok(r) => error(r.status(), format!("agent '{agent_id}' has no sandbox for task '{task_id}'")),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("cannot reach agent '{agent_id}' at {url}: {e}")),
    }
}

/// Forwards `/files/{browse,read,download}?...` to the agent and its answer back, status and all.
async fn agent_files(
    State(s): State<WebState>,
    Path((agent_id, op)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    if !matches!(op.as_str(), "browse" | "read" | "download") {
        return error(StatusCode::NOT_FOUND, format!("no such files operation '{op}'"));
    }
    let id = agent_id.clone();
    let url = match inspect(&s.handle, move |m, _| query::agent_url(m, &id)).await {
        Ok(Some(url)) => url,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("the master does not know agent '{agent_id}'")),
        Err(r) => return r,
    };
    let target = match raw {
        Some(q) => format!("{url}/files/{op}?{q}"),
        None => format!("{url}/files/{op}"),
    };
    let answer = match s.http.get(&target).send().await {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("cannot reach agent '{agent_id}' at {url}: {e}")),
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(v) = answer.headers().get(&name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
            headers.insert(name, v);
        }
    }
    match answer.bytes().await {
        Ok(body) => (status, headers, body).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("agent '{agent_id}' broke off its answer: {e}")),
    }
}
