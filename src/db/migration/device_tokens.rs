//! The known device: the keyed hash of the device token the last reset handed out, and its
//! expiry, on the account row itself. One per account (every reset replaces it), so erasure
//! takes it with the account and nothing needs sweeping. Timestamps are `DATETIME(6)` on
//! MySQL/MariaDB (see `MySqlPreciseTimestamps`), `timestamptz` elsewhere.

use sea_orm_migration::prelude::*;

pub struct DeviceTokens;

impl MigrationName for DeviceTokens {
    fn name(&self) -> &str {
        "m20261208_000001_device_tokens"
    }
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    DeviceTokenMac,
    DeviceTokenExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for DeviceTokens {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Checked rather than `IF NOT EXISTS` (MySQL has no such `ADD COLUMN`): a migration
        // half-applied by a crash (MySQL commits DDL at once) resumes.
        if !manager.has_column("accounts", "device_token_mac").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Accounts::Table)
                        .add_column(
                            ColumnDef::new(Accounts::DeviceTokenMac)
                                .string_len(64)
                                .null(),
                        )
                        .to_owned(),
                )
                .await?;
        }
        if !manager
            .has_column("accounts", "device_token_expires_at")
            .await?
        {
            let mut column = ColumnDef::new(Accounts::DeviceTokenExpiresAt);
            if manager.get_database_backend() == sea_orm::DbBackend::MySql {
                column.custom(Alias::new("DATETIME(6)"));
            } else {
                column.timestamp_with_time_zone();
            }
            column.null();
            manager
                .alter_table(
                    Table::alter()
                        .table(Accounts::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Accounts::DeviceTokenMac.into_iden(),
            Accounts::DeviceTokenExpiresAt.into_iden(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Accounts::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
