//! Accounts, password history, audit trail, outbox and delivery queue in a relational database
//! through sea-orm: PostgreSQL in production, SQLite embedded, MySQL/MariaDB supported. The
//! same code and migrations serve all three.
//!
//! Over 600 lines on purpose: one adapter implementing the three database ports (accounts,
//! delivery queue, outbox) over one connection and one transaction helper; split, each part
//! would need the others' private helpers.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, ConnectionTrait, Database as SeaDatabase, DatabaseConnection,
    DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde::{Deserialize, Serialize};

use crate::clock::{DAY_SECS, MAX_WAIT_MS};
use crate::recovery::ports::{
    Account, AccountData, AccountErasure, AccountRepository, AuditRecord, DeliveryQueue,
    NewAccount, OutboxEvent, OutboxStore, QueuedDelivery, RepoError, ResetCommit, ResetOutcome,
    SealedDelivery,
};

mod audit_log;
pub mod entities;
pub mod lifecycle;
mod login_lookups;
pub mod migration;
pub mod stats;
pub mod webhooks;

pub use lifecycle::{RetentionSettings, RetentionSweeper, SweepReport};

use entities::{account, audit_event, delivery, outbox, password_history};

/// Pool and timeout settings (`[database]` in the config file). Every wait is bounded, so an
/// unreachable database turns into `UNAVAILABLE` within a known time instead of a hung call.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Connections per replica; the database's own limit must cover every replica's pool.
    #[schemars(range(min = 1, max = 1000))]
    pub max_connections: u32,
    /// Connections kept open when idle (0: open on demand); at most
    /// `database.max_connections`.
    #[schemars(range(min = 0, max = 1000))]
    pub min_connections: u32,
    /// Milliseconds to open one connection (TCP + TLS + authentication).
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub connect_timeout_ms: u64,
    /// Milliseconds waiting for a pooled connection, including reconnect attempts while the
    /// database is down: the longest a call waits before it is answered `UNAVAILABLE`.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub acquire_timeout_ms: u64,
    /// Milliseconds after which idle connections are closed (0: never), so a pool shrinks
    /// after a burst.
    #[schemars(range(min = 0, max = DAY_SECS * 1000))]
    pub idle_timeout_ms: u64,
    /// Milliseconds after which connections are recycled (0: never): lets fail-overs and DNS
    /// changes take effect on a long-running replica.
    #[schemars(range(min = 0, max = DAY_SECS * 1000))]
    pub max_lifetime_ms: u64,
    /// PostgreSQL `statement_timeout` in milliseconds (0: none): a runaway statement is
    /// cancelled by the server. MySQL and SQLite ignore it.
    #[schemars(range(min = 0, max = MAX_WAIT_MS))]
    pub statement_timeout_ms: u64,
    /// Milliseconds: audit rows are group-committed, written at most this long after they were
    /// recorded, many in one INSERT. It bounds what a crash (not a clean shutdown, which
    /// flushes) can lose. 0: one synchronous INSERT per event.
    #[schemars(range(min = 0, max = 1_000))]
    pub audit_flush_interval_ms: u64,
    /// Most rows in one audit INSERT.
    #[schemars(range(min = 1, max = 1_000))]
    pub audit_batch_rows: u32,
    /// Rows that may wait to be written; past that, recording an event waits for room (never
    /// drops it).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub audit_queue_rows: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 0,
            connect_timeout_ms: 5_000,
            acquire_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            max_lifetime_ms: 1_800_000,
            statement_timeout_ms: 30_000,
            audit_flush_interval_ms: 5,
            audit_batch_rows: 256,
            audit_queue_rows: 4_096,
        }
    }
}

/// A pooled connection idle at least this long is pinged before it is handed out. A database
/// restart or fail-over takes longer than this, so the connections it broke have been idle
/// that long when they are next used; a connection used within the last second before the
/// restart fails its one next call (UNAVAILABLE, which callers retry) and is then closed.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// 0 means "no limit" in the settings above.
fn optional_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[derive(Clone, Debug)]
pub struct Database {
    conn: DatabaseConnection,
    /// The group-commit writer of audit rows, once `start_audit_log` ran (the server does; the
    /// CLI and tests of the adapter write each row at once).
    audit: Option<audit_log::AuditLog>,
    /// Lookups by login coalesced into batches (see `login_lookups.rs`), once
    /// `with_batched_lookups` ran (the server does).
    lookups: Option<login_lookups::LoginLookups>,
}

/// Key of the PostgreSQL advisory lock that serialises migrations between replicas (any
/// constant works, as long as nothing else in the database uses it): "recover" in ASCII.
const PG_MIGRATION_LOCK: i64 = 0x0072_6563_6f76_6572;
/// Name of the MySQL/MariaDB user lock with the same role.
const MYSQL_MIGRATION_LOCK: &str = "recovery_migrations";
/// How long a replica waits for another one's migrations before giving up (and failing its
/// start, so the orchestrator restarts it).
const MIGRATION_LOCK_WAIT_SECS: u32 = 60;

/// Connection-level failures are retryable (`UNAVAILABLE`: the caller may try again, nothing
/// was written); everything else is a bug or a constraint and becomes `INTERNAL`.
fn classify(error: DbErr) -> RepoError {
    if is_unavailable(&error) {
        RepoError::Unavailable(anyhow::Error::new(error))
    } else {
        RepoError::Internal(anyhow::Error::new(error))
    }
}

fn is_unavailable(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    let runtime = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    let sea_orm::RuntimeErr::SqlxError(sqlx) = runtime else {
        // sea-orm's own runtime errors: only a connection error is a connectivity problem.
        return matches!(error, DbErr::Conn(_));
    };
    match sqlx.as_ref() {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::PoolTimedOut
        | SqlxError::PoolClosed
        | SqlxError::WorkerCrashed
        | SqlxError::Protocol(_) => true,
        SqlxError::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLSTATE (PostgreSQL, MySQL/MariaDB): class 08 connection exception, 57P01-03
            // server shutting down or starting, 53300 too many connections, 40001/40P01
            // serialization failure or deadlock (rolled back; a retry succeeds).
            let sqlstate = code.starts_with("08")
                || code.starts_with("57P0")
                || ["53300", "40001", "40P01"].contains(&code.as_ref());
            // MySQL/MariaDB numbers without a telling SQLSTATE: 1053 server shutdown, 1205
            // lock wait timeout.
            let mysql = db
                .try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| [1053, 1205].contains(&e.number()));
            // SQLite (extended result codes): busy or locked, another writer held on.
            let sqlite = db
                .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                .is_some_and(|_| ["5", "6", "261", "262", "517"].contains(&code.as_ref()));
            sqlstate || mysql || sqlite
        }
        _ => false,
    }
}

fn is_unique_violation(error: &DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

impl Database {
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> Result<Self, RepoError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(settings.max_connections.max(1))
            .min_connections(settings.min_connections)
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .idle_timeout(optional_ms(settings.idle_timeout_ms))
            .max_lifetime(optional_ms(settings.max_lifetime_ms))
            // A pooled connection idle for a while is checked before use, so one broken by a
            // database restart, a fail-over or a proxy's idle cut is replaced instead of failing
            // the call. A connection in steady use is not: pinging on every checkout was one
            // more round trip per query (SQLx also pings on every release), and on PostgreSQL
            // the ping is a query of its own.
            .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
            .sqlx_logging(false);
        if let Some(timeout) = optional_ms(settings.statement_timeout_ms) {
            options.statement_timeout(timeout);
        }
        // SQLite's settings are per connection, so they are set on every connection the pool
        // opens (an `execute_unprepared` after connecting reaches only one of them). A larger
        // `wal_autocheckpoint` was tried against the checkpoints' share of a wrong-code flood
        // and measured no different: the log of an append-mostly audit table is
        // mostly distinct new pages, which a checkpoint must copy however rarely it runs.
        options.map_sqlx_sqlite_opts(|sqlite| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            sqlite
                // Readers proceed during a write.
                .journal_mode(SqliteJournalMode::Wal)
                // Every commit is on disk before the call is answered: a password change must
                // survive a power cut (NORMAL would only survive a process crash).
                .synchronous(SqliteSynchronous::Full)
                // Concurrent writers wait instead of failing with SQLITE_BUSY.
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
        let conn = SeaDatabase::connect(options).await.map_err(classify)?;
        Ok(Self {
            conn,
            audit: None,
            lookups: None,
        })
    }

    /// Applies pending migrations. Safe when several replicas start at once: each takes a
    /// database-wide lock first, so one applies the migrations and the others then find
    /// nothing pending. (Without it they race: both see a migration pending, and the loser
    /// fails on `CREATE TABLE` catalog rows or on the `seaql_migrations` primary key.)
    ///
    /// The lock and the migrations share one transaction, which pins them to one connection:
    /// PostgreSQL's transaction-scoped advisory lock ends with it; SQLite's `BEGIN IMMEDIATE`
    /// is the database write lock itself; MySQL's user lock belongs to the session, so it is
    /// released explicitly (MySQL commits DDL implicitly, the transaction is only the pin).
    pub async fn migrate(&self) -> Result<(), RepoError> {
        match self.conn.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                let txn = self.conn.begin().await.map_err(classify)?;
                txn.execute_unprepared(&format!(
                    "SET LOCAL lock_timeout = '{MIGRATION_LOCK_WAIT_SECS}s'"
                ))
                .await
                .map_err(classify)?;
                txn.execute_unprepared(&format!(
                    "SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"
                ))
                .await
                .map_err(classify)?;
                migration::Migrator::up(&txn, None)
                    .await
                    .map_err(classify)?;
                txn.commit().await.map_err(classify)
            }
            sea_orm::DbBackend::MySql => {
                let txn = self.conn.begin().await.map_err(classify)?;
                let acquired = txn
                    .query_one_raw(Statement::from_string(
                        sea_orm::DbBackend::MySql,
                        format!(
                            "SELECT GET_LOCK('{MYSQL_MIGRATION_LOCK}', {MIGRATION_LOCK_WAIT_SECS}) AS acquired"
                        ),
                    ))
                    .await
                    .map_err(classify)?
                    .and_then(|row| row.try_get::<Option<i64>>("", "acquired").ok())
                    .flatten();
                if acquired != Some(1) {
                    return Err(RepoError::Unavailable(anyhow::anyhow!(
                        "another replica held the migration lock for {MIGRATION_LOCK_WAIT_SECS} s"
                    )));
                }
                let migrated = migration::Migrator::up(&txn, None).await;
                let released = txn
                    .execute_unprepared(&format!("DO RELEASE_LOCK('{MYSQL_MIGRATION_LOCK}')"))
                    .await;
                migrated.map_err(classify)?;
                released.map_err(classify)?;
                txn.commit().await.map_err(classify)
            }
            _ => {
                let txn = self
                    .conn
                    .begin_with_options(sea_orm::TransactionOptions {
                        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await
                    .map_err(classify)?;
                migration::Migrator::up(&txn, None)
                    .await
                    .map_err(classify)?;
                txn.commit().await.map_err(classify)
            }
        }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub async fn ping(&self) -> Result<(), RepoError> {
        self.conn.ping().await.map_err(classify)
    }

    /// From now on `record_audit` queues rows for the group-commit writer (unless
    /// `audit_flush_interval_ms` is 0). Needs a Tokio runtime; clones made afterwards share the
    /// writer.
    #[must_use]
    pub fn with_audit_log(mut self, settings: &DatabaseSettings) -> Self {
        self.audit = audit_log::AuditLog::start(self.conn.clone(), settings);
        self
    }

    /// From now on `find_by_login` is coalesced into batched queries (see `login_lookups.rs`).
    /// Needs a Tokio runtime; clones made afterwards share the batcher.
    #[must_use]
    pub fn with_batched_lookups(mut self) -> Self {
        self.lookups = Some(login_lookups::LoginLookups::start(self.conn.clone()));
        self
    }

    /// Returns once every audit row recorded before the call is written. The server calls it
    /// on shutdown; erasure and export call it so they see every row.
    pub async fn flush_audit(&self) {
        if let Some(audit) = &self.audit {
            audit.flush().await;
        }
    }

    pub async fn close(self) -> Result<(), RepoError> {
        self.conn.close().await.map_err(classify)
    }
}

fn to_account(model: account::Model) -> Account {
    Account {
        id: model.id,
        login_id: model.login_id,
        email: model.email,
        phone: model.phone,
        password_hash: model.password_hash,
        password_changed_at: model.password_changed_at,
        password_version: model.password_version,
        created_at: model.created_at,
        device_token: model.device_token_mac.zip(model.device_token_expires_at),
    }
}

/// The audit row and the outbox event of one change, written in the change's transaction.
async fn insert_audit_and_event(
    txn: &sea_orm::DatabaseTransaction,
    record: AuditRecord,
    event: OutboxEvent,
) -> Result<(), RepoError> {
    audit_event::Entity::insert(audit_row(record))
        .exec_without_returning(txn)
        .await
        .map_err(classify)?;
    outbox::Entity::insert(outbox::ActiveModel {
        id: NotSet,
        event_id: Set(event.event_id),
        event_type: Set(event.event_type),
        aggregate_id: Set(event.aggregate_id),
        payload: Set(event.payload),
        created_at: Set(event.created_at),
        published_at: Set(None),
    })
    .exec_without_returning(txn)
    .await
    .map_err(classify)?;
    Ok(())
}

fn audit_row(record: AuditRecord) -> audit_event::ActiveModel {
    fn clip(value: Option<String>, max: usize) -> Option<String> {
        value.map(|v| v.chars().take(max).collect())
    }
    audit_event::ActiveModel {
        id: NotSet,
        at: Set(record.at),
        event: Set(record.event.to_owned()),
        account_id: Set(record.account_id),
        flow_id: Set(record.flow_id),
        login_key: Set(record.login_key),
        client_ip: Set(clip(record.client_ip, 64)),
        user_agent: Set(clip(record.user_agent, 256)),
        result: Set(record.result.to_owned()),
        detail: Set(clip(record.detail, 256)),
    }
}

fn delivery_row(d: SealedDelivery) -> delivery::ActiveModel {
    delivery::ActiveModel {
        id: Set(d.id),
        kind: Set(d.kind),
        ciphertext: Set(d.ciphertext),
        not_after: Set(d.not_after),
        created_at: Set(d.created_at),
        attempts: Set(0),
        next_attempt_at: Set(d.created_at),
        locked_until: Set(None),
        status: Set("pending".to_owned()),
        finished_at: Set(None),
        last_error: Set(None),
        account_id: Set(d.account_id),
    }
}

#[async_trait]
impl AccountRepository for Database {
    async fn create_account(&self, new: NewAccount) -> Result<Account, RepoError> {
        let txn = self.conn.begin().await.map_err(classify)?;
        let row = account::ActiveModel {
            id: Set(new.id.clone()),
            login_id: Set(new.login_id.clone()),
            login_normalized: Set(new.login_normalized.clone()),
            email: Set(new.email.clone()),
            phone: Set(new.phone.clone()),
            password_hash: Set(new.password_hash.clone()),
            password_changed_at: Set(None),
            password_version: Set(0),
            created_at: Set(new.created_at),
            updated_at: Set(new.created_at),
            device_token_mac: Set(None),
            device_token_expires_at: Set(None),
        };
        if let Err(error) = account::Entity::insert(row)
            .exec_without_returning(&txn)
            .await
        {
            return Err(if is_unique_violation(&error) {
                RepoError::Conflict
            } else {
                classify(error)
            });
        }
        password_history::Entity::insert(password_history::ActiveModel {
            id: NotSet,
            account_id: Set(new.id.clone()),
            password_hash: Set(new.password_hash.clone()),
            recovery_flow_id: Set(None),
            created_at: Set(new.created_at),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok(Account {
            id: new.id,
            login_id: new.login_id,
            email: new.email,
            phone: new.phone,
            password_hash: new.password_hash,
            password_changed_at: None,
            password_version: 0,
            created_at: new.created_at,
            device_token: None,
        })
    }

    async fn find_by_login(&self, login_normalized: &str) -> Result<Option<Account>, RepoError> {
        if let Some(lookups) = &self.lookups
            && let Some(found) = lookups.find(login_normalized).await
        {
            return found.map(|found| found.map(to_account));
        }
        account::Entity::find()
            .filter(account::Column::LoginNormalized.eq(login_normalized))
            .one(&self.conn)
            .await
            .map(|found| found.map(to_account))
            .map_err(classify)
    }

    async fn find_by_id(&self, account_id: &str) -> Result<Option<Account>, RepoError> {
        account::Entity::find_by_id(account_id.to_owned())
            .one(&self.conn)
            .await
            .map(|found| found.map(to_account))
            .map_err(classify)
    }

    async fn password_history(
        &self,
        account_id: &str,
        limit: u32,
    ) -> Result<Vec<String>, RepoError> {
        password_history::Entity::find()
            .filter(password_history::Column::AccountId.eq(account_id))
            .order_by_desc(password_history::Column::Id)
            .limit(u64::from(limit))
            .all(&self.conn)
            .await
            .map(|rows| rows.into_iter().map(|row| row.password_hash).collect())
            .map_err(classify)
    }

    async fn upgrade_hash(
        &self,
        account_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, RepoError> {
        // Compare-and-set: a reset that landed meanwhile is never overwritten by a rehash.
        let result = account::Entity::update_many()
            .col_expr(account::Column::PasswordHash, Expr::value(new_hash))
            .filter(account::Column::Id.eq(account_id))
            .filter(account::Column::PasswordHash.eq(old_hash))
            .exec(&self.conn)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected == 1)
    }

    async fn commit_reset(&self, commit: ResetCommit) -> Result<ResetOutcome, RepoError> {
        let txn = self.conn.begin().await.map_err(classify)?;
        // The guard makes the database the arbiter between concurrent resets of one account:
        // a flow that saw an older password version is stale, so exactly one of two racing flows
        // wins and the other writes nothing but its audit row.
        let updated = account::Entity::update_many()
            .col_expr(
                account::Column::PasswordHash,
                Expr::value(commit.new_hash.clone()),
            )
            .col_expr(
                account::Column::PasswordChangedAt,
                Expr::value(Some(commit.changed_at)),
            )
            .col_expr(account::Column::UpdatedAt, Expr::value(commit.changed_at))
            // The browser that reset becomes the known device; any earlier one is forgotten.
            .col_expr(
                account::Column::DeviceTokenMac,
                Expr::value(Some(commit.device_token.0.clone())),
            )
            .col_expr(
                account::Column::DeviceTokenExpiresAt,
                Expr::value(Some(commit.device_token.1)),
            )
            .col_expr(
                account::Column::PasswordVersion,
                sea_orm::sea_query::ExprTrait::add(Expr::col(account::Column::PasswordVersion), 1),
            )
            .filter(account::Column::Id.eq(commit.account_id.clone()))
            .filter(account::Column::PasswordVersion.eq(commit.expected_password_version))
            .exec(&txn)
            .await
            .map_err(classify)?;
        if updated.rows_affected != 1 {
            txn.rollback().await.map_err(classify)?;
            let mut audit = commit.audit;
            audit.result = "stale";
            self.record_audit(audit).await?;
            return Ok(ResetOutcome::Stale);
        }
        let history = password_history::Entity::insert(password_history::ActiveModel {
            id: NotSet,
            account_id: Set(commit.account_id.clone()),
            password_hash: Set(commit.new_hash.clone()),
            recovery_flow_id: Set(Some(commit.flow_id.clone())),
            created_at: Set(commit.changed_at),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(error) = history {
            txn.rollback().await.map_err(classify)?;
            // The same flow already reset the password (a retried call after a lost reply):
            // refused like any stale attempt, and audited like one.
            return if is_unique_violation(&error) {
                let mut audit = commit.audit;
                audit.result = "stale";
                self.record_audit(audit).await?;
                Ok(ResetOutcome::Stale)
            } else {
                Err(classify(error))
            };
        }
        // Keep only the newest `history_keep` hashes: old hashes are a liability, not a record.
        let keep: Vec<i64> = password_history::Entity::find()
            .select_only()
            .column(password_history::Column::Id)
            .filter(password_history::Column::AccountId.eq(commit.account_id.clone()))
            .order_by_desc(password_history::Column::Id)
            .limit(u64::from(commit.history_keep.max(1)))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(classify)?;
        password_history::Entity::delete_many()
            .filter(password_history::Column::AccountId.eq(commit.account_id.clone()))
            .filter(password_history::Column::Id.is_not_in(keep))
            .exec(&txn)
            .await
            .map_err(classify)?;
        audit_event::Entity::insert(audit_row(commit.audit))
            .exec_without_returning(&txn)
            .await
            .map_err(classify)?;
        outbox::Entity::insert(outbox::ActiveModel {
            id: NotSet,
            event_id: Set(commit.event_id),
            event_type: Set("password.changed".to_owned()),
            aggregate_id: Set(commit.account_id),
            payload: Set(commit.event_payload),
            created_at: Set(commit.changed_at),
            published_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(classify)?;
        if let Some(notice) = commit.notice {
            delivery::Entity::insert(delivery_row(notice))
                .exec_without_returning(&txn)
                .await
                .map_err(classify)?;
        }
        txn.commit().await.map_err(classify)?;
        Ok(ResetOutcome::Applied)
    }

    async fn revoke_device_token(&self, account_id: &str) -> Result<(), RepoError> {
        account::Entity::update_many()
            .col_expr(
                account::Column::DeviceTokenMac,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                account::Column::DeviceTokenExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(account::Column::Id.eq(account_id))
            .exec(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn record_audit(&self, record: AuditRecord) -> Result<(), RepoError> {
        let record = match &self.audit {
            Some(audit) => match audit.record(record).await {
                Ok(()) => return Ok(()),
                // The writer is gone (runtime shutting down): write it here.
                Err(record) => record,
            },
            None => record,
        };
        audit_event::Entity::insert(audit_row(record))
            .exec_without_returning(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn record_audit_with_event(
        &self,
        record: AuditRecord,
        event: OutboxEvent,
    ) -> Result<(), RepoError> {
        let txn = self.conn.begin().await.map_err(classify)?;
        insert_audit_and_event(&txn, record, event).await?;
        txn.commit().await.map_err(classify)
    }

    async fn record_report(
        &self,
        account_id: &str,
        record: AuditRecord,
        event: OutboxEvent,
    ) -> Result<(), RepoError> {
        let txn = self.conn.begin().await.map_err(classify)?;
        account::Entity::update_many()
            .col_expr(
                account::Column::PasswordVersion,
                sea_orm::sea_query::ExprTrait::add(Expr::col(account::Column::PasswordVersion), 1),
            )
            .filter(account::Column::Id.eq(account_id))
            .exec(&txn)
            .await
            .map_err(classify)?;
        insert_audit_and_event(&txn, record, event).await?;
        txn.commit().await.map_err(classify)
    }

    async fn erase_account(&self, erasure: AccountErasure) -> Result<bool, RepoError> {
        // Rows still queued must be written first, or they would escape the stripping.
        self.flush_audit().await;
        lifecycle::erase(&self.conn, erasure).await
    }

    async fn export_account(
        &self,
        account_id: &str,
        login_key: Option<&str>,
    ) -> Result<Option<AccountData>, RepoError> {
        self.flush_audit().await;
        lifecycle::export(&self.conn, account_id, login_key).await
    }
}

#[async_trait]
impl DeliveryQueue for Database {
    async fn enqueue(&self, delivery: SealedDelivery) -> Result<(), RepoError> {
        delivery::Entity::insert(delivery_row(delivery))
            .exec_without_returning(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<QueuedDelivery>, RepoError> {
        let due = delivery::Entity::find()
            .filter(delivery::Column::Status.eq("pending"))
            .filter(delivery::Column::NextAttemptAt.lte(now))
            .filter(
                sea_orm::Condition::any()
                    .add(delivery::Column::LockedUntil.is_null())
                    .add(delivery::Column::LockedUntil.lt(now)),
            )
            .order_by_asc(delivery::Column::NextAttemptAt)
            // Ids are UUIDv7, in the order the messages were queued: ties go out oldest first.
            .order_by_asc(delivery::Column::Id)
            .limit(limit)
            .all(&self.conn)
            .await
            .map_err(classify)?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in due {
            // Each row is leased with a conditional update: of several replicas polling at
            // once, exactly one wins it.
            let leased = delivery::Entity::update_many()
                .col_expr(
                    delivery::Column::LockedUntil,
                    Expr::value(Some(lease_until)),
                )
                .filter(delivery::Column::Id.eq(row.id.clone()))
                .filter(delivery::Column::Status.eq("pending"))
                .filter(
                    sea_orm::Condition::any()
                        .add(delivery::Column::LockedUntil.is_null())
                        .add(delivery::Column::LockedUntil.lt(now)),
                )
                .exec(&self.conn)
                .await
                .map_err(classify)?;
            if leased.rows_affected == 1 {
                claimed.push(QueuedDelivery {
                    id: row.id,
                    kind: row.kind,
                    ciphertext: row.ciphertext,
                    not_after: row.not_after,
                    attempts: u32::try_from(row.attempts).unwrap_or(0),
                });
            }
        }
        Ok(claimed)
    }

    async fn mark_delivered(&self, id: &str, now: DateTime<Utc>) -> Result<(), RepoError> {
        self.finish(id, "delivered", None, now).await
    }

    async fn mark_dropped(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        self.finish(id, "dropped", Some(reason), now).await
    }

    async fn reschedule(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), RepoError> {
        delivery::Entity::update_many()
            .col_expr(
                delivery::Column::Attempts,
                Expr::value(i32::try_from(attempts).unwrap_or(i32::MAX)),
            )
            .col_expr(
                delivery::Column::NextAttemptAt,
                Expr::value(next_attempt_at),
            )
            .col_expr(
                delivery::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                delivery::Column::LastError,
                Expr::value(Some(error.chars().take(256).collect::<String>())),
            )
            .filter(delivery::Column::Id.eq(id))
            .exec(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

impl Database {
    async fn finish(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        // The sealed payload is erased once the message is done with: nothing to decrypt later.
        delivery::Entity::update_many()
            .col_expr(delivery::Column::Status, Expr::value(status))
            .col_expr(delivery::Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(delivery::Column::Ciphertext, Expr::value(Vec::<u8>::new()))
            .col_expr(
                delivery::Column::LastError,
                Expr::value(error.map(|e| e.chars().take(256).collect::<String>())),
            )
            .filter(delivery::Column::Id.eq(id))
            .exec(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

#[async_trait]
impl OutboxStore for Database {
    async fn unpublished(&self, limit: u64) -> Result<Vec<OutboxEvent>, RepoError> {
        outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.conn)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|row| OutboxEvent {
                        event_id: row.event_id,
                        event_type: row.event_type,
                        aggregate_id: row.aggregate_id,
                        payload: row.payload,
                        created_at: row.created_at,
                    })
                    .collect()
            })
            .map_err(classify)
    }

    async fn mark_published(&self, event_id: &str, at: DateTime<Utc>) -> Result<(), RepoError> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::PublishedAt, Expr::value(Some(at)))
            .filter(outbox::Column::EventId.eq(event_id))
            .exec(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}
