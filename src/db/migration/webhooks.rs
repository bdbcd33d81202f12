//! Webhooks: delivery state per (outbox event, endpoint), and per endpoint the outbox
//! id up to which every event has been fanned out to it. Timestamps are `DATETIME(6)` on
//! MySQL/MariaDB from the start (see `MySqlPreciseTimestamps`), `timestamptz` elsewhere.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Webhooks;

impl MigrationName for Webhooks {
    fn name(&self) -> &str {
        "m20261203_000001_webhooks"
    }
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    Endpoint,
    OutboxId,
    EventId,
    EventType,
    AggregateId,
    Payload,
    EventCreatedAt,
    Status,
    Attempts,
    NextAttemptAt,
    LockedUntil,
    CreatedAt,
    FinishedAt,
    LastError,
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Endpoint,
    Watermark,
    CreatedAt,
}

/// (index, columns); the first is unique: one row per event and endpoint, whichever replica
/// fans it out.
const INDEXES: &[(&str, &[&str])] = &[
    ("idx_webhook_deliveries_event", &["endpoint", "event_id"]),
    (
        "idx_webhook_deliveries_due",
        &["endpoint", "status", "next_attempt_at"],
    ),
    (
        "idx_webhook_deliveries_account",
        &["endpoint", "aggregate_id", "status", "outbox_id"],
    ),
    ("idx_webhook_deliveries_finished", &["finished_at"]),
];

fn time(manager: &SchemaManager, column: impl IntoIden, nullable: bool) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    if manager.get_database_backend() == sea_orm::DbBackend::MySql {
        def.custom(Alias::new("DATETIME(6)"));
    } else {
        def.timestamp_with_time_zone();
    }
    if nullable {
        def.null();
    } else {
        def.not_null();
    }
    def
}

#[async_trait::async_trait]
impl MigrationTrait for Webhooks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookDeliveries as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .if_not_exists()
                    .col(big_pk_auto(W::Id))
                    .col(string_len(W::Endpoint, 64))
                    .col(big_integer(W::OutboxId))
                    .col(string_len(W::EventId, 36))
                    .col(string_len(W::EventType, 64))
                    .col(string_len(W::AggregateId, 36))
                    .col(text(W::Payload))
                    .col(time(manager, W::EventCreatedAt, false))
                    .col(string_len(W::Status, 16))
                    .col(integer(W::Attempts))
                    .col(time(manager, W::NextAttemptAt, false))
                    .col(time(manager, W::LockedUntil, true))
                    .col(time(manager, W::CreatedAt, false))
                    .col(time(manager, W::FinishedAt, true))
                    .col(string_len_null(W::LastError, 256))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .if_not_exists()
                    .col(string_len(WebhookEndpoints::Endpoint, 64).primary_key())
                    .col(big_integer(WebhookEndpoints::Watermark))
                    .col(time(manager, WebhookEndpoints::CreatedAt, false))
                    .to_owned(),
            )
            .await?;
        for (i, (name, columns)) in INDEXES.iter().enumerate() {
            // Checked, not only `IF NOT EXISTS` (MySQL has none): a half-applied run resumes.
            if manager.has_index("webhook_deliveries", name).await? {
                continue;
            }
            let mut index = Index::create();
            index
                .if_not_exists()
                .name(*name)
                .table(WebhookDeliveries::Table);
            for column in *columns {
                index.col(Alias::new(*column));
            }
            if i == 0 {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
