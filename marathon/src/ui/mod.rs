//! Marathon's web UI, as Marathon serves `mesosphere/marathon-ui` at `/ui/`: one HTML file (`index.html`, vanilla
//! JS and CSS, no framework, no build step) embedded in the binary with `include_str!`. `GET /` answers 302 to
//! `/ui/`, `GET /ui` 301 to `/ui/`, as Marathon redirects them.
//!
//! The page reads and writes only the public `/v2` REST API on its own origin (the same calls any client makes):
//! the leader serves it from [`crate::api::router`], a standby from its front ([`crate::proxy`]) before proxying
//! the page's `/v2` calls to the leader. Nothing here touches the core.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("index.html");

/// Where the UI lives.
pub const UI_PATH: &str = "/ui/";

/// The UI's routes, for any router state: `/`, `/ui`, `/ui/` and `/ui/index.html`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { redirect(StatusCode::FOUND) }))
        .route("/ui", get(|| async { redirect(StatusCode::MOVED_PERMANENTLY) }))
        .route("/ui/", get(|| async { page() }))
        .route("/ui/index.html", get(|| async { page() }))
}

/// The answer to a UI path (see [`router`]), or `None` for any other path: what a standby serves itself.
pub fn serve(path: &str) -> Option<Response> {
    match path {
        "/" => Some(redirect(StatusCode::FOUND)),
        "/ui" => Some(redirect(StatusCode::MOVED_PERMANENTLY)),
        "/ui/" | "/ui/index.html" => Some(page()),
        _ => None,
    }
}

fn redirect(status: StatusCode) -> Response {
    (status, [(header::LOCATION, UI_PATH)]).into_response()
}

fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};

    async fn call(app: Router, method: Method, path: &str) -> Response {
        let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let Ok(resp) = tower::Service::call(&mut app.clone(), req).await;
        resp
    }

    async fn text(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn root_and_ui_redirect_to_the_page_which_is_served_as_html() {
        let app: Router = router();
        let root = call(app.clone(), Method::GET, "/").await;
        assert_eq!(root.status(), StatusCode::FOUND);
        assert_eq!(root.headers()[header::LOCATION], "/ui/");
        let ui = call(app.clone(), Method::GET, "/ui").await;
        assert_eq!(ui.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(ui.headers()[header::LOCATION], "/ui/");
        for path in ["/ui/", "/ui/index.html"] {
            let page = call(app.clone(), Method::GET, path).await;
            assert_eq!(page.status(), StatusCode::OK, "{path}");
            assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
            let body = text(page).await;
            assert!(body.starts_with("<!doctype html>"), "{path}");
            assert!(body.contains("/v2/groups") && body.contains("/v2/deployments"), "the page reads /v2");
        }
        let head = call(app, Method::HEAD, "/ui/").await;
        assert_eq!(head.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn serve_answers_the_same_paths_and_nothing_else() {
        assert_eq!(serve("/").map(|r| r.status()), Some(StatusCode::FOUND));
        assert_eq!(serve("/ui").map(|r| r.status()), Some(StatusCode::MOVED_PERMANENTLY));
        let page = serve("/ui/").expect("the page");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(text(page).await, INDEX_HTML);
        for other in ["/v2/apps", "/ping", "/ui/x", "/uix"] {
            assert!(serve(other).is_none(), "{other}");
        }
    }

    /// A standby (no API of its own, no leader known) serves the UI itself instead of proxying it.
    #[tokio::test]
    async fn a_standby_serves_the_ui_itself() {
        let front = std::sync::Arc::new(crate::proxy::Front::new("127.0.0.1:1".into()));
        let app = crate::proxy::router(front);
        let root = call(app.clone(), Method::GET, "/").await;
        assert_eq!(root.status(), StatusCode::FOUND);
        assert_eq!(root.headers()[header::LOCATION], "/ui/");
        let page = call(app, Method::GET, "/ui/").await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(text(page).await, INDEX_HTML);
    }

    /// The page builds every string from the API as DOM text, never as markup.
    #[test]
    fn the_page_never_assigns_markup() {
        assert!(!INDEX_HTML.contains("innerHTML"), "use textContent / DOM nodes for API strings");
        assert!(!INDEX_HTML.contains("outerHTML") && !INDEX_HTML.contains("insertAdjacentHTML"));
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "no CDN, same origin only");
    }
}
