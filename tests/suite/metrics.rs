//! The admin listener of the real binary: `/metrics` parses as the Prometheus text format (with
//! an independent parser) and moves when a flow runs; `/healthz` and `/readyz` answer probes;
//! the gRPC port serves none of it.

use opentelemetry_semantic_conventions as semconv;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::TempDir;
use crate::common::servers::spare_port;
use prometheus_parse::{Scrape, Value};
use recovery_service::proto;
use recovery_service::proto::account_service_client::AccountServiceClient;
use recovery_service::proto::recovery_service_client::RecoveryServiceClient;

struct Server {
    child: Child,
    grpc: u16,
    admin: u16,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with the admin listener on, Redis as the store (a real dependency for `/readyz`;
/// a missing test Redis fails the test) and SQLite. `None` when Redis is not wanted
/// (`common::backend`).
async fn start() -> Option<Server> {
    start_with(&[]).await
}

async fn start_with(extra_env: &[(&str, &str)]) -> Option<Server> {
    // reqwest is built without a rustls provider (ring is the crate's one); give it ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new();
    let (grpc, admin) = (spare_port(), spare_port());
    let redis = crate::common::backend::redis()?;
    let child = Command::new(env!("CARGO_BIN_EXE_recovery-service"))
        .arg("serve")
        .current_dir(&dir.0)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RECOVERY_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("RECOVERY_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .env(
            "RECOVERY_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.0.join("metrics.db").display()),
        )
        .env("RECOVERY_REDIS_URL", redis)
        .env(
            "RECOVERY_REDIS__KEY_PREFIX",
            format!("metrics-test:{}:", uuid::Uuid::new_v4().simple()),
        )
        .env("RECOVERY_CAPTCHA", "off")
        .env("RECOVERY_HASHING__M_COST_KIB", "256")
        .env("RECOVERY_HASHING__T_COST", "1")
        .env("RUST_LOG", "warn")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        grpc,
        admin,
        _dir: dir,
    };
    for _ in 0..200 {
        if let Ok(response) = reqwest::get(server.url("/healthz")).await
            && response.status().is_success()
        {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the admin listener never answered /healthz");
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    async fn client(&self) -> RecoveryServiceClient<tonic::transport::Channel> {
        RecoveryServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc))
            .await
            .unwrap()
    }

    async fn scrape(&self) -> Scrape {
        let response = reqwest::get(self.url("/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let body = response.text().await.unwrap();
        Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).unwrap()
    }
}

/// Sum of the samples of `metric` whose labels include `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// A semantic-conventions name as the Prometheus exporter writes it (dots become underscores).
fn prometheus(name: &str) -> String {
    name.replace('.', "_")
}

/// `rpc.server.call.duration` (unit `s`) as scraped: `rpc_server_call_duration_seconds`.
fn call_duration() -> String {
    format!(
        "{}_seconds",
        prometheus(semconv::metric::RPC_SERVER_CALL_DURATION)
    )
}

/// Calls of one `RecoveryService` method answered with `code` (a gRPC status name).
fn calls(scrape: &Scrape, method: &str, code: &str) -> f64 {
    let method = format!("identity.recovery.v1.RecoveryService/{method}");
    let mut labels = vec![
        (prometheus(semconv::attribute::RPC_SYSTEM_NAME), "grpc"),
        (prometheus(semconv::attribute::RPC_METHOD), method.as_str()),
        (
            prometheus(semconv::attribute::RPC_RESPONSE_STATUS_CODE),
            code,
        ),
    ];
    if code != "OK" {
        labels.push((prometheus(semconv::attribute::ERROR_TYPE), code));
    }
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    value(scrape, &call_duration(), &labels)
}

#[tokio::test]
async fn metrics_parse_and_move_when_a_flow_runs() {
    let Some(server) = start().await else {
        return;
    };
    let before = server.scrape().await;
    let mut client = server.client().await;

    let flow = client
        .start_recovery(proto::StartRecoveryRequest {
            login_id: format!("metrics-{}@example.com", uuid::Uuid::new_v4().simple()),
            captcha_id: String::new(),
            captcha_answer: String::new(),
            locale: "en".into(),
            pow_solution: String::new(),
            device_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    client
        .send_verification_code(proto::SendVerificationCodeRequest {
            flow_id: flow.flow_id.clone(),
            channel: proto::Channel::Email.into(),
        })
        .await
        .unwrap();
    let wrong = client
        .verify_code(proto::VerifyCodeRequest {
            flow_id: flow.flow_id.clone(),
            code: "000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    let missing = client
        .get_recovery_flow(proto::GetRecoveryFlowRequest {
            flow_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let after = server.scrape().await;
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(moved("recovery_flows_started_total", &[]), 1.0);
    assert_eq!(moved("recovery_codes_sent_total", &[]), 1.0);
    assert_eq!(moved("recovery_codes_wrong_total", &[]), 1.0);
    assert_eq!(
        moved("recovery_rpc_errors_total", &[("reason", "FLOW_NOT_FOUND")]),
        1.0
    );
    assert_eq!(
        calls(&after, "StartRecovery", "OK") - calls(&before, "StartRecovery", "OK"),
        1.0
    );
    assert_eq!(
        calls(&after, "VerifyCode", "INVALID_ARGUMENT")
            - calls(&before, "VerifyCode", "INVALID_ARGUMENT"),
        1.0
    );
    assert_eq!(
        calls(&after, "GetRecoveryFlow", "NOT_FOUND")
            - calls(&before, "GetRecoveryFlow", "NOT_FOUND"),
        1.0
    );
    // A real histogram: buckets in seconds, cumulative, ending in +Inf.
    let histogram = after
        .samples
        .iter()
        .find(|s| {
            s.metric == call_duration()
                && s.labels.get(&prometheus(semconv::attribute::RPC_METHOD))
                    == Some("identity.recovery.v1.RecoveryService/StartRecovery")
        })
        .expect("the duration histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!(
            "rpc_server_call_duration_seconds is not a histogram: {:?}",
            histogram.value
        );
    };
    assert!(buckets.iter().any(|b| b.less_than == 0.005));
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));

    // The sampled gauges are there on every scrape.
    assert_eq!(value(&after, "recovery_hashing_permits_limit", &[]), 4.0);
    assert_eq!(value(&after, "recovery_hashing_permits_in_use", &[]), 0.0);
    for gauge in [
        "recovery_delivery_queue_depth",
        "recovery_delivery_queue_oldest_age_seconds",
        "recovery_outbox_pending",
        "recovery_outbox_lag_seconds",
    ] {
        assert!(
            after.samples.iter().any(|s| s.metric == gauge),
            "{gauge} missing"
        );
    }
}

/// `probe` (the compose health check of an image without curl) succeeds against a ready
/// service and fails when nothing answers on the admin port.
#[tokio::test]
async fn the_probe_command_follows_readyz() {
    let Some(server) = start().await else {
        return;
    };
    let probe = |admin: u16| {
        let dir = TempDir::new();
        crate::common::binary_command(&dir, "probe.db")
            .arg("probe")
            .env("RECOVERY_ADMIN__LISTEN", format!("0.0.0.0:{admin}"))
            .output()
            .unwrap()
    };
    let ready = probe(server.admin);
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    let nobody = probe(spare_port());
    assert!(!nobody.status.success());
}

#[tokio::test]
async fn probes_answer_on_the_admin_port_only() {
    let Some(server) = start().await else {
        return;
    };
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready\n");
    // Plain HTTP on the gRPC port (the web UI's files, a scanner's paths) is not an RPC and
    // makes no series.
    for path in ["/", "/no/such-file.js", "/x/y"] {
        let _ = reqwest::get(format!("http://127.0.0.1:{}{path}", server.grpc)).await;
    }
    let scrape = server.scrape().await;
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("rpc_server_"))
    {
        let method = sample
            .labels
            .get(&prometheus(semconv::attribute::RPC_METHOD))
            .unwrap_or_default();
        assert!(
            method.starts_with("grpc.") || method.starts_with("identity.") || method == "_OTHER",
            "{method}"
        );
    }
    // The gRPC port does not serve the admin routes.
    let on_grpc = reqwest::get(format!("http://127.0.0.1:{}/metrics", server.grpc)).await;
    if let Ok(response) = on_grpc {
        let body = response.text().await.unwrap_or_default();
        assert!(!body.contains("rpc_server_call_duration"), "{body}");
    }
}

#[tokio::test]
async fn readiness_names_the_dependency_that_stopped_answering() {
    if crate::common::backend::redis().is_none() {
        return;
    }
    let mut redis = crate::common::servers::PrivateRedis::start();
    let Some(server) = start_with(&[("RECOVERY_REDIS_URL", &redis.url())]).await else {
        return;
    };
    assert_eq!(
        reqwest::get(server.url("/readyz")).await.unwrap().status(),
        200
    );
    redis.stop();
    let response = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.unwrap(), "not ready: store\n");
    // Liveness is not readiness: the process itself is fine.
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn sigterm_turns_readiness_off_while_in_flight_calls_finish() {
    // A deliberately slow hash keeps a call in flight when the signal lands.
    let Some(server) = start_with(&[
        ("RECOVERY_HASHING__M_COST_KIB", "19456"),
        ("RECOVERY_HASHING__T_COST", "40"),
    ])
    .await
    else {
        return;
    };
    let mut accounts = AccountServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc))
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        accounts
            .create_account(proto::CreateAccountRequest {
                login_id: format!("drain-{}@example.com", uuid::Uuid::new_v4().simple()),
                email: String::new(),
                phone: String::new(),
                password: "Quiet-Copper-Lantern-84".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut drained = false;
    for _ in 0..40 {
        let response = reqwest::get(server.url("/readyz")).await.unwrap();
        if response.status() == 503 {
            assert_eq!(response.text().await.unwrap(), "draining\n");
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(drained, "/readyz still says ready after SIGTERM");
    assert!(call.await.unwrap().is_ok(), "the in-flight call was cut");
}

/// The alert rules and the runbook name only metrics the service defines: every series name in
/// deploy/prometheus/alerts.yaml (less the exporter's unit and counter suffixes) is one of the
/// OpenTelemetry instrument names in src/telemetry.rs with dots as underscores. Renaming a
/// metric without its alert fails here, not silently in production.
#[test]
fn every_metric_an_alert_uses_is_defined() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/src/telemetry.rs")).unwrap();
    let defined: std::collections::BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| {
            (literal.starts_with("recovery.") || literal.starts_with("rpc.server."))
                && literal
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        })
        .map(|name| name.replace('.', "_"))
        .collect();
    let mut defined = defined;
    defined.insert(prometheus(semconv::metric::RPC_SERVER_CALL_DURATION));
    for file in ["deploy/prometheus/alerts.yaml", "docs/operations.md"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let used: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| {
                (word.starts_with("recovery_") || word.starts_with("rpc_server_"))
                    && word.len() > 12
            })
            .collect();
        assert!(!used.is_empty(), "{file} names no metric");
        for name in used {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
            let base = base.strip_suffix("_total").unwrap_or(base);
            let base = base.strip_suffix("_seconds").unwrap_or(base);
            assert!(
                defined.contains(base),
                "{file} uses {name}, which src/telemetry.rs does not define"
            );
        }
    }
}

/// A method name is caller input: a path that is not one of our methods is `_OTHER` whatever
/// status it got. With a gateway key, the interceptor answers PERMISSION_DENIED before the
/// router could say UNIMPLEMENTED, so the status alone cannot bound the label.
#[tokio::test]
async fn a_path_that_is_not_one_of_our_methods_makes_no_series_of_its_own() {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(b"metrics-gateway-key-0123456789"));
    let keys = format!("[\"{digest}\"]");
    let Some(server) = start_with(&[("RECOVERY_RECOVERY_API__GATEWAY_KEY_SHA256", &keys)]).await
    else {
        return;
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = format!("/identity.recovery.v1.RecoveryService/Probe{unique}");
    let status = grpc
        .unary(
            tonic::Request::new(proto::CreateCaptchaRequest {}),
            http::uri::PathAndQuery::try_from(path.as_str()).unwrap(),
            tonic_prost::ProstCodec::<proto::CreateCaptchaRequest, proto::CreateCaptchaResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let scrape = server.scrape().await;
    for sample in &scrape.samples {
        assert!(
            !sample.labels.values().any(|value| value.contains(&unique)),
            "{sample:?}"
        );
    }
    assert!(
        value(
            &scrape,
            &call_duration(),
            &[
                (&prometheus(semconv::attribute::RPC_METHOD), "_OTHER"),
                (
                    &prometheus(semconv::attribute::RPC_RESPONSE_STATUS_CODE),
                    "PERMISSION_DENIED"
                ),
            ],
        ) >= 1.0
    );
}

/// A trusted proxy's `x-forwarded-for` that names no client is no error to the caller, and is
/// counted by reason, so a hop count set too high shows up before anyone is locked out.
#[tokio::test]
async fn an_unusable_forwarded_for_is_counted_by_reason() {
    let Some(server) = start_with(&[
        ("RECOVERY_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ("RECOVERY_SERVER__TRUSTED_HOPS", "2"),
    ])
    .await
    else {
        return;
    };
    let mut client = server.client().await;
    for header in ["unknown, 127.0.0.1", "203.0.113.5", "203.0.113.6"] {
        let mut request = tonic::Request::new(proto::ValidatePasswordRequest {
            password: "Granite-Harbor-73!".into(),
            login_id: String::new(),
        });
        request
            .metadata_mut()
            .insert("x-forwarded-for", header.parse().unwrap());
        client
            .validate_password(request)
            .await
            .unwrap_or_else(|status| panic!("{header}: {status:?}"));
    }
    let scrape = server.scrape().await;
    let rejected = "recovery_forwarded_for_rejected_total";
    assert_eq!(value(&scrape, rejected, &[("reason", "unparseable")]), 1.0);
    assert_eq!(
        value(&scrape, rejected, &[("reason", "too_few_entries")]),
        2.0
    );
}

#[tokio::test]
async fn webhook_attempts_and_the_backlog_per_endpoint_are_exported() {
    // An endpoint nobody listens on: the account.deleted event fails and waits.
    let config_dir = TempDir::new();
    let config = config_dir.0.join("webhooks.toml");
    std::fs::write(
        &config,
        format!(
            "[webhooks]\npoll_interval_ms = 50\n[[webhooks.endpoints]]\nname = \"dead\"\nurl = \"http://127.0.0.1:{}/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"account.deleted\"]\n",
            spare_port()
        ),
    )
    .unwrap();
    let Some(server) = start_with(&[("RECOVERY_CONFIG", config.to_str().unwrap())]).await else {
        return;
    };
    let mut accounts = AccountServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc))
        .await
        .unwrap();
    let account_id = accounts
        .create_account(proto::CreateAccountRequest {
            login_id: format!("hook-{}@example.com", uuid::Uuid::new_v4().simple()),
            email: String::new(),
            phone: String::new(),
            password: "Quiet-Copper-Lantern-84".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .account_id;
    accounts
        .delete_account(proto::DeleteAccountRequest { account_id })
        .await
        .unwrap();
    for _ in 0..100 {
        let scrape = server.scrape().await;
        let failed = value(&scrape, "recovery_webhooks_total", &[("outcome", "failed")]);
        let pending = value(
            &scrape,
            "recovery_webhooks_pending",
            &[("endpoint", "dead")],
        );
        if failed >= 1.0 && pending == 1.0 {
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == "recovery_webhooks_oldest_age_seconds"),
                "no age gauge"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the failed webhook never showed on /metrics");
}

/// Names of the OpenTelemetry semantic conventions come from the crate's constants, never from a
/// string literal in the source: a literal is how `rpc.system` outlived its rename.
#[test]
fn no_semantic_convention_name_is_written_as_a_literal() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for name in [
                "\"rpc.",
                "\"service.name\"",
                "\"service.version\"",
                "\"error.type\"",
                "\"server.address\"",
            ] {
                if text.contains(name) {
                    found.push(format!("{}: {name}", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "use the opentelemetry-semantic-conventions constants: {found:#?}"
    );
}
