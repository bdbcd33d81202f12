//! A tower layer that times every gRPC call and records it by method and status code
//! (`rpc.server.call.duration`, see `telemetry::metrics::rpc_finished`).
//!
//! Innermost of the layers, so grpc-web calls are seen after translation. Every RPC of ours is
//! unary: tonic answers an error as a trailers-only response (`grpc-status` in the headers) and
//! a success with the status in the trailers, so headers without `grpc-status` mean OK and the
//! time to the headers is the time of the call. (The streaming reflection service is recorded
//! the same way, i.e. to its first response; nobody alerts on it.)

use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
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
        // Only gRPC calls are recorded: the web UI's files and any other path on this port are
        // not RPCs, and a label taken from an arbitrary path would let anyone mint series.
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/grpc"));
        // Only our methods name a series (`routes::known`); any other path is `_OTHER`, whatever
        // status it got (an interceptor answers PERMISSION_DENIED before the router can say
        // UNIMPLEMENTED, so the status alone does not bound the label).
        // `&'static`: nothing is allocated per call to name the series.
        let route = super::routes::known(request.uri().path());
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            if grpc && let Ok(response) = &result {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i64>().ok())
                    .unwrap_or(0);
                crate::telemetry::metrics::rpc_finished(route, code, started.elapsed());
            }
            result
        })
    }
}
