//! Webhook delivery state: one row per (outbox event, endpoint), and one row per
//! endpoint with the outbox id below which every event has been fanned out to it.
//!
//! - Fan-out copies the event (type, account, payload, time) into the delivery row, so the
//!   retention sweep of published outbox rows cannot take an undelivered event away.
//! - Claiming leases rows with a conditional update, like the mail queue (`claim_due`): of
//!   several replicas polling at once exactly one wins a row.
//! - Only the oldest pending row of an account is ever due (`NOT EXISTS` an older pending row of
//!   the same account and endpoint): an account's events go out in outbox order, and an account
//!   whose event keeps failing holds back only its own later events.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Query};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::entities::{audit_event, outbox};
use super::{Database, audit_row, classify, is_unique_violation};
use crate::recovery::ports::{
    AuditRecord, RepoError, WebhookBacklog, WebhookDelivery, WebhookStore,
};

pub mod webhook_delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub endpoint: String,
        /// The outbox row's id: the order of an account's events.
        pub outbox_id: i64,
        pub event_id: String,
        pub event_type: String,
        pub aggregate_id: String,
        pub payload: String,
        pub event_created_at: DateTimeUtc,
        /// pending | delivered | failed (given up)
        pub status: String,
        pub attempts: i32,
        pub next_attempt_at: DateTimeUtc,
        pub locked_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
        /// "HTTP 503", "timeout", "connect": never a body, header or secret.
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook_endpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_endpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub endpoint: String,
        /// Every outbox event with an id up to this one has its delivery row (or was filtered).
        pub watermark: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use webhook_delivery as wd;
use webhook_endpoint as we;

fn clip(error: &str) -> String {
    error.chars().take(256).collect()
}

fn pending_free(now: DateTime<Utc>) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(wd::Column::LockedUntil.is_null())
        .add(wd::Column::LockedUntil.lt(now))
}

#[async_trait::async_trait]
impl WebhookStore for Database {
    async fn register_endpoint(&self, endpoint: &str, now: DateTime<Utc>) -> Result<(), RepoError> {
        let known = we::Entity::find_by_id(endpoint.to_owned())
            .one(&self.conn)
            .await
            .map_err(classify)?;
        if known.is_some() {
            return Ok(());
        }
        let newest: Option<i64> = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::Id.max(), "newest")
            .into_tuple::<Option<i64>>()
            .one(&self.conn)
            .await
            .map_err(classify)?
            .flatten();
        let inserted = we::Entity::insert(we::ActiveModel {
            endpoint: Set(endpoint.to_owned()),
            watermark: Set(newest.unwrap_or(0)),
            created_at: Set(now),
        })
        .exec_without_returning(&self.conn)
        .await;
        match inserted {
            // Another replica registered it at the same moment.
            Err(error) if is_unique_violation(&error) => Ok(()),
            other => other.map(|_| ()).map_err(classify),
        }
    }

    async fn fan_out(
        &self,
        endpoint: &str,
        event_types: &[String],
        now: DateTime<Utc>,
        settled_before: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, RepoError> {
        let Some(registered) = we::Entity::find_by_id(endpoint.to_owned())
            .one(&self.conn)
            .await
            .map_err(classify)?
        else {
            return Ok(0);
        };
        let watermark = registered.watermark;
        // Read before the fan-out query, so every row counted here is visible to it.
        let settled: Option<i64> = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::Id.max(), "settled")
            .filter(outbox::Column::Id.gt(watermark))
            .filter(outbox::Column::CreatedAt.lt(settled_before))
            .into_tuple::<Option<i64>>()
            .one(&self.conn)
            .await
            .map_err(classify)?
            .flatten();
        let owed = Query::select()
            .expr(Expr::val(1))
            .from(wd::Entity)
            .and_where(wd::Column::Endpoint.eq(endpoint))
            .and_where(
                Expr::col((wd::Entity, wd::Column::EventId))
                    .equals((outbox::Entity, outbox::Column::EventId)),
            )
            .to_owned();
        let events = outbox::Entity::find()
            .filter(outbox::Column::Id.gt(watermark))
            .filter(outbox::Column::EventType.is_in(event_types.iter().cloned()))
            .filter(Expr::not_exists(owed))
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.conn)
            .await
            .map_err(classify)?;
        let found = events.len();
        let rows: Vec<wd::ActiveModel> = events
            .into_iter()
            .map(|event| wd::ActiveModel {
                id: NotSet,
                endpoint: Set(endpoint.to_owned()),
                outbox_id: Set(event.id),
                event_id: Set(event.event_id),
                event_type: Set(event.event_type),
                aggregate_id: Set(event.aggregate_id),
                payload: Set(event.payload),
                event_created_at: Set(event.created_at),
                status: Set("pending".to_owned()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                locked_until: Set(None),
                created_at: Set(now),
                finished_at: Set(None),
                last_error: Set(None),
            })
            .collect();
        // One statement for the batch; a row another replica fanned out first is skipped.
        let created = match wd::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([wd::Column::Endpoint, wd::Column::EventId])
            .exec_without_returning(&self.conn)
            .await
            .map_err(classify)?
        {
            sea_orm::TryInsertResult::Inserted(count) => count,
            _ => 0,
        };
        if let Some(settled) = settled
            && u64::try_from(found).unwrap_or(u64::MAX) < limit
        {
            we::Entity::update_many()
                .col_expr(we::Column::Watermark, Expr::value(settled))
                .filter(we::Column::Endpoint.eq(endpoint))
                .filter(we::Column::Watermark.lt(settled))
                .exec(&self.conn)
                .await
                .map_err(classify)?;
        }
        Ok(created)
    }

    async fn claim_webhooks(
        &self,
        endpoint: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>, RepoError> {
        let earlier = Alias::new("earlier");
        let older_pending = Query::select()
            .expr(Expr::val(1))
            .from_as(wd::Entity, earlier.clone())
            .and_where(Expr::col((earlier.clone(), wd::Column::Endpoint)).eq(endpoint))
            .and_where(
                Expr::col((earlier.clone(), wd::Column::AggregateId))
                    .equals((wd::Entity, wd::Column::AggregateId)),
            )
            .and_where(Expr::col((earlier.clone(), wd::Column::Status)).eq("pending"))
            .and_where(
                Expr::col((earlier.clone(), wd::Column::OutboxId))
                    .lt(Expr::col((wd::Entity, wd::Column::OutboxId))),
            )
            .to_owned();
        let due = wd::Entity::find()
            .filter(wd::Column::Endpoint.eq(endpoint))
            .filter(wd::Column::Status.eq("pending"))
            .filter(wd::Column::NextAttemptAt.lte(now))
            .filter(pending_free(now))
            .filter(Expr::not_exists(older_pending))
            .order_by_asc(wd::Column::OutboxId)
            .limit(limit)
            .all(&self.conn)
            .await
            .map_err(classify)?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in due {
            let leased = wd::Entity::update_many()
                .col_expr(wd::Column::LockedUntil, Expr::value(Some(lease_until)))
                .filter(wd::Column::Id.eq(row.id))
                .filter(wd::Column::Status.eq("pending"))
                .filter(pending_free(now))
                .exec(&self.conn)
                .await
                .map_err(classify)?;
            if leased.rows_affected == 1 {
                claimed.push(WebhookDelivery {
                    id: row.id,
                    endpoint: row.endpoint,
                    event_id: row.event_id,
                    event_type: row.event_type,
                    aggregate_id: row.aggregate_id,
                    payload: row.payload,
                    event_created_at: row.event_created_at,
                    attempts: u32::try_from(row.attempts).unwrap_or(0),
                    created_at: row.created_at,
                });
            }
        }
        Ok(claimed)
    }

    async fn webhook_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<(), RepoError> {
        wd::Entity::update_many()
            .col_expr(wd::Column::Status, Expr::value("delivered"))
            .col_expr(wd::Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(
                wd::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(wd::Column::Attempts, Expr::col(wd::Column::Attempts).add(1))
            .filter(wd::Column::Id.eq(id))
            .exec(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn webhook_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), RepoError> {
        wd::Entity::update_many()
            .col_expr(
                wd::Column::Attempts,
                Expr::value(i32::try_from(attempts).unwrap_or(i32::MAX)),
            )
            .col_expr(wd::Column::NextAttemptAt, Expr::value(next_attempt_at))
            .col_expr(
                wd::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(wd::Column::LastError, Expr::value(Some(clip(error))))
            .filter(wd::Column::Id.eq(id))
            .filter(wd::Column::Status.eq("pending"))
            .exec(&self.conn)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn webhook_abandoned(
        &self,
        delivery: &WebhookDelivery,
        attempts: u32,
        now: DateTime<Utc>,
        error: &str,
    ) -> Result<(), RepoError> {
        let txn = self.conn.begin().await.map_err(classify)?;
        let updated = wd::Entity::update_many()
            .col_expr(wd::Column::Status, Expr::value("failed"))
            .col_expr(
                wd::Column::Attempts,
                Expr::value(i32::try_from(attempts).unwrap_or(i32::MAX)),
            )
            .col_expr(wd::Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(
                wd::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(wd::Column::LastError, Expr::value(Some(clip(error))))
            .filter(wd::Column::Id.eq(delivery.id))
            .filter(wd::Column::Status.eq("pending"))
            .exec(&txn)
            .await
            .map_err(classify)?;
        if updated.rows_affected == 1 {
            audit_event::Entity::insert(audit_row(AuditRecord {
                at: now,
                event: "webhook.abandoned",
                account_id: Some(delivery.aggregate_id.clone()),
                flow_id: None,
                login_key: None,
                client_ip: None,
                user_agent: None,
                result: "failed",
                detail: Some(format!(
                    "event {} ({}) to endpoint {} after {attempts} attempts: {}",
                    delivery.event_id,
                    delivery.event_type,
                    delivery.endpoint,
                    clip(error)
                )),
            }))
            .exec_without_returning(&txn)
            .await
            .map_err(classify)?;
        }
        txn.commit().await.map_err(classify)
    }

    async fn webhook_backlog(&self, now: DateTime<Utc>) -> Result<Vec<WebhookBacklog>, RepoError> {
        let endpoints: Vec<String> = we::Entity::find()
            .select_only()
            .column(we::Column::Endpoint)
            .into_tuple()
            .all(&self.conn)
            .await
            .map_err(classify)?;
        let mut backlog = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let pending = || {
                wd::Entity::find()
                    .filter(wd::Column::Endpoint.eq(endpoint.clone()))
                    .filter(wd::Column::Status.eq("pending"))
            };
            let count = pending().count(&self.conn).await.map_err(classify)?;
            let oldest: Option<DateTime<Utc>> = pending()
                .select_only()
                .column(wd::Column::CreatedAt)
                .order_by_asc(wd::Column::OutboxId)
                .into_tuple()
                .one(&self.conn)
                .await
                .map_err(classify)?;
            backlog.push(WebhookBacklog {
                endpoint,
                pending: count,
                oldest_age_secs: oldest.map_or(0.0, |at| {
                    (now - at).to_std().map_or(0.0, |age| age.as_secs_f64())
                }),
            });
        }
        Ok(backlog)
    }
}
