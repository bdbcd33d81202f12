//! The data lifecycle: the retention sweep (on the database adapter), erasure and export
//! (through the gRPC API). Every case runs on SQLite, PostgreSQL and MariaDB in one process, as
//! `<backend>::<case>` (PostgreSQL and MariaDB when their variable is set, `common::backend`); a
//! database that cannot be reached fails the test.

use chrono::{DateTime, Duration as Days, Utc};
use recovery_service::accounts::{AccountRepository, AuditRecord, DeliveryQueue, SealedDelivery};
use recovery_service::db::entities::{account, audit_event, delivery, outbox};
use recovery_service::db::{Database, DatabaseSettings, RetentionSettings, SweepReport};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use tokio_util::sync::CancellationToken;

use crate::common::{
    ExpectErr, NEW_PASSWORD, OLD_PASSWORD, TempDir, TestApp, fresh_database_url_for,
    spawn_app_with, unique_login,
};
use recovery_service::proto;
use recovery_service::server::Overrides;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// Every case runs once per backend.
macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::cases::$case("sqlite").await; } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { if crate::common::backend::database("postgres") { super::cases::$case("postgres").await; } } )* }
        mod mysql { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { if crate::common::backend::database("mysql") { super::cases::$case("mysql").await; } } )* }
    };
}

every_backend!(
    the_sweep_removes_only_expired_rows_in_bounded_batches,
    replicas_sweeping_at_once_remove_each_row_once,
    a_cancelled_sweep_stops_between_batches,
    export_then_erasure_leaves_no_trace_and_the_login_is_new_again,
    erasure_and_export_refuse_unknown_and_malformed_ids,
    export_shows_exactly_the_audit_rows_erasure_strips,
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
        crate::common::drop_database(&self.url).await;
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
    pub use super::erasure_cases::*;
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
                deliveries: 10,
                webhook_deliveries: 0,
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

/// A test app whose database is a fresh one on `backend`.
async fn app_on(backend: &str, dir: &TempDir) -> TestApp {
    let url = fresh_database_url_for(backend, dir).await;
    spawn_app_with(
        move |config| config.database_url = url,
        Overrides::default(),
    )
    .await
}

/// Every row of every table as text (binary columns left out: the only one holds sealed
/// payloads, and the account's delivery rows are checked to be gone).
async fn dump_all_tables(db: &Database) -> String {
    let conn = db.connection();
    let backend = conn.get_database_backend();
    let columns_sql = match backend {
        DbBackend::Sqlite => "SELECT m.name AS t, p.name AS c FROM sqlite_master m \
             JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND upper(p.type) <> 'BLOB'"
            .to_owned(),
        DbBackend::Postgres => "SELECT table_name::text AS t, column_name::text AS c \
             FROM information_schema.columns WHERE table_schema = 'public' AND data_type <> 'bytea'"
            .to_owned(),
        _ => "SELECT CAST(table_name AS CHAR) AS t, CAST(column_name AS CHAR) AS c \
             FROM information_schema.columns WHERE table_schema = DATABASE() \
             AND data_type NOT LIKE '%blob%' AND data_type NOT LIKE '%binary%'"
            .to_owned(),
    };
    let rows = conn
        .query_all_raw(Statement::from_string(backend, columns_sql))
        .await
        .unwrap();
    let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in rows {
        let table: String = row.try_get("", "t").unwrap();
        let column: String = row.try_get("", "c").unwrap();
        tables.entry(table).or_default().push(column);
    }
    assert!(tables.contains_key("audit_events") && tables.contains_key("accounts"));
    let mut dump = String::new();
    for (table, columns) in tables {
        let (quote, text) = match backend {
            DbBackend::MySql => ('`', "CHAR"),
            _ => ('"', "TEXT"),
        };
        let parts: Vec<String> = columns
            .iter()
            .map(|c| format!("COALESCE(CAST({quote}{c}{quote} AS {text}), '')"))
            .collect();
        let row_expr = match backend {
            DbBackend::MySql => format!("CONCAT_WS('|', {})", parts.join(", ")),
            _ => parts.join(" || '|' || "),
        };
        let sql = format!("SELECT {row_expr} AS r FROM {quote}{table}{quote}");
        for row in conn
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap()
        {
            let line: String = row.try_get("", "r").unwrap();
            dump.push_str(&format!("{table}: {line}\n"));
        }
    }
    dump
}

async fn export(
    app: &TestApp,
    account_id: &str,
) -> Result<tonic::Response<proto::ExportAccountDataResponse>, tonic::Status> {
    app.accounts
        .clone()
        .export_account_data(proto::ExportAccountDataRequest {
            account_id: account_id.to_owned(),
        })
        .await
}

async fn delete(
    app: &TestApp,
    account_id: &str,
) -> Result<tonic::Response<proto::DeleteAccountResponse>, tonic::Status> {
    app.accounts
        .clone()
        .delete_account(proto::DeleteAccountRequest {
            account_id: account_id.to_owned(),
        })
        .await
}

/// Account + flow + code verified, the code read from `mailbox`: (flow_id, reset_token).
async fn verified_flow_to(app: &TestApp, login: &str, mailbox: &str) -> (String, String) {
    let before = app
        .notifier
        .messages()
        .iter()
        .filter(|m| m.to == mailbox)
        .count();
    let flow = app.start(login).await;
    app.send_code(&flow.flow_id).await.unwrap();
    let messages = app
        .notifier
        .wait_for(mailbox, before + 1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(messages.len(), before + 1, "the code was not delivered");
    let code = crate::common::code_in(messages.last().unwrap());
    let token = app
        .verify(&flow.flow_id, &code)
        .await
        .unwrap()
        .into_inner()
        .reset_token;
    (flow.flow_id, token)
}

mod erasure_cases {
    use super::*;

    pub async fn export_then_erasure_leaves_no_trace_and_the_login_is_new_again(backend: &str) {
        let dir = TempDir::new();
        let app = app_on(backend, &dir).await;
        let login = unique_login();
        let email = format!("mailbox-{}@example.org", uuid::Uuid::new_v4().simple());
        let phone = "+46701234567";
        let account_id = app
            .accounts
            .clone()
            .create_account(proto::CreateAccountRequest {
                login_id: login.clone(),
                email: email.clone(),
                phone: phone.to_owned(),
                password: OLD_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .account_id;
        // A completed reset (history, outbox, password-changed mail) ...
        let (_, token) = verified_flow_to(&app, &login, &email).await;
        app.reset(&token, NEW_PASSWORD, NEW_PASSWORD).await.unwrap();
        // The password-changed notice, so the next code is the next message.
        let notices = app
            .notifier
            .wait_for(&email, 2, std::time::Duration::from_secs(10))
            .await;
        assert_eq!(notices.len(), 2);
        // ... and a second flow left open with a live reset token.
        let (open_flow, open_token) = verified_flow_to(&app, &login, &email).await;
        let stored = account::Entity::find_by_id(account_id.clone())
            .one(app.database.connection())
            .await
            .unwrap()
            .unwrap();
        // Audit rows are group-committed: written within a few ms, at once on a flush.
        app.database.flush_audit().await;
        let trail = audit_event::Entity::find()
            .filter(audit_event::Column::AccountId.eq(account_id.clone()))
            .all(app.database.connection())
            .await
            .unwrap();
        let ip = trail[0]
            .client_ip
            .clone()
            .expect("audit rows carry the client address");
        let agent = trail[0]
            .user_agent
            .clone()
            .expect("audit rows carry the user agent");

        // Export: everything, never a hash.
        let json = export(&app, &account_id).await.unwrap().into_inner().json;
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["account_id"], account_id.as_str());
        assert_eq!(doc["login_id"], login.as_str());
        assert_eq!(doc["email"], email.as_str());
        assert_eq!(doc["phone"], phone);
        assert!(doc["password_changed_at"].is_string());
        assert_eq!(doc["password_set_at"].as_array().unwrap().len(), 2);
        let audit = doc["audit"].as_array().unwrap();
        assert!(audit.len() >= 6, "{json}");
        assert!(
            audit
                .iter()
                .any(|row| row["event"] == "recovery.password_reset")
        );
        assert!(audit.iter().any(|row| row["client_ip"] == ip.as_str()));
        assert!(!json.contains(&stored.password_hash) && !json.contains("$argon2"));

        delete(&app, &account_id).await.unwrap();

        // No table holds the login, e-mail, phone, hash, address or agent any more.
        let dump = dump_all_tables(&app.database).await;
        for needle in [
            login.as_str(),
            &login.to_lowercase(),
            email.as_str(),
            phone,
            &stored.password_hash,
            &ip,
            &agent,
        ] {
            assert!(!dump.contains(needle), "{needle:?} left behind:\n{dump}");
        }
        let mail = delivery::Entity::find()
            .filter(delivery::Column::AccountId.eq(account_id.clone()))
            .count(app.database.connection())
            .await
            .unwrap();
        assert_eq!(mail, 0, "queued mail of the account is dropped");
        let event = outbox::Entity::find()
            .filter(outbox::Column::EventType.eq("account.deleted"))
            .filter(outbox::Column::AggregateId.eq(account_id.clone()))
            .count(app.database.connection())
            .await
            .unwrap();
        assert_eq!(event, 1, "account.deleted is in the outbox");

        // Its open flow and reset token are dead.
        app.reset(
            &open_token,
            "Another-Quiet-Meadow-91#",
            "Another-Quiet-Meadow-91#",
        )
        .await
        .failure()
        .assert(tonic::Code::Unauthenticated, "TOKEN_INVALID");
        app.recovery
            .clone()
            .get_recovery_flow(proto::GetRecoveryFlowRequest { flow_id: open_flow })
            .await
            .failure()
            .assert(tonic::Code::NotFound, "FLOW_NOT_FOUND");

        // The login is like one that never existed: recovery answers as for any unknown
        // login, no password works, and the login can be created again.
        assert!(!app.login_works(&login, NEW_PASSWORD).await);
        let flow = app.start(&login).await;
        assert_eq!(flow.state(), proto::FlowState::ChooseMethod);
        export(&app, &account_id)
            .await
            .failure()
            .assert(tonic::Code::NotFound, "ACCOUNT_NOT_FOUND");
        let again = app.create_account(&login).await;
        assert_ne!(again, account_id);
        assert!(app.login_works(&login, OLD_PASSWORD).await);
    }

    pub async fn erasure_and_export_refuse_unknown_and_malformed_ids(backend: &str) {
        let dir = TempDir::new();
        let app = app_on(backend, &dir).await;
        let unknown = uuid::Uuid::new_v4().to_string();
        delete(&app, &unknown)
            .await
            .failure()
            .assert(tonic::Code::NotFound, "ACCOUNT_NOT_FOUND");
        export(&app, &unknown)
            .await
            .failure()
            .assert(tonic::Code::NotFound, "ACCOUNT_NOT_FOUND");
        for malformed in ["", "not-an-id", "'; DROP TABLE accounts; --"] {
            let failure = delete(&app, malformed).await.failure();
            failure.assert(tonic::Code::InvalidArgument, "INVALID_ARGUMENT");
            assert_eq!(failure.fields(), vec!["account_id"]);
            let failure = export(&app, malformed).await.failure();
            failure.assert(tonic::Code::InvalidArgument, "INVALID_ARGUMENT");
            assert_eq!(failure.fields(), vec!["account_id"]);
        }
        // Deleting twice: the second call finds nothing.
        let login = unique_login();
        let id = app.create_account(&login).await;
        delete(&app, &id).await.unwrap();
        delete(&app, &id)
            .await
            .failure()
            .assert(tonic::Code::NotFound, "ACCOUNT_NOT_FOUND");
    }

    /// One definition of "this person's rows": the audit rows an export returns are exactly
    /// those an erasure strips, including the attempts before the account existed (the login's
    /// keyed hash only), the decoys during a report freeze and the per-account budget refusals
    /// (`recovery.rate_limited`, scope `account`).
    pub async fn export_shows_exactly_the_audit_rows_erasure_strips(backend: &str) {
        let dir = TempDir::new();
        let url = crate::common::fresh_database_url_for(backend, &dir).await;
        let app = spawn_app_with(
            move |config| {
                config.database_url = url;
                config.rate_limits.send_code_per_account.limit = 1;
                config.flow.resend_cooldown_secs = 0;
            },
            Overrides::default(),
        )
        .await;
        let login = unique_login();
        // Before the account exists: a start, a send, and a send past the login's budget.
        let early = app.start(&login).await;
        app.send_code(&early.flow_id).await.unwrap();
        let limited = app.send_code(&early.flow_id).await.failure();
        limited.assert(tonic::Code::ResourceExhausted, "RATE_LIMITED");
        assert_eq!(limited.metadata("scope").as_deref(), Some("account"));

        let account_id = app.create_account(&login).await;
        let flow = app.start(&login).await;
        app.send_code(&flow.flow_id).await.unwrap();
        let mail = app
            .notifier
            .wait_for(&login, 1, std::time::Duration::from_secs(10))
            .await;
        let report_code = crate::common::report_code_in(mail.last().unwrap());
        let limited = app.send_code(&flow.flow_id).await.failure();
        assert_eq!(limited.metadata("scope").as_deref(), Some("account"));
        app.recovery
            .clone()
            .report_unrequested_recovery(proto::ReportUnrequestedRecoveryRequest { report_code })
            .await
            .unwrap();
        // A decoy during the freeze.
        let decoy = app.start(&login).await;
        let _ = app.send_code(&decoy.flow_id).await;

        app.database.flush_audit().await;
        let conn = app.database.connection();
        let before = audit_event::Entity::find().all(conn).await.unwrap();
        let json = export(&app, &account_id).await.unwrap().into_inner().json;
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        delete(&app, &account_id).await.unwrap();
        let after: std::collections::HashMap<i64, audit_event::Model> = audit_event::Entity::find()
            .all(conn)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.id, row))
            .collect();

        // Rows with something to strip, as (event, flow, result, detail): those the erasure
        // emptied, and those the export showed.
        type Row = (String, Option<String>, String, Option<String>);
        let mut stripped: Vec<Row> = before
            .iter()
            .filter(|row| {
                row.client_ip.is_some() || row.user_agent.is_some() || row.detail.is_some()
            })
            .filter(|row| {
                after.get(&row.id).is_some_and(|now| {
                    now.client_ip.is_none() && now.user_agent.is_none() && now.detail.is_none()
                })
            })
            .map(|row| {
                (
                    row.event.clone(),
                    row.flow_id.clone(),
                    row.result.clone(),
                    row.detail.clone(),
                )
            })
            .collect();
        let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
        let mut exported: Vec<Row> = doc["audit"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| {
                !row["client_ip"].is_null()
                    || !row["user_agent"].is_null()
                    || !row["detail"].is_null()
            })
            .map(|row| {
                (
                    text(&row["event"]).unwrap(),
                    text(&row["flow_id"]),
                    text(&row["result"]).unwrap(),
                    text(&row["detail"]),
                )
            })
            .collect();
        stripped.sort();
        exported.sort();
        assert_eq!(exported, stripped, "export and erasure disagree");

        // The rows that used to escape one or the other are among them.
        let early_id = Some(early.flow_id.clone());
        assert!(exported.iter().any(|row| row.1 == early_id), "{exported:?}");
        let decoy_id = Some(decoy.flow_id.clone());
        assert!(exported.iter().any(|row| row.1 == decoy_id), "{exported:?}");
        let account_budget = exported
            .iter()
            .filter(|row| {
                row.0 == "recovery.rate_limited"
                    && row.3.as_deref().is_some_and(|d| d.contains("\"account\""))
            })
            .count();
        assert!(account_budget >= 2, "{exported:?}");
    }
}
