//! Data lifecycle: what retention and erasure need from the schema.
//!
//! - `deliveries.account_id`: a queued message is sealed, so without it an erasure could not
//!   find the mail it must drop.
//! - One index per retention sweep, on the column its bounded `DELETE` ranges over, so a batch
//!   reads only the rows it removes instead of scanning a table that may hold millions.
//! - `audit_events.login_key`: erasure also strips rows written before the account existed
//!   (attempts on the login while it was unknown), found by the keyed login hash.

use sea_orm_migration::prelude::*;

pub struct DataLifecycle;

impl MigrationName for DataLifecycle {
    fn name(&self) -> &str {
        "m20261202_000001_data_lifecycle"
    }
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    AccountId,
}

/// (index, table, column)
const INDEXES: &[(&str, &str, &str)] = &[
    ("idx_deliveries_account", "deliveries", "account_id"),
    ("idx_deliveries_finished", "deliveries", "finished_at"),
    ("idx_audit_events_at", "audit_events", "at"),
    ("idx_audit_events_login_key", "audit_events", "login_key"),
    ("idx_outbox_published", "outbox", "published_at"),
];

#[async_trait::async_trait]
impl MigrationTrait for DataLifecycle {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Not `IF NOT EXISTS` on every backend (MySQL has no such `ADD COLUMN`): checked
        // instead, so a migration half-applied by a crash (MySQL commits DDL at once) resumes.
        if !manager.has_column("deliveries", "account_id").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deliveries::Table)
                        .add_column(ColumnDef::new(Deliveries::AccountId).string_len(36).null())
                        .to_owned(),
                )
                .await?;
        }
        for (name, table, column) in INDEXES {
            if manager.has_index(table, name).await? {
                continue;
            }
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(*name)
                        .table(Alias::new(*table))
                        .col(Alias::new(*column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in INDEXES.iter().rev() {
            manager
                .drop_index(
                    Index::drop()
                        .name(*name)
                        .table(Alias::new(*table))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Deliveries::Table)
                    .drop_column(Deliveries::AccountId)
                    .to_owned(),
            )
            .await
    }
}
