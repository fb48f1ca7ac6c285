//! The HTTP front of a Marathon, as Marathon's `LeaderProxyFilter`: while this instance leads, every request goes to
//! its own API (answers carry `X-Marathon-Leader`); while it stands by (with `--zk`, or standalone for the moment
//! of a re-election), `/ping` and the web UI (`/`, `/ui/`, [`crate::ui`]) are answered here, `GET /v2/leader` names the leader (404 `There is no leader` when
//! none is known), `/v2/events` is redirected to the leader, and every other request is proxied to the leader with
//! `X-Marathon-Via` (a request that already passed a standby is refused, so two standbys with stale views never
//! bounce it between them).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;

/// How long a standby waits for a leader to be known before answering 502.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// Marathon's `--leader_proxy_connection_timeout`: connecting to the leader may take this long.
pub const LEADER_PROXY_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Marathon's `--leader_proxy_read_timeout`: the leader may be silent this long while answering.
pub const LEADER_PROXY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A proxied request as a whole: the connection and the read timeouts together.
const PROXY_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest request body proxied.
const MAX_BODY: usize = 64 << 20;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"];

/// What the front knows: whom to send requests to.
pub struct Front {
    /// This instance, `host:port`.
    me: String,
    leader: watch::Sender<Option<String>>,
    leading: RwLock<Option<Router>>,
    http: reqwest::Client,
}

impl Front {
    pub fn new(me: String) -> Front {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(LEADER_PROXY_CONNECTION_TIMEOUT)
            .read_timeout(LEADER_PROXY_READ_TIMEOUT)
            .timeout(PROXY_TIMEOUT)
            .build()
            .unwrap_or_default();
        Front { me, leader: watch::channel(None).0, leading: RwLock::new(None), http }
    }

    /// The leader as the election sees it (`host:port`), while standing by.
    pub fn set_leader(&self, leader: Option<String>) {
        self.leader.send_if_modified(|cur| {
            let changed = *cur != leader;
            *cur = leader;
            changed
        });
    }

    /// From now on this instance answers everything with its own API.
    pub fn lead(&self, api: Router) {
        *self.leading.write().unwrap_or_else(|p| p.into_inner()) = Some(api);
        self.set_leader(Some(self.me.clone()));
    }

    /// Stops answering with this instance's API (while it hands over or is elected anew).
    pub fn stand_by(&self) {
        *self.leading.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.set_leader(None);
    }

    async fn wait_for_leader(&self) -> Option<String> {
        let mut rx = self.leader.subscribe();
        let known = tokio::time::timeout(LEADER_WAIT, rx.wait_for(|l| l.is_some()));
        known.await.ok().and_then(|r| r.ok().and_then(|l| l.clone()))
    }
}

fn message(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({"message": msg.into()}))).into_response()
}

impl Front {
    fn api(&self) -> Option<Router> {
        self.leading.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The leader's own answer, with `X-Marathon-Leader` as Marathon's leader responses carry it.
async fn answer(front: &Front, mut api: Router, req: Request) -> Response {
    let Ok(mut resp) = tower::Service::call(&mut api, req).await;
    if let Ok(v) = HeaderValue::from_str(&format!("http://{}", front.me)) {
        resp.headers_mut().insert("X-Marathon-Leader", v);
    }
    resp
}

async fn handle(State(front): State<Arc<Front>>, req: Request) -> Response {
    if let Some(api) = front.api() {
        return answer(&front, api, req).await;
    }
    let path = req.uri().path().to_string();
    if path == "/ping" {
        return "pong".into_response();
    }
    // The web UI is static: a standby serves it itself, and proxies the page's `/v2` calls like any other.
    if matches!(*req.method(), Method::GET | Method::HEAD)
        && let Some(page) = crate::ui::serve(&path)
    {
        return page;
    }
    if path == "/v2/leader" && req.method() == Method::GET {
        return match front.leader.borrow().clone() {
            Some(l) => (StatusCode::OK, axum::Json(json!({"leader": l}))).into_response(),
            None => message(StatusCode::NOT_FOUND, "There is no leader"),
        };
    }
    if let Some(via) = req.headers().get("X-Marathon-Via") {
        tracing::warn!(via = ?via, %path, "a proxied request reached a standby; refusing to proxy it again");
        return message(StatusCode::BAD_GATEWAY, "Could not determine the current leader (proxy loop)");
    }
    let Some(leader) = front.wait_for_leader().await else {
        return message(StatusCode::BAD_GATEWAY, "Could not determine the current leader");
    };
    if leader == front.me {
        // Elected while the request waited.
        let Some(api) = front.api() else {
            return message(StatusCode::BAD_GATEWAY, "Could not determine the current leader");
        };
        return answer(&front, api, req).await;
    }
    let target = format!("http://{leader}{}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    if path == "/v2/events" {
        let mut resp = StatusCode::FOUND.into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")),
    };
    let mut out = front.http.request(parts.method, &target).body(body);
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    out = out.header("X-Marathon-Via", format!("1.1 {}", front.me));
    if let Some(ip) = remote {
        out = out.header("X-Forwarded-For", ip);
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%leader, error = %e, "cannot reach the leader");
            return message(StatusCode::BAD_GATEWAY, format!("Could not reach the leader {leader}: {e}"));
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_GATEWAY, format!("the leader {leader} broke off its answer: {e}")),
    };
    let mut answer = Response::new(Body::from(bytes));
    *answer.status_mut() = status;
    for (k, v) in &headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            answer.headers_mut().append(k, v.clone());
        }
    }
    answer
}

/// The front's router; serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(front: Arc<Front>) -> Router {
    Router::new().fallback(handle).with_state(front)
}
