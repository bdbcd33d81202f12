//! `RECOVERY_OTLP_ENDPOINT`: spans reach an OTLP/gRPC collector, parented on the caller's W3C
//! `traceparent`. The collector is a fake one in this test, speaking the real OTLP protocol.
//! (Its own test binary: the telemetry set-up installs process-wide globals.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use recovery_service::proto;

/// Span name, trace id, parent span id.
type ExportedSpan = (String, Vec<u8>, Vec<u8>);

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((span.name, span.trace_id, span.parent_span_id));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_exported_as_spans_parented_on_the_callers_traceparent() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let telemetry = recovery_service::telemetry::init("text", Some(&endpoint)).unwrap();
    let app = spawn_app().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(proto::CreateCaptchaRequest {});
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    app.recovery.clone().create_captcha(request).await.unwrap();
    app.stop().await;
    // Shutting the provider down flushes the batch; it blocks, so off the async workers.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let mut found = None;
    for _ in 0..100 {
        found = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|(name, _, _)| name == "/identity.recovery.v1.RecoveryService/CreateCaptcha")
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, span_trace, span_parent) = found.unwrap_or_else(|| {
        let names: Vec<String> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _, _)| n.clone())
            .collect();
        panic!("no CreateCaptcha span exported; got {names:?}")
    });
    assert_eq!(
        hex::encode(span_trace),
        trace_id,
        "the span joins the caller's trace"
    );
    assert_eq!(
        hex::encode(span_parent),
        parent_id,
        "the caller's span is its parent"
    );
}
