//! Webhooks: outbox events POSTed to HTTP endpoints, signed per Standard Webhooks.
//! The receiver (`tests/support/webhook_receiver.py`) checks every request with the reference
//! library from PyPI (`standardwebhooks`), not with the service's own signer; it goes down and
//! comes back mid-run, and the service restarts mid-backlog.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::smtp_sink::{ScratchDir, free_port};
use crate::common::*;
use base64::Engine;
use recovery_service::clock::Clock;
use recovery_service::config::Config;
use recovery_service::db::webhooks::webhook_delivery;
use recovery_service::notify::webhooks::WebhookEndpoint;
use recovery_service::proto;
use recovery_service::server::Overrides;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;

fn secret(byte: u8) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

fn require_standardwebhooks() {
    let status = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {}
        _ => panic!(
            "these tests verify signatures with the Standard Webhooks reference library: \
             `python3 -c 'import standardwebhooks'` failed. Install it with \
             `pip install standardwebhooks` (scripts/test-services.sh does)."
        ),
    }
}

/// `webhook_receiver.py`, killed on drop. Its log survives restarts on the same port.
struct Receiver {
    child: Option<Child>,
    port: u16,
    secret: String,
    log: PathBuf,
    /// Extra arguments of the script (`--busy`, `--retry-after`).
    args: Vec<String>,
    _dir: ScratchDir,
}

impl Receiver {
    /// A receiver that is not running yet (its port is chosen, so the service can be pointed at it).
    fn down(secret: &str) -> Self {
        require_standardwebhooks();
        let dir = ScratchDir::new("webhooks");
        Self {
            child: None,
            port: free_port(),
            secret: secret.to_owned(),
            log: dir.path().join("requests.jsonl"),
            args: Vec::new(),
            _dir: dir,
        }
    }

    /// A receiver that answers its first `answers` requests 503 with `Retry-After`
    /// (`"90"`, or `"date:+90"` for an HTTP-date 90 s after the answer's `Date`).
    fn busy(secret: &str, answers: u32, retry_after: &str) -> Self {
        let mut receiver = Self::down(secret);
        receiver.args = vec![
            "--busy".to_owned(),
            answers.to_string(),
            "--retry-after".to_owned(),
            retry_after.to_owned(),
        ];
        receiver.start();
        receiver
    }

    fn up(secret: &str) -> Self {
        let mut receiver = Self::down(secret);
        receiver.start();
        receiver
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &self.port.to_string()])
            .args(["--secret", &self.secret])
            .arg("--log")
            .arg(&self.log)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("the webhook receiver exited ({status}):\n{stderr}");
            }
            assert!(Instant::now() < deadline, "the receiver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Restarted knowing another secret (a receiver that rotated).
    fn restart_with(&mut self, secret: &str) {
        self.stop();
        self.secret = secret.to_owned();
        self.start();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request received so far, in arrival order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The requests that verified and were answered 204.
    fn accepted(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["verified"] == true && r["status"] == 204)
            .collect()
    }

    async fn wait_accepted(&self, count: usize) -> Vec<Value> {
        for _ in 0..300 {
            let accepted = self.accepted();
            if accepted.len() >= count {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{count} verified requests expected; received: {:#?}",
            self.requests()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn endpoint(url: String, secrets: &[&str], events: Option<&[&str]>) -> WebhookEndpoint {
    let mut endpoint: WebhookEndpoint = serde_json::from_value(serde_json::json!({
        "url": url,
        "secret": secrets,
    }))
    .unwrap();
    if let Some(events) = events {
        endpoint.events = events.iter().map(|e| (*e).to_owned()).collect();
    }
    endpoint
}

/// Fast polling and short, testable backoff (the manual clock is advanced past it).
fn with_endpoints(endpoints: Vec<WebhookEndpoint>) -> impl FnOnce(&mut Config) {
    move |c| {
        c.webhooks.endpoints = endpoints;
        c.webhooks.poll_interval_ms = 50;
        c.webhooks.initial_backoff_ms = 200;
        c.webhooks.max_backoff_ms = 1_000;
        c.webhooks.max_age_secs = 600;
    }
}

/// An app whose one endpoint is `receiver`, signing with `key`: the test settings above, then
/// `tune`.
async fn app_posting_to(receiver: &Receiver, key: &str, tune: impl FnOnce(&mut Config)) -> TestApp {
    let url = receiver.url("/");
    spawn_app_with(
        |c: &mut Config| {
            with_endpoints(vec![endpoint(url, &[key], None)])(c);
            tune(c);
        },
        Overrides::default(),
    )
    .await
}

/// A strong password not used before.
fn fresh_password() -> String {
    format!(
        "Quiet-{}-Meadow-91!",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// One complete recovery of `login`: one `password.changed` event. Waits for the notice mail,
/// so the next flow's code is the last message.
async fn reset_once(app: &TestApp, login: &str) {
    let (_, token) = app.verified_flow(login).await;
    let password = fresh_password();
    app.reset(&token, &password, &password)
        .await
        .expect("reset works");
    app.drain_deliveries().await;
}

async fn rows(app: &TestApp) -> Vec<webhook_delivery::Model> {
    webhook_delivery::Entity::find()
        .order_by_asc(webhook_delivery::Column::Id)
        .all(app.database.connection())
        .await
        .unwrap()
}

async fn outbox_ids(app: &TestApp, event_type: &str) -> Vec<(String, String)> {
    use recovery_service::db::entities::outbox;
    outbox::Entity::find()
        .filter(outbox::Column::EventType.eq(event_type))
        .order_by_asc(outbox::Column::Id)
        .all(app.database.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.aggregate_id, row.event_id))
        .collect()
}

/// Waits until `count` deliveries are recorded as delivered. The receiver logs a request before
/// its answer reaches the service, so a test that stops the receiver right after
/// `wait_accepted` could cut that answer off: the service would then see a failed attempt and
/// schedule a retry on the manual clock, which only the test advances.
async fn wait_delivered(app: &TestApp, count: usize) {
    for _ in 0..300 {
        if rows(app)
            .await
            .iter()
            .filter(|r| r.status == "delivered")
            .count()
            >= count
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{count} deliveries expected to be recorded: {:#?}",
        rows(app).await
    );
}

/// Waits until `count` delivery rows exist and the oldest pending one of each account has been
/// tried (and failed: the receiver is down). The later ones wait behind it, untried.
async fn wait_attempted(app: &TestApp, count: usize) {
    for _ in 0..300 {
        let rows = rows(app).await;
        let mut oldest: HashMap<&str, &webhook_delivery::Model> = HashMap::new();
        for row in rows.iter().filter(|r| r.status == "pending") {
            oldest.entry(row.aggregate_id.as_str()).or_insert(row);
        }
        if rows.len() >= count && oldest.values().all(|r| r.attempts >= 1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no attempt was made: {:#?}", rows(app).await);
}

/// Advances the manual clock past the longest backoff until `done` holds.
async fn advance_until(app: &TestApp, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        app.clock.advance(Duration::from_millis(1_100));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(done(), "not done after 100 backoff periods");
}

#[tokio::test]
async fn a_reset_is_posted_signed_and_verified_by_the_reference_library() {
    let key = secret(1);
    let receiver = Receiver::up(&key);
    let app = spawn_app_with(
        with_endpoints(vec![endpoint(receiver.url("/hooks"), &[&key], None)]),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    let password = fresh_password();
    app.reset(&token, &password, &password).await.unwrap();

    let accepted = receiver.wait_accepted(1).await;
    let hook = &accepted[0];
    assert_eq!(hook["path"], "/hooks");
    assert_eq!(hook["type"], "password.changed");
    assert_eq!(hook["signatures"], 1);
    assert_eq!(hook["data"]["account_id"], account_id.as_str());
    assert_eq!(hook["data"]["revoke_sessions"], true);
    assert_eq!(
        hook["data"]["event_id"], hook["id"],
        "webhook-id is the event id"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(hook["timestamp"].as_str().unwrap()).is_ok());
    let seen = serde_json::to_string(&receiver.requests()).unwrap();
    for secret in [password.as_str(), token.as_str(), login.as_str()] {
        assert!(!seen.contains(secret), "{secret} was sent");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "delivered");
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(receiver.requests().len(), 1, "sent once");
    // The flow events are off by default: nothing but the change went to the outbox.
    assert!(outbox_ids(&app, "recovery.started").await.is_empty());
    assert!(outbox_ids(&app, "recovery.code_verified").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn flow_events_for_siems_are_sent_when_switched_on_for_known_and_unknown_logins_alike() {
    let key = secret(10);
    let receiver = Receiver::up(&key);
    let app = spawn_app_with(
        {
            let url = receiver.url("/siem");
            move |c: &mut Config| {
                with_endpoints(vec![endpoint(
                    url,
                    &[&key],
                    Some(&["recovery.started", "recovery.code_verified"]),
                )])(c);
                c.events.include_flow_events = true;
            }
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (flow_id, _) = app.verified_flow(&login).await;
    let unknown = app.start(&unique_login()).await;
    let accepted = receiver.wait_accepted(3).await;
    let of = |flow: &str| -> Vec<Value> {
        accepted
            .iter()
            .filter(|h| h["data"]["flow_id"] == flow)
            .cloned()
            .collect()
    };
    let known = of(&flow_id);
    let types: Vec<&str> = known.iter().map(|h| h["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["recovery.started", "recovery.code_verified"]);
    assert!(
        known
            .iter()
            .all(|h| h["data"]["account_id"] == account_id.as_str())
    );
    assert_eq!(known[0]["data"]["client_ip"], "127.0.0.1");
    // An unknown login's start writes the same kind of event, with no account.
    let stranger = of(&unknown.flow_id);
    assert_eq!(stranger.len(), 1);
    assert_eq!(stranger[0]["type"], "recovery.started");
    assert!(stranger[0]["data"]["account_id"].is_null());
    let seen = serde_json::to_string(&receiver.requests()).unwrap();
    assert!(!seen.contains(&login), "the login was sent");
}

#[tokio::test]
async fn a_receiver_with_another_secret_refuses_and_the_event_waits_for_it() {
    let receiver = Receiver::up(&secret(2));
    let app = spawn_app_with(
        with_endpoints(vec![endpoint(receiver.url("/"), &[&secret(3)], None)]),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    reset_once(&app, &login).await;
    wait_attempted(&app, 1).await;
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r["verified"] == false),
        "the reference library accepted a signature made with another secret: {requests:?}"
    );
    let rows = rows(&app).await;
    assert_eq!(rows[0].status, "pending");
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 401"));
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_so_old_and_new_receivers_verify() {
    let (old, new) = (secret(4), secret(5));
    let mut receiver = Receiver::up(&old);
    let app = spawn_app_with(
        with_endpoints(vec![endpoint(receiver.url("/"), &[&new, &old], None)]),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    reset_once(&app, &login).await;
    let accepted = receiver.wait_accepted(1).await;
    assert_eq!(accepted[0]["signatures"], 2);
    wait_delivered(&app, 1).await;

    // The receiver switches to the new secret; the service still signs with both.
    receiver.restart_with(&new);
    reset_once(&app, &login).await;
    let accepted = receiver.wait_accepted(2).await;
    assert_eq!(accepted.len(), 2);
    assert_ne!(accepted[0]["id"], accepted[1]["id"]);
    assert!(receiver.requests().iter().all(|r| r["verified"] == true));
}

/// A receiver answering 503 with `Retry-After` is not called again before the wait it asked for,
/// in either form of the header, and gets the event after it.
async fn a_busy_receiver_is_left_alone_for_its_retry_after(retry_after: &str, key: String) {
    let receiver = Receiver::busy(&key, 1, retry_after);
    // The cap would otherwise cut the 90 s asked for down to 1 s.
    let app = app_posting_to(&receiver, &key, |c| c.webhooks.max_backoff_ms = 600_000).await;
    let login = unique_login();
    app.create_account(&login).await;
    reset_once(&app, &login).await;
    wait_attempted(&app, 1).await;
    let row = rows(&app).await.remove(0);
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 1));
    assert_eq!(row.last_error.as_deref(), Some("HTTP 503"));
    let waits = (row.next_attempt_at - app.clock.now()).num_seconds();
    assert!((89..=91).contains(&waits), "waits {waits} s: {row:#?}");

    app.clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "called again before its Retry-After"
    );
    app.clock.advance(Duration::from_secs(31));
    receiver.wait_accepted(1).await;
    wait_delivered(&app, 1).await;
}

#[tokio::test]
async fn a_busy_receivers_retry_after_in_seconds_is_honoured() {
    a_busy_receiver_is_left_alone_for_its_retry_after("90", secret(13)).await;
}

#[tokio::test]
async fn a_busy_receivers_retry_after_as_an_http_date_is_honoured() {
    a_busy_receiver_is_left_alone_for_its_retry_after("date:+90", secret(14)).await;
}

#[tokio::test]
async fn a_receiver_down_mid_run_gets_every_event_once_and_in_order_per_account() {
    let key = secret(6);
    let mut receiver = Receiver::up(&key);
    let app = spawn_app_with(
        with_endpoints(vec![endpoint(receiver.url("/"), &[&key], None)]),
        Overrides::default(),
    )
    .await;
    let (alice, bob) = (unique_login(), unique_login());
    app.create_account(&alice).await;
    app.create_account(&bob).await;
    reset_once(&app, &alice).await;
    receiver.wait_accepted(1).await;
    wait_delivered(&app, 1).await;

    // Down: four more events of two accounts pile up, the first attempts fail.
    receiver.stop();
    reset_once(&app, &alice).await;
    reset_once(&app, &bob).await;
    reset_once(&app, &alice).await;
    reset_once(&app, &bob).await;
    wait_attempted(&app, 5).await;
    let waiting = rows(&app).await;
    assert_eq!(waiting.iter().filter(|r| r.status == "pending").count(), 4);
    // Only the oldest event of each account was tried: the later ones wait behind it.
    let tried: Vec<_> = waiting
        .iter()
        .filter(|r| r.status == "pending" && r.attempts > 0)
        .collect();
    assert_eq!(tried.len(), 2, "{waiting:#?}");

    receiver.start();
    advance_until(&app, || receiver.accepted().len() >= 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let accepted = receiver.accepted();
    let mut times: HashMap<String, usize> = HashMap::new();
    for hook in &accepted {
        *times
            .entry(hook["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(times.len(), 5, "{accepted:#?}");
    assert!(
        times.values().all(|&n| n == 1),
        "an event arrived twice: {times:?}"
    );
    let outbox = outbox_ids(&app, "password.changed").await;
    let accounts: std::collections::HashSet<&String> = outbox.iter().map(|(a, _)| a).collect();
    for account in accounts {
        let written: Vec<&str> = outbox
            .iter()
            .filter(|(a, _)| a == account)
            .map(|(_, e)| e.as_str())
            .collect();
        let received: Vec<&str> = accepted
            .iter()
            .filter(|h| h["data"]["account_id"] == account.as_str())
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        assert_eq!(received, written, "events of {account} out of order");
    }
    assert!(rows(&app).await.iter().all(|r| r.status == "delivered"));
}

#[tokio::test]
async fn a_restart_mid_backlog_loses_nothing() {
    let key = secret(7);
    let mut receiver = Receiver::down(&key);
    let dir = TempDir::new();
    let database_url = fresh_database_url(&dir).await;
    let configure = |url: String, endpoint: WebhookEndpoint| {
        move |c: &mut Config| {
            with_endpoints(vec![endpoint])(c);
            c.database_url = url;
        }
    };
    let endpoint_config = endpoint(receiver.url("/"), &[&key], None);
    let first = spawn_app_with(
        configure(database_url.clone(), endpoint_config.clone()),
        Overrides::default(),
    )
    .await;
    let (alice, bob) = (unique_login(), unique_login());
    first.create_account(&alice).await;
    first.create_account(&bob).await;
    reset_once(&first, &alice).await;
    reset_once(&first, &bob).await;
    reset_once(&first, &alice).await;
    wait_attempted(&first, 3).await;
    first.stop().await;

    receiver.start();
    let second = spawn_app_with(
        configure(database_url.clone(), endpoint_config),
        Overrides::default(),
    )
    .await;
    advance_until(&second, || receiver.accepted().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = receiver.accepted();
    let ids: std::collections::HashSet<&str> =
        accepted.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(accepted.len(), 3, "{accepted:#?}");
    assert_eq!(ids.len(), 3);
    let outbox = outbox_ids(&second, "password.changed").await;
    let alice_events: Vec<&str> = outbox
        .iter()
        .filter(|(a, _)| *a == outbox[0].0)
        .map(|(_, e)| e.as_str())
        .collect();
    let alice_received: Vec<&str> = accepted
        .iter()
        .filter(|h| h["data"]["account_id"] == outbox[0].0.as_str())
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(alice_received, alice_events);
    second.stop().await;
    drop_database(&database_url).await;
}

#[tokio::test]
async fn two_replicas_on_one_database_send_each_event_once() {
    let key = secret(11);
    let receiver = Receiver::up(&key);
    let dir = TempDir::new();
    let database_url = fresh_database_url(&dir).await;
    let replica = || {
        let url = database_url.clone();
        let endpoint = endpoint(receiver.url("/"), &[&key], None);
        move |c: &mut Config| {
            with_endpoints(vec![endpoint])(c);
            c.database_url = url;
            // Both poll often, so they race for every row.
            c.webhooks.poll_interval_ms = 10;
        }
    };
    let first = spawn_app_with(replica(), Overrides::default()).await;
    // The code mails are read from the first replica's notifier; the second replica's mail
    // worker may claim one of them (its first poll can come after the first replica's send on
    // a busy machine), so it delivers to the same notifier, as two replicas share one relay.
    let second = spawn_app_with(
        replica(),
        Overrides {
            notifier: Some(std::sync::Arc::new(first.notifier.clone())),
            ..Overrides::default()
        },
    )
    .await;
    let logins: Vec<String> = (0..4).map(|_| unique_login()).collect();
    for login in &logins {
        first.create_account(login).await;
    }
    for login in &logins {
        reset_once(&first, login).await;
    }
    receiver.wait_accepted(4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = receiver.requests();
    let ids: std::collections::HashSet<&str> =
        requests.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(requests.len(), 4, "an event was sent twice: {requests:#?}");
    assert_eq!(ids.len(), 4);
    first.stop().await;
    second.stop().await;
    drop_database(&database_url).await;
}

/// A backlog (written straight into the outbox, as a burst of resets would) drains in order per
/// account; prints the rate for the record.
#[tokio::test]
async fn a_backlog_of_400_events_drains_in_order_per_account() {
    use recovery_service::db::entities::outbox;
    use sea_orm::ActiveValue::{NotSet, Set};
    let key = secret(12);
    let receiver = Receiver::up(&key);
    let app = spawn_app_with(
        with_endpoints(vec![endpoint(receiver.url("/"), &[&key], None)]),
        Overrides::default(),
    )
    .await;
    // The endpoint is registered (owed what follows) once its task has run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accounts: Vec<String> = (0..40).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    let now = chrono::Utc::now();
    let rows: Vec<outbox::ActiveModel> = (0..400)
        .map(|n| {
            let account = &accounts[n % accounts.len()];
            let event_id = uuid::Uuid::now_v7().to_string();
            written
                .entry(account.clone())
                .or_default()
                .push(event_id.clone());
            outbox::ActiveModel {
                id: NotSet,
                event_id: Set(event_id.clone()),
                event_type: Set("password.changed".into()),
                aggregate_id: Set(account.clone()),
                payload: Set(
                    serde_json::json!({"event_id": event_id, "account_id": account}).to_string(),
                ),
                created_at: Set(now),
                published_at: Set(None),
            }
        })
        .collect();
    let started = Instant::now();
    outbox::Entity::insert_many(rows)
        .exec_without_returning(app.database.connection())
        .await
        .unwrap();
    for _ in 0..1_200 {
        if receiver.accepted().len() >= 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 400, "not drained in {elapsed:?}");
    println!(
        "400 webhook events (40 accounts) delivered in {elapsed:?}: {:.0}/s",
        400.0 / elapsed.as_secs_f64()
    );
    for (account, events) in &written {
        let received: Vec<&str> = accepted
            .iter()
            .filter(|h| h["data"]["account_id"] == account.as_str())
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        assert_eq!(&received, events, "events of {account} out of order");
    }
}

#[tokio::test]
async fn each_endpoint_gets_only_the_event_types_it_asked_for() {
    let key = secret(8);
    let receiver = Receiver::up(&key);
    let app = spawn_app_with(
        with_endpoints(vec![
            endpoint(
                receiver.url("/changed"),
                &[&key],
                Some(&["password.changed"]),
            ),
            endpoint(
                receiver.url("/deleted"),
                &[&key],
                Some(&["account.deleted"]),
            ),
            // The default filter: password.changed and recovery.reported.
            endpoint(receiver.url("/default"), &[&key], None),
        ]),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    reset_once(&app, &login).await;
    app.accounts
        .clone()
        .delete_account(proto::DeleteAccountRequest {
            account_id: account_id.clone(),
        })
        .await
        .unwrap();
    receiver.wait_accepted(3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let accepted = receiver.accepted();
    let by_path = |path: &str| -> Vec<String> {
        accepted
            .iter()
            .filter(|h| h["path"] == path)
            .map(|h| h["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(by_path("/changed"), ["password.changed"]);
    assert_eq!(by_path("/deleted"), ["account.deleted"]);
    assert_eq!(by_path("/default"), ["password.changed"]);
}

#[tokio::test]
async fn a_delivery_failing_past_the_max_age_is_given_up_audited_and_unblocks_the_next() {
    use recovery_service::db::entities::audit_event;
    let key = secret(9);
    let mut receiver = Receiver::down(&key);
    let app = app_posting_to(&receiver, &key, |c| c.webhooks.max_age_secs = 60).await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    reset_once(&app, &login).await;
    wait_attempted(&app, 1).await;
    app.clock.advance(Duration::from_secs(30));
    reset_once(&app, &login).await;
    for _ in 0..100 {
        if rows(&app).await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first event is now past the max age: its next failure gives it up.
    app.clock.advance(Duration::from_secs(31));
    let mut given_up = None;
    for _ in 0..100 {
        let rows = rows(&app).await;
        if rows[0].status == "failed" {
            given_up = Some(rows[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let given_up = given_up.expect("the old delivery was given up");
    let audit = audit_event::Entity::find()
        .filter(audit_event::Column::Event.eq("webhook.abandoned"))
        .all(app.database.connection())
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].account_id.as_deref(), Some(account_id.as_str()));
    assert!(
        audit[0]
            .detail
            .as_deref()
            .unwrap()
            .contains(&given_up.event_id)
    );

    // The account's next event is no longer held behind it.
    receiver.start();
    advance_until(&app, || !receiver.accepted().is_empty()).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1);
    assert_ne!(accepted[0]["id"], given_up.event_id.as_str());
    assert_eq!(rows(&app).await[1].status, "delivered");
}

#[test]
fn endpoints_load_from_a_config_file_and_bad_ones_are_refused() {
    let dir = TempDir::new();
    let load = |body: &str| {
        let path = dir.0.join(format!("{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, body).unwrap();
        Config::load(Some(&path))
    };
    let good = format!(
        "[[webhooks.endpoints]]\nurl = \"https://hooks.example.com/identity\"\nsecret = [\"{}\", \"{}\"]\nevents = [\"password.changed\"]\ntimeout_ms = 3000\n",
        secret(1),
        secret(2)
    );
    let config = load(&good).unwrap();
    assert_eq!(config.webhooks.endpoints.len(), 1);
    assert_eq!(config.webhooks.endpoints[0].secret.len(), 2);
    let shown = config.redacted_toml();
    assert!(!shown.contains(&secret(1)) && !shown.contains(&secret(2)));

    for (bad, expected) in [
        ("url = \"file:///etc/passwd\"", "scheme"),
        (
            "url = \"https://x.example\"\nsecret = \"not-whsec\"",
            "whsec_",
        ),
        ("url = \"https://x.example\"\nevents = []", "events"),
        ("url = \"https://x.example\"\nsecrets = \"x\"", "secrets"),
    ] {
        let body = if bad.contains("secret") {
            format!("[[webhooks.endpoints]]\n{bad}\n")
        } else {
            format!(
                "[[webhooks.endpoints]]\n{bad}\nsecret = \"{}\"\n",
                secret(1)
            )
        };
        let error = load(&body)
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"))
            .to_string();
        assert!(error.contains(expected), "{bad}: {error}");
    }
    let production = format!(
        "production = true\n[[webhooks.endpoints]]\nurl = \"http://hooks.example.com/\"\nsecret = \"{}\"\n",
        secret(1)
    );
    let error = load(&production).err().unwrap().to_string();
    assert!(error.contains("https only"), "{error}");
}
