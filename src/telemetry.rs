//! Logs (tracing, text or JSON on standard error) and, when `RECOVERY_OTLP_ENDPOINT` is set,
//! traces and metrics exported over OTLP/gRPC. Spans and events carry ids, reasons and masked
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

fn resource() -> Resource {
    Resource::builder()
        .with_service_name("recovery-service")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

fn exporters(endpoint: &str) -> anyhow::Result<(SdkTracerProvider, SdkMeterProvider)> {
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource())
        .build();
    Ok((tracer_provider, meter_provider))
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `format` is `text` or
/// `json`. Must run inside the tokio runtime when an OTLP endpoint is given.
pub fn init(format: &str, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    // Callers' W3C trace context (`traceparent`) is honoured whether or not we export.
    global::set_text_map_propagator(TraceContextPropagator::new());
    let mut telemetry = Telemetry::default();
    let otel_layer = match otlp_endpoint {
        Some(endpoint) => {
            let (tracer_provider, meter_provider) = exporters(endpoint)?;
            let tracer = tracer_provider.tracer("recovery-service");
            global::set_tracer_provider(tracer_provider.clone());
            global::set_meter_provider(meter_provider.clone());
            telemetry.tracer_provider = Some(tracer_provider);
            telemetry.meter_provider = Some(meter_provider);
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

/// Counters of outcomes, by stable reason; exported when OTLP is on, free otherwise.
pub mod metrics {
    use std::sync::OnceLock;

    use opentelemetry::KeyValue;
    use opentelemetry::metrics::Counter;

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
}
