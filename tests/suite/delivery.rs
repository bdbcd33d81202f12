//! Delivery semantics of the contract: `SendVerificationCode` only enqueues; the worker retries a
//! temporary failure until the message is delivered or its code expires; a restart in between
//! loses nothing; nothing is ever sent twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::faults::FlakyNotifier;
use crate::common::*;
use recovery_service::db::entities::delivery;
use recovery_service::server::Overrides;
use sea_orm::EntityTrait;

fn with(notifier: &FlakyNotifier) -> Overrides {
    Overrides {
        notifier: Some(Arc::new(notifier.clone())),
        ..Default::default()
    }
}

async fn wait_until(mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 5 s");
}

async fn rows(app: &TestApp) -> Vec<delivery::Model> {
    delivery::Entity::find()
        .all(app.database.connection())
        .await
        .unwrap()
}

/// An account's code sent while the mailbox is unreachable, after the first failed attempt.
async fn code_sent_while_mail_is_down() -> (
    TestApp,
    FlakyNotifier,
    String,
    recovery_service::proto::RecoveryFlow,
) {
    let mail = FlakyNotifier::down();
    let app = spawn_app_with(|_| {}, with(&mail)).await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    app.send_code(&flow.flow_id).await.unwrap();
    wait_until(async || mail.failures.load(Ordering::SeqCst) >= 1).await;
    (app, mail, login, flow)
}

#[tokio::test]
async fn send_code_answers_at_once_even_when_the_mail_server_is_down() {
    let mail = FlakyNotifier::down();
    let app = spawn_app_with(|_| {}, with(&mail)).await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;
    // The RPC succeeds: the failure of delivery is nobody's business but the queue's.
    app.send_code(&flow.flow_id).await.unwrap();
    wait_until(async || {
        rows(&app)
            .await
            .first()
            .is_some_and(|row| row.attempts >= 1)
    })
    .await;
    let queued = rows(&app).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].status, "pending");
    assert!(queued[0].attempts >= 1);
    app.stop().await;
}

#[tokio::test]
async fn a_code_queued_while_mail_is_down_arrives_exactly_once_when_it_is_back() {
    let (app, mail, login, flow) = code_sent_while_mail_is_down().await;

    mail.bring_up();
    // Past the first backoff (1 s) on the service's clock, well inside the code's 10 minutes.
    app.clock.advance(Duration::from_secs(2));
    let received = mail
        .inbox
        .wait_for(&login, 1, Duration::from_secs(10))
        .await;
    assert_eq!(received.len(), 1);
    let code = code_in(&received[0]);
    app.verify(&flow.flow_id, &code).await.unwrap();

    // Later passes find nothing to send again.
    app.clock.advance(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mail.inbox
            .messages()
            .iter()
            .filter(|m| m.to == login)
            .count(),
        1
    );
    let done = rows(&app).await;
    assert_eq!(done[0].status, "delivered");
    assert!(
        done[0].ciphertext.is_empty(),
        "a delivered message keeps no sealed payload"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_message_whose_code_expired_before_delivery_is_dropped_not_sent() {
    let (app, mail, _, _) = code_sent_while_mail_is_down().await;

    app.clock.advance(Duration::from_secs(10 * 60));
    mail.bring_up();
    wait_until(async || rows(&app).await[0].status == "dropped").await;
    let dropped = rows(&app).await;
    assert_eq!(dropped[0].last_error.as_deref(), Some("expired"));
    assert!(
        mail.inbox.messages().is_empty(),
        "a useless code was mailed"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_restart_of_the_service_between_enqueue_and_delivery_loses_nothing() {
    // Flows live in Redis and messages in the database: both outlive the process.
    let Some(redis_url) = backend::redis() else {
        return;
    };
    let dir = TempDir::new();
    let database_url = format!("sqlite://{}?mode=rwc", dir.0.join("shared.db").display());
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let shared = |url: String, prefix: String| {
        let redis_url = redis_url.clone();
        move |c: &mut recovery_service::config::Config| {
            c.database_url = url;
            c.redis_url = Some(redis_url);
            c.redis.key_prefix = prefix;
        }
    };

    let down = FlakyNotifier::down();
    let first = spawn_app_with(shared(database_url.clone(), prefix.clone()), with(&down)).await;
    let login = unique_login();
    first.create_account(&login).await;
    let flow = first.start(&login).await;
    first.send_code(&flow.flow_id).await.unwrap();
    wait_until(async || down.failures.load(Ordering::SeqCst) >= 1).await;
    first.stop().await;

    let up = FlakyNotifier::default();
    let second = spawn_app_with(shared(database_url, prefix), with(&up)).await;
    second.clock.advance(Duration::from_secs(2));
    let received = up.inbox.wait_for(&login, 1, Duration::from_secs(10)).await;
    assert_eq!(
        received.len(),
        1,
        "the queued message was lost in the restart"
    );
    // The code in it still verifies against the flow the first process started.
    second
        .verify(&flow.flow_id, &code_in(&received[0]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.inbox.messages().len(), 1);
    second.stop().await;
}

/// The six-digit code in a raw message's text part.
fn code_in_raw(raw: &[u8]) -> String {
    let mail = mailparse::parse_mail(raw).unwrap();
    let text = mail
        .subparts
        .iter()
        .find(|part| part.ctype.mimetype == "text/plain")
        .map(|part| part.get_body().unwrap())
        .unwrap_or_else(|| mail.get_body().unwrap());
    let digits: Vec<char> = text.chars().collect();
    digits
        .windows(8)
        .find(|w| {
            w[1..7].iter().all(char::is_ascii_digit)
                && !w[0].is_ascii_digit()
                && !w[7].is_ascii_digit()
        })
        .map(|w| w[1..7].iter().collect())
        .expect("a code in the message")
}

#[tokio::test]
async fn with_the_smtp_server_stopped_the_code_arrives_once_after_it_restarts() {
    use crate::common::smtp_sink::{Sink, SinkOptions};
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port;
    let app = spawn_app_with(
        move |c| {
            c.notifier = recovery_service::config::NotifierKind::Smtp;
            c.smtp_url = Some(secrecy::SecretString::from(format!(
                "smtp://127.0.0.1:{port}"
            )));
            c.mail_from = "no-reply@recovery.test".into();
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let flow = app.start(&login).await;

    drop(sink);
    app.send_code(&flow.flow_id).await.unwrap();
    wait_until(async || {
        rows(&app)
            .await
            .first()
            .is_some_and(|row| row.attempts >= 1)
    })
    .await;

    let sink = Sink::start(SinkOptions {
        port: Some(port),
        ..Default::default()
    });
    app.clock.advance(Duration::from_secs(2));
    wait_until(async || !sink.messages().is_empty()).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    app.verify(&flow.flow_id, &code_in_raw(&messages[0]))
        .await
        .unwrap();

    app.clock.advance(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "the code was mailed twice");
    app.stop().await;
}

/// A notifier that refuses every message while down; once up, it holds each message until
/// `crowd` are in its hands at once (or 5 s have passed), and records the most it held together,
/// whether one recipient ever had two messages in flight, and the order messages were delivered.
#[derive(Clone)]
struct Crowd {
    crowd: usize,
    /// Refuses (and counts) every message while down.
    gate: FlakyNotifier,
    in_flight: Arc<std::sync::Mutex<Vec<String>>>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    same_recipient_overlapped: Arc<std::sync::atomic::AtomicBool>,
    delivered: Arc<std::sync::Mutex<Vec<recovery_service::notify::Email>>>,
}

impl Crowd {
    fn down(crowd: usize) -> Self {
        Self {
            crowd,
            gate: FlakyNotifier::down(),
            in_flight: Arc::default(),
            most: Arc::default(),
            same_recipient_overlapped: Arc::default(),
            delivered: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl recovery_service::notify::Notifier for Crowd {
    async fn send(
        &self,
        email: &recovery_service::notify::Email,
    ) -> Result<(), recovery_service::notify::NotifyError> {
        if self.gate.is_down() {
            return recovery_service::notify::Notifier::send(&self.gate, email).await;
        }
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            if in_flight.contains(&email.to) {
                self.same_recipient_overlapped.store(true, Ordering::SeqCst);
            }
            in_flight.push(email.to.clone());
            self.most.fetch_max(in_flight.len(), Ordering::SeqCst);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.most.load(Ordering::SeqCst) < self.crowd
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            if let Some(at) = in_flight.iter().position(|to| *to == email.to) {
                in_flight.remove(at);
            }
        }
        self.delivered.lock().unwrap().push(email.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_batch_goes_out_to_several_recipients_at_once_and_to_each_in_queue_order() {
    // Four recipients, and the first of them gets a second code: five messages, one batch once
    // the relay is back, four lanes. Sent one at a time, the notifier would never hold four.
    let mail = Crowd::down(4);
    let app = spawn_app_with(
        |c| {
            c.flow.resend_cooldown_secs = 0;
            c.delivery.concurrency = 4;
        },
        Overrides {
            notifier: Some(Arc::new(mail.clone())),
            ..Default::default()
        },
    )
    .await;
    let logins: Vec<String> = (0..4).map(|_| unique_login()).collect();
    let mut first_flow = None;
    for (n, login) in logins.iter().enumerate() {
        app.create_account(login).await;
        let flow = app.start(login).await;
        let sends = if n == 0 { 2 } else { 1 };
        for _ in 0..sends {
            let before = mail.gate.failures.load(Ordering::SeqCst);
            app.send_code(&flow.flow_id).await.unwrap();
            wait_until(async || mail.gate.failures.load(Ordering::SeqCst) > before).await;
            // Each first attempt fails at its own instant, so the retries are due in this order.
            app.clock.advance(Duration::from_millis(10));
        }
        first_flow.get_or_insert(flow);
    }

    mail.gate.bring_up();
    app.clock.advance(Duration::from_secs(2));
    wait_until(async || mail.delivered.lock().unwrap().len() == 5).await;

    assert_eq!(
        mail.most.load(Ordering::SeqCst),
        4,
        "the four recipients' messages were not in flight together"
    );
    assert!(
        !mail.same_recipient_overlapped.load(Ordering::SeqCst),
        "one recipient had two messages in flight at once"
    );
    // The first recipient's two code mails arrived in the order they were asked for: the last
    // one holds the code that works (a resend replaces the live code).
    let to_first: Vec<_> = mail
        .delivered
        .lock()
        .unwrap()
        .iter()
        .filter(|email| email.to == logins[0])
        .cloned()
        .collect();
    assert_eq!(to_first.len(), 2);
    let flow = first_flow.unwrap();
    assert!(
        app.verify(&flow.flow_id, &code_in(&to_first[0]))
            .await
            .is_err(),
        "the first code still works after a resend"
    );
    app.verify(&flow.flow_id, &code_in(&to_first[1]))
        .await
        .unwrap();
    // The worker marks a row delivered just after the notifier returns: wait for the last mark.
    wait_until(async || rows(&app).await.iter().all(|row| row.status == "delivered")).await;
    app.stop().await;
}
