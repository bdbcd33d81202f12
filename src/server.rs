//! Wiring: configuration -> backends -> domain -> gRPC services, layers and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::accounts::{AccountRepository, DeliveryQueue, PasswordHasher};
use crate::api::localized::Localized;
use crate::api::{AccountApi, ClientResolver, RecoveryApi};
use crate::blocking::BlockingPool;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, NotifierKind};
use crate::db::{Database, RetentionSweeper};
use crate::hibp::HibpClient;
use crate::notify::events::{EventSink, OutboxRelay, SinkConnector};
use crate::notify::queue::{DeliveryWorker, MessageSealer, NoticeQueue};
use crate::notify::webhooks::WebhookDispatcher;
use crate::notify::{LogNotifier, Notifier, Templates};
use crate::proto::account_service_server::AccountServiceServer;
use crate::proto::recovery_service_server::RecoveryServiceServer;
use crate::recovery::Recovery;
use crate::recovery::breach::BreachCheck;
use crate::recovery::policy::{self, PasswordPolicy};
use crate::secrets::keys::KeyRing;
use crate::store::{EphemeralStore, MemoryStore, RedisStore};

pub mod admin;
pub mod auth;
pub mod boundary;
pub mod check;
pub mod cors;
pub mod metrics;
pub mod routes;
pub mod tls;
pub mod trace;
pub mod ui;

/// Replacements for what the configuration would build: tests inject a clock, a capturing
/// notifier or a store.
#[derive(Default, Clone)]
pub struct Overrides {
    pub clock: Option<Arc<dyn Clock>>,
    pub notifier: Option<Arc<dyn Notifier>>,
    pub store: Option<Arc<dyn EphemeralStore>>,
    pub captcha_answers: Option<crate::recovery::service::CaptchaAnswerSource>,
}

/// A built service, not yet serving.
pub struct App {
    pub recovery: Arc<Recovery>,
    pub database: Database,
    config: Config,
    worker: DeliveryWorker,
    relay: Option<OutboxRelay>,
    webhooks: Option<WebhookDispatcher>,
    sweeper: RetentionSweeper,
}

fn key_ring(config: &Config) -> anyhow::Result<KeyRing> {
    use secrecy::ExposeSecret;
    match &config.secret {
        Some(secret) => KeyRing::parse(secret.expose_secret()).context("RECOVERY_SECRET"),
        None if config.production => {
            anyhow::bail!("RECOVERY_SECRET is required in production mode")
        }
        None => {
            tracing::warn!(
                "RECOVERY_SECRET is not set: using a random key for this process only. Codes, tokens and queued \
                 messages die with it and replicas cannot share flows. Set RECOVERY_SECRET (>= 32 bytes) in production."
            );
            KeyRing::random().context("random secret")
        }
    }
}

async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn EphemeralStore>> {
    match &config.redis_url {
        Some(url) => Ok(Arc::new(
            RedisStore::connect(url, &config.redis)
                .await
                .context("connecting to Redis")?,
        )),
        None => Ok(Arc::new(MemoryStore::new())),
    }
}

fn build_notifier(config: &Config) -> anyhow::Result<Arc<dyn Notifier>> {
    match config.notifier {
        NotifierKind::Log => {
            if config.production {
                anyhow::bail!(
                    "the log notifier prints codes on the console; it is refused in production mode"
                );
            }
            tracing::warn!(
                "NOTIFIER=log: messages, including one-time codes, are printed on this console. \
                 This is for development only; set RECOVERY_NOTIFIER=smtp in production."
            );
            Ok(Arc::new(LogNotifier))
        }
        NotifierKind::Smtp => Ok(Arc::new(crate::notify::smtp::SmtpNotifier::from_settings(
            config.smtp_url.as_ref(),
            &config.mail_from,
            &config.smtp,
        )?)),
    }
}

impl App {
    pub async fn build(config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        // ring is the process's one rustls provider: a client built without an explicit one
        // (reqwest with `rustls-no-provider`) uses it instead of panicking. Already installed
        // (a second App in one process) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The refusals of production mode (secret, notifier, AccountService callers) come
        // first: a misconfigured
        // production start must fail before it touches the database or Redis.
        let keys = key_ring(&config)?;
        let notifier = match overrides.notifier {
            Some(notifier) => notifier,
            None => build_notifier(&config)?,
        };
        // Who may call AccountService, and which hosts the page may be reached by: checked by
        // the loader too, again here for a configuration built in code.
        if let Some(problem) = config.boundary_problems().into_iter().next() {
            anyhow::bail!(problem);
        }
        let database = Database::connect(&config.database_url, &config.database)
            .await
            .context("connecting to the database")?;
        database.migrate().await.context("migrating the database")?;
        // Audit rows group-committed from here on (`serve` flushes them on shutdown), and
        // lookups by login coalesced into batches.
        let database = database
            .with_audit_log(&config.database)
            .with_batched_lookups();
        let store = match overrides.store {
            Some(store) => store,
            None => build_store(&config).await?,
        };
        let clock: Arc<dyn Clock> = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let templates = match &config.templates_dir {
            Some(dir) => Templates::with_override_dir(dir).context("loading templates")?,
            None => Templates::embedded(),
        };
        if config.captcha.mode == crate::recovery::handle::CaptchaMode::Off {
            tracing::warn!("captcha is off: StartRecovery is open to scripted use");
        }
        let loaded = policy::preload();
        tracing::debug!(entries = loaded, "common-password list loaded");
        let hasher = {
            let settings = config.hashing.clone();
            tokio::task::spawn_blocking(move || PasswordHasher::new(&settings))
                .await
                .context("hasher start-up")??
        };
        let sealer = MessageSealer::new(&keys);
        let wake = Arc::new(Notify::new());
        let event_wake = Arc::new(Notify::new());
        let accounts: Arc<dyn AccountRepository> = Arc::new(database.clone());
        let queue: Arc<dyn DeliveryQueue> = Arc::new(database.clone());
        let breach = if config.breach_check.enabled {
            let settings = config.breach_check.clone();
            let client = HibpClient::new(
                &settings.url,
                Duration::from_millis(settings.timeout_ms.max(1)),
            )
            .context("building the breach-check client")?;
            Some(BreachCheck::new(Arc::new(client), settings))
        } else {
            None
        };
        let recovery = Arc::new(Recovery {
            store,
            accounts,
            deliveries: Arc::new(NoticeQueue {
                queue: queue.clone(),
                sealer: sealer.clone(),
                wake: wake.clone(),
            }),
            event_wake: event_wake.clone(),
            hasher,
            policy: PasswordPolicy::new(config.password_policy.clone()),
            keys,
            settings: config.recovery_settings(),
            clock: clock.clone(),
            notice_lifetime: Duration::from_secs(config.delivery.notice_lifetime_secs),
            captcha_answers: overrides.captcha_answers,
            // A person waits for the picture or the strength meter: past a few seconds of
            // queue, shed the load.
            cpu_pool: BlockingPool::per_core(Duration::from_secs(5)),
            breach,
        });
        let worker = DeliveryWorker {
            queue,
            sealer,
            templates: Arc::new(templates),
            notifier,
            clock: clock.clone(),
            settings: config.delivery.clone(),
            mail: config.mail.clone(),
            wake,
        };
        let sweeper = RetentionSweeper {
            database: database.clone(),
            settings: config.retention.clone(),
            clock: clock.clone(),
        };
        let webhooks = webhook_dispatcher(&config, &database, clock.clone())?;
        if let Some(webhooks) = &webhooks {
            webhooks
                .register_all()
                .await
                .context("registering the webhook endpoints")?;
        }
        let relay = outbox_relay(&config, &database, clock, event_wake);
        Ok(Self {
            recovery,
            database,
            config,
            worker,
            relay,
            webhooks,
            sweeper,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then lets in-flight calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            recovery,
            database,
            config,
            worker,
            relay,
            webhooks,
            sweeper,
        } = self;
        let local: SocketAddr = listener.local_addr()?;
        let trusted_proxies = crate::net::TrustedProxies::new(
            &config.server.trusted_proxies,
            config.server.trusted_hops,
        );
        let clients = ClientResolver {
            trusted_proxies: trusted_proxies.clone(),
        };
        let public_hosts =
            crate::net::PublicHosts::from_config(config.server.public_hosts.as_deref())
                .map_err(|problem| anyhow::anyhow!(problem))?;
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_admin = CancellationToken::new();
        let admin_task = match config.admin.listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the admin listener {address}"))?;
                tracing::info!(address = %listener.local_addr()?, "admin listener: /metrics, /healthz, /readyz");
                let admin = admin::Admin {
                    recovery: recovery.clone(),
                    database: database.clone(),
                    hashing_limit: config.hashing.max_in_flight,
                    draining: draining.clone(),
                };
                let stop = stop_admin.clone();
                Some(tokio::spawn(
                    admin.serve(listener, async move { stop.cancelled().await }),
                ))
            }
            None => None,
        };
        let stop_worker = CancellationToken::new();
        let worker_task = tokio::spawn(worker.run(stop_worker.clone()));
        let relay_task = relay.map(|relay| tokio::spawn(relay.run(stop_worker.clone())));
        let sweeper_task = tokio::spawn(sweeper.run(stop_worker.clone()));
        let webhook_task = webhooks.map(|webhooks| tokio::spawn(webhooks.run(stop_worker.clone())));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<RecoveryServiceServer<RecoveryApi>>()
            .await;
        health
            .set_serving::<AccountServiceServer<InterceptedService<AccountApi, auth::AccountAuth>>>(
            )
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so grpcurl can decode ErrorInfo / BadRequest / RetryInfo.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let max_message = config.server.max_message_bytes;
        let gateway_auth = auth::GatewayAuth::from_config(&config.recovery_api)?;
        if !gateway_auth.is_open() {
            tracing::info!("RecoveryService requires a gateway key");
        }
        let recovery_service = InterceptedService::new(
            RecoveryServiceServer::new(Localized::new(
                RecoveryApi {
                    recovery: recovery.clone(),
                    clients: clients.clone(),
                },
                recovery.clone(),
            ))
            .max_decoding_message_size(max_message),
            gateway_auth,
        );
        let tls = tls::server_tls(&config.tls)?;
        let account_auth = auth::AccountAuth::from_config(
            &config.account_api,
            config.tls.mutual(),
            config.production,
        )?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if account_auth.is_loopback_only() && account_auth.admits_loopback() {
            tracing::warn!(
                "no AccountService API keys or client CA configured: AccountService answers loopback callers only"
            );
        }
        if tls.is_none() {
            tracing::warn!(
                "TLS is off: calls, passwords included, cross the network in clear unless a proxy terminates TLS"
            );
        }
        let account_service = InterceptedService::new(
            AccountServiceServer::new(Localized::new(
                AccountApi {
                    recovery: recovery.clone(),
                    clients,
                },
                recovery.clone(),
            ))
            .max_decoding_message_size(max_message),
            account_auth,
        );

        if config.ui_enabled() {
            tracing::info!(url = %format!("http://{local}/"), "web UI enabled ([ui] enabled)");
        }
        tracing::info!(address = %local, tls = config.tls.enabled(), mutual_tls = config.tls.mutual(), "recovery-service listening");
        let health_on_shutdown = health.clone();
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let draining_on_shutdown = draining.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight calls");
            draining_on_shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
            health_on_shutdown
                .set_not_serving::<RecoveryServiceServer<RecoveryApi>>()
                .await;
        };
        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).context("TLS configuration")?;
        }
        server
            .timeout(Duration::from_millis(config.server.request_timeout_ms))
            .concurrency_limit_per_connection(config.server.concurrency_limit)
            // No HTTP/2 stream limit (SETTINGS_MAX_CONCURRENT_STREAMS): h2 enforces it from the
            // connection's first frame, so a client that opens a burst of calls before it has
            // read the server's SETTINGS gets REFUSED_STREAM, which tonic and others answer with
            // UNAVAILABLE (seen in the benchmark's preparation). Calls past
            // `concurrency_limit` wait here instead, before any of their work has started.
            .accept_http1(true)
            // Outermost: a request for a foreign host, or AccountService over grpc-web or
            // HTTP/1.1, is refused before anything else (CORS included) looks at it.
            .layer(boundary::BoundaryLayer::new(public_hosts))
            // Then a browser's preflight is answered before anything else looks at it.
            .layer(tower::util::option_layer(cors::layer(
                &config.server.cors_allowed_origins,
            )?))
            // Before tonic-web, which answers any other HTTP/1.1 GET with 400.
            .layer(tower::util::option_layer(ui::layer(config.ui_enabled())))
            .layer(trace::GrpcTraceLayer::new(
                config.telemetry.trust_traceparent,
                trusted_proxies,
            ))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(metrics::RpcMetricsLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(recovery_service)
            .add_service(account_service)
            .serve_with_incoming_shutdown(no_delay(listener), shutdown)
            .await
            .context("gRPC server")?;

        stop_worker.cancel();
        // The admin listener outlives the gRPC one, so probes see "draining" until the end.
        stop_admin.cancel();
        if let Some(admin_task) = admin_task {
            admin_task.await.ok();
        }
        if tokio::time::timeout(grace, worker_task).await.is_err() {
            tracing::warn!("delivery worker did not stop in time; pending messages stay queued");
        }
        if let Some(relay_task) = relay_task
            && tokio::time::timeout(grace, relay_task).await.is_err()
        {
            tracing::warn!(
                "event relay did not stop in time; unpublished events stay in the outbox"
            );
        }
        if let Some(webhook_task) = webhook_task
            && tokio::time::timeout(grace, webhook_task).await.is_err()
        {
            tracing::warn!(
                "webhook delivery did not stop in time; undelivered events stay in the database"
            );
        }
        if tokio::time::timeout(grace, sweeper_task).await.is_err() {
            // Each batch is one statement: an interrupted sweep leaves nothing half-done.
            tracing::warn!("retention sweep did not stop in time");
        }
        // Every call has finished: write the audit rows still queued, then close the pool.
        if tokio::time::timeout(grace, database.flush_audit())
            .await
            .is_err()
        {
            tracing::error!("audit rows still queued could not be written in time");
        }
        database.close().await.ok();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Webhook delivery, if any endpoint is configured.
fn webhook_dispatcher(
    config: &Config,
    database: &Database,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<WebhookDispatcher>> {
    if config.webhooks.endpoints.is_empty() {
        return Ok(None);
    }
    let client = crate::notify::webhooks::http_client()?;
    tracing::info!(
        endpoints = config.webhooks.endpoints.len(),
        "webhooks: delivering outbox events"
    );
    WebhookDispatcher::new(
        Arc::new(database.clone()),
        clock,
        config.webhooks.clone(),
        client,
    )
    .map(Some)
}

/// Accepted connections with Nagle's algorithm off. tonic sets `TCP_NODELAY` only on sockets
/// it accepts itself, not on an incoming stream handed to it: without this, an answer of more
/// than one segment (a captcha picture) waited for the client's delayed ACK, ~40 ms per call
/// (CreateCaptcha at 1 in flight took 48 ms for under 1 ms of work).
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set");
        }
        Ok(stream)
    })
}

/// The relay from the outbox table to the event stream, if a Redis is configured for it.
fn outbox_relay(
    config: &Config,
    database: &Database,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
) -> Option<OutboxRelay> {
    let Some(url) = config
        .events
        .redis_url
        .clone()
        .or_else(|| config.redis_url.clone())
    else {
        tracing::warn!(
            "no Redis configured: password.changed events stay in the outbox table until a stream is configured \
             (RECOVERY_REDIS_URL or events.redis_url)"
        );
        return None;
    };
    let redis = config.redis.clone();
    let connect: SinkConnector = Arc::new(move || {
        let url = url.clone();
        let redis = redis.clone();
        Box::pin(async move {
            let sink: Arc<dyn EventSink> = Arc::new(RedisStore::connect(&url, &redis).await?);
            Ok(sink)
        })
    });
    Some(OutboxRelay {
        outbox: Arc::new(database.clone()),
        connect,
        clock,
        settings: config.events.clone(),
        wake,
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that arrives while the service is still starting is
/// not lost (nor does it kill the process mid-migration): serving then begins and ends at once.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

/// `recovery-service serve`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let listen = config.listen;
    let app = App::build(config, Overrides::default()).await?;
    // Bound only once the service is built: a client that can connect is served, instead of
    // waiting in the accept backlog of a process that is still migrating.
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    app.serve(listener, shutdown).await
}
