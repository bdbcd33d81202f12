//! The admin listener (`[admin] listen`): `/metrics` in the Prometheus text format, `/healthz`
//! (the process answers) and `/readyz` (it can reach the store and the database, and is not
//! draining). Plain HTTP/1.1 on a port of its own, for the cluster's scraper and probes; the
//! gRPC port never serves these, so the gateway cannot expose them by accident.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::db::Database;
use crate::recovery::Recovery;
use crate::telemetry::metrics::{Sample, record_sample};

/// A probe that waits longer than this is answered "not ready": kubelet's default probe timeout
/// is 1 s, and a readiness check that hangs is as bad as one that fails.
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);

#[derive(Clone)]
pub struct Admin {
    pub recovery: Arc<Recovery>,
    pub database: Database,
    /// `hashing.max_in_flight`, to turn free permits into permits in use.
    pub hashing_limit: usize,
    /// Set when shutdown begins: `/readyz` then fails, so load balancers stop sending new calls
    /// while the in-flight ones finish.
    pub draining: Arc<AtomicBool>,
}

impl Admin {
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(self)
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(self.router()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }

    async fn sample(&self) -> Sample {
        let now = self.recovery.clock.now();
        // A database that does not answer leaves the backlog readings at zero; the failure is
        // what `recovery.backend.errors` and `/readyz` report.
        let (deliveries, outbox) = tokio::join!(
            self.database.delivery_backlog(now),
            self.database.outbox_backlog(now)
        );
        let deliveries = deliveries.unwrap_or_default();
        let outbox = outbox.unwrap_or_default();
        let limit = self.hashing_limit.max(1);
        let free = self.recovery.hasher.available_permits().min(limit);
        Sample {
            queue_depth: deliveries.count,
            queue_oldest_age_secs: deliveries.oldest_age_secs,
            outbox_pending: outbox.count,
            outbox_lag_secs: outbox.oldest_age_secs,
            hashing_in_use: u64::try_from(limit - free).unwrap_or(0),
            hashing_limit: u64::try_from(limit).unwrap_or(0),
        }
    }
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let sample = tokio::time::timeout(Duration::from_secs(5), admin.sample()).await;
    if let Ok(sample) = &sample {
        record_sample(sample);
    }
    let now = admin.recovery.clock.now();
    let webhooks = tokio::time::timeout(
        Duration::from_secs(5),
        crate::recovery::ports::WebhookStore::webhook_backlog(&admin.database, now),
    )
    .await;
    if let Ok(Ok(endpoints)) = webhooks {
        for endpoint in endpoints {
            crate::telemetry::metrics::webhook_backlog(
                &endpoint.endpoint,
                endpoint.pending,
                endpoint.oldest_age_secs,
            );
        }
    }
    match crate::telemetry::prom::render() {
        Some(Ok(text)) => (
            [(header::CONTENT_TYPE, crate::telemetry::prom::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Some(Err(error)) => {
            tracing::error!(%error, "metrics cannot be encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response(),
    }
}

/// Whether a probe of `dependency` answered in time; why not goes to the log.
fn answered<E: std::fmt::Display>(
    dependency: &str,
    probe: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> bool {
    match probe {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(dependency, %error, "readiness: dependency failed");
            false
        }
        Err(_) => {
            tracing::warn!(
                dependency,
                timeout_ms = PROBE_TIMEOUT.as_millis() as u64,
                "readiness: dependency did not answer in time"
            );
            false
        }
    }
}

async fn ready(State(admin): State<Admin>) -> Response {
    if admin.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let (store, database) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, admin.recovery.store.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, admin.database.ping()),
    );
    let store_ok = answered("store", store);
    let database_ok = answered("database", database);
    if store_ok && database_ok {
        return (StatusCode::OK, "ready\n").into_response();
    }
    // Which dependency, not why: the reasons (addresses, driver messages) go to the log only.
    let mut body = String::from("not ready:");
    if !store_ok {
        body.push_str(" store");
    }
    if !database_ok {
        body.push_str(" database");
    }
    body.push('\n');
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}
