//! Schema migrations, applied at start and by `recovery-service migrate`. Every statement is
//! `IF NOT EXISTS`, so a replica that loses the race to another applying the same migration
//! finds its work already done.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

mod device_tokens;
mod lifecycle;
mod webhooks;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(InitialSchema),
            Box::new(MySqlPreciseTimestamps),
            Box::new(CanonicalLogins),
            Box::new(lifecycle::DataLifecycle),
            Box::new(webhooks::Webhooks),
            Box::new(device_tokens::DeviceTokens),
        ]
    }
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    LoginId,
    LoginNormalized,
    Email,
    Phone,
    PasswordHash,
    PasswordChangedAt,
    PasswordVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PasswordHistory {
    Table,
    Id,
    AccountId,
    PasswordHash,
    RecoveryFlowId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Event,
    AccountId,
    FlowId,
    LoginKey,
    ClientIp,
    UserAgent,
    Result,
    Detail,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    EventId,
    EventType,
    AggregateId,
    Payload,
    CreatedAt,
    PublishedAt,
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Id,
    Kind,
    Ciphertext,
    NotAfter,
    CreatedAt,
    Attempts,
    NextAttemptAt,
    LockedUntil,
    Status,
    FinishedAt,
    LastError,
}

pub struct InitialSchema;

impl MigrationName for InitialSchema {
    fn name(&self) -> &str {
        "m20261128_000001_initial_schema"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for InitialSchema {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .if_not_exists()
                    .col(string_len(Accounts::Id, 36).primary_key())
                    .col(string_len(Accounts::LoginId, 320))
                    .col(string_len_uniq(Accounts::LoginNormalized, 320))
                    .col(string_len(Accounts::Email, 320))
                    .col(string_len_null(Accounts::Phone, 32))
                    .col(text(Accounts::PasswordHash))
                    .col(timestamp_with_time_zone_null(Accounts::PasswordChangedAt))
                    .col(big_integer(Accounts::PasswordVersion).default(0))
                    .col(timestamp_with_time_zone(Accounts::CreatedAt))
                    .col(timestamp_with_time_zone(Accounts::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PasswordHistory::Table)
                    .if_not_exists()
                    .col(big_pk_auto(PasswordHistory::Id))
                    .col(string_len(PasswordHistory::AccountId, 36))
                    .col(text(PasswordHistory::PasswordHash))
                    .col(string_len_null(PasswordHistory::RecoveryFlowId, 36).unique_key())
                    .col(timestamp_with_time_zone(PasswordHistory::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_password_history_account")
                    .table(PasswordHistory::Table)
                    .col(PasswordHistory::AccountId)
                    .col(PasswordHistory::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AuditEvents::Id))
                    .col(timestamp_with_time_zone(AuditEvents::At))
                    .col(string_len(AuditEvents::Event, 64))
                    .col(string_len_null(AuditEvents::AccountId, 36))
                    .col(string_len_null(AuditEvents::FlowId, 36))
                    .col(string_len_null(AuditEvents::LoginKey, 64))
                    .col(string_len_null(AuditEvents::ClientIp, 64))
                    .col(string_len_null(AuditEvents::UserAgent, 256))
                    .col(string_len(AuditEvents::Result, 32))
                    .col(string_len_null(AuditEvents::Detail, 256))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_audit_events_account")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::AccountId)
                    .col(AuditEvents::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(string_len_uniq(Outbox::EventId, 36))
                    .col(string_len(Outbox::EventType, 64))
                    .col(string_len(Outbox::AggregateId, 36))
                    .col(text(Outbox::Payload))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::PublishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .if_not_exists()
                    .col(string_len(Deliveries::Id, 36).primary_key())
                    .col(string_len(Deliveries::Kind, 32))
                    .col(blob(Deliveries::Ciphertext))
                    .col(timestamp_with_time_zone(Deliveries::NotAfter))
                    .col(timestamp_with_time_zone(Deliveries::CreatedAt))
                    .col(integer(Deliveries::Attempts))
                    .col(timestamp_with_time_zone(Deliveries::NextAttemptAt))
                    .col(timestamp_with_time_zone_null(Deliveries::LockedUntil))
                    .col(string_len(Deliveries::Status, 16))
                    .col(timestamp_with_time_zone_null(Deliveries::FinishedAt))
                    .col(string_len_null(Deliveries::LastError, 256))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_deliveries_due")
                    .table(Deliveries::Table)
                    .col(Deliveries::Status)
                    .col(Deliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Deliveries::Table.into_iden(),
            Outbox::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            PasswordHistory::Table.into_iden(),
            Accounts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// On MySQL/MariaDB, `timestamp with time zone` becomes `TIMESTAMP`: whole seconds, ending in
/// January 2038, and (on servers with `explicit_defaults_for_timestamp` off) silently set to
/// the current time by any `UPDATE` of the row. `DATETIME(6)` keeps microseconds like
/// PostgreSQL, spans years 1000-9999 and is never rewritten; the values are UTC because sqlx
/// sets the session time zone to `+00:00`. PostgreSQL and SQLite are unchanged. Re-running the
/// `MODIFY`s is harmless, so a database half-migrated by a crash recovers.
pub struct MySqlPreciseTimestamps;

impl MigrationName for MySqlPreciseTimestamps {
    fn name(&self) -> &str {
        "m20261201_000001_mysql_precise_timestamps"
    }
}

const MYSQL_TIMESTAMP_COLUMNS: &[(&str, &[(&str, bool)])] = &[
    (
        "accounts",
        &[
            ("password_changed_at", true),
            ("created_at", false),
            ("updated_at", false),
        ],
    ),
    ("password_history", &[("created_at", false)]),
    ("audit_events", &[("at", false)]),
    ("outbox", &[("created_at", false), ("published_at", true)]),
    (
        "deliveries",
        &[
            ("not_after", false),
            ("created_at", false),
            ("next_attempt_at", false),
            ("locked_until", true),
            ("finished_at", true),
        ],
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for MySqlPreciseTimestamps {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DbBackend::MySql {
            return Ok(());
        }
        for (table, columns) in MYSQL_TIMESTAMP_COLUMNS {
            let changes: Vec<String> = columns
                .iter()
                .map(|(column, nullable)| {
                    let null = if *nullable { "NULL" } else { "NOT NULL" };
                    format!("MODIFY `{column}` DATETIME(6) {null}")
                })
                .collect();
            manager
                .get_connection()
                .execute_unprepared(&format!("ALTER TABLE `{table}` {}", changes.join(", ")))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Going back to whole seconds would lose data for no gain.
        Ok(())
    }
}

/// Logins compared exactly: MySQL/MariaDB's default collation is accent- and
/// case-insensitive, so `jöhn@` found John's account there. The column becomes `utf8mb4_bin` (the
/// unique index follows it), and every backend's existing rows get the canonical form of their
/// typed login (`canonical_login`: NFKC + full case fold), which older versions only
/// lower-cased. Two old rows that now fold to one login make the update fail on the unique
/// index, and the migration with it: an operator must decide which account keeps the login.
pub struct CanonicalLogins;

impl MigrationName for CanonicalLogins {
    fn name(&self) -> &str {
        "m20261202_000001_canonical_logins"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CanonicalLogins {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use sea_orm::sea_query::Expr;
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};

        use crate::db::entities::account;
        use crate::recovery::input::canonical_login;

        let db = manager.get_connection();
        if manager.get_database_backend() == sea_orm::DbBackend::MySql {
            db.execute_unprepared(
                "ALTER TABLE `accounts` MODIFY `login_normalized` VARCHAR(320) \
                 CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
            )
            .await?;
        }
        // Only the columns this migration knows: the entity gains columns in later migrations
        // (the device token), which do not exist yet when this one runs.
        let mut pages = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .column(account::Column::LoginId)
            .column(account::Column::LoginNormalized)
            .into_tuple::<(String, String, String)>()
            .paginate(db, 500);
        while let Some(rows) = pages.fetch_and_next().await? {
            for (id, login_id, login_normalized) in rows {
                let canonical = canonical_login(&login_id);
                if canonical != login_normalized {
                    account::Entity::update_many()
                        .col_expr(account::Column::LoginNormalized, Expr::value(canonical))
                        .filter(account::Column::Id.eq(id))
                        .exec(db)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
