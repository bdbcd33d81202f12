//! A tower layer that opens one server span per gRPC call, named by its method
//! (`package.Service/Method`, or `grpc.unknown` for a path that is not one of our methods: the
//! path is caller input and would otherwise mint one span name per path a scanner tries).
//!
//! The span joins the caller's W3C trace context (`traceparent` metadata) only when the caller
//! is trusted (`telemetry.trust_traceparent`, default: the direct peer is one of
//! `server.trusted_proxies`, i.e. our gateway). Anyone else starts a new trace: a caller who
//! picks the trace id could otherwise glue its calls into someone else's trace or pile millions
//! of spans onto one. Their context is kept as a span link, for correlation only.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_semantic_conventions::attribute::{RPC_METHOD, RPC_SYSTEM_NAME};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::routes;
use crate::config::TraceparentTrust;
use crate::net::TrustedProxies;

#[derive(Clone, Debug, Default)]
pub struct GrpcTraceLayer {
    trust: TraceparentTrust,
    proxies: Arc<TrustedProxies>,
}

impl GrpcTraceLayer {
    pub fn new(trust: TraceparentTrust, proxies: TrustedProxies) -> Self {
        Self {
            trust,
            proxies: Arc::new(proxies),
        }
    }

    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        match self.trust {
            TraceparentTrust::All => true,
            TraceparentTrust::None => false,
            TraceparentTrust::Proxies => peer.is_some_and(|peer| self.proxies.contains(peer)),
        }
    }
}

impl<S> Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcTrace<S> {
    inner: S,
    layer: GrpcTraceLayer,
}

/// The W3C trace-context header; the propagator installed by `telemetry::init` reads nothing
/// without it.
const TRACEPARENT: &str = "traceparent";

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The direct TCP peer, as tonic records it for every connection (plain or TLS).
fn peer<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
        .map(|addr| addr.ip())
}

impl<S, B> Service<http::Request<B>> for GrpcTrace<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let route = routes::known(request.uri().path());
        // Attribute names from the semantic conventions (RPC, semconv 1.42): `rpc.method` is
        // the fully-qualified `package.Service/Method`, `_OTHER` for a path we do not serve.
        let span = match route {
            Some(route) => {
                tracing::info_span!(
                    "grpc",
                    otel.name = route,
                    otel.kind = "server",
                    { RPC_SYSTEM_NAME } = "grpc",
                    { RPC_METHOD } = route
                )
            }
            None => {
                tracing::info_span!(
                    "grpc",
                    otel.name = routes::UNKNOWN,
                    otel.kind = "server",
                    { RPC_SYSTEM_NAME } = "grpc",
                    { RPC_METHOD } = "_OTHER"
                )
            }
        };
        // Without a `traceparent` there is no remote context to join or link (the W3C
        // propagator reads nothing else), and a span the filter turned off records neither:
        // the global propagator is then not consulted at all (every call paid it).
        if !span.is_disabled() && request.headers().contains_key(TRACEPARENT) {
            let remote = opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.extract(&Headers(request.headers()))
            });
            if self.layer.trusts(peer(&request)) {
                let _ = span.set_parent(remote);
            } else {
                let remote = remote.span().span_context().clone();
                if remote.is_valid() {
                    span.add_link(remote);
                }
            }
        }
        Box::pin(self.inner.call(request).instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_trusted_with_a_traceparent() {
        let gateway: IpAddr = "10.0.0.7".parse().unwrap();
        let stranger: IpAddr = "203.0.113.1".parse().unwrap();
        let proxies = TrustedProxies::new(&["10.0.0.0/8".parse().unwrap()], 1);
        let layer = GrpcTraceLayer::new(TraceparentTrust::Proxies, proxies.clone());
        assert!(layer.trusts(Some(gateway)));
        assert!(!layer.trusts(Some(stranger)));
        assert!(!layer.trusts(None));
        let all = GrpcTraceLayer::new(TraceparentTrust::All, proxies.clone());
        assert!(all.trusts(Some(stranger)));
        let none = GrpcTraceLayer::new(TraceparentTrust::None, proxies);
        assert!(!none.trusts(Some(gateway)));
    }
}
