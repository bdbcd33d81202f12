//! CORS for browser front ends speaking grpc-web from another origin. Off unless origins are
//! configured: a same-origin front end, gateways and gRPC clients need none, and an open CORS
//! policy would let any web page drive the recovery flow from a victim's browser.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Headers a grpc-web client sends, and the ones it must be able to read back.
const REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
    "x-gateway-key",
    "traceparent",
];
const RESPONSE_HEADERS: &[&str] = &["grpc-status", "grpc-message", "grpc-status-details-bin"];

pub fn layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .enumerate()
            .map(|(index, origin)| {
                HeaderValue::from_str(origin.trim()).map_err(|_| {
                    anyhow::anyhow!("server.cors_allowed_origins[{index}] is not a valid origin")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(parsed)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers(
                REQUEST_HEADERS
                    .iter()
                    .map(|h| HeaderName::from_static(h))
                    .collect::<Vec<_>>(),
            )
            .expose_headers(
                RESPONSE_HEADERS
                    .iter()
                    .map(|h| HeaderName::from_static(h))
                    .collect::<Vec<_>>(),
            )
            .max_age(Duration::from_secs(24 * 3600)),
    ))
}
