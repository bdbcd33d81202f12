//! The Prometheus side of the meters: `opentelemetry-prometheus` is a pull reader on the same
//! meter provider as the OTLP exporter, and `/metrics` (see `server::admin`) renders its registry
//! in the text exposition format.

use std::sync::OnceLock;

use prometheus::{Encoder, Registry, TextEncoder};

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// A reader for the meter provider, bound to the process-wide registry. The provider is global
/// (one per process), so is the registry.
pub(super) fn reader() -> anyhow::Result<opentelemetry_prometheus::PrometheusExporter> {
    let registry = REGISTRY.get_or_init(Registry::new).clone();
    Ok(opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .build()?)
}

/// Everything the meters hold now, in the Prometheus text format; `None` when `/metrics` was not
/// enabled at start.
pub fn render() -> Option<Result<String, prometheus::Error>> {
    let registry = REGISTRY.get()?;
    let mut text = Vec::new();
    let encoded = TextEncoder::new().encode(&registry.gather(), &mut text);
    Some(encoded.map(|()| String::from_utf8_lossy(&text).into_owned()))
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
