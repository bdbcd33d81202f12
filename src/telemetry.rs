//! Logs (tracing, text or JSON on standard error) and, when `RECOVERY_OTLP_ENDPOINT` or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set, traces and metrics exported over OTLP/gRPC.
//! The resource follows `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; the exporters read
//! the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout, compression, per-signal
//! endpoints) themselves. Metric and attribute names come from `opentelemetry-semantic-conventions`
//! (the semconv version is its `SCHEMA_URL`), never from string literals. Spans and events carry ids, reasons and masked
//! values only: no code, token, password, captcha answer or full login (see SECURITY.md).

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Metadata;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Spans and events of dependencies that put secrets in their fields. They are switched off
/// whatever `RUST_LOG` says (and are never exported over OTLP either), because an operator
/// turning on TRACE to chase a bug must not thereby write credentials to the log.
///
/// - sea-orm's `connect` span (TRACE) records its whole `ConnectOptions`: the database URL,
///   password included.
fn leaks_secrets(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.target().starts_with("sea_orm") && metadata.name() == "connect"
}

/// The filter that drops what [`leaks_secrets`] names; installed by [`init`] and by the
/// redaction test, which checks everything else that is logged.
pub fn secret_filter() -> FilterFn<impl Fn(&Metadata<'_>) -> bool + Clone> {
    tracing_subscriber::filter::filter_fn(|metadata| !leaks_secrets(metadata))
}

/// Keeps the exporters alive; `shutdown` flushes what is buffered.
#[derive(Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Exports the spans finished so far now, not at the batch's next tick (blocks).
    pub fn flush(&self) {
        if let Some(provider) = &self.tracer_provider
            && let Err(error) = provider.force_flush()
        {
            eprintln!("trace exporter flush: {error}");
        }
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown: {error}");
        }
        if let Some(provider) = self.meter_provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("metric exporter shutdown: {error}");
        }
    }
}

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "recovery-service";

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|value| !value.is_empty())
}

/// The resource: the SDK's detectors read `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
/// (in that order of precedence, as the specification says); ours fills `service.name` only when
/// neither gave one, and always states `service.version`.
pub fn resource() -> Resource {
    use opentelemetry_semantic_conventions::resource::{SERVICE_NAME, SERVICE_VERSION};
    let named_by_environment = env_set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim().starts_with(&format!("{SERVICE_NAME}=")))
        });
    let mut builder = Resource::builder()
        .with_schema_url([], opentelemetry_semantic_conventions::SCHEMA_URL)
        .with_attribute(opentelemetry::KeyValue::new(
            SERVICE_VERSION,
            env!("CARGO_PKG_VERSION"),
        ));
    if !named_by_environment {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    builder.build()
}

/// Where a signal is exported: our `RECOVERY_OTLP_ENDPOINT` (contract: it wins), else the
/// standard variables, which the exporter then reads itself (`Some(None)`), else nowhere.
/// `OTEL_<SIGNAL>_EXPORTER=none` turns that signal off.
fn export_target<'a>(configured: Option<&'a str>, signal: &str) -> Option<Option<&'a str>> {
    if std::env::var(format!("OTEL_{signal}_EXPORTER")).is_ok_and(|v| v.trim() == "none") {
        return None;
    }
    if let Some(endpoint) = configured {
        return Some(Some(endpoint));
    }
    (env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || env_set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
    .then_some(None)
}

fn span_exporter(endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let spans = builder.build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource())
        .build())
}

/// One meter provider feeding every metric destination configured: OTLP push and the
/// Prometheus registry behind `/metrics` read the same instruments.
fn meter_provider(
    otlp_endpoint: Option<&str>,
    prometheus: bool,
) -> anyhow::Result<Option<SdkMeterProvider>> {
    let otlp = export_target(otlp_endpoint, "METRICS");
    if otlp.is_none() && !prometheus {
        return Ok(None);
    }
    let mut builder = SdkMeterProvider::builder().with_resource(resource());
    if let Some(endpoint) = otlp {
        let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let metrics = exporter.build()?;
        builder = builder.with_periodic_exporter(metrics);
    }
    if prometheus {
        builder = builder.with_reader(prom::reader()?);
    }
    Ok(Some(builder.build()))
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `format` is `text` or
/// `json`. Must run inside the tokio runtime when an OTLP endpoint is given.
pub fn init(format: &str, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    init_with_prometheus(format, otlp_endpoint, false)
}

/// [`init`], plus a Prometheus registry for the admin listener's `/metrics` when `prometheus`.
pub fn init_with_prometheus(
    format: &str,
    otlp_endpoint: Option<&str>,
    prometheus: bool,
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    // Callers' W3C trace context (`traceparent`) is honoured whether or not we export.
    global::set_text_map_propagator(TraceContextPropagator::new());
    let mut telemetry = Telemetry::default();
    if let Some(meter_provider) = meter_provider(otlp_endpoint, prometheus)? {
        global::set_meter_provider(meter_provider.clone());
        telemetry.meter_provider = Some(meter_provider);
    }
    let otel_layer = match export_target(otlp_endpoint, "TRACES") {
        Some(endpoint) => {
            let tracer_provider = span_exporter(endpoint)?;
            let tracer = tracer_provider.tracer(DEFAULT_SERVICE_NAME);
            global::set_tracer_provider(tracer_provider.clone());
            telemetry.tracer_provider = Some(tracer_provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        None => None,
    };
    let registry = tracing_subscriber::registry()
        .with(secret_filter())
        .with(filter)
        .with(otel_layer);
    let result = if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    if let Err(error) = result {
        eprintln!("logging was already initialised: {error}");
    }
    Ok(telemetry)
}

pub mod prom;

/// Counters of outcomes, by stable reason; exported when OTLP or `/metrics` is on, free
/// otherwise. Names follow the OpenTelemetry conventions (dots; Prometheus sees underscores and a
/// `_total` suffix on counters); docs/operations.md lists each with what it means.
pub mod metrics {
    use std::sync::OnceLock;

    use opentelemetry::KeyValue;
    use opentelemetry::metrics::{Counter, Gauge, Histogram};

    fn counter(name: &'static str, description: &'static str) -> Counter<u64> {
        opentelemetry::global::meter("recovery-service")
            .u64_counter(name)
            .with_description(description)
            .build()
    }

    /// One per error answered, labelled with its `ErrorInfo` reason.
    pub fn rpc_error(reason: &'static str) {
        static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
        COUNTER
            .get_or_init(|| counter("recovery.rpc.errors", "RPC errors by ErrorInfo reason"))
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// One per queued message finished, labelled delivered / dropped and why.
    pub fn delivery(outcome: &'static str) {
        static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
        COUNTER
            .get_or_init(|| counter("recovery.deliveries", "Queued messages by outcome"))
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// One per webhook attempt finished: `delivered`, `failed` (will be retried) or `abandoned`
    /// (given up after `webhooks.max_age_secs`).
    pub fn webhook(outcome: &'static str) {
        static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
        COUNTER
            .get_or_init(|| counter("recovery.webhooks", "Webhook attempts by outcome"))
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// Webhook deliveries waiting for one endpoint, and the age of the oldest (sampled at
    /// scrape time).
    pub fn webhook_backlog(endpoint: &str, pending: u64, oldest_age_secs: f64) {
        static GAUGES: OnceLock<(Gauge<u64>, Gauge<f64>)> = OnceLock::new();
        let (pending_gauge, age_gauge) = GAUGES.get_or_init(|| {
            let m = meter();
            (
                m.u64_gauge("recovery.webhooks.pending")
                    .with_description("Webhook deliveries waiting, by endpoint")
                    .build(),
                m.f64_gauge("recovery.webhooks.oldest_age")
                    .with_unit("s")
                    .with_description("Age of the oldest webhook delivery waiting, by endpoint")
                    .build(),
            )
        });
        let labels = [KeyValue::new("endpoint", endpoint.to_owned())];
        pending_gauge.record(pending, &labels);
        age_gauge.record(oldest_age_secs, &labels);
    }

    /// Rows removed by the retention sweep, labelled by table.
    pub fn retention_removed(table: &'static str, rows: u64) {
        static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
        COUNTER
            .get_or_init(|| {
                counter(
                    "recovery.retention.removed",
                    "Expired rows removed by the retention sweep",
                )
            })
            .add(rows, &[KeyValue::new("table", table)]);
    }

    fn meter() -> opentelemetry::metrics::Meter {
        opentelemetry::global::meter("recovery-service")
    }

    /// The gRPC methods (`package.Service/Method`) whose success is a step of the flow.
    const START: &str = "identity.recovery.v1.RecoveryService/StartRecovery";
    const SEND: &str = "identity.recovery.v1.RecoveryService/SendVerificationCode";
    const VERIFY: &str = "identity.recovery.v1.RecoveryService/VerifyCode";
    const RESET: &str = "identity.recovery.v1.RecoveryService/ResetPassword";

    /// Seconds; from 5 ms (a cached read) to 10 s (past the argon2 queue timeout).
    const DURATION_BUCKETS: [f64; 12] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
    ];

    /// The names gRPC gives its status codes, by number: `rpc.response.status_code` and
    /// `error.type` carry these (the RPC conventions), not the numbers.
    pub const GRPC_STATUS_NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];

    /// One finished call: `rpc.server.call.duration` (OpenTelemetry RPC semantic conventions:
    /// seconds, by `rpc.system.name`, `rpc.method` (`package.Service/Method`),
    /// `rpc.response.status_code` and, for a failure, `error.type`), whose count is the call
    /// count; plus the flow counters a success stands for. `route` is one of
    /// our methods (`package.Service/Method`, from `server::routes::known`), `None` for any other
    /// path: a method this server does not have (UNIMPLEMENTED) is recorded as `_OTHER`, as the
    /// conventions say, so a scanner cannot blow up the number of series. The labels borrow the
    /// `'static` route: recording a call allocates nothing.
    pub fn rpc_finished(
        route: Option<&'static str>,
        grpc_status: i64,
        elapsed: std::time::Duration,
    ) {
        use opentelemetry_semantic_conventions::attribute::{
            ERROR_TYPE, RPC_METHOD, RPC_RESPONSE_STATUS_CODE, RPC_SYSTEM_NAME,
        };
        use opentelemetry_semantic_conventions::metric::RPC_SERVER_CALL_DURATION;
        static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
        let method = match route {
            Some(route) if grpc_status != 12 => route,
            _ => "_OTHER",
        };
        let status = usize::try_from(grpc_status)
            .ok()
            .and_then(|code| GRPC_STATUS_NAMES.get(code))
            .copied()
            .unwrap_or("UNKNOWN");
        // `error.type` only on failures (the conventions); the labels borrow `'static` strings,
        // so recording a call allocates nothing.
        let attributes = [
            KeyValue::new(RPC_SYSTEM_NAME, "grpc"),
            KeyValue::new(RPC_METHOD, method),
            KeyValue::new(RPC_RESPONSE_STATUS_CODE, status),
            KeyValue::new(ERROR_TYPE, status),
        ];
        let attributes = if grpc_status == 0 {
            &attributes[..3]
        } else {
            &attributes[..]
        };
        HISTOGRAM
            .get_or_init(|| {
                meter()
                    .f64_histogram(RPC_SERVER_CALL_DURATION)
                    .with_unit("s")
                    .with_description("gRPC calls served: duration by method and status code")
                    .with_boundaries(DURATION_BUCKETS.to_vec())
                    .build()
            })
            .record(elapsed.as_secs_f64(), attributes);
        if grpc_status != 0 {
            return;
        }
        match route {
            Some(START) => flow_step(FlowStep::Started),
            Some(SEND) => flow_step(FlowStep::CodeSent),
            Some(VERIFY) => flow_step(FlowStep::CodeVerified),
            Some(RESET) => flow_step(FlowStep::PasswordReset),
            _ => {}
        }
    }

    #[derive(Clone, Copy)]
    pub enum FlowStep {
        Started,
        CodeSent,
        CodeVerified,
        CodeWrong,
        PasswordReset,
    }

    /// The flow's funnel. `codes.sent` counts codes issued, decoys for unknown logins included
    /// (the API answers both alike by design); what reached a mailbox is `recovery.deliveries`.
    pub fn flow_step(step: FlowStep) {
        static COUNTERS: OnceLock<[Counter<u64>; 5]> = OnceLock::new();
        let counters = COUNTERS.get_or_init(|| {
            [
                counter(
                    "recovery.flows.started",
                    "Recovery flows started (StartRecovery OK)",
                ),
                counter(
                    "recovery.codes.sent",
                    "Verification codes issued (SendVerificationCode OK)",
                ),
                counter(
                    "recovery.codes.verified",
                    "Verification codes accepted (VerifyCode OK)",
                ),
                counter(
                    "recovery.codes.wrong",
                    "Wrong verification codes (CODE_INVALID)",
                ),
                counter(
                    "recovery.passwords.reset",
                    "Passwords changed through a flow (ResetPassword OK)",
                ),
            ]
        });
        counters[step as usize].add(1, &[]);
    }

    /// A rate limit refused a call; `scope` is the `ErrorInfo` metadata of the same name
    /// (login, ip, global, account, hashing, ...).
    pub fn limit_hit(scope: &'static str) {
        static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
        COUNTER
            .get_or_init(|| {
                counter(
                    "recovery.limits.hit",
                    "Calls refused by a rate limit, by scope",
                )
            })
            .add(1, &[KeyValue::new("scope", scope)]);
    }

    /// A trusted proxy's `x-forwarded-for` named no usable client, so the proxy's own address
    /// was taken; `reason` is `unparseable` or `too_few_entries` (`net::ForwardedProblem`).
    pub fn forwarded_for_rejected(reason: &'static str) {
        static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
        COUNTER
            .get_or_init(|| {
                counter(
                    "recovery.forwarded_for.rejected",
                    "x-forwarded-for headers of trusted proxies that named no client, by reason",
                )
            })
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A call failed because of the store (Redis) or the database; `kind` is `unavailable`
    /// (unreachable, timed out) or `internal` (answered with an error).
    pub fn backend_error(backend: &'static str, kind: &'static str) {
        static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
        COUNTER
            .get_or_init(|| {
                counter(
                    "recovery.backend.errors",
                    "Store and database errors seen by calls",
                )
            })
            .add(
                1,
                &[
                    KeyValue::new("backend", backend),
                    KeyValue::new("kind", kind),
                ],
            );
    }

    /// Sampled when `/metrics` is scraped (each reading costs a database query, so it is taken
    /// when someone looks, not on a timer).
    pub struct Sample {
        pub queue_depth: u64,
        pub queue_oldest_age_secs: f64,
        pub outbox_pending: u64,
        pub outbox_lag_secs: f64,
        pub hashing_in_use: u64,
        pub hashing_limit: u64,
    }

    pub fn record_sample(sample: &Sample) {
        struct Gauges {
            queue_depth: Gauge<u64>,
            queue_oldest_age: Gauge<f64>,
            outbox_pending: Gauge<u64>,
            outbox_lag: Gauge<f64>,
            hashing_in_use: Gauge<u64>,
            hashing_limit: Gauge<u64>,
        }
        static GAUGES: OnceLock<Gauges> = OnceLock::new();
        let g = GAUGES.get_or_init(|| {
            let m = meter();
            Gauges {
                queue_depth: m
                    .u64_gauge("recovery.delivery.queue.depth")
                    .with_description("Messages waiting in the delivery queue")
                    .build(),
                queue_oldest_age: m
                    .f64_gauge("recovery.delivery.queue.oldest_age")
                    .with_unit("s")
                    .with_description("Age of the oldest message waiting in the delivery queue")
                    .build(),
                outbox_pending: m
                    .u64_gauge("recovery.outbox.pending")
                    .with_description("Events in the outbox not yet published")
                    .build(),
                outbox_lag: m
                    .f64_gauge("recovery.outbox.lag")
                    .with_unit("s")
                    .with_description("Age of the oldest unpublished event in the outbox")
                    .build(),
                hashing_in_use: m
                    .u64_gauge("recovery.hashing.permits.in_use")
                    .with_description("argon2 hashes running now")
                    .build(),
                hashing_limit: m
                    .u64_gauge("recovery.hashing.permits.limit")
                    .with_description("argon2 hashes allowed at once (hashing.max_in_flight)")
                    .build(),
            }
        });
        g.queue_depth.record(sample.queue_depth, &[]);
        g.queue_oldest_age.record(sample.queue_oldest_age_secs, &[]);
        g.outbox_pending.record(sample.outbox_pending, &[]);
        g.outbox_lag.record(sample.outbox_lag_secs, &[]);
        g.hashing_in_use.record(sample.hashing_in_use, &[]);
        g.hashing_limit.record(sample.hashing_limit, &[]);
    }
}
