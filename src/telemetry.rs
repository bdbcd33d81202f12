//! Logging (tracing) set-up. Spans and events carry ids and masked values only; see SECURITY.md.

use tracing::Metadata;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Spans and events of dependencies that put secrets in their fields. They are switched off
/// whatever `RUST_LOG` says, because an operator turning on TRACE to chase a bug must not
/// thereby write credentials to the log.
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

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), text or JSON lines on
/// standard error.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let registry = tracing_subscriber::registry()
        .with(secret_filter())
        .with(filter);
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
}
