//! The backlog readings behind `/metrics` (delivery queue depth and oldest age, outbox pending
//! and lag), on every database backend: only waiting rows count, and the age is the oldest's.

use crate::common::{TempDir, fresh_database_url_for};
use chrono::{Duration, Utc};
use recovery_service::accounts::{DeliveryQueue, SealedDelivery};
use recovery_service::db::entities::outbox;
use recovery_service::db::{Database, DatabaseSettings};
use sea_orm::{ActiveModelTrait, ActiveValue::NotSet, Set};

async fn backlog_is_counted_on(backend: &str) {
    if !crate::common::backend::database(backend) {
        return;
    }
    let dir = TempDir::new();
    let url = fresh_database_url_for(backend, &dir).await;
    let db = Database::connect(&url, &DatabaseSettings::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let now = Utc::now();

    let empty = db.delivery_backlog(now).await.unwrap();
    assert_eq!((empty.count, empty.oldest_age_secs), (0, 0.0), "{backend}");

    for (id, age_secs) in [("a", 120), ("b", 30), ("c", 600)] {
        db.enqueue(SealedDelivery {
            id: format!("{id}{}", &uuid::Uuid::new_v4().simple().to_string()[..30]),
            kind: "verification_code".into(),
            ciphertext: vec![1, 2, 3],
            not_after: now + Duration::minutes(10),
            created_at: now - Duration::seconds(age_secs),
            account_id: None,
        })
        .await
        .unwrap();
    }
    // The oldest one is delivered: it no longer waits.
    let claimed = db
        .claim_due(now, now + Duration::minutes(1), 10)
        .await
        .unwrap();
    let oldest = claimed
        .iter()
        .find(|d| d.id.starts_with('c'))
        .expect("claimed");
    db.mark_delivered(&oldest.id, now).await.unwrap();
    let deliveries = db.delivery_backlog(now).await.unwrap();
    assert_eq!(deliveries.count, 2, "{backend}");
    assert!(
        (deliveries.oldest_age_secs - 120.0).abs() < 2.0,
        "{backend}: {deliveries:?}"
    );

    for (age_secs, published) in [(900, true), (300, false), (60, false)] {
        outbox::ActiveModel {
            id: NotSet,
            event_id: Set(uuid::Uuid::new_v4().to_string()),
            event_type: Set("password.changed".into()),
            aggregate_id: Set(uuid::Uuid::new_v4().to_string()),
            payload: Set("{}".into()),
            created_at: Set(now - Duration::seconds(age_secs)),
            published_at: Set(published.then_some(now)),
        }
        .insert(db.connection())
        .await
        .unwrap();
    }
    let events = db.outbox_backlog(now).await.unwrap();
    assert_eq!(events.count, 2, "{backend}");
    assert!(
        (events.oldest_age_secs - 300.0).abs() < 2.0,
        "{backend}: {events:?}"
    );
    db.close().await.ok();
    if backend != "sqlite" {
        crate::common::drop_database(&url).await;
    }
}

#[tokio::test]
async fn backlog_on_sqlite() {
    backlog_is_counted_on("sqlite").await;
}

#[tokio::test]
async fn backlog_on_postgres() {
    backlog_is_counted_on("postgres").await;
}

#[tokio::test]
async fn backlog_on_mariadb() {
    backlog_is_counted_on("mysql").await;
}
