//! The HTTP side of fleetd: REST/JSON and server-sent events for every
//! service (`rest`), the OpenAPI document (`openapi`), the live console, and
//! the one gRPC-code-to-HTTP mapping (`status`). gRPC-Web is served on the
//! gRPC port by tonic-web.

pub mod cors;
pub mod openapi;
pub mod rest;
pub mod status;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

pub use rest::Gateway;

/// The console page: static, talks to the REST gateway from the browser.
const CONSOLE: &str = include_str!("console.html");

/// REST under every API version, `/openapi.json`, `/console` and `/healthz`.
/// `max_body_bytes` bounds request bodies as the gRPC side bounds messages.
pub fn router(gateway: Gateway, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .fallback(Gateway::handle)
        .with_state(gateway)
        .layer(DefaultBodyLimit::max(max_body_bytes));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(&*openapi::DOCUMENT).into_response() }),
        )
        .route(
            "/console",
            get(|| async { ([(header::CACHE_CONTROL, "no-cache")], Html(CONSOLE)) }),
        )
        .merge(api)
}
