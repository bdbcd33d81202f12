//! Readings for `/metrics`: how much waits in the delivery queue and the outbox, and since when.
//! Two queries each (a count and the oldest row), with the same filters the delivery worker
//! (`idx_deliveries_due`) and the outbox relay poll with every second, so a scrape every few
//! seconds adds no new kind of load.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{delivery, outbox};
use super::{Database, classify};
use crate::accounts::RepoError;

/// What is waiting, and the age of the oldest (zero when nothing waits).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub count: u64,
    pub oldest_age_secs: f64,
}

fn age(now: DateTime<Utc>, oldest: Option<DateTime<Utc>>) -> f64 {
    oldest.map_or(0.0, |at| {
        (now - at).to_std().map_or(0.0, |age| age.as_secs_f64())
    })
}

impl Database {
    /// Messages not yet delivered nor dropped.
    pub async fn delivery_backlog(&self, now: DateTime<Utc>) -> Result<Backlog, RepoError> {
        let pending = || delivery::Entity::find().filter(delivery::Column::Status.eq("pending"));
        let count = pending().count(&self.conn).await.map_err(classify)?;
        let oldest: Option<DateTime<Utc>> = pending()
            .select_only()
            .column(delivery::Column::CreatedAt)
            .order_by_asc(delivery::Column::CreatedAt)
            .into_tuple()
            .one(&self.conn)
            .await
            .map_err(classify)?;
        Ok(Backlog {
            count,
            oldest_age_secs: age(now, oldest),
        })
    }

    /// Events not yet published to the stream: their age is the outbox lag.
    pub async fn outbox_backlog(&self, now: DateTime<Utc>) -> Result<Backlog, RepoError> {
        let pending = || outbox::Entity::find().filter(outbox::Column::PublishedAt.is_null());
        let count = pending().count(&self.conn).await.map_err(classify)?;
        let oldest: Option<DateTime<Utc>> = pending()
            .select_only()
            .column(outbox::Column::CreatedAt)
            // Ids grow with time: the primary key finds the oldest without a sort.
            .order_by_asc(outbox::Column::Id)
            .into_tuple()
            .one(&self.conn)
            .await
            .map_err(classify)?;
        Ok(Backlog {
            count,
            oldest_age_secs: age(now, oldest),
        })
    }
}
