//! Issue 15, data lifecycle: the retention sweep (on the database adapter), erasure and export
//! (through the gRPC API). Every case runs on SQLite, PostgreSQL and MariaDB in one process, as
//! `<backend>::<case>`; a database that cannot be reached fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use chrono::{DateTime, Duration as Days, Utc};
use recovery_service::accounts::{AccountRepository, AuditRecord, DeliveryQueue, SealedDelivery};
use recovery_service::db::entities::{audit_event, delivery, outbox};
use recovery_service::db::{Database, DatabaseSettings, RetentionSettings, SweepReport};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use tokio_util::sync::CancellationToken;

use common::{TempDir, fresh_database_url_for};

/// Every case runs once per backend.
macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::cases::$case("sqlite").await; } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::cases::$case("postgres").await; } )* }
        mod mysql { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::cases::$case("mysql").await; } )* }
    };
}

every_backend!(
    the_sweep_removes_only_expired_rows_in_bounded_batches,
    replicas_sweeping_at_once_remove_each_row_once,
    a_cancelled_sweep_stops_between_batches,
);

/// A migrated, empty database of its own.
struct Db {
    url: String,
    db: Database,
    _dir: TempDir,
}

impl Db {
    async fn new(backend: &str) -> Self {
        let dir = TempDir::new();
        let url = fresh_database_url_for(backend, &dir).await;
        let db = Database::connect(&url, &DatabaseSettings::default())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        db.migrate().await.unwrap();
        Self { url, db, _dir: dir }
    }

    async fn close(self) {
        self.db.close().await.ok();
        common::drop_database(&self.url).await;
    }
}

fn audit_at(at: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        at,
        event: "recovery.started",
        account_id: None,
        flow_id: None,
        login_key: Some("k".to_owned()),
        client_ip: Some("192.0.2.7".to_owned()),
        user_agent: Some("sweep-test".to_owned()),
        result: "ok",
        detail: None,
    }
}

async fn add_outbox(db: &Database, published_at: Option<DateTime<Utc>>) {
    outbox::Entity::insert(outbox::ActiveModel {
        id: NotSet,
        event_id: Set(uuid::Uuid::new_v4().to_string()),
        event_type: Set("password.changed".to_owned()),
        aggregate_id: Set(uuid::Uuid::new_v4().to_string()),
        payload: Set("{}".to_owned()),
        created_at: Set(published_at.unwrap_or_else(Utc::now)),
        published_at: Set(published_at),
    })
    .exec_without_returning(db.connection())
    .await
    .unwrap();
}

async fn add_delivery(db: &Database, finished_at: Option<DateTime<Utc>>) {
    let id = uuid::Uuid::now_v7().to_string();
    let created_at = finished_at.unwrap_or_else(Utc::now);
    db.enqueue(SealedDelivery {
        id: id.clone(),
        kind: "code".to_owned(),
        ciphertext: vec![1; 16],
        not_after: created_at + Days::minutes(10),
        created_at,
        account_id: None,
    })
    .await
    .unwrap();
    if let Some(at) = finished_at {
        db.mark_delivered(&id, at).await.unwrap();
    }
}

async fn count<E>(db: &Database) -> u64
where
    E: EntityTrait,
    E::Model: Sync,
{
    E::find().count(db.connection()).await.unwrap()
}

/// 400/7/7 days (the defaults), batches of 3 so several batches run.
fn settings() -> RetentionSettings {
    RetentionSettings {
        batch_size: 3,
        ..RetentionSettings::default()
    }
}

/// `expired` rows past every limit and `kept` inside it, in each table, plus rows no sweep
/// may touch (pending mail, unpublished events).
async fn fill(db: &Database, now: DateTime<Utc>, expired: usize, kept: usize) {
    for _ in 0..expired {
        db.record_audit(audit_at(now - Days::days(401)))
            .await
            .unwrap();
        add_outbox(db, Some(now - Days::days(8))).await;
        add_delivery(db, Some(now - Days::days(8))).await;
    }
    for _ in 0..kept {
        db.record_audit(audit_at(now - Days::days(399)))
            .await
            .unwrap();
        add_outbox(db, Some(now - Days::days(6))).await;
        add_delivery(db, Some(now - Days::days(6))).await;
    }
    // Old, but pending or unpublished: never swept whatever their age.
    add_outbox(db, None).await;
    add_delivery(db, None).await;
}

mod cases {
    use super::*;

    pub async fn the_sweep_removes_only_expired_rows_in_bounded_batches(backend: &str) {
        let fx = Db::new(backend).await;
        let now = Utc::now();
        fill(&fx.db, now, 10, 4).await;
        let report = fx
            .db
            .sweep(&settings(), now, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            report,
            SweepReport {
                audit_events: 10,
                outbox: 10,
                deliveries: 10
            }
        );
        assert_eq!(count::<audit_event::Entity>(&fx.db).await, 4);
        assert_eq!(count::<outbox::Entity>(&fx.db).await, 5);
        assert_eq!(count::<delivery::Entity>(&fx.db).await, 5);
        let pending = delivery::Entity::find()
            .filter(delivery::Column::Status.eq("pending"))
            .count(fx.db.connection())
            .await
            .unwrap();
        assert_eq!(pending, 1, "pending mail is never swept");
        // A second sweep finds nothing left to do.
        let again = fx
            .db
            .sweep(&settings(), now, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(again, SweepReport::default());
        // 0 days keeps a table forever.
        let keep_all = RetentionSettings {
            audit_days: 0,
            outbox_published_days: 0,
            delivery_finished_days: 0,
            ..settings()
        };
        let later = now + Days::days(1000);
        let none = fx
            .db
            .sweep(&keep_all, later, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(none, SweepReport::default());
        fx.close().await;
    }

    pub async fn replicas_sweeping_at_once_remove_each_row_once(backend: &str) {
        let fx = Db::new(backend).await;
        let now = Utc::now();
        fill(&fx.db, now, 40, 5).await;
        // Four replicas, each with its own pool, sweeping the same tables at the same time.
        let mut replicas = Vec::new();
        for _ in 0..4 {
            let db = Database::connect(&fx.url, &DatabaseSettings::default())
                .await
                .unwrap();
            replicas.push(tokio::spawn(async move {
                db.sweep(&settings(), now, &CancellationToken::new()).await
            }));
        }
        let mut total = SweepReport::default();
        for replica in replicas {
            // A replica may lose a lock race (MariaDB deadlock, SQLite busy); it answers with
            // an error and its next sweep retries. What matters: no row is lost or kept.
            if let Ok(report) = replica.await.unwrap() {
                total.audit_events += report.audit_events;
                total.outbox += report.outbox;
                total.deliveries += report.deliveries;
            }
        }
        let last = fx
            .db
            .sweep(&settings(), now, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(total.audit_events + last.audit_events, 40);
        assert_eq!(total.outbox + last.outbox, 40);
        assert_eq!(total.deliveries + last.deliveries, 40);
        assert_eq!(count::<audit_event::Entity>(&fx.db).await, 5);
        assert_eq!(count::<outbox::Entity>(&fx.db).await, 6);
        assert_eq!(count::<delivery::Entity>(&fx.db).await, 6);
        fx.close().await;
    }

    pub async fn a_cancelled_sweep_stops_between_batches(backend: &str) {
        let fx = Db::new(backend).await;
        let now = Utc::now();
        fill(&fx.db, now, 10, 0).await;
        let stop = CancellationToken::new();
        stop.cancel();
        let report = fx.db.sweep(&settings(), now, &stop).await.unwrap();
        assert_eq!(report, SweepReport::default(), "nothing after cancellation");
        // The background sweeper returns promptly once cancelled.
        let sweeper = recovery_service::db::RetentionSweeper {
            database: fx.db.clone(),
            settings: RetentionSettings {
                sweep_interval_secs: 3600,
                ..settings()
            },
            clock: std::sync::Arc::new(recovery_service::clock::SystemClock),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(sweeper.run(stop.clone()));
        // Its first sweep runs at start.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while count::<audit_event::Entity>(&fx.db).await > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "first sweep never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("sweeper stops on cancellation")
            .unwrap();
        fx.close().await;
    }
}
