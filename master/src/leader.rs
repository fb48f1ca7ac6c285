//! The layer in front of every route that sends clients of a master that is not leading to the leader: HTTP gets
//! 307 to the same path on the leader (503 when no leader is known), gRPC gets `UNAVAILABLE` naming the leader in the
//! message and in the `agora-leader` metadata, so clients can follow. `/health` and `/version` are answered by every
//! master. The actor publishes [`Leadership`] only once it is really in charge (registry loaded), and drops
//! state-changing inputs whenever it is not, so a request racing a change of leader is refused there too.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// Metadata key (and HTTP header) naming the leader's `ip:port` on refused gRPC calls.
pub const LEADER_METADATA: &str = "agora-leader";

/// Whether this master is in charge, and who is if it is not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Leadership {
    pub leading: bool,
    /// `ip:port` of the leader when this master is not it.
    pub leader: Option<String>,
}

const ANSWERED_BY_EVERY_MASTER: &[&str] = &["/health", "/master/health", "/version"];

/// Whether `req` is a gRPC call (HTTP/2 with `content-type: application/grpc`, `+proto` or similar).
pub(crate) fn is_grpc(req: &Request) -> bool {
    req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pub(crate) async fn guard(State(view): State<watch::Receiver<Leadership>>, req: Request, next: Next) -> Response {
    let l = view.borrow().clone();
    if l.leading || ANSWERED_BY_EVERY_MASTER.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    if is_grpc(&req) {
        let message = match &l.leader {
            Some(a) => format!("this master is not the leader; the leading master is {a}"),
            None => "this master is not the leader and no leader is known yet".to_string(),
        };
        let mut status = tonic::Status::unavailable(message);
        if let Some(v) = l.leader.as_deref().and_then(|a| a.parse().ok()) {
            status.metadata_mut().insert(LEADER_METADATA, v);
        }
        return status.into_http();
    }
    match l.leader {
        Some(a) => {
            let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("http://{a}{pq}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "this master is not the leader and no leader is known yet\n")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::post;
    use tokio::sync::watch;
    use tower::ServiceExt;

    use super::*;

    async fn ask(view: Leadership, path: &str) -> (StatusCode, Option<String>, String) {
        let (_tx, rx) = watch::channel(view);
        let app = Router::new()
            .route("/api/v1/scheduler", post(|| async { "served" }))
            .route("/api/v1", post(|| async { "served" }))
            .route("/health", axum::routing::get(|| async { "served" }))
            .layer(axum::middleware::from_fn_with_state(rx, guard));
        let method = if path == "/health" { "GET" } else { "POST" };
        let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let r = app.oneshot(req).await.unwrap();
        let location = r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_string());
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, location, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_v1_apis_are_the_leaders_others_redirect_or_answer_503() {
        let leading = Leadership { leading: true, leader: None };
        let following = Leadership { leading: false, leader: Some("10.0.0.2:5050".into()) };
        let lost = Leadership { leading: false, leader: None };
        let cases = [
            (leading.clone(), "/api/v1/scheduler", (StatusCode::OK, None, "served")),
            (leading, "/api/v1", (StatusCode::OK, None, "served")),
            (
                following.clone(),
                "/api/v1/scheduler",
                (StatusCode::TEMPORARY_REDIRECT, Some("http://10.0.0.2:5050/api/v1/scheduler"), ""),
            ),
            (following.clone(), "/api/v1", (StatusCode::TEMPORARY_REDIRECT, Some("http://10.0.0.2:5050/api/v1"), "")),
            (following, "/health", (StatusCode::OK, None, "served")),
            (
                lost.clone(),
                "/api/v1/scheduler",
                (StatusCode::SERVICE_UNAVAILABLE, None, "this master is not the leader and no leader is known yet\n"),
            ),
            (lost, "/health", (StatusCode::OK, None, "served")),
        ];
        for (view, path, (status, location, body)) in cases {
            let got = ask(view.clone(), path).await;
            assert_eq!(got, (status, location.map(String::from), body.to_string()), "{view:?} {path}");
        }
    }
}
