//! `RECOVERY_OTLP_ENDPOINT`: spans reach an OTLP/gRPC collector, parented on the caller's W3C
//! `traceparent` when the caller is trusted (`telemetry.trust_traceparent`), named by the gRPC
//! method, never by the raw path. The collector is a fake one in this test, speaking the real
//! OTLP protocol.
//!
//! The telemetry set-up installs process-wide globals, so each test runs in a process of its own
//! (`common::own_process`), with one collector and one exporter on a runtime that outlives the test;
//! it finds its own spans by a trace id of its own.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use recovery_service::config::TraceparentTrust;
use recovery_service::proto;
use recovery_service::telemetry::Telemetry;

#[derive(Clone, Debug)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    parent_span_id: String,
    /// Trace ids of the span's links.
    links: Vec<String>,
}

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
                    spans.push(ExportedSpan {
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        parent_span_id: hex::encode(span.parent_span_id),
                        links: span
                            .links
                            .into_iter()
                            .map(|link| hex::encode(link.trace_id))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

struct Shared {
    runtime: tokio::runtime::Runtime,
    collector: Collector,
    telemetry: Telemetry,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let collector = Collector::default();
        let telemetry = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector.clone()))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            recovery_service::telemetry::init("text", Some(&endpoint)).unwrap()
        });
        Shared {
            runtime,
            collector,
            telemetry,
        }
    })
}

/// A fresh W3C trace context: (traceparent, trace id, span id).
fn traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = trace_id[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

fn with_traceparent<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

/// Flushes the exporter until a span matching `wanted` has reached the collector.
async fn exported(what: &str, wanted: impl Fn(&ExportedSpan) -> bool) -> ExportedSpan {
    for _ in 0..100 {
        tokio::task::spawn_blocking(|| shared().telemetry.flush())
            .await
            .unwrap();
        if let Some(span) = all_spans().into_iter().find(|span| wanted(span)) {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<String> = all_spans().into_iter().map(|s| s.name).collect();
    panic!("no {what} span exported; got {names:?}")
}

fn all_spans() -> Vec<ExportedSpan> {
    shared().collector.spans.lock().unwrap().clone()
}

const CREATE_CAPTCHA: &str = "identity.recovery.v1.RecoveryService/CreateCaptcha";

#[test]
fn calls_are_exported_as_spans_parented_on_the_callers_traceparent() {
    if !alone(
        module_path!(),
        "calls_are_exported_as_spans_parented_on_the_callers_traceparent",
    ) {
        return;
    }
    shared().runtime.block_on(async {
        // The test server's peer (127.0.0.1) is in `server.trusted_proxies`: the gateway.
        let app = spawn_app().await;
        let (header, trace_id, parent_id) = traceparent();
        app.recovery
            .clone()
            .create_captcha(with_traceparent(proto::CreateCaptchaRequest {}, &header))
            .await
            .unwrap();
        let span = exported("CreateCaptcha", |span| {
            span.name == CREATE_CAPTCHA && span.trace_id == trace_id
        })
        .await;
        assert_eq!(
            span.parent_span_id, parent_id,
            "the caller's span is its parent"
        );
        app.stop().await;
    });
}

/// Calls CreateCaptcha with a fresh `traceparent` the server must not join, and returns its
/// exported span (found by the link to the caller's trace) and the caller's trace id.
async fn create_captcha_with_a_traceparent_we_only_link(app: &TestApp) -> (ExportedSpan, String) {
    let (header, trace_id, _) = traceparent();
    app.recovery
        .clone()
        .create_captcha(with_traceparent(proto::CreateCaptchaRequest {}, &header))
        .await
        .unwrap();
    let span = exported("linked CreateCaptcha", |span| {
        span.name == CREATE_CAPTCHA && span.links.contains(&trace_id)
    })
    .await;
    (span, trace_id)
}

#[test]
fn an_untrusted_callers_traceparent_starts_no_trace_of_ours_and_is_only_linked() {
    if !alone(
        module_path!(),
        "an_untrusted_callers_traceparent_starts_no_trace_of_ours_and_is_only_linked",
    ) {
        return;
    }
    shared().runtime.block_on(async {
        let app = spawn_app_with(
            |c| c.server.trusted_proxies = Vec::new(),
            Default::default(),
        )
        .await;
        let (span, trace_id) = create_captcha_with_a_traceparent_we_only_link(&app).await;
        assert_ne!(span.trace_id, trace_id, "a new trace, not the caller's");
        assert!(span.parent_span_id.is_empty(), "a root span: {span:?}");
        assert!(
            !all_spans().iter().any(|span| span.trace_id == trace_id),
            "nothing joined the caller's trace"
        );
        app.stop().await;
    });
}

#[test]
fn trust_traceparent_none_ignores_even_a_trusted_proxy() {
    if !alone(
        module_path!(),
        "trust_traceparent_none_ignores_even_a_trusted_proxy",
    ) {
        return;
    }
    shared().runtime.block_on(async {
        let app = spawn_app_with(
            |c| c.telemetry.trust_traceparent = TraceparentTrust::None,
            Default::default(),
        )
        .await;
        let (span, trace_id) = create_captcha_with_a_traceparent_we_only_link(&app).await;
        assert_ne!(span.trace_id, trace_id);
        app.stop().await;
    });
}

#[test]
fn a_path_that_is_not_one_of_our_methods_gets_a_fixed_span_name() {
    if !alone(
        module_path!(),
        "a_path_that_is_not_one_of_our_methods_gets_a_fixed_span_name",
    ) {
        return;
    }
    shared().runtime.block_on(async {
        let app = spawn_app().await;
        let (header, trace_id, _) = traceparent();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let path = format!("/identity.recovery.v1.RecoveryService/Probe{unique}");
        let channel = tonic::transport::Channel::from_shared(app.address.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let status =
            grpc
                .unary(
                    with_traceparent(proto::CreateCaptchaRequest {}, &header),
                    http::uri::PathAndQuery::try_from(path.as_str()).unwrap(),
                    tonic_prost::ProstCodec::<
                        proto::CreateCaptchaRequest,
                        proto::CreateCaptchaResponse,
                    >::default(),
                )
                .await
                .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let span = exported("unknown-path", |span| span.trace_id == trace_id).await;
        assert_eq!(span.name, "grpc.unknown");
        assert!(
            !all_spans().iter().any(|span| span.name.contains(&unique)),
            "the raw path never names a span"
        );
        app.stop().await;
    });
}
