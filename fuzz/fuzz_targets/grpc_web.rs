//! grpc-web as the page's calls reach the service: an HTTP/1.1 POST with a grpc-web content
//! type (binary or base64 `-text`), its body the length-prefixed frames, through the whole
//! stack the server runs (CORS, the UI layer, tracing, tonic-web, the services). The service
//! runs once, in this process, on a loopback port (SQLite in a temporary file, the in-process
//! store, no captcha, no limits), so a panic anywhere in it ends the run.
//!
//! Every request must get an HTTP answer: a gRPC status (200 with `grpc-status` in the headers
//! or in a trailer frame) or a 4xx; never a 5xx, a hang or a closed connection.
//!
//! Input: byte 0 picks the path, byte 1 the content type and the framing, the rest is the
//! message (framed by the target, or sent raw when byte 1 says so).
#![no_main]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use recovery_service::config::Config;
use recovery_service::server::{App, Overrides};

const PATHS: &[&str] = &[
    "/identity.recovery.v1.RecoveryService/CreateCaptcha",
    "/identity.recovery.v1.RecoveryService/StartRecovery",
    "/identity.recovery.v1.RecoveryService/GetRecoveryFlow",
    "/identity.recovery.v1.RecoveryService/SendVerificationCode",
    "/identity.recovery.v1.RecoveryService/VerifyCode",
    "/identity.recovery.v1.RecoveryService/ResetPassword",
    "/identity.recovery.v1.RecoveryService/ValidatePassword",
    "/identity.recovery.v1.RecoveryService/CancelRecovery",
    "/identity.recovery.v1.RecoveryService/ReportUnrequestedRecovery",
    "/identity.recovery.v1.AccountService/VerifyPassword",
    "/identity.recovery.v1.AccountService/AdminStartRecovery",
    "/grpc.health.v1.Health/Check",
    "/identity.recovery.v1.RecoveryService/NoSuchMethod",
    "/",
];

const CONTENT_TYPES: &[&str] = &[
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "application/grpc-web+json",
    "text/plain",
];

fn server() -> SocketAddr {
    static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let dir = std::env::temp_dir()
                    .join(format!("recovery-fuzz-grpc-web-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let mut config = Config {
                    database_url: format!("sqlite://{}?mode=rwc", dir.join("fuzz.db").display()),
                    secret: Some("fuzz-secret-0123456789-0123456789-0123456789".into()),
                    captcha: recovery_service::config::CaptchaConfig {
                        mode: recovery_service::recovery::handle::CaptchaMode::Off,
                        ..Default::default()
                    },
                    ..Config::default()
                };
                config.rate_limits.enabled = false;
                config.hashing.m_cost_kib = 256;
                config.hashing.t_cost = 1;
                let overrides = Overrides {
                    notifier: Some(Arc::new(recovery_service::notify::CapturingNotifier::new())),
                    ..Overrides::default()
                };
                let app = App::build(config, overrides)
                    .await
                    .expect("the service builds");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                sender
                    .send(listener.local_addr().expect("address"))
                    .expect("send");
                app.serve(listener, std::future::pending())
                    .await
                    .expect("serve");
            });
        });
        receiver.recv().expect("the service started")
    })
}

/// The body of a chunked HTTP/1.1 message.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fuzz_target!(|data: &[u8]| {
    let [path, kind, message @ ..] = data else {
        return;
    };
    let path = PATHS[usize::from(*path) % PATHS.len()];
    let content_type = CONTENT_TYPES[usize::from(*kind) % CONTENT_TYPES.len()];
    let raw = kind & 0x80 != 0;
    let mut body = if raw {
        message.to_vec()
    } else {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
        framed.extend_from_slice(message);
        framed
    };
    let text = content_type.starts_with("application/grpc-web-text");
    if text && !raw {
        body = base64::engine::general_purpose::STANDARD
            .encode(&body)
            .into_bytes();
    }
    let mut stream = TcpStream::connect(server()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
         X-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(&body).expect("write");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the service answers within 10 s");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status: u16 = head
        .strip_prefix("http/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
    assert!(
        status < 500,
        "HTTP {status} for {path} ({content_type}): {head}"
    );
    if status != 200 {
        return;
    }
    let mut payload = answer[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload).expect("a well-formed chunked body");
    }
    if head.contains("grpc-status:") {
        return;
    }
    if head.contains("content-type: application/grpc-web-text") {
        // Each message is its own base64 run (padding may end a run mid-body).
        let mut decoded = Vec::new();
        for run in payload.split_inclusive(|b| *b == b'=') {
            let run: Vec<u8> = run.iter().copied().filter(|b| *b != b'=').collect();
            if run.is_empty() {
                continue;
            }
            decoded.extend(
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(&run)
                    .expect("base64 frames"),
            );
        }
        payload = decoded;
    }
    // Frames: flag, 4-byte length, bytes; the trailers frame (flag 0x80) holds grpc-status.
    let mut rest = payload.as_slice();
    let mut trailers = None;
    while let [flag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let frame = tail.get(..len).expect("a frame as long as it says");
        if flag & 0x80 != 0 {
            trailers = Some(String::from_utf8_lossy(frame).to_ascii_lowercase());
        }
        rest = &tail[len..];
    }
    assert!(rest.is_empty(), "bytes after the last frame");
    let trailers = trailers.expect("a trailers frame");
    assert!(
        trailers.contains("grpc-status:"),
        "no grpc-status: {trailers}"
    );
});
