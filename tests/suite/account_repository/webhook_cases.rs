//! `WebhookStore` conformance, run on every backend by `tests/account_repository.rs`:

//! fan-out from the outbox, per-account order, leases between replicas, give-up.

use std::collections::HashSet;

use chrono::{DateTime, Duration};
use recovery_service::db::entities::{audit_event, outbox};
use recovery_service::db::webhooks::webhook_delivery;
use recovery_service::recovery::ports::WebhookStore;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::{Fixture, at, connect};

const TYPES: &[&str] = &["password.changed"];

fn types() -> Vec<String> {
    TYPES.iter().map(|t| (*t).to_owned()).collect()
}

/// Writes an outbox row as a state change would; `id` forces its position (an out-of-order
/// commit).
async fn event(
    f: &Fixture,
    id: Option<i64>,
    event_type: &str,
    account: &str,
    created_at: DateTime<chrono::Utc>,
) -> String {
    let event_id = uuid::Uuid::new_v4().to_string();
    outbox::Entity::insert(outbox::ActiveModel {
        id: id.map_or(sea_orm::ActiveValue::NotSet, Set),
        event_id: Set(event_id.clone()),
        event_type: Set(event_type.to_owned()),
        aggregate_id: Set(account.to_owned()),
        payload: Set(format!(r#"{{"account_id":"{account}"}}"#)),
        created_at: Set(created_at),
        published_at: Set(None),
    })
    .exec_without_returning(f.db.connection())
    .await
    .unwrap();
    event_id
}

async fn fan_out(f: &Fixture, endpoint: &str, now: DateTime<chrono::Utc>) -> u64 {
    f.db.fan_out(endpoint, &types(), now, now - Duration::seconds(120), 100)
        .await
        .unwrap()
}

async fn claim(f: &Fixture, endpoint: &str, now: DateTime<chrono::Utc>) -> Vec<String> {
    f.db.claim_webhooks(endpoint, now, now + Duration::seconds(60), 50)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event_id)
        .collect()
}

pub async fn webhook_fan_out_is_idempotent_filtered_and_starts_at_registration(f: &Fixture) {
    let before = event(f, None, "password.changed", "acct-a", at(0)).await;
    f.db.register_endpoint("hooks", at(1)).await.unwrap();
    f.db.register_endpoint("hooks", at(2)).await.unwrap();
    let owed = event(f, None, "password.changed", "acct-a", at(3)).await;
    event(f, None, "account.deleted", "acct-a", at(4)).await;
    assert_eq!(fan_out(f, "hooks", at(5)).await, 1);
    assert_eq!(fan_out(f, "hooks", at(6)).await, 0, "fanned out once");
    assert_eq!(claim(f, "hooks", at(7)).await, std::slice::from_ref(&owed));
    assert_ne!(before, owed);
    // An endpoint registered later is not owed what came before it.
    f.db.register_endpoint("late", at(8)).await.unwrap();
    assert_eq!(fan_out(f, "late", at(9)).await, 0);
}

pub async fn webhook_only_the_oldest_pending_event_of_an_account_is_due(f: &Fixture) {
    f.db.register_endpoint("hooks", at(0)).await.unwrap();
    let a1 = event(f, None, "password.changed", "acct-a", at(1)).await;
    let b1 = event(f, None, "password.changed", "acct-b", at(2)).await;
    let a2 = event(f, None, "password.changed", "acct-a", at(3)).await;
    fan_out(f, "hooks", at(4)).await;
    let claimed =
        f.db.claim_webhooks("hooks", at(5), at(65), 50)
            .await
            .unwrap();
    let ids: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, [a1.as_str(), b1.as_str()], "a2 waits behind a1");
    // a1 fails and is retried later; b1 is delivered. a2 still waits for a1.
    f.db.webhook_retry(claimed[0].id, 1, at(20), "HTTP 503")
        .await
        .unwrap();
    f.db.webhook_delivered(claimed[1].id, at(6)).await.unwrap();
    assert!(claim(f, "hooks", at(10)).await.is_empty());
    assert_eq!(claim(f, "hooks", at(21)).await, std::slice::from_ref(&a1));
    let a1_row = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EventId.eq(a1.clone()))
        .one(f.db.connection())
        .await
        .unwrap()
        .unwrap();
    // Still leased: nobody else gets it, and a2 stays behind it.
    assert!(claim(f, "hooks", at(22)).await.is_empty());
    f.db.webhook_delivered(a1_row.id, at(23)).await.unwrap();
    assert_eq!(claim(f, "hooks", at(24)).await, [a2]);
}

pub async fn webhook_an_event_committed_out_of_id_order_is_picked_up_late(f: &Fixture) {
    f.db.register_endpoint("hooks", at(0)).await.unwrap();
    // id 1000 commits first; 999 (an older transaction) commits after the first fan-out.
    let later = event(f, Some(1_000), "password.changed", "acct-a", at(10)).await;
    assert_eq!(fan_out(f, "hooks", at(11)).await, 1);
    let earlier = event(f, Some(999), "password.changed", "acct-b", at(9)).await;
    assert_eq!(
        fan_out(f, "hooks", at(12)).await,
        1,
        "picked up, not skipped"
    );
    let claimed: HashSet<String> = claim(f, "hooks", at(13)).await.into_iter().collect();
    assert_eq!(claimed, HashSet::from([later, earlier]));
    // Once settled, the watermark moves past both: nothing is scanned again.
    assert_eq!(fan_out(f, "hooks", at(500)).await, 0);
    let watermark =
        recovery_service::db::webhooks::webhook_endpoint::Entity::find_by_id("hooks".to_owned())
            .one(f.db.connection())
            .await
            .unwrap()
            .unwrap()
            .watermark;
    assert_eq!(watermark, 1_000);
}

pub async fn webhook_replicas_never_lease_the_same_delivery(f: &Fixture) {
    f.db.register_endpoint("hooks", at(0)).await.unwrap();
    for n in 0..24 {
        event(f, None, "password.changed", &format!("acct-{n:02}"), at(1)).await;
    }
    fan_out(f, "hooks", at(2)).await;
    let now = at(3);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let replica = connect(&f.url).await;
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..3 {
                let claimed = replica
                    .claim_webhooks("hooks", now, now + Duration::seconds(60), 8)
                    .await
                    .unwrap();
                mine.extend(claimed.into_iter().map(|d| d.event_id));
            }
            replica.close().await.ok();
            mine
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "leased twice: {all:?}");
    assert_eq!(all.len(), 24);
}

pub async fn webhook_giving_up_is_audited_and_unblocks_the_account(f: &Fixture) {
    f.db.register_endpoint("hooks", at(0)).await.unwrap();
    let first = event(f, None, "password.changed", "acct-a", at(1)).await;
    let second = event(f, None, "password.changed", "acct-a", at(2)).await;
    fan_out(f, "hooks", at(3)).await;
    let claimed =
        f.db.claim_webhooks("hooks", at(4), at(64), 10)
            .await
            .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id, first);
    f.db.webhook_abandoned(&claimed[0], 7, at(5), "HTTP 500")
        .await
        .unwrap();
    let audit = audit_event::Entity::find()
        .filter(audit_event::Column::Event.eq("webhook.abandoned"))
        .all(f.db.connection())
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].account_id.as_deref(), Some("acct-a"));
    assert!(audit[0].detail.as_deref().unwrap().contains(&first));
    assert_eq!(claim(f, "hooks", at(6)).await, [second]);
    let backlog = f.db.webhook_backlog(at(7)).await.unwrap();
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].pending, 1);
}

pub async fn webhook_sweep_removes_finished_rows_only_below_the_watermark(f: &Fixture) {
    use recovery_service::db::RetentionSettings;
    use tokio_util::sync::CancellationToken;
    let settings = RetentionSettings {
        audit_days: 0,
        outbox_published_days: 0,
        delivery_finished_days: 1,
        ..RetentionSettings::default()
    };
    let sweep = |now| {
        let settings = settings.clone();
        async move {
            f.db.sweep(&settings, now, &CancellationToken::new())
                .await
                .unwrap()
                .webhook_deliveries
        }
    };
    f.db.register_endpoint("hooks", at(0)).await.unwrap();
    event(f, None, "password.changed", "acct-a", at(1)).await;
    // Not settled yet: the watermark stays below the event.
    assert_eq!(fan_out(f, "hooks", at(2)).await, 1);
    let claimed =
        f.db.claim_webhooks("hooks", at(3), at(63), 10)
            .await
            .unwrap();
    f.db.webhook_delivered(claimed[0].id, at(4)).await.unwrap();
    let two_days = Duration::days(2);
    assert_eq!(
        sweep(at(4) + two_days).await,
        0,
        "the fan-out still looks at it"
    );
    // Settled: the watermark passes it, the sweep may take it, and nothing is fanned out again.
    assert_eq!(fan_out(f, "hooks", at(500)).await, 0);
    assert_eq!(sweep(at(4) + two_days).await, 1);
    assert_eq!(fan_out(f, "hooks", at(501)).await, 0, "not owed again");
}
