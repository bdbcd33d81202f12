//! `[breach_check]` against a local server speaking the Have I Been Pwned range format: hit,
//! miss, padding lines, the cache, a slow server and a dead one, failing open and closed. The
//! server records every request, so the tests also see that only the 5-digit prefix left.

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
    let url = url.to_owned();
    spawn_app_with(
        move |c| {
            c.breach_check.enabled = true;
            c.breach_check.url = url;
            c.breach_check.timeout_ms = timeout_ms;
            c.breach_check.fail_closed = fail_closed;
        },
        Overrides::default(),
    )
    .await
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
async fn a_breached_password_is_refused_in_validate_and_reset() {
    let (url, seen, _server) = range_server(range_with(NEW_PASSWORD, 3), Duration::ZERO).await;
    let app = app(&url, 2_000, false).await;

    assert_eq!(
        validate(&app, NEW_PASSWORD).await.unwrap(),
        vec!["PASSWORD_BREACHED"]
    );
    // Only the prefix left, with padding asked for.
    let (prefix, _) = sha1_upper(NEW_PASSWORD);
    assert_eq!(
        seen.requests.lock().unwrap().clone(),
        vec![(format!("/range/{prefix}"), Some("true".to_owned()))]
    );

    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    let failure = Failure {
        status: app
            .reset(&token, NEW_PASSWORD, NEW_PASSWORD)
            .await
            .unwrap_err(),
    };
    failure.assert(Code::InvalidArgument, "PASSWORD_POLICY");
    assert_eq!(failure.violation_reasons(), vec!["PASSWORD_BREACHED"]);
    // The range was cached: the reset did not ask for it again (the one other request is the
    // account's own password, checked by CreateAccount).
    let asked = seen.requests.lock().unwrap().clone();
    let for_new = asked.iter().filter(|(path, _)| path.ends_with(&prefix));
    assert_eq!(for_new.count(), 1, "{asked:?}");

    // The token was kept; a clean password goes through.
    app.reset(&token, OTHER_PASSWORD, OTHER_PASSWORD)
        .await
        .expect("a password outside the range is accepted");
    assert!(app.login_works(&login, OTHER_PASSWORD).await);
}

#[tokio::test]
async fn a_miss_and_a_padding_line_are_not_breaches() {
    // The password's own suffix only on a padding line (count 0).
    let (url, _, _server) = range_server(range_with(NEW_PASSWORD, 0), Duration::ZERO).await;
    let app = app(&url, 2_000, false).await;
    assert!(validate(&app, NEW_PASSWORD).await.unwrap().is_empty());
    // Another password of another range: a miss.
    assert!(validate(&app, OTHER_PASSWORD).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_range_fails_open_or_closed_as_configured() {
    let (url, _, _server) = range_server(range_with(NEW_PASSWORD, 3), Duration::from_secs(3)).await;
    let open = app(&url, 200, false).await;
    assert!(validate(&open, NEW_PASSWORD).await.unwrap().is_empty());

    let closed = app(&url, 200, true).await;
    let failure = Failure {
        status: validate(&closed, NEW_PASSWORD).await.unwrap_err(),
    };
    failure.assert(Code::Unavailable, "UNAVAILABLE");
}

#[tokio::test]
async fn a_dead_range_fails_open_or_closed_as_configured() {
    // Up while the account is made (its password is checked too), then gone.
    let (url, _, server) = range_server(range_with(NEW_PASSWORD, 3), Duration::ZERO).await;
    let open = app(&url, 1_000, false).await;
    let closed = app(&url, 1_000, true).await;
    let login = unique_login();
    closed.create_account(&login).await;
    let (_, token) = closed.verified_flow(&login).await;
    server.abort();
    let _ = server.await;

    assert!(validate(&open, NEW_PASSWORD).await.unwrap().is_empty());
    let failure = Failure {
        status: closed
            .reset(&token, NEW_PASSWORD, NEW_PASSWORD)
            .await
            .unwrap_err(),
    };
    failure.assert(Code::Unavailable, "UNAVAILABLE");
    // The refusal consumed nothing: the token answers the same again, not TOKEN_INVALID.
    let again = Failure {
        status: closed
            .reset(&token, NEW_PASSWORD, NEW_PASSWORD)
            .await
            .unwrap_err(),
    };
    again.assert(Code::Unavailable, "UNAVAILABLE");
}
