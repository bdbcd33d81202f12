//! The transactional outbox and its relay to the `identity.events` Redis Stream: published once
//! per event id, at least once across Redis outages and service restarts.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::servers::PrivateRedis;
use crate::common::*;
use recovery_service::server::Overrides;
use redis::AsyncCommands;

fn unique_stream() -> String {
    format!("test.events.{}", uuid::Uuid::new_v4().simple())
}

/// Every entry of `stream` as field maps.
async fn entries(url: &str, stream: &str) -> Vec<HashMap<String, String>> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} unreachable ({e}); run scripts/test-services.sh")
        });
    let reply: redis::streams::StreamRangeReply = connection.xrange_all(stream).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                .collect()
        })
        .collect()
}

async fn wait_for_entries(url: &str, stream: &str, count: usize) -> Vec<HashMap<String, String>> {
    for _ in 0..200 {
        let found = entries(url, stream).await;
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    entries(url, stream).await
}

fn with_events(url: String, stream: String) -> impl FnOnce(&mut recovery_service::config::Config) {
    move |c| {
        c.events.redis_url = Some(url);
        c.events.stream = stream;
        c.events.poll_interval_ms = 50;
    }
}

#[tokio::test]
async fn a_reset_publishes_password_changed_once_with_its_event_id() {
    let Some(redis) = backend::redis() else {
        return;
    };
    let stream = unique_stream();
    let app = spawn_app_with(
        with_events(redis.clone(), stream.clone()),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();

    let events = wait_for_entries(&redis, &stream, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["type"], "password.changed");
    assert_eq!(event["account_id"], account_id);
    assert!(uuid::Uuid::parse_str(&event["event_id"]).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(&event["occurred_at"]).is_ok());
    let payload: serde_json::Value = serde_json::from_str(&event["payload"]).unwrap();
    assert_eq!(payload["event_id"], event["event_id"].as_str());
    for secret in [NEW_PASSWORD, token.as_str(), login.as_str()] {
        assert!(!format!("{event:?}").contains(secret));
    }

    // The row is marked published, and nothing is published twice.
    use recovery_service::accounts::OutboxStore;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.database.unpublished(10).await.unwrap().is_empty());
    assert_eq!(entries(&redis, &stream).await.len(), 1);
    app.stop().await;
}

/// "It wasn't me" reaches the stream as `recovery.reported`, once, without the report code.
#[tokio::test]
async fn a_report_publishes_recovery_reported_once() {
    let Some(redis) = backend::redis() else {
        return;
    };
    let stream = unique_stream();
    let app = spawn_app_with(
        with_events(redis.clone(), stream.clone()),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let account_id = app.create_account(&login).await;
    let flow = app.start(&login).await;
    app.send_and_read_code(&flow.flow_id, &login).await;
    let report_code = report_code_in(app.delivered_to(&login).await.last().unwrap());
    app.recovery
        .clone()
        .report_unrequested_recovery(recovery_service::proto::ReportUnrequestedRecoveryRequest {
            report_code: report_code.clone(),
        })
        .await
        .unwrap();

    let events = wait_for_entries(&redis, &stream, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["type"], "recovery.reported");
    assert_eq!(event["account_id"], account_id);
    let payload: serde_json::Value = serde_json::from_str(&event["payload"]).unwrap();
    assert_eq!(payload["event_id"], event["event_id"].as_str());
    assert!(
        chrono::DateTime::parse_from_rfc3339(payload["frozen_until"].as_str().unwrap()).is_ok()
    );
    for secret in [report_code.as_str(), login.as_str()] {
        assert!(!format!("{event:?}").contains(secret));
    }
    app.stop().await;
}

#[tokio::test]
async fn publishing_the_same_event_id_twice_appends_it_once() {
    let Some(redis) = backend::redis() else {
        return;
    };
    use recovery_service::accounts::OutboxEvent;
    use recovery_service::notify::events::{EventSettings, EventSink};
    let stream = unique_stream();
    let sink = recovery_service::store::RedisStore::connect(&redis, &Default::default())
        .await
        .unwrap();
    let event = OutboxEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: "password.changed".into(),
        aggregate_id: "acct".into(),
        payload: "{}".into(),
        created_at: chrono::Utc::now(),
    };
    let settings = EventSettings::default();
    assert!(
        sink.publish(&stream, &event, &settings.retention())
            .await
            .unwrap()
    );
    assert!(
        !sink
            .publish(&stream, &event, &settings.retention())
            .await
            .unwrap()
    );
    assert_eq!(entries(&redis, &stream).await.len(), 1);
}

#[tokio::test]
async fn an_event_written_while_redis_is_down_arrives_once_when_it_is_back() {
    if backend::redis().is_none() {
        return;
    }
    let mut redis = PrivateRedis::start();
    let port = redis.port;
    let stream = unique_stream();
    let app = spawn_app_with(
        with_events(redis.url(), stream.clone()),
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    app.create_account(&login).await;
    let (_, token) = app.verified_flow(&login).await;

    redis.stop();
    // The reset does not need the event stream: it commits, the event waits in the outbox.
    app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    use recovery_service::accounts::OutboxStore;
    assert_eq!(app.database.unpublished(10).await.unwrap().len(), 1);

    let redis = PrivateRedis::start_on(port);
    let events = wait_for_entries(&redis.url(), &stream, 1).await;
    assert_eq!(events.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        entries(&redis.url(), &stream).await.len(),
        1,
        "published exactly once"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unpublished_event_survives_a_restart_of_the_service() {
    let Some(redis) = backend::redis() else {
        return;
    };
    let stream = unique_stream();
    let dir = TempDir::new();
    let database_url = format!("sqlite://{}?mode=rwc", dir.0.join("shared.db").display());
    // First life: the stream's Redis is not there at all.
    let nowhere = format!(
        "redis://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let url = database_url.clone();
    let first = spawn_app_with(
        move |c| {
            with_events(nowhere, String::new())(c);
            c.events.stream = "unused".into();
            c.database_url = url;
        },
        Overrides::default(),
    )
    .await;
    let login = unique_login();
    let account_id = first.create_account(&login).await;
    let (_, token) = first.verified_flow(&login).await;
    first
        .reset(&token, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();
    first.stop().await;

    // Second life, same database, a reachable stream: the event goes out.
    let url = database_url.clone();
    let redis_url = redis.clone();
    let stream_name = stream.clone();
    let second = spawn_app_with(
        move |c| {
            with_events(redis_url, stream_name)(c);
            c.database_url = url;
        },
        Overrides::default(),
    )
    .await;
    let events = wait_for_entries(&redis, &stream, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["account_id"], account_id);
    second.stop().await;
}
