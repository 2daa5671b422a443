//! CORS for both ports, so that web pages of the configured origins can call
//! fleetd from a browser: gRPC-Web on the gRPC port (connect-web, grpc-web)
//! and REST with `fetch` on the HTTP port. Without configured origins there
//! is no layer and browsers keep pages of other origins out.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What a browser may send: the credentials header, gRPC-Web's and
/// connect's own headers, trace context and SSE's resume header.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "grpc-encoding",
    "connect-protocol-version",
    "connect-timeout-ms",
    "traceparent",
    "tracestate",
    "last-event-id",
];

/// What a page may read of an answer: gRPC-Web puts the status of a
/// trailers-only answer (every error) in these headers.
const EXPOSED_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
];

/// The layer for `origins` (already checked by the config: web origins or
/// `*`); None when there are none.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let names = |names: &[&'static str]| -> Vec<HeaderName> {
        names.iter().map(|n| HeaderName::from_static(n)).collect()
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(names(ALLOWED_HEADERS))
            .expose_headers(names(EXPOSED_HEADERS))
            .max_age(Duration::from_secs(2 * 60 * 60)),
    )
}
