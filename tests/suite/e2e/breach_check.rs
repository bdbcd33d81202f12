//! `[breach_check]` against a local server speaking the Have I Been Pwned range format: hit,
//! miss, padding lines, the cache and its bound, the per-IP limit on fetches, a slow server and
//! a dead one, failing open and closed; `ValidatePassword` never asks. The server records every
//! request, so the tests also see that only the 5-digit prefix left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use recovery_service::proto;
use recovery_service::server::Overrides;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;

const OTHER_PASSWORD: &str = "Quiet-Meadow-Copper-41%";

fn sha1_upper(password: &str) -> (String, String) {
    let digest = hex::encode_upper(Sha1::digest(password.as_bytes()));
    (digest[..5].to_owned(), digest[5..].to_owned())
}

/// (path, add-padding header) of one request.
type Request = (String, Option<String>);

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Request>>>,
}

/// A range server answering every request with `body` after `delay`.
async fn range_server(
    body: String,
    delay: Duration,
) -> (String, Seen, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/range/", listener.local_addr().unwrap());
    let seen = Seen::default();
    let recorded = seen.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                let padding = text.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("add-padding")
                        .then(|| value.trim().to_owned())
                });
                recorded.requests.lock().unwrap().push((path, padding));
                tokio::time::sleep(delay).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, seen, server)
}

/// A range with the given line for `password` among unrelated lines and padding.
fn range_with(password: &str, count: u64) -> String {
    let (_, suffix) = sha1_upper(password);
    [
        "0018A45C4D1DEF81644B54AB7F969B88D65:12".to_owned(),
        format!("{suffix}:{count}"),
        "011053FD0102E94D6AE2F8B83D76FAF94F6:0".to_owned(),
        "FFFF3D5D8AF3C9E0E8E3F3B3A3E3F3B3A3E:0".to_owned(),
    ]
    .join("\r\n")
}

async fn app(url: &str, timeout_ms: u64, fail_closed: bool) -> TestApp {
    app_with(url, timeout_ms, fail_closed, |_| {}).await
}

async fn app_with(
    url: &str,
    timeout_ms: u64,
    fail_closed: bool,
    configure: impl FnOnce(&mut recovery_service::config::Config) + Send + 'static,
) -> TestApp {
    let url = url.to_owned();
    spawn_app_with(
        move |c| {
            c.breach_check.enabled = true;
            c.breach_check.url = url;
            c.breach_check.timeout_ms = timeout_ms;
            c.breach_check.fail_closed = fail_closed;
            configure(c);
        },
        Overrides::default(),
    )
    .await
}

/// Strong passwords of four different ranges.
const BREACHED: [&str; 4] = [
    "Amber-Falcon-River-73#",
    "Silent-Harbor-Maple-58!",
    "Crimson-Otter-Valley-26$",
    "Velvet-Canyon-Thistle-94&",
];

/// A range listing every password of `BREACHED` as seen 5 times (each prefix's range then
/// holds its password's suffix; the others are lines of other ranges, harmless).
fn range_of_all() -> String {
    BREACHED
        .iter()
        .map(|p| format!("{}:5", sha1_upper(p).1))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A reset with `password` on `token`, as the violation reasons or the failure.
async fn reset_reasons(app: &TestApp, token: &str, password: &str) -> Result<(), Failure> {
    app.reset(token, password, password)
        .await
        .map(|_| ())
        .map_err(|status| Failure { status })
}

/// The cache of the running service (the test hook: its entry count, not timing).
fn cached_ranges(app: &TestApp) -> usize {
    app.app
        .breach
        .as_ref()
        .expect("breach check on")
        .cached_ranges()
}

async fn validate(app: &TestApp, password: &str) -> Result<Vec<String>, tonic::Status> {
    app.recovery
        .clone()
        .validate_password(proto::ValidatePasswordRequest {
            password: password.into(),
            login_id: String::new(),
        })
        .await
        .map(|reply| {
            reply
                .into_inner()
                .violations
                .into_iter()
                .map(|v| v.reason)
                .collect()
        })
}

#[tokio::test]
async fn a_breached_password_is_refused_in_reset_and_validate_never_asks() {
    let (url, seen, _server) = range_server(range_with(NEW_PASSWORD, 3), Duration::ZERO).await;
    let app = app(&url, 2_000, false).await;
    let login = unique_login();
    app.create_account(&login).await;
    let before = seen.requests.lock().unwrap().len();

    // ValidatePassword does not consult the breach check at all: no request, no cache entry,
    // so its answer time cannot tell which ranges were checked lately.
    assert!(validate(&app, NEW_PASSWORD).await.unwrap().is_empty());
    assert_eq!(seen.requests.lock().unwrap().len(), before);
    let cached = cached_ranges(&app);

    let (_, token) = app.verified_flow(&login).await;
    let failure = reset_reasons(&app, &token, NEW_PASSWORD).await.unwrap_err();
    failure.assert(Code::InvalidArgument, "PASSWORD_POLICY");
    assert_eq!(failure.violation_reasons(), vec!["PASSWORD_BREACHED"]);
    // Only the prefix left, with padding asked for.
    let (prefix, _) = sha1_upper(NEW_PASSWORD);
    let asked = seen.requests.lock().unwrap().clone();
    assert_eq!(
        asked[before..].to_vec(),
        vec![(format!("/range/{prefix}"), Some("true".to_owned()))]
    );
    assert_eq!(cached_ranges(&app), cached + 1);

    // Cached: a second try does not ask again.
    let failure = reset_reasons(&app, &token, NEW_PASSWORD).await.unwrap_err();
    assert_eq!(failure.violation_reasons(), vec!["PASSWORD_BREACHED"]);
    assert_eq!(seen.requests.lock().unwrap().len(), before + 1);

    // The token was kept; a clean password goes through.
    app.reset(&token, OTHER_PASSWORD, OTHER_PASSWORD)
        .await
        .expect("a password outside the range is accepted");
    assert!(app.login_works(&login, OTHER_PASSWORD).await);
}

#[tokio::test]
async fn a_miss_and_a_padding_line_are_not_breaches() {
    // The password's own suffix only on a padding line (count 0).
    let (url, seen, _server) = range_server(range_with(NEW_PASSWORD, 0), Duration::ZERO).await;
    let app = app(&url, 2_000, false).await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    reset_reasons(&app, &token, NEW_PASSWORD)
        .await
        .expect("a padding line is no sighting");
    let (prefix, _) = sha1_upper(NEW_PASSWORD);
    assert!(
        seen.requests
            .lock()
            .unwrap()
            .iter()
            .any(|(path, _)| path.ends_with(&prefix))
    );
    // Another password of another range: a miss.
    let (_, token) = app.verified_flow(&login).await;
    reset_reasons(&app, &token, OTHER_PASSWORD)
        .await
        .expect("a miss");
}

#[tokio::test]
async fn the_range_cache_stays_within_its_bound() {
    let (url, seen, _server) = range_server(range_of_all(), Duration::ZERO).await;
    let app = app_with(&url, 2_000, false, |c| {
        c.breach_check.cache_max_entries = 2;
    })
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    for password in BREACHED {
        let failure = reset_reasons(&app, &token, password).await.unwrap_err();
        assert_eq!(failure.violation_reasons(), vec!["PASSWORD_BREACHED"]);
        assert!(cached_ranges(&app) <= 2, "{}", cached_ranges(&app));
    }
    assert_eq!(cached_ranges(&app), 2);
    // The oldest range was dropped: asking again fetches it again; the newest did not.
    let fetched = seen.requests.lock().unwrap().len();
    reset_reasons(&app, &token, BREACHED[3]).await.unwrap_err();
    assert_eq!(seen.requests.lock().unwrap().len(), fetched);
    reset_reasons(&app, &token, BREACHED[0]).await.unwrap_err();
    assert_eq!(seen.requests.lock().unwrap().len(), fetched + 1);
    assert_eq!(cached_ranges(&app), 2);
}

#[tokio::test]
async fn uncached_range_fetches_are_rate_limited_per_client() {
    let (url, seen, _server) = range_server(range_of_all(), Duration::ZERO).await;
    let app = app_with(&url, 2_000, false, |c| {
        c.rate_limits.breach_fetch_per_ip.limit = 2;
    })
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    for password in &BREACHED[..2] {
        let failure = reset_reasons(&app, &token, password).await.unwrap_err();
        assert_eq!(failure.violation_reasons(), vec!["PASSWORD_BREACHED"]);
    }
    let fetched = seen.requests.lock().unwrap().len();
    let limited = reset_reasons(&app, &token, BREACHED[2]).await.unwrap_err();
    limited.assert(Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(limited.metadata("scope").as_deref(), Some("client_ip"));
    assert_eq!(
        seen.requests.lock().unwrap().len(),
        fetched,
        "fetched past the limit"
    );
    // A cached range costs no fetch, so the limit does not stand in its way; and the refusal
    // consumed nothing: the token is still good.
    let failure = reset_reasons(&app, &token, BREACHED[0]).await.unwrap_err();
    assert_eq!(failure.violation_reasons(), vec!["PASSWORD_BREACHED"]);
}

#[tokio::test]
async fn a_slow_range_fails_open_or_closed_as_configured() {
    let (url, _, _server) = range_server(range_with(NEW_PASSWORD, 3), Duration::from_secs(3)).await;
    // Failing open, the account's own password and the new one go through unchecked;
    // failing closed, CreateAccount (which checks too) is refused.
    let open = app(&url, 200, false).await;
    let login = unique_login();
    open.create_account(&login).await;
    let (_, token) = open.verified_flow(&login).await;
    reset_reasons(&open, &token, NEW_PASSWORD)
        .await
        .expect("failing open accepts the password unchecked");

    let closed = app(&url, 200, true).await;
    let failure = Failure {
        status: closed
            .accounts
            .clone()
            .create_account(proto::CreateAccountRequest {
                login_id: unique_login(),
                email: String::new(),
                phone: String::new(),
                password: NEW_PASSWORD.into(),
            })
            .await
            .unwrap_err(),
    };
    failure.assert(Code::Unavailable, "UNAVAILABLE");
}

#[tokio::test]
async fn a_dead_range_fails_open_or_closed_as_configured() {
    // Up while the accounts are made (their passwords are checked too), then gone.
    let (url, _, server) = range_server(range_with(NEW_PASSWORD, 3), Duration::ZERO).await;
    let open = app(&url, 1_000, false).await;
    let closed = app(&url, 1_000, true).await;
    let (open_login, closed_login) = (unique_login(), unique_login());
    open.create_account(&open_login).await;
    closed.create_account(&closed_login).await;
    let (_, open_token) = open.verified_flow(&open_login).await;
    let (_, token) = closed.verified_flow(&closed_login).await;
    server.abort();
    let _ = server.await;

    reset_reasons(&open, &open_token, NEW_PASSWORD)
        .await
        .expect("failing open accepts the password unchecked");
    let failure = reset_reasons(&closed, &token, NEW_PASSWORD)
        .await
        .unwrap_err();
    failure.assert(Code::Unavailable, "UNAVAILABLE");
    // The refusal consumed nothing: the token answers the same again, not TOKEN_INVALID.
    let again = reset_reasons(&closed, &token, NEW_PASSWORD)
        .await
        .unwrap_err();
    again.assert(Code::Unavailable, "UNAVAILABLE");
}
