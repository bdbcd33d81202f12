//! The trust boundary of the gRPC port and the client address behind a proxy, end to end:
//!
//! - a web page reached under a foreign name (DNS rebinding) gets HTTP 421 for every HTTP/1.1
//!   request and runs nothing; AccountService is served over HTTP/2 gRPC only, never over
//!   grpc-web or HTTP/1.1, so a page cannot create accounts or start helpdesk recoveries;
//! - production mode refuses to start while AccountService callers need no key or certificate;
//! - `x-forwarded-for` is believed only from a trusted proxy, and only its `trusted_hops`-th
//!   entry from the right; whole networks (IPv4 /24, IPv6 /48) have a limit of their own.

use std::time::Duration;

use crate::common::*;
use prost::Message as _;
use recovery_service::config::Config;
use recovery_service::db::entities::audit_event;
use recovery_service::proto;
use recovery_service::server::{App, Overrides};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 and grpc-web, as a browser sends them
// ---------------------------------------------------------------------------------------------

const REBOUND: &str = "rebind.attacker.example";

/// What came back from one HTTP/1.1 request.
struct Reply {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// The gRPC status of a trailers-only grpc-web answer (an error carries no message).
    fn grpc_failure(&self) -> Failure {
        assert_eq!(self.status, reqwest::StatusCode::OK, "not a gRPC answer");
        assert!(self.body.is_empty(), "a refusal carries no message");
        Failure {
            status: tonic::Status::from_header_map(&self.headers).expect("grpc-status"),
        }
    }
}

fn http1() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .build()
        .unwrap()
}

fn port(app: &TestApp) -> &str {
    app.address.rsplit(':').next().unwrap()
}

/// A grpc-web POST (binary form) of one message to `path`, naming `host` (the browser sends
/// the name in its address bar, and an `Origin` of the same name).
async fn grpc_web(app: &TestApp, host: &str, path: &str, message: &impl prost::Message) -> Reply {
    let mut body = vec![0u8];
    let payload = message.encode_to_vec();
    body.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&payload);
    let response = http1()
        .post(format!("{}{path}", app.address))
        .header("host", host)
        .header("origin", format!("http://{host}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

async fn page(app: &TestApp, host: &str) -> reqwest::StatusCode {
    http1()
        .get(format!("{}/", app.address))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .status()
}

const ACCOUNTS: &str = "/identity.recovery.v1.AccountService";
const RECOVERY: &str = "/identity.recovery.v1.RecoveryService";

fn create_request(login: &str) -> proto::CreateAccountRequest {
    proto::CreateAccountRequest {
        login_id: login.into(),
        email: String::new(),
        phone: String::new(),
        password: OLD_PASSWORD.into(),
    }
}

async fn audited(app: &TestApp, event: &str) -> usize {
    app.database.flush_audit().await;
    audit_event::Entity::find()
        .filter(audit_event::Column::Event.eq(event))
        .all(app.database.connection())
        .await
        .unwrap()
        .len()
}

/// The reproduction: on the embedded defaults, a page served under the attacker's name with
/// the port's address behind it called AccountService over grpc-web. Now every HTTP/1.1 request
/// naming that host is misdirected, and nothing it asked for happened.
#[tokio::test]
async fn a_rebound_host_gets_421_for_everything_and_nothing_runs() {
    let app = spawn_app_with(|c| c.rate_limits.per_ip.limit = 2, Overrides::default()).await;
    let host = format!("{REBOUND}:{}", port(&app));
    let login = unique_login();

    assert_eq!(
        page(&app, &host).await,
        reqwest::StatusCode::MISDIRECTED_REQUEST
    );
    let create = grpc_web(
        &app,
        &host,
        &format!("{ACCOUNTS}/CreateAccount"),
        &create_request(&login),
    )
    .await;
    assert_eq!(create.status, reqwest::StatusCode::MISDIRECTED_REQUEST);
    assert!(create.body.is_empty());
    for _ in 0..4 {
        let captcha = grpc_web(
            &app,
            &host,
            &format!("{RECOVERY}/CreateCaptcha"),
            &proto::CreateCaptchaRequest {},
        )
        .await;
        assert_eq!(captcha.status, reqwest::StatusCode::MISDIRECTED_REQUEST);
    }
    let start = proto::StartRecoveryRequest {
        login_id: login.clone(),
        captcha_id: app.captcha().await,
        captcha_answer: CAPTCHA_ANSWER.into(),
        ..Default::default()
    };
    let started = grpc_web(&app, &host, &format!("{RECOVERY}/StartRecovery"), &start).await;
    assert_eq!(started.status, reqwest::StatusCode::MISDIRECTED_REQUEST);

    // Nothing ran: no account (creating it now succeeds), no flow, and the refused calls did
    // not even count against the caller's per-IP budget of 2 (one captcha was made above).
    assert!(!app.login_works(&login, OLD_PASSWORD).await);
    app.create_account(&login).await;
    assert_eq!(audited(&app, "recovery.started").await, 0);
    app.captcha().await;

    // The same page under a name the service is meant to be reached by is served.
    let local = format!("127.0.0.1:{}", port(&app));
    assert_eq!(page(&app, &local).await, reqwest::StatusCode::OK);
    assert_eq!(
        page(&app, &format!("localhost:{}", port(&app))).await,
        reqwest::StatusCode::OK
    );
    app.stop().await;
}

/// Even under a name the service answers, AccountService is not served over grpc-web or
/// HTTP/1.1: account creation, a helpdesk recovery that returns the code, and the data export
/// are refused with PERMISSION_DENIED before anything runs.
#[tokio::test]
async fn account_service_is_refused_over_grpc_web_and_http1_and_nothing_runs() {
    let app = spawn_app().await;
    let host = format!("127.0.0.1:{}", port(&app));
    let stranger = unique_login();

    let created = grpc_web(
        &app,
        &host,
        &format!("{ACCOUNTS}/CreateAccount"),
        &create_request(&stranger),
    )
    .await;
    created
        .grpc_failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    assert!(!app.login_works(&stranger, OLD_PASSWORD).await);
    app.create_account(&stranger).await;

    let owner = unique_login();
    let account_id = app.create_account(&owner).await;
    let helpdesk = proto::AdminStartRecoveryRequest {
        login_id: owner.clone(),
        return_code: true,
        ..Default::default()
    };
    let started = grpc_web(
        &app,
        &host,
        &format!("{ACCOUNTS}/AdminStartRecovery"),
        &helpdesk,
    )
    .await;
    started
        .grpc_failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    let exported = grpc_web(
        &app,
        &host,
        &format!("{ACCOUNTS}/ExportAccountData"),
        &proto::ExportAccountDataRequest {
            account_id: account_id.clone(),
        },
    )
    .await;
    exported
        .grpc_failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    // An extra slash is the same path to the router, and the same refusal.
    let slashed = grpc_web(
        &app,
        &host,
        &format!("/{ACCOUNTS}/CreateAccount"),
        &create_request(&unique_login()),
    )
    .await;
    slashed
        .grpc_failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");

    // Plain gRPC framing over HTTP/1.1 is refused too.
    let mut body = vec![0u8];
    let payload = create_request(&unique_login()).encode_to_vec();
    body.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&payload);
    let response = http1()
        .post(format!("{}{ACCOUNTS}/CreateAccount", app.address))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "7");

    assert!(
        app.audit_of(&account_id)
            .await
            .iter()
            .all(|(event, _, _)| event != "recovery.admin_started"),
        "the helpdesk recovery ran"
    );
    assert!(app.delivered_to(&owner).await.is_empty());
    // Over HTTP/2 gRPC the same calls still work.
    let flow = app
        .accounts
        .clone()
        .admin_start_recovery(helpdesk)
        .await
        .expect("AdminStartRecovery over HTTP/2");
    assert!(!flow.into_inner().code.is_empty());
    // The page's own service still answers over grpc-web.
    let captcha = grpc_web(
        &app,
        &host,
        &format!("{RECOVERY}/CreateCaptcha"),
        &proto::CreateCaptchaRequest {},
    )
    .await;
    assert_eq!(captcha.status, reqwest::StatusCode::OK);
    assert_eq!(
        captcha.headers.get("grpc-status"),
        None,
        "answered in the trailer frame"
    );
    assert!(!captcha.body.is_empty());
    app.stop().await;
}

/// `server.public_hosts` replaces the loopback names: the page is served under the configured
/// name (any port, unless the entry names one) and no longer under `localhost`.
#[tokio::test]
async fn configured_public_hosts_replace_the_loopback_names() {
    let app = spawn_app_with(
        |c| {
            c.server.public_hosts = Some(vec![
                "id.example.com".into(),
                "admin.example.com:8443".into(),
            ])
        },
        Overrides::default(),
    )
    .await;
    assert_eq!(page(&app, "id.example.com").await, reqwest::StatusCode::OK);
    assert_eq!(
        page(&app, "ID.example.com:443").await,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        page(&app, "admin.example.com:8443").await,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        page(&app, "admin.example.com:443").await,
        reqwest::StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(
        page(&app, &format!("localhost:{}", port(&app))).await,
        reqwest::StatusCode::MISDIRECTED_REQUEST
    );
    // HTTP/2 gRPC callers are not asked for a host.
    app.captcha().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Who may call AccountService
// ---------------------------------------------------------------------------------------------

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

async fn production_build(configure: impl FnOnce(&mut Config)) -> anyhow::Result<App> {
    let dir = TempDir::new();
    let mut config = test_config(&dir);
    config.production = true;
    configure(&mut config);
    let overrides = Overrides {
        notifier: Some(std::sync::Arc::new(
            recovery_service::notify::CapturingNotifier::new(),
        )),
        ..Overrides::default()
    };
    App::build(config, overrides).await
}

/// "No keys: loopback callers only" admits whatever a mesh sidecar or a proxy on the same host
/// forwards; production mode refuses it unless the operator says loopback is trusted.
#[tokio::test]
async fn production_refuses_to_start_unless_account_service_callers_authenticate() {
    let error = match production_build(|_| {}).await {
        Ok(_) => panic!("production started with AccountService open to loopback"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("`account_api`"), "{error}");
    assert!(error.contains("trust_loopback"), "{error}");

    assert!(
        production_build(|c| c.account_api.api_key_sha256 = vec![digest("k")])
            .await
            .is_ok()
    );
    assert!(
        production_build(|c| c.account_api.trust_loopback = true)
            .await
            .is_ok()
    );
    // A browser front end in production needs its host names.
    let error = match production_build(|c| {
        c.account_api.trust_loopback = true;
        c.ui.enabled = Some(true);
    })
    .await
    {
        Ok(_) => panic!("production served the page for any host"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("`server.public_hosts`"), "{error}");
}

/// `config check` (the loader) fails the same way, naming the keys.
#[tokio::test]
async fn the_loader_names_account_api_and_public_hosts_in_production() {
    let dir = TempDir::new();
    let file = dir.0.join("recovery.toml");
    std::fs::write(&file, "production = true\n[ui]\nenabled = true\n").unwrap();
    let error = Config::load(Some(&file)).unwrap_err().to_string();
    assert!(error.contains("`account_api`"), "{error}");
    assert!(error.contains("`server.public_hosts`"), "{error}");
    std::fs::write(
        &file,
        format!(
            "production = true\n[ui]\nenabled = true\n[server]\npublic_hosts = [\"id.example.com\"]\n\
             [account_api]\napi_key_sha256 = [\"{}\"]\n",
            digest("k")
        ),
    )
    .unwrap();
    let config = Config::load(Some(&file)).expect("a sound production boundary loads");
    assert_eq!(
        config.server.public_hosts,
        Some(vec!["id.example.com".to_owned()])
    );
}

/// With a key configured, a loopback caller needs it too, unless `trust_loopback` says
/// otherwise.
#[tokio::test]
async fn with_an_api_key_a_loopback_caller_needs_it_unless_loopback_is_trusted() {
    let app = spawn_app_with(
        |c| c.account_api.api_key_sha256 = vec![digest("helpdesk-key")],
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.accounts
        .clone()
        .create_account(create_request(&login))
        .await
        .failure()
        .assert(Code::PermissionDenied, "PERMISSION_DENIED");
    let mut keyed = tonic::Request::new(create_request(&login));
    keyed
        .metadata_mut()
        .insert("authorization", "Bearer helpdesk-key".parse().unwrap());
    app.accounts
        .clone()
        .create_account(keyed)
        .await
        .expect("with the key");
    app.stop().await;

    let app = spawn_app_with(
        |c| {
            c.account_api.api_key_sha256 = vec![digest("helpdesk-key")];
            c.account_api.trust_loopback = true;
        },
        Overrides::default(),
    )
    .await;
    app.create_account(&unique_login()).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// x-forwarded-for
// ---------------------------------------------------------------------------------------------

fn forwarded<T>(message: T, header: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-forwarded-for", header.parse().unwrap());
    request
}

/// The reproduction: with `trusted_proxies = ["127.0.0.0/8"]`, a client that wrote a fresh
/// address followed by one inside the range was its fresh address every time (never limited,
/// 20 of 20), and the code mail named the address it made up. The client is now the entry our
/// proxy appended: the same one every time.
#[tokio::test]
async fn a_client_cannot_pick_its_address_by_writing_one_inside_the_trusted_range() {
    let app = spawn_app_with(
        |c| {
            c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            c.rate_limits.per_ip.limit = 5;
        },
        Overrides::default(),
    )
    .await;
    let mut answered = 0;
    for i in 1..=20 {
        let request = forwarded(
            proto::CreateCaptchaRequest {},
            &format!("203.0.113.{i}, 127.0.0.9"),
        );
        match app.recovery.clone().create_captcha(request).await {
            Ok(_) => answered += 1,
            Err(status) => {
                let failure = Failure { status };
                failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
                assert_eq!(failure.metadata("scope").as_deref(), Some("client_ip"));
            }
        }
    }
    assert_eq!(answered, 5, "the per-IP limit of 5 held");

    // The code mail names the address the proxy saw, never the one the client wrote.
    let login = unique_login();
    app.create_account(&login).await;
    let claimed = "203.0.113.99, 127.0.0.10";
    let start = proto::StartRecoveryRequest {
        login_id: login.clone(),
        captcha_id: app.captcha().await,
        captcha_answer: CAPTCHA_ANSWER.into(),
        locale: "en".into(),
        ..Default::default()
    };
    let flow = app
        .recovery
        .clone()
        .start_recovery(forwarded(start, claimed))
        .await
        .unwrap()
        .into_inner()
        .flow
        .unwrap();
    let send = proto::SendVerificationCodeRequest {
        flow_id: flow.flow_id,
        channel: proto::Channel::Email.into(),
    };
    app.recovery
        .clone()
        .send_verification_code(forwarded(send, claimed))
        .await
        .unwrap();
    let mails = app
        .notifier
        .wait_for(&login, 1, Duration::from_secs(10))
        .await;
    let text = &mails.last().expect("the code mail").text;
    assert!(text.contains("127.0.0.10"), "{text}");
    assert!(!text.contains("203.0.113.99"), "{text}");
    app.stop().await;
}

/// A trusted proxy's header that names no client (an entry that is no address, fewer entries
/// than `trusted_hops`) is no error: the call is counted against the proxy's own address.
#[tokio::test]
async fn an_unusable_forwarded_for_counts_against_the_proxy_and_is_no_error() {
    let app = spawn_app_with(
        |c| {
            c.server.trusted_hops = 2;
            c.rate_limits.per_ip.limit = 3;
        },
        Overrides::default(),
    )
    .await;
    for header in [
        "unknown, 203.0.113.5",
        "203.0.113.5, not-an-address, 127.0.0.1",
        "203.0.113.6",
    ] {
        app.recovery
            .clone()
            .create_captcha(forwarded(proto::CreateCaptchaRequest {}, header))
            .await
            .unwrap_or_else(|status| panic!("{header}: {status:?}"));
    }
    // All three were the proxy (127.0.0.1), so its own next call is over the limit.
    let failure = app
        .recovery
        .clone()
        .create_captcha(proto::CreateCaptchaRequest {})
        .await
        .failure();
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("client_ip"));
    app.database.flush_audit().await;
    let limited = audit_event::Entity::find()
        .filter(audit_event::Column::Event.eq("recovery.rate_limited"))
        .one(app.database.connection())
        .await
        .unwrap()
        .expect("the refusal is audited");
    assert_eq!(limited.client_ip.as_deref(), Some("127.0.0.1"));
    // A header with both hops is read: a fresh client.
    app.recovery
        .clone()
        .create_captcha(forwarded(
            proto::CreateCaptchaRequest {},
            "198.51.100.7, 127.0.0.1",
        ))
        .await
        .expect("another client");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Per-network limit
// ---------------------------------------------------------------------------------------------

async fn get_flow_from(
    app: &TestApp,
    client: &str,
) -> Result<tonic::Response<proto::RecoveryFlow>, tonic::Status> {
    let request = proto::GetRecoveryFlowRequest {
        flow_id: uuid::Uuid::new_v4().to_string(),
    };
    app.recovery
        .clone()
        .get_recovery_flow(forwarded(request, client))
        .await
}

#[track_caller]
fn assert_counted(answer: Result<tonic::Response<proto::RecoveryFlow>, tonic::Status>) {
    answer.failure().assert(Code::NotFound, "FLOW_NOT_FOUND");
}

#[track_caller]
fn assert_limited_as_client_ip<T: std::fmt::Debug>(
    answer: Result<tonic::Response<T>, tonic::Status>,
) -> Failure {
    let failure = answer.failure();
    failure.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(failure.metadata("scope").as_deref(), Some("client_ip"));
    assert!(failure.retry_after().is_some(), "RetryInfo");
    failure
}

/// An attacker rotating through the addresses of one IPv4 /24 stays under the per-IP limit with
/// each of them, not under `rate_limits.per_network`; an address of another network still gets
/// through, and the refusal reads the same for a known and an unknown login.
#[tokio::test]
async fn many_addresses_of_one_ipv4_24_are_limited_and_another_network_is_not() {
    let app = spawn_app_with(
        |c| c.rate_limits.per_network.limit = 4,
        Overrides::default(),
    )
    .await;
    for n in 1..=4 {
        assert_counted(get_flow_from(&app, &format!("203.0.113.{n}")).await);
    }
    assert_limited_as_client_ip(get_flow_from(&app, "203.0.113.200").await);
    assert_counted(get_flow_from(&app, "203.0.114.1").await);
    assert_counted(get_flow_from(&app, "198.51.100.1").await);

    let known = unique_login();
    app.create_account(&known).await;
    let mut answers = Vec::new();
    for login in [known, unique_login()] {
        let start = proto::StartRecoveryRequest {
            login_id: login,
            captcha_id: app.captcha().await,
            captcha_answer: CAPTCHA_ANSWER.into(),
            locale: "en".into(),
            ..Default::default()
        };
        let failure = assert_limited_as_client_ip(
            app.recovery
                .clone()
                .start_recovery(forwarded(start, "203.0.113.77"))
                .await,
        );
        answers.push((
            failure.status.code(),
            failure.reason(),
            failure.metadata("scope"),
            failure.status.message().to_owned(),
        ));
    }
    assert_eq!(
        answers[0], answers[1],
        "a known and an unknown login are refused alike"
    );
    app.stop().await;
}

/// The same for IPv6: addresses in different /64s (each its own per-IP bucket) but one /48.
#[tokio::test]
async fn many_64s_of_one_ipv6_48_are_limited_and_another_48_is_not() {
    let app = spawn_app_with(
        |c| {
            c.rate_limits.per_ip.limit = 2;
            c.rate_limits.per_network.limit = 4;
        },
        Overrides::default(),
    )
    .await;
    for n in 1..=4 {
        assert_counted(get_flow_from(&app, &format!("2001:db8:7:{n}::1")).await);
    }
    assert_limited_as_client_ip(get_flow_from(&app, "2001:db8:7:ffff::1").await);
    assert_counted(get_flow_from(&app, "2001:db8:8::1").await);
    app.stop().await;
}
