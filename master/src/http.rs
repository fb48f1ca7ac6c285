//! The master's HTTP endpoints, on the same port as gRPC: `/health`, `/version`, `/master/state` (also `/state`,
//! `/state.json`, `/master/state.json`) and `/master/redirect` (also `/redirect`); and [`app`], the one router
//! that serves them, the `web` pages and the gRPC services together.
//!
//! Routing rules (Mesos's): a request with `content-type: application/grpc*` goes to tonic (an unknown gRPC method
//! gets gRPC's `UNIMPLEMENTED`); any other request for an unknown path gets **404**, and a known path with the wrong
//! method **405** naming the allowed methods. Every request first passes `leader::guard`.

use agora_proto::wire;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use crate::actor::Handle;
use crate::grpc;
use crate::leader::{self, Leadership};

/// Everything the master serves on its port: HTTP, the web pages and gRPC, behind the leader guard.
pub(crate) fn app(handle: Handle, leadership: watch::Receiver<Leadership>) -> Router {
    let grpc_routes =
        tonic::service::Routes::new(wire::scheduler_server::SchedulerServer::new(grpc::SchedulerService {
            handle: handle.clone(),
        }))
        .add_service(wire::agent_link_server::AgentLinkServer::new(grpc::AgentLinkService { handle: handle.clone() }))
        .into_axum_router()
        .reset_fallback();
    let routes = router(handle).merge(grpc_routes).fallback(unmatched);
    agora_runtime::http::explain_method_not_allowed(routes)
        .layer(axum::middleware::from_fn_with_state(leadership, leader::guard))
}

/// A request no route matched: gRPC's `UNIMPLEMENTED` for a gRPC call (as tonic answers), 404 for anything else.
async fn unmatched(req: Request) -> Response {
    if leader::is_grpc(&req) {
        return tonic::Status::unimplemented(format!("unknown method {}", req.uri().path())).into_http();
    }
    agora_runtime::http::not_found().await
}

fn router(handle: Handle) -> Router {
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
        .merge(crate::v1::router(handle.clone()))
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
    let flags = handle.flags.clone();
    match handle.inspect(move |m, now| m.state_json(now, (*flags).clone())).await {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "master is shutting down").into_response(),
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

#[cfg(test)]
mod tests {
    use agora_proto::wire;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn unknown_paths_are_404_wrong_methods_405_and_grpc_still_reaches_the_services() {
        let master = crate::test_support::start_master(&[]).await;
        let (http, base) = (&master.http, master.base.clone());

        // (method, path, status, Allow, body); an empty body is Mesos's 404.
        let cases: &[(&str, &str, StatusCode, Option<&str>, &str)] = &[
            ("GET", "/nope", StatusCode::NOT_FOUND, None, ""),
            ("GET", "/master/nope", StatusCode::NOT_FOUND, None, ""),
            ("POST", "/api/v1/nope", StatusCode::NOT_FOUND, None, ""),
            ("POST", "/api/v2/scheduler", StatusCode::NOT_FOUND, None, ""),
            (
                "GET",
                "/api/v1/scheduler",
                StatusCode::METHOD_NOT_ALLOWED,
                Some("POST"),
                "Expecting one of { 'POST' }, but received 'GET'",
            ),
            ("GET", "/health", StatusCode::OK, None, ""),
            (
                "POST",
                "/master/state",
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET,HEAD"),
                "Expecting one of { 'GET', 'HEAD' }, but received 'POST'",
            ),
            (
                "DELETE",
                "/metrics/snapshot",
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET,HEAD"),
                "Expecting one of { 'GET', 'HEAD' }, but received 'DELETE'",
            ),
        ];
        for (method, path, status, allow, body) in cases {
            let r = http.request(method.parse().unwrap(), format!("{base}{path}")).send().await.unwrap();
            let got_allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
            let got_grpc =
                r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let got = (r.status(), got_allow, r.text().await.unwrap());
            assert_eq!(got, (*status, allow.map(String::from), body.to_string()), "{method} {path}");
            assert!(!got_grpc, "{method} {path} answered as gRPC");
        }

        // gRPC still reaches tonic and the core: a call from an unknown framework is the core's refusal...
        let channel = tonic::transport::Endpoint::from_shared(base.clone()).unwrap().connect().await.unwrap();
        let mut scheduler = wire::scheduler_client::SchedulerClient::new(channel.clone());
        let call = wire::Call {
            framework_id: "nobody".into(),
            stream_id: "none".into(),
            call: Some(wire::call::Call::Teardown(wire::call::Teardown {})),
        };
        let refused = scheduler.call(call).await.unwrap_err();
        assert_ne!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
        assert!(refused.message().contains("nobody"), "the core's message names the framework: {refused:?}");
        // ... and an unknown gRPC service is gRPC's UNIMPLEMENTED, not an HTTP 404.
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = axum::http::uri::PathAndQuery::from_static("/agora.v1.Nothing/Call");
        let codec = tonic_prost::ProstCodec::<wire::Call, wire::CallResponse>::default();
        let unknown = grpc.unary(tonic::Request::new(wire::Call::default()), path, codec).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unimplemented, "{unknown:?}");
    }
}
