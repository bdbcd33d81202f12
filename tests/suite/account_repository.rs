//! One conformance suite for the `AccountRepository` and `DeliveryQueue` traits, run against
//! every relational backend in the same process: `sqlite::…`, `postgres::…`, `mysql::…`.
//! Each test gets a database of its own. PostgreSQL and MariaDB run when their variable is set
//! (`common::backend`); a server that cannot be reached then fails the test loudly (run
//! `scripts/test-services.sh`).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use recovery_service::accounts::{
    AccountRepository, AuditRecord, DeliveryQueue, NewAccount, RepoError, ResetCommit,
    ResetOutcome, SealedDelivery,
};
use recovery_service::db::entities::{account, audit_event, delivery, outbox, password_history};
use recovery_service::db::{Database, DatabaseSettings};
use recovery_service::recovery::input::canonical_login;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Statement};
use sea_orm_migration::MigratorTrait;

use crate::common::{TempDir, fresh_database_url_for};

/// A migrated, empty database on one backend.
pub struct Fixture {
    pub backend: &'static str,
    pub url: String,
    pub db: Database,
    dir: TempDir,
}

impl Fixture {
    pub async fn new(backend: &'static str) -> Self {
        let dir = TempDir::new();
        let url = fresh_database_url_for(backend, &dir).await;
        let db = connect(&url).await;
        db.migrate().await.expect("migrations apply");
        Self {
            backend,
            url,
            db,
            dir,
        }
    }

    /// Another fresh, unmigrated database on the same backend.
    pub async fn fresh_url(&self) -> String {
        fresh_database_url_for(self.backend, &self.dir).await
    }

    pub async fn close(self) {
        self.db.close().await.ok();
        crate::common::drop_database(&self.url).await;
    }
}

pub async fn connect(url: &str) -> Database {
    Database::connect(url, &DatabaseSettings::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"))
}

/// Every case runs once per backend, as `<backend>::<case>`.
macro_rules! suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if !crate::common::backend::database(stringify!($backend)) {
                        return;
                    }
                    let fixture = super::Fixture::new(stringify!($backend)).await;
                    super::cases::$case(&fixture).await;
                    fixture.close().await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        suite!(sqlite: $($case),*);
        suite!(postgres: $($case),*);
        suite!(mysql: $($case),*);
    };
}

every_backend!(
    an_account_is_found_by_its_case_folded_login_and_by_id,
    a_login_matches_only_its_exact_canonical_spelling,
    batched_lookups_answer_every_caller_with_its_own_account,
    the_canonical_logins_migration_refolds_rows_written_by_older_versions,
    a_duplicate_login_is_a_conflict,
    password_history_is_newest_first_and_limited,
    upgrade_hash_is_a_compare_and_set,
    a_reset_applies_once_and_writes_hash_history_audit_outbox_and_notice,
    a_stale_reset_writes_only_an_audit_row,
    the_same_flow_cannot_reset_twice,
    history_is_trimmed_to_history_keep,
    audit_records_are_stored_and_clipped,
    due_deliveries_are_leased_until_the_lease_runs_out,
    concurrent_claimers_never_get_the_same_delivery,
    delivered_and_dropped_messages_lose_their_ciphertext,
    a_rescheduled_delivery_waits_for_its_next_attempt,
    timestamps_round_trip_with_sub_millisecond_precision,
    migrations_are_idempotent,
    four_replicas_migrating_a_fresh_database_at_once_all_succeed,
    webhook_fan_out_is_idempotent_filtered_and_starts_at_registration,
    webhook_only_the_oldest_pending_event_of_an_account_is_due,
    webhook_an_event_committed_out_of_id_order_is_picked_up_late,
    webhook_replicas_never_lease_the_same_delivery,
    webhook_giving_up_is_audited_and_unblocks_the_account,
    webhook_sweep_removes_finished_rows_only_below_the_watermark,
);

/// On the backends with a server (SQLite has none to cut a connection), as
/// `an_idle_connection_cut_by_the_server::<backend>`.
mod an_idle_connection_cut_by_the_server {
    async fn case(backend: &'static str) {
        if !crate::common::backend::database(backend) {
            return;
        }
        let fixture = super::Fixture::new(backend).await;
        super::cases::a_connection_the_server_closed_while_idle_is_replaced_not_failed(&fixture)
            .await;
        fixture.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        case("postgres").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        case("mysql").await;
    }
}

/// The `WebhookStore` cases, in their own file.
mod webhook_cases;

fn at(seconds: i64) -> DateTime<Utc> {
    // A fixed instant with a sub-second part, so precision loss would show.
    Utc.timestamp_opt(1_800_000_000 + seconds, 123_456_000)
        .single()
        .unwrap()
}

fn new_account(login: &str, hash: &str) -> NewAccount {
    NewAccount {
        id: uuid::Uuid::new_v4().to_string(),
        login_id: login.to_owned(),
        login_normalized: canonical_login(login),
        email: login.to_lowercase(),
        phone: Some("+46700000000".to_owned()),
        password_hash: hash.to_owned(),
        created_at: at(0),
    }
}

fn audit(event: &'static str, account_id: &str, flow_id: &str) -> AuditRecord {
    AuditRecord {
        at: at(1),
        event,
        account_id: Some(account_id.to_owned()),
        flow_id: Some(flow_id.to_owned()),
        login_key: Some("login-key".to_owned()),
        client_ip: Some("192.0.2.1".to_owned()),
        user_agent: Some("conformance".to_owned()),
        result: "ok",
        detail: None,
    }
}

fn sealed(id: &str, created_at: DateTime<Utc>) -> SealedDelivery {
    SealedDelivery {
        id: id.to_owned(),
        kind: "code".to_owned(),
        ciphertext: vec![0xA5; 48],
        not_after: created_at + chrono::Duration::minutes(10),
        created_at,
        account_id: None,
    }
}

fn commit(
    account_id: &str,
    flow_id: &str,
    expected_password_version: i64,
    new_hash: &str,
    changed_at: DateTime<Utc>,
) -> ResetCommit {
    ResetCommit {
        account_id: account_id.to_owned(),
        flow_id: flow_id.to_owned(),
        expected_password_version,
        new_hash: new_hash.to_owned(),
        changed_at,
        history_keep: 10,
        event_id: uuid::Uuid::new_v4().to_string(),
        event_payload: format!(r#"{{"account_id":"{account_id}"}}"#),
        audit: audit("recovery.password_reset", account_id, flow_id),
        notice: Some(sealed(&uuid::Uuid::new_v4().to_string(), changed_at)),
        device_token: ("0".repeat(64), changed_at),
    }
}

fn flow_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Row counts of everything a reset writes, for one account.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Rows {
    history: u64,
    audit: u64,
    outbox: u64,
    deliveries: u64,
}

async fn rows(db: &Database, account_id: &str) -> Rows {
    let conn = db.connection();
    Rows {
        history: password_history::Entity::find()
            .filter(password_history::Column::AccountId.eq(account_id))
            .count(conn)
            .await
            .unwrap(),
        audit: audit_event::Entity::find()
            .filter(audit_event::Column::AccountId.eq(account_id))
            .count(conn)
            .await
            .unwrap(),
        outbox: outbox::Entity::find()
            .filter(outbox::Column::AggregateId.eq(account_id))
            .count(conn)
            .await
            .unwrap(),
        // Each test has its own database: every delivery row is this test's.
        deliveries: delivery::Entity::find().count(conn).await.unwrap(),
    }
}

#[track_caller]
fn assert_close(actual: DateTime<Utc>, expected: DateTime<Utc>, what: &str) {
    let drift = (actual - expected).num_microseconds().unwrap().abs();
    assert!(
        drift < 1_000,
        "{what}: stored {expected}, read back {actual} (drift {drift} µs)"
    );
}

mod cases {
    pub use super::webhook_cases::*;
    use super::*;

    pub async fn an_account_is_found_by_its_case_folded_login_and_by_id(f: &Fixture) {
        let db = &f.db;
        let created = db
            .create_account(new_account("Mixed.Case@Example.COM", "h0"))
            .await
            .unwrap();
        assert_eq!(created.password_version, 0);

        let found = db
            .find_by_login("mixed.case@example.com")
            .await
            .unwrap()
            .expect("found by the case-folded key");
        assert_eq!(found.id, created.id);
        assert_eq!(found.login_id, "Mixed.Case@Example.COM", "stored as typed");
        assert_eq!(found.email, "mixed.case@example.com");
        assert_eq!(found.phone.as_deref(), Some("+46700000000"));
        assert_eq!(found.password_hash, "h0");
        assert_eq!(found.password_changed_at, None);
        assert_eq!(found.password_version, 0);

        let by_id = db.find_by_id(&created.id).await.unwrap().unwrap();
        assert_eq!(by_id.login_id, found.login_id);
        assert!(db.find_by_id(&flow_id()).await.unwrap().is_none());
        assert!(
            db.find_by_login("nobody@example.com")
                .await
                .unwrap()
                .is_none()
        );
        // The creation hash is the first history entry.
        assert_eq!(
            db.password_history(&created.id, 5).await.unwrap(),
            vec!["h0"]
        );
    }

    /// On MariaDB's default (accent-insensitive) collation `jöhn@` found John's account.
    /// Case and compatibility forms are one login; accents and combining marks are not.
    pub async fn a_login_matches_only_its_exact_canonical_spelling(f: &Fixture) {
        let db = &f.db;
        let john = db
            .create_account(new_account("John.Strasse@example.com", "h0"))
            .await
            .unwrap();
        for same in [
            "john.strasse@example.com",
            "JOHN.STRASSE@EXAMPLE.COM",
            "  John.Straße@example.com ",
            "\u{ff2a}\u{ff4f}\u{ff48}\u{ff4e}.strasse@example.com", // full-width "Ｊｏｈｎ"
        ] {
            let found = db.find_by_login(&canonical_login(same)).await.unwrap();
            assert_eq!(found.map(|a| a.id), Some(john.id.clone()), "{same:?}");
        }
        for other in [
            "jöhn.strasse@example.com",
            "jóhn.strasse@example.com",
            "jo\u{308}hn.strasse@example.com", // combining diaeresis
            "john.strässe@example.com",
            "\u{458}ohn.strasse@example.com", // Cyrillic "ј"
        ] {
            let found = db.find_by_login(&canonical_login(other)).await.unwrap();
            assert!(found.is_none(), "{other:?} found John's account");
        }
        // Uniqueness uses the same exact comparison: an accented login is another account,
        // a full-width or case variant is John's login again.
        db.create_account(new_account("jöhn.strasse@example.com", "h1"))
            .await
            .expect("an accented login is a different login");
        let variant = db
            .create_account(new_account("ＪＯＨＮ.STRASSE@example.com", "h2"))
            .await;
        assert!(matches!(variant, Err(RepoError::Conflict)), "{variant:?}");
        // A precomposed and a combining "ö" are one login (NFKC composes).
        let combined = db
            .create_account(new_account("jo\u{308}hn.strasse@example.com", "h3"))
            .await;
        assert!(matches!(combined, Err(RepoError::Conflict)), "{combined:?}");
    }

    /// The server's lookups by login are coalesced into batched queries: hundreds of
    /// concurrent callers, known and unknown logins, repeats, and spellings that differ only by
    /// an accent, each get exactly the answer a lookup on its own gives.
    pub async fn batched_lookups_answer_every_caller_with_its_own_account(f: &Fixture) {
        let mut logins: Vec<String> = (0..24)
            .map(|i| format!("user{i}.strasse@example.com"))
            .collect();
        for login in &logins {
            f.db.create_account(new_account(login, "h0")).await.unwrap();
        }
        f.db.create_account(new_account("jöhn.strasse@example.com", "h0"))
            .await
            .unwrap();
        logins.extend([
            canonical_login("jöhn.strasse@example.com"),
            canonical_login("john.strasse@example.com"), // no such account: an accent apart
            canonical_login("jo\u{308}hn.strasse@example.com"), // jöhn's, composed
            "nobody@example.com".to_owned(),
            "user1.strasse@example.co".to_owned(),
        ]);
        let mut expected = Vec::new();
        for login in &logins {
            let alone = f.db.find_by_login(login).await.unwrap();
            expected.push(alone.map(|a| a.id));
        }
        assert_eq!(expected.iter().filter(|id| id.is_some()).count(), 26);

        let batched = f.db.clone().with_batched_lookups();
        let mut calls = tokio::task::JoinSet::new();
        for round in 0..12 {
            for (i, login) in logins.iter().enumerate() {
                let (db, login) = (batched.clone(), login.clone());
                calls.spawn(async move {
                    let found = db.find_by_login(&login).await.unwrap();
                    (round, i, found.map(|a| (a.id, a.login_id)))
                });
            }
        }
        let mut answered = 0;
        while let Some(joined) = calls.join_next().await {
            let (round, i, found) = joined.unwrap();
            let id = found.as_ref().map(|(id, _)| id.clone());
            assert_eq!(id, expected[i], "round {round}: {}", logins[i]);
            if let Some((_, login_id)) = found {
                assert_eq!(canonical_login(&login_id), logins[i]);
            }
            answered += 1;
        }
        assert_eq!(answered, 12 * logins.len());
    }

    /// Older versions stored the login lower-cased only ("straße"); the migration re-folds it.
    pub async fn the_canonical_logins_migration_refolds_rows_written_by_older_versions(
        f: &Fixture,
    ) {
        let db = &f.db;
        let mut old = new_account("Old.Straße@example.com", "h0");
        old.login_normalized = "old.straße@example.com".to_owned();
        let created = db.create_account(old).await.unwrap();
        assert!(
            db.find_by_login(&canonical_login("old.strasse@example.com"))
                .await
                .unwrap()
                .is_none()
        );
        db.connection()
            .execute_unprepared(
                "DELETE FROM seaql_migrations WHERE version = 'm20261202_000001_canonical_logins'",
            )
            .await
            .unwrap();
        db.migrate().await.expect("the migration runs again");
        let found = db
            .find_by_login(&canonical_login("OLD.STRASSE@example.com"))
            .await
            .unwrap();
        assert_eq!(found.map(|a| a.id), Some(created.id));
    }

    pub async fn a_duplicate_login_is_a_conflict(f: &Fixture) {
        let db = &f.db;
        let first = db
            .create_account(new_account("dup@example.com", "h0"))
            .await
            .unwrap();
        let again = db
            .create_account(new_account("DUP@Example.com", "other"))
            .await;
        assert!(
            matches!(again, Err(RepoError::Conflict)),
            "a login differing only in case is the same login: {again:?}"
        );
        // The loser wrote nothing (its history row was in the same transaction).
        let accounts = account::Entity::find()
            .count(db.connection())
            .await
            .unwrap();
        assert_eq!(accounts, 1);
        let history = password_history::Entity::find()
            .count(db.connection())
            .await
            .unwrap();
        assert_eq!(history, 1);
        let found = db.find_by_login("dup@example.com").await.unwrap().unwrap();
        assert_eq!(found.id, first.id);
        assert_eq!(found.password_hash, "h0");
    }

    pub async fn password_history_is_newest_first_and_limited(f: &Fixture) {
        let db = &f.db;
        let acc = db
            .create_account(new_account("history@example.com", "h0"))
            .await
            .unwrap();
        for (version, hash) in ["h1", "h2", "h3"].into_iter().enumerate() {
            let version = i64::try_from(version).unwrap();
            let outcome = db
                .commit_reset(commit(&acc.id, &flow_id(), version, hash, at(10 + version)))
                .await
                .unwrap();
            assert_eq!(outcome, ResetOutcome::Applied);
        }
        assert_eq!(
            db.password_history(&acc.id, 2).await.unwrap(),
            vec!["h3", "h2"]
        );
        assert_eq!(
            db.password_history(&acc.id, 10).await.unwrap(),
            vec!["h3", "h2", "h1", "h0"]
        );
        assert!(
            db.password_history(&flow_id(), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn upgrade_hash_is_a_compare_and_set(f: &Fixture) {
        let db = &f.db;
        let acc = db
            .create_account(new_account("rehash@example.com", "old-params"))
            .await
            .unwrap();
        assert!(
            !db.upgrade_hash(&acc.id, "not-the-current-hash", "new-params")
                .await
                .unwrap(),
            "a rehash based on a stale hash must not land"
        );
        assert_eq!(
            db.find_by_id(&acc.id).await.unwrap().unwrap().password_hash,
            "old-params"
        );
        assert!(
            db.upgrade_hash(&acc.id, "old-params", "new-params")
                .await
                .unwrap()
        );
        let after = db.find_by_id(&acc.id).await.unwrap().unwrap();
        assert_eq!(after.password_hash, "new-params");
        assert_eq!(
            after.password_version, 0,
            "a rehash is not a password change"
        );
        assert!(
            !db.upgrade_hash(&flow_id(), "old-params", "x")
                .await
                .unwrap()
        );
    }

    pub async fn a_reset_applies_once_and_writes_hash_history_audit_outbox_and_notice(f: &Fixture) {
        let db = &f.db;
        let acc = db
            .create_account(new_account("reset@example.com", "h0"))
            .await
            .unwrap();
        let before = rows(db, &acc.id).await;
        let flow = flow_id();
        let reset = commit(&acc.id, &flow, 0, "h1", at(100));
        let event_id = reset.event_id.clone();
        let notice_id = reset.notice.as_ref().unwrap().id.clone();
        assert_eq!(db.commit_reset(reset).await.unwrap(), ResetOutcome::Applied);

        let after = db.find_by_id(&acc.id).await.unwrap().unwrap();
        assert_eq!(after.password_hash, "h1");
        assert_eq!(after.password_version, 1);
        assert_close(
            after.password_changed_at.unwrap(),
            at(100),
            "password_changed_at",
        );
        assert_eq!(
            rows(db, &acc.id).await,
            Rows {
                history: before.history + 1,
                audit: before.audit + 1,
                outbox: before.outbox + 1,
                deliveries: before.deliveries + 1,
            }
        );
        let conn = db.connection();
        let history = password_history::Entity::find()
            .filter(password_history::Column::RecoveryFlowId.eq(flow.clone()))
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(history.password_hash, "h1");
        let audit = audit_event::Entity::find()
            .filter(audit_event::Column::FlowId.eq(flow.clone()))
            .all(conn)
            .await
            .unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].event, "recovery.password_reset");
        assert_eq!(audit[0].result, "ok");
        let event = outbox::Entity::find()
            .filter(outbox::Column::EventId.eq(event_id))
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.event_type, "password.changed");
        assert_eq!(event.aggregate_id, acc.id);
        assert_eq!(event.published_at, None);
        let notice = delivery::Entity::find_by_id(notice_id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(notice.status, "pending");
        assert_eq!(notice.ciphertext, vec![0xA5; 48]);
    }

    pub async fn a_stale_reset_writes_only_an_audit_row(f: &Fixture) {
        let db = &f.db;
        let acc = db
            .create_account(new_account("stale@example.com", "h0"))
            .await
            .unwrap();
        let winner = commit(&acc.id, &flow_id(), 0, "winner", at(100));
        assert_eq!(
            db.commit_reset(winner).await.unwrap(),
            ResetOutcome::Applied
        );
        let before = rows(db, &acc.id).await;

        // Another flow that started before the winner's change: it saw version 0.
        let loser_flow = flow_id();
        let loser = commit(&acc.id, &loser_flow, 0, "loser", at(101));
        assert_eq!(db.commit_reset(loser).await.unwrap(), ResetOutcome::Stale);

        let after = db.find_by_id(&acc.id).await.unwrap().unwrap();
        assert_eq!(after.password_hash, "winner");
        assert_eq!(after.password_version, 1);
        assert_eq!(
            rows(db, &acc.id).await,
            Rows {
                audit: before.audit + 1,
                ..before
            },
            "only the audit row of the refused attempt"
        );
        let audit = audit_event::Entity::find()
            .filter(audit_event::Column::FlowId.eq(loser_flow))
            .one(db.connection())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(audit.event, "recovery.password_reset");
        assert_eq!(audit.result, "stale");
    }

    pub async fn the_same_flow_cannot_reset_twice(f: &Fixture) {
        let db = &f.db;
        let acc = db
            .create_account(new_account("twice@example.com", "h0"))
            .await
            .unwrap();
        let flow = flow_id();
        assert_eq!(
            db.commit_reset(commit(&acc.id, &flow, 0, "first", at(100)))
                .await
                .unwrap(),
            ResetOutcome::Applied
        );
        let before = rows(db, &acc.id).await;
        // Even with the current version (a retried call after a lost reply), the flow id is
        // unique in the history: the second write is refused and rolled back whole.
        assert_eq!(
            db.commit_reset(commit(&acc.id, &flow, 1, "second", at(101)))
                .await
                .unwrap(),
            ResetOutcome::Stale
        );
        let after = db.find_by_id(&acc.id).await.unwrap().unwrap();
        assert_eq!(after.password_hash, "first");
        assert_eq!(after.password_version, 1);
        assert_eq!(
            rows(db, &acc.id).await,
            Rows {
                audit: before.audit + 1,
                ..before
            }
        );
        let results: Vec<String> = audit_event::Entity::find()
            .filter(audit_event::Column::FlowId.eq(flow))
            .all(db.connection())
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.result)
            .collect();
        assert_eq!(results.len(), 2);
        assert!(results.contains(&"ok".to_owned()) && results.contains(&"stale".to_owned()));
    }

    pub async fn history_is_trimmed_to_history_keep(f: &Fixture) {
        let db = &f.db;
        let acc = db
            .create_account(new_account("trim@example.com", "h0"))
            .await
            .unwrap();
        let bystander = db
            .create_account(new_account("bystander@example.com", "b0"))
            .await
            .unwrap();
        for version in 0..4 {
            let mut reset = commit(
                &acc.id,
                &flow_id(),
                version,
                &format!("h{}", version + 1),
                at(10 + version),
            );
            reset.history_keep = 3;
            assert_eq!(db.commit_reset(reset).await.unwrap(), ResetOutcome::Applied);
        }
        assert_eq!(
            db.password_history(&acc.id, 100).await.unwrap(),
            vec!["h4", "h3", "h2"]
        );
        assert_eq!(
            db.password_history(&bystander.id, 100).await.unwrap(),
            vec!["b0"],
            "another account's history is untouched"
        );
    }

    pub async fn audit_records_are_stored_and_clipped(f: &Fixture) {
        let db = &f.db;
        let flow = flow_id();
        let mut record = audit("recovery.started", "acc-1", &flow);
        record.user_agent = Some("x".repeat(1_000));
        record.detail = Some("d".repeat(1_000));
        record.client_ip = Some("2001:db8::1".to_owned());
        record.result = "ok";
        db.record_audit(record).await.unwrap();
        let mut anonymous = audit("recovery.started", "unused", &flow);
        anonymous.account_id = None;
        anonymous.result = "unknown_login";
        db.record_audit(anonymous).await.unwrap();

        let stored = audit_event::Entity::find()
            .filter(audit_event::Column::FlowId.eq(flow))
            .all(db.connection())
            .await
            .unwrap();
        assert_eq!(stored.len(), 2);
        let known = stored.iter().find(|row| row.account_id.is_some()).unwrap();
        assert_eq!(known.event, "recovery.started");
        assert_eq!(known.account_id.as_deref(), Some("acc-1"));
        assert_eq!(known.client_ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(known.user_agent.as_ref().unwrap().len(), 256);
        assert_eq!(known.detail.as_ref().unwrap().len(), 256);
        assert_close(known.at, at(1), "audit time");
        let unknown = stored.iter().find(|row| row.account_id.is_none()).unwrap();
        assert_eq!(unknown.result, "unknown_login");
    }

    pub async fn due_deliveries_are_leased_until_the_lease_runs_out(f: &Fixture) {
        let db = &f.db;
        let now = at(1_000);
        db.enqueue(sealed("due-1", now - chrono::Duration::seconds(5)))
            .await
            .unwrap();
        db.enqueue(sealed("due-2", now)).await.unwrap();
        db.enqueue(sealed("later", now + chrono::Duration::seconds(30)))
            .await
            .unwrap();
        let lease_until = now + chrono::Duration::seconds(60);

        let claimed = db.claim_due(now, lease_until, 10).await.unwrap();
        let ids: HashSet<String> = claimed.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids, HashSet::from(["due-1".to_owned(), "due-2".to_owned()]));
        let first = claimed.iter().find(|d| d.id == "due-1").unwrap();
        assert_eq!(first.kind, "code");
        assert_eq!(first.ciphertext, vec![0xA5; 48]);
        assert_eq!(first.attempts, 0);
        assert_close(
            first.not_after,
            now + chrono::Duration::seconds(595),
            "not_after",
        );

        // Leased: another poll inside the lease gets nothing but the newly due message.
        let inside = db
            .claim_due(now + chrono::Duration::seconds(31), lease_until, 10)
            .await
            .unwrap();
        let ids: Vec<String> = inside.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids, vec!["later"]);
        // A worker that died holding the lease: after it runs out, the message is due again.
        let expired = db
            .claim_due(
                lease_until + chrono::Duration::seconds(1),
                lease_until + chrono::Duration::seconds(61),
                10,
            )
            .await
            .unwrap();
        assert_eq!(expired.len(), 3);
        // The limit is honoured.
        let limited = db
            .claim_due(
                lease_until + chrono::Duration::seconds(200),
                lease_until + chrono::Duration::seconds(300),
                2,
            )
            .await
            .unwrap();
        assert_eq!(limited.len(), 2);
    }

    pub async fn concurrent_claimers_never_get_the_same_delivery(f: &Fixture) {
        let now = at(2_000);
        for n in 0..24 {
            f.db.enqueue(sealed(&format!("m-{n:02}"), now))
                .await
                .unwrap();
        }
        // Four replicas, each with its own pool, polling at the same instant.
        let url = f.url.clone();
        let mut workers = Vec::new();
        for _ in 0..4 {
            let replica = connect(&url).await;
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..3 {
                    let claimed = replica
                        .claim_due(now, now + chrono::Duration::seconds(60), 8)
                        .await
                        .unwrap();
                    mine.extend(claimed.into_iter().map(|d| d.id));
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
        assert_eq!(
            unique.len(),
            all.len(),
            "a delivery was leased twice: {all:?}"
        );
        assert_eq!(all.len(), 24, "every due delivery was claimed once");
    }

    pub async fn delivered_and_dropped_messages_lose_their_ciphertext(f: &Fixture) {
        let db = &f.db;
        let now = at(3_000);
        db.enqueue(sealed("sent", now)).await.unwrap();
        db.enqueue(sealed("expired", now)).await.unwrap();
        db.claim_due(now, now + chrono::Duration::seconds(60), 10)
            .await
            .unwrap();
        db.mark_delivered("sent", now + chrono::Duration::seconds(1))
            .await
            .unwrap();
        db.mark_dropped(
            "expired",
            "code expired",
            now + chrono::Duration::seconds(2),
        )
        .await
        .unwrap();

        let conn = db.connection();
        let sent = delivery::Entity::find_by_id("sent".to_owned())
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sent.status, "delivered");
        assert!(sent.ciphertext.is_empty(), "nothing left to decrypt");
        assert_close(
            sent.finished_at.unwrap(),
            now + chrono::Duration::seconds(1),
            "finished_at",
        );
        let dropped = delivery::Entity::find_by_id("expired".to_owned())
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dropped.status, "dropped");
        assert!(dropped.ciphertext.is_empty());
        assert_eq!(dropped.last_error.as_deref(), Some("code expired"));
        // Finished messages are never claimed again, even long after their lease.
        let later = now + chrono::Duration::days(1);
        assert!(
            db.claim_due(later, later + chrono::Duration::seconds(60), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn a_rescheduled_delivery_waits_for_its_next_attempt(f: &Fixture) {
        let db = &f.db;
        let now = at(4_000);
        db.enqueue(sealed("retry", now)).await.unwrap();
        let claimed = db
            .claim_due(now, now + chrono::Duration::seconds(60), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let next = now + chrono::Duration::seconds(30);
        db.reschedule("retry", 1, next, &"smtp: 451 try later ".repeat(40))
            .await
            .unwrap();

        // The lease is released, but the message is not due before its next attempt.
        assert!(
            db.claim_due(
                next - chrono::Duration::seconds(1),
                next + chrono::Duration::seconds(60),
                10
            )
            .await
            .unwrap()
            .is_empty()
        );
        let again = db
            .claim_due(next, next + chrono::Duration::seconds(60), 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        assert_eq!(again[0].ciphertext, vec![0xA5; 48], "kept for the retry");
        let row = delivery::Entity::find_by_id("retry".to_owned())
            .one(db.connection())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.last_error.unwrap().chars().count(), 256, "clipped");
    }

    pub async fn timestamps_round_trip_with_sub_millisecond_precision(f: &Fixture) {
        let db = &f.db;
        // Microseconds are what PostgreSQL keeps; nanoseconds beyond that may be cut.
        let created_at = Utc
            .timestamp_opt(1_800_000_000, 987_654_000)
            .single()
            .unwrap();
        let mut new = new_account("time@example.com", "h0");
        new.created_at = created_at;
        let acc = db.create_account(new).await.unwrap();
        let read = db.find_by_id(&acc.id).await.unwrap().unwrap();
        assert_close(read.created_at, created_at, "created_at");

        let changed_at = Utc
            .timestamp_opt(1_800_000_100, 500_001_000)
            .single()
            .unwrap();
        db.commit_reset(commit(&acc.id, &flow_id(), 0, "h1", changed_at))
            .await
            .unwrap();
        let read = db.find_by_id(&acc.id).await.unwrap().unwrap();
        assert_close(
            read.password_changed_at.unwrap(),
            changed_at,
            "password_changed_at",
        );

        // Nullable and non-null columns of the delivery queue alike.
        let message = sealed("timed", created_at);
        db.enqueue(message).await.unwrap();
        let row = delivery::Entity::find_by_id("timed".to_owned())
            .one(db.connection())
            .await
            .unwrap()
            .unwrap();
        assert_close(row.created_at, created_at, "deliveries.created_at");
        assert_close(
            row.not_after,
            created_at + chrono::Duration::minutes(10),
            "deliveries.not_after",
        );
    }

    /// A database restart (here: the server ending every session of the database) breaks the
    /// pool's idle connections; the next call after `PING_IF_IDLE_FOR` gets a working one.
    pub async fn a_connection_the_server_closed_while_idle_is_replaced_not_failed(f: &Fixture) {
        f.db.create_account(new_account("idle@example.com", "h0"))
            .await
            .unwrap();
        let admin = sea_orm::Database::connect(&f.url).await.unwrap();
        let backend = admin.get_database_backend();
        let sessions = match backend {
            sea_orm::DbBackend::Postgres => {
                "SELECT pid::bigint AS id FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()"
            }
            _ => {
                "SELECT CAST(id AS SIGNED) AS id FROM information_schema.processlist \
                 WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            }
        };
        let rows = admin
            .query_all_raw(Statement::from_string(backend, sessions.to_owned()))
            .await
            .unwrap();
        let ids: Vec<i64> = rows
            .iter()
            .map(|row| row.try_get::<i64>("", "id").unwrap())
            .collect();
        assert!(!ids.is_empty(), "the pool holds no idle connection to cut");
        for id in ids {
            let kill = match backend {
                sea_orm::DbBackend::Postgres => format!("SELECT pg_terminate_backend({id})"),
                _ => format!("KILL {id}"),
            };
            admin
                .execute_raw(Statement::from_string(backend, kill))
                .await
                .unwrap();
        }
        admin.close().await.ok();
        tokio::time::sleep(recovery_service::db::PING_IF_IDLE_FOR + Duration::from_millis(200))
            .await;
        let found =
            f.db.find_by_login(&canonical_login("idle@example.com"))
                .await;
        assert!(
            matches!(found, Ok(Some(_))),
            "the first call after the cut failed: {found:?}"
        );
    }

    pub async fn migrations_are_idempotent(f: &Fixture) {
        f.db.migrate().await.unwrap();
        f.db.migrate().await.unwrap();
        f.db.create_account(new_account("after-remigrate@example.com", "h0"))
            .await
            .unwrap();
    }

    pub async fn four_replicas_migrating_a_fresh_database_at_once_all_succeed(f: &Fixture) {
        let url = f.fresh_url().await;
        let mut replicas = Vec::new();
        for _ in 0..4 {
            replicas.push(connect(&url).await);
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(replicas.len()));
        let mut handles = Vec::new();
        for replica in replicas {
            let barrier = barrier.clone();
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let result = replica.migrate().await;
                (replica, result)
            }));
        }
        let mut done = Vec::new();
        for handle in handles {
            let (replica, result) = handle.await.unwrap();
            if let Err(error) = &result {
                panic!("a replica's migration failed: {error:#}");
            }
            done.push(replica);
        }
        // The schema is complete and usable, and the migration is recorded exactly once.
        let db = &done[0];
        let conn = db.connection();
        for table in [
            "accounts",
            "password_history",
            "audit_events",
            "outbox",
            "deliveries",
            "webhook_deliveries",
            "webhook_endpoints",
        ] {
            conn.query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                format!("SELECT COUNT(*) FROM {table}"),
            ))
            .await
            .unwrap_or_else(|e| panic!("table {table} missing after concurrent migration: {e}"));
        }
        let recorded = conn
            .query_all_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT version FROM seaql_migrations".to_owned(),
            ))
            .await
            .unwrap();
        assert_eq!(
            recorded.len(),
            <recovery_service::db::migration::Migrator as MigratorTrait>::migrations().len(),
            "each migration recorded once"
        );
        db.create_account(new_account("replica@example.com", "h0"))
            .await
            .unwrap();
        for replica in done {
            replica.close().await.ok();
        }
        crate::common::drop_database(&url).await;
    }
}
