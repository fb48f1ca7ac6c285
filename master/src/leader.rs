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
