//! Mesos's answers, for axum routers, to requests nothing serves: a path no route knows gets **404** with an empty
//! body (libprocess's `NotFound`); a known path asked with another method gets **405** with `Allow` and the body
//! `Expecting one of { 'GET', 'HEAD' }, but received 'POST'` (libprocess's `MethodNotAllowed`).
//!
//! A server adds both: `explain_method_not_allowed(router.fallback(not_found))`.

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The fallback for a path no route serves: 404, empty body.
pub async fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// `router`, with Mesos's body naming the allowed methods and the one received on axum's bare 405s (a known path,
/// another method). A 405 a handler wrote itself (with a body) passes unchanged.
///
/// It wraps the whole router rather than being one of its layers: axum adds `Allow` to a 405 only on the way out of
/// the route (and of a merged router with state, only on the way out of that), after a layer has seen it.
pub fn explain_method_not_allowed(router: Router) -> Router {
    Router::new().fallback_service(router).layer(axum::middleware::from_fn(explain))
}

async fn explain(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || response.body().size_hint().exact() != Some(0) {
        return response;
    }
    let allowed = response.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let body = method_not_allowed_body(allowed, method.as_str());
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Mesos's 405 body for an `Allow` header value (`GET,HEAD`) and the method received.
fn method_not_allowed_body(allow: &str, received: &str) -> String {
    let allowed: Vec<String> =
        allow.split(',').map(str::trim).filter(|m| !m.is_empty()).map(|m| format!("'{m}'")).collect();
    format!("Expecting one of {{ {} }}, but received '{received}'", allowed.join(", "))
}

#[cfg(test)]
mod tests {
    use axum::extract::State;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        // One part with state, as servers have: axum sets `Allow` at a different depth there.
        let stateful =
            Router::new().route("/api/v1", post(|State(s): State<&'static str>| async move { s })).with_state("ok");
        explain_method_not_allowed(
            Router::new()
                .route("/state", get(|| async { "state" }))
                .route("/own", get(|| async { (StatusCode::METHOD_NOT_ALLOWED, "my own words") }))
                .merge(stateful)
                .fallback(not_found),
        )
    }

    async fn call(method: &str, path: &str) -> (StatusCode, Option<String>, String) {
        let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let response = app().oneshot(req).await.unwrap();
        let status = response.status();
        let allow = response.headers().get(header::ALLOW).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, allow, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn answers_as_mesos_does() {
        let cases: &[(&str, &str, StatusCode, Option<&str>, &str)] = &[
            ("GET", "/state", StatusCode::OK, None, "state"),
            ("GET", "/nope", StatusCode::NOT_FOUND, None, ""),
            ("POST", "/nope/deeper", StatusCode::NOT_FOUND, None, ""),
            (
                "POST",
                "/state",
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET,HEAD"),
                "Expecting one of { 'GET', 'HEAD' }, but received 'POST'",
            ),
            (
                "GET",
                "/api/v1",
                StatusCode::METHOD_NOT_ALLOWED,
                Some("POST"),
                "Expecting one of { 'POST' }, but received 'GET'",
            ),
            ("GET", "/own", StatusCode::METHOD_NOT_ALLOWED, None, "my own words"),
        ];
        for (method, path, status, allow, body) in cases {
            let got = call(method, path).await;
            assert_eq!(got, (*status, allow.map(String::from), body.to_string()), "{method} {path}");
        }
    }

    #[test]
    fn the_body_lists_every_allowed_method() {
        assert_eq!(method_not_allowed_body("GET", "PUT"), "Expecting one of { 'GET' }, but received 'PUT'");
        assert_eq!(
            method_not_allowed_body("GET, HEAD", "PUT"),
            "Expecting one of { 'GET', 'HEAD' }, but received 'PUT'"
        );
    }
}
