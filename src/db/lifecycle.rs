//! The data lifecycle: erasure and export of one account, and the retention sweep
//! that keeps the audit, outbox and delivery tables from growing forever.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, LockBehavior, LockType, Order, Query};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::entities::{account, audit_event, delivery, outbox, password_history};
use super::{Database, audit_row, classify};
use crate::clock::Clock;
use crate::recovery::ports::{AccountData, AccountErasure, AuditEntry, RepoError};

/// The audit rows of one person, for erasure and export alike: those naming the account, and
/// those naming only the keyed hash of its login (attempts before the account existed, decoys
/// during a report freeze, budgets of the login). One definition, so an export shows exactly
/// the rows an erasure strips.
fn rows_of_person(account_id: &str, login_key: Option<&str>) -> sea_orm::Condition {
    let mut whose =
        sea_orm::Condition::any().add(audit_event::Column::AccountId.eq(account_id.to_owned()));
    if let Some(login_key) = login_key {
        whose = whose.add(audit_event::Column::LoginKey.eq(login_key.to_owned()));
    }
    whose
}

pub(super) async fn erase(
    conn: &DatabaseConnection,
    erasure: AccountErasure,
) -> Result<bool, RepoError> {
    let txn = conn.begin().await.map_err(classify)?;
    let deleted = account::Entity::delete_by_id(erasure.account_id.clone())
        .exec(&txn)
        .await
        .map_err(classify)?;
    if deleted.rows_affected != 1 {
        txn.rollback().await.map_err(classify)?;
        return Ok(false);
    }
    password_history::Entity::delete_many()
        .filter(password_history::Column::AccountId.eq(erasure.account_id.clone()))
        .exec(&txn)
        .await
        .map_err(classify)?;
    // Pending mail would reach the address after the account is gone; finished rows hold no
    // payload but still say a message went to this person.
    delivery::Entity::delete_many()
        .filter(delivery::Column::AccountId.eq(erasure.account_id.clone()))
        .exec(&txn)
        .await
        .map_err(classify)?;
    // The trail stays (what happened, when, with which keyed login hash) but no longer says
    // from where or with what: address and agent are personal data, and `detail` is free text.
    let whose = rows_of_person(&erasure.account_id, erasure.login_key.as_deref());
    audit_event::Entity::update_many()
        .col_expr(
            audit_event::Column::ClientIp,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            audit_event::Column::UserAgent,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            audit_event::Column::Detail,
            Expr::value(Option::<String>::None),
        )
        .filter(whose)
        .exec(&txn)
        .await
        .map_err(classify)?;
    audit_event::Entity::insert(audit_row(erasure.audit))
        .exec_without_returning(&txn)
        .await
        .map_err(classify)?;
    outbox::Entity::insert(outbox::ActiveModel {
        id: NotSet,
        event_id: Set(erasure.event_id),
        event_type: Set("account.deleted".to_owned()),
        aggregate_id: Set(erasure.account_id),
        payload: Set(erasure.event_payload),
        created_at: Set(erasure.at),
        published_at: Set(None),
    })
    .exec_without_returning(&txn)
    .await
    .map_err(classify)?;
    txn.commit().await.map_err(classify)?;
    Ok(true)
}

pub(super) async fn export(
    conn: &DatabaseConnection,
    account_id: &str,
    login_key: Option<&str>,
) -> Result<Option<AccountData>, RepoError> {
    // One read-only snapshot, so a reset landing meanwhile cannot half-appear.
    let txn = conn.begin().await.map_err(classify)?;
    let Some(found) = account::Entity::find_by_id(account_id.to_owned())
        .one(&txn)
        .await
        .map_err(classify)?
    else {
        txn.rollback().await.map_err(classify)?;
        return Ok(None);
    };
    let password_set_at: Vec<DateTime<Utc>> = password_history::Entity::find()
        .select_only()
        .column(password_history::Column::CreatedAt)
        .filter(password_history::Column::AccountId.eq(account_id))
        .order_by_desc(password_history::Column::Id)
        .into_tuple()
        .all(&txn)
        .await
        .map_err(classify)?;
    let audit = audit_event::Entity::find()
        .filter(rows_of_person(account_id, login_key))
        .order_by_asc(audit_event::Column::At)
        .order_by_asc(audit_event::Column::Id)
        .all(&txn)
        .await
        .map_err(classify)?
        .into_iter()
        .map(|row| AuditEntry {
            at: row.at,
            event: row.event,
            flow_id: row.flow_id,
            client_ip: row.client_ip,
            user_agent: row.user_agent,
            result: row.result,
            detail: row.detail,
        })
        .collect();
    txn.commit().await.map_err(classify)?;
    Ok(Some(AccountData {
        account_id: found.id,
        login_id: found.login_id,
        email: found.email,
        phone: found.phone,
        created_at: found.created_at,
        updated_at: found.updated_at,
        password_changed_at: found.password_changed_at,
        password_set_at,
        device_token_expires_at: found.device_token_expires_at,
        audit,
    }))
}

/// `[retention]`: how long each kind of row is kept, and how the sweep that removes the rest
/// runs. 0 days keeps that table's rows forever.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RetentionSettings {
    /// Days audit rows are kept (0: forever). They carry client addresses and agents (personal
    /// data); 400 days covers a year of investigations plus a margin.
    #[schemars(range(min = 0, max = 3650))]
    pub audit_days: u32,
    /// Days published events are kept in the outbox (0: forever); the stream has them, the
    /// outbox only needs them for a replay.
    #[schemars(range(min = 0, max = 3650))]
    pub outbox_published_days: u32,
    /// Days delivered or dropped messages (their payload is already erased) and finished
    /// webhook deliveries are kept (0: forever).
    #[schemars(range(min = 0, max = 3650))]
    pub delivery_finished_days: u32,
    /// Seconds between sweeps (0: no sweep in this replica).
    #[schemars(range(min = 0, max = 7 * 24 * 3600))]
    pub sweep_interval_secs: u64,
    /// Rows removed per statement: small enough that one statement holds its locks for
    /// milliseconds, so the sweep never stalls a reset writing to the same table.
    #[schemars(range(min = 1, max = 100_000))]
    pub batch_size: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            audit_days: 400,
            outbox_published_days: 7,
            delivery_finished_days: 7,
            sweep_interval_secs: 3600,
            batch_size: 1000,
        }
    }
}

/// Rows one sweep removed, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub audit_events: u64,
    pub outbox: u64,
    pub deliveries: u64,
    pub webhook_deliveries: u64,
}

#[derive(Clone, Copy)]
enum Swept {
    Audit,
    Outbox,
    Deliveries,
    Webhooks,
}

impl Swept {
    fn table(self) -> &'static str {
        match self {
            Swept::Audit => "audit_events",
            Swept::Outbox => "outbox",
            Swept::Deliveries => "deliveries",
            Swept::Webhooks => "webhook_deliveries",
        }
    }
}

fn days_before(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now - chrono::Duration::days(i64::from(days))
}

impl Database {
    /// One sweep: every table, batch after batch, until no expired row is left or `stop` is
    /// cancelled (checked between batches, so shutdown waits for one statement at most).
    pub async fn sweep(
        &self,
        settings: &RetentionSettings,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> Result<SweepReport, RepoError> {
        let mut report = SweepReport::default();
        for (what, days) in [
            (Swept::Audit, settings.audit_days),
            (Swept::Outbox, settings.outbox_published_days),
            (Swept::Deliveries, settings.delivery_finished_days),
            (Swept::Webhooks, settings.delivery_finished_days),
        ] {
            if days == 0 {
                continue;
            }
            let cutoff = days_before(now, days);
            let mut removed = 0;
            while !stop.is_cancelled() {
                let batch = self.sweep_batch(what, cutoff, settings.batch_size).await?;
                removed += batch;
                if batch < u64::from(Ord::max(settings.batch_size, 1)) {
                    break;
                }
                // Lets other writers take the locks between two batches.
                tokio::task::yield_now().await;
            }
            crate::telemetry::metrics::retention_removed(what.table(), removed);
            match what {
                Swept::Audit => report.audit_events = removed,
                Swept::Outbox => report.outbox = removed,
                Swept::Deliveries => report.deliveries = removed,
                Swept::Webhooks => report.webhook_deliveries = removed,
            }
        }
        Ok(report)
    }

    /// Deletes at most `limit` expired rows of one table in one statement. Several replicas
    /// may run this at once: PostgreSQL skips rows another sweep holds (`SKIP LOCKED`), MySQL
    /// and SQLite serialise on row or database locks; a row is deleted once either way, and a
    /// statement that finds its rows gone removes fewer (the loop then ends early, harmless).
    async fn sweep_batch(
        &self,
        what: Swept,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, RepoError> {
        let delete = self.sweep_statement(what, cutoff, limit);
        self.conn
            .execute(&delete)
            .await
            .map(|result| result.rows_affected())
            .map_err(classify)
    }

    /// The audit sweep's statement as sent, for `EXPLAIN` (the growth test checks it uses the
    /// index on `audit_events.at`).
    pub fn audit_sweep_statement(&self, cutoff: DateTime<Utc>, limit: u32) -> sea_orm::Statement {
        let delete = self.sweep_statement(Swept::Audit, cutoff, limit);
        self.conn.get_database_backend().build(&delete)
    }

    fn sweep_statement(
        &self,
        what: Swept,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> sea_orm::sea_query::DeleteStatement {
        let backend = self.conn.get_database_backend();
        let limit = u64::from(Ord::max(limit, 1));
        // The time column each table expires by; its index (migration `data_lifecycle`) makes
        // the batch read only the rows it removes. A pending delivery has no `finished_at`
        // and an unpublished event no `published_at`, so neither is ever swept.
        let time = match what {
            Swept::Audit => "at",
            Swept::Outbox => "published_at",
            Swept::Deliveries | Swept::Webhooks => "finished_at",
        };
        let id = Alias::new("id");
        let table = Alias::new(what.table());
        let at = Expr::col(Alias::new(time));
        let mut only = Expr::col(Alias::new(time)).lt(cutoff);
        if let Swept::Webhooks = what {
            // Only rows the fan-out will never look at again (at or below their endpoint's
            // watermark): a row removed above it would be fanned out, and sent, once more.
            let endpoints = Alias::new("webhook_endpoints");
            let watermark = Query::select()
                .column((endpoints.clone(), Alias::new("watermark")))
                .from(endpoints.clone())
                .and_where(
                    Expr::col((endpoints, Alias::new("endpoint")))
                        .equals((table.clone(), Alias::new("endpoint"))),
                )
                .to_owned();
            only = only.and(Expr::col((table.clone(), Alias::new("outbox_id"))).lte(
                Expr::SubQuery(
                    None,
                    Box::new(
                        sea_orm::sea_query::QueryStatementBuilder::into_sub_query_statement(
                            watermark,
                        ),
                    ),
                ),
            ));
        }
        let mut delete = Query::delete();
        delete.from_table(table.clone());
        if backend == DbBackend::MySql {
            // MySQL/MariaDB refuse `LIMIT` in an `IN` subquery on the same table, but bound a
            // `DELETE` directly.
            delete
                .cond_where(only)
                .order_by_expr(at, Order::Asc)
                .limit(limit);
        } else {
            let mut ids = Query::select();
            ids.column(id.clone())
                .from(table)
                .cond_where(only)
                .order_by_expr(at, Order::Asc)
                .limit(limit);
            if backend == DbBackend::Postgres {
                ids.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            }
            delete.cond_where(Expr::col(id).in_subquery(ids));
        }
        delete
    }
}

/// The background sweep of one replica: one sweep per interval until `stop` is cancelled.
pub struct RetentionSweeper {
    pub database: Database,
    pub settings: RetentionSettings,
    pub clock: Arc<dyn Clock>,
}

impl RetentionSweeper {
    pub async fn run(self, stop: CancellationToken) {
        if self.settings.sweep_interval_secs == 0 {
            tracing::info!("retention sweep off in this replica (sweep_interval_secs = 0)");
            return;
        }
        let interval = Duration::from_secs(self.settings.sweep_interval_secs);
        loop {
            match self
                .database
                .sweep(&self.settings, self.clock.now(), &stop)
                .await
            {
                Ok(report) => tracing::info!(
                    audit_events = report.audit_events,
                    outbox = report.outbox,
                    deliveries = report.deliveries,
                    webhook_deliveries = report.webhook_deliveries,
                    "retention sweep removed expired rows"
                ),
                // The next sweep retries; nothing is half-deleted (each batch is one statement).
                Err(error) => tracing::warn!(error = %error, "retention sweep failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
