//! The web view: a few pages served at `/` on the same listener as `/metrics`, so the
//! same loopback default, TLS, basic auth and limits (`web`) apply to it unchanged.
//! Plain HTML, CSS and JavaScript embedded in the binary: no build step, nothing
//! fetched from elsewhere, and a Content-Security-Policy that forbids the page any
//! request but to this server. The pages poll the JSON API; the server pages and
//! filters (`/api/connections?offset=&limit=`), so that the browser never receives the
//! whole table. The sequence diagram is laid out here ([`svg`]), not in the browser.

pub mod health;
pub mod overview;
pub mod svg;

use axum::{
    extract::{Path, State},
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use crate::{
    api::Query,
    http::{ask, ApiError, ApiState},
};

/// Only this server: no other origin, no inline script or style, no plugins, and no
/// framing by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// The web view's routes, merged into [`crate::http::router`].
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .route("/api/overview", get(overview))
        .route("/api/health", get(health))
        .route("/api/connections/{id}/diagram.svg", get(diagram))
}

/// The headers every web view answer carries.
fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ] {
        headers.insert(name, value);
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    guarded(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The overview page's data: the detectors' last pass and tcptrace's health.
async fn overview(State(state): State<ApiState>) -> Json<overview::Overview> {
    let health = health::Health::from_families(&state.metrics.gather());
    // Each watch channel's lock is held only while the kept part is copied, or the
    // report's Arc cloned.
    let listeners = state.listeners.borrow().limited(overview::LISTED, None);
    let leaks = std::sync::Arc::clone(&state.leaks.borrow());
    Json(overview::Overview::new(&leaks, &listeners, health))
}

/// tcptrace's own health, as `/metrics` shows it.
async fn health(State(state): State<ApiState>) -> Json<health::Health> {
    Json(health::Health::from_families(&state.metrics.gather()))
}

/// The sequence diagram of a connection and its other end, as SVG.
async fn diagram(State(state): State<ApiState>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let diagram = ask(&state, |reply| Query::Diagram { id, reply })
        .await?
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no connection {id} with its other end on this host"),
            )
        })?;
    Ok(guarded(
        (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            svg::render(&diagram),
        )
            .into_response(),
    ))
}
