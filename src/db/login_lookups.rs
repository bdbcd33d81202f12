//! Account lookups by login, coalesced. Every `StartRecovery` looks its login up,
//! known or not, and one lookup on its own costs a pool checkout, a query, and SQLx's ping when
//! the connection is released (unconditional in sqlx-core 0.9, `return_to_pool`): under load
//! that was about a third of the service's CPU for the call and most of PostgreSQL's.
//!
//! Lookups go to one task that sends them to the database in batches, one
//! `WHERE login_normalized IN (...)` per batch, with up to [`SLOTS`] batches in flight. A lookup
//! that finds a slot free goes at once, alone: at low load nothing waits. When every slot is
//! busy, the lookups that arrive meanwhile queue and leave together as the next batch, so the
//! per-query costs are shared by as many calls as the load brings.
//!
//! Measured (StartRecovery on Redis + PostgreSQL, alternating fresh servers, benches/REPORT.md):
//! at 64 in flight 7,180/s → 8,482/s with 2 slots (9,014/s with 1, 5 slots gained about half
//! as much: with more slots the batches stay small), at 16 in flight 4,840 → 5,881/s, at 1 in
//! flight no change.
//!
//! - **Same answer**: a batch's rows are matched back to each caller by exact string equality
//!   of the normalized login, which is how every supported database compares that column (a
//!   binary collation on MySQL, migration `m20261202_000001_canonical_logins`).
//! - **Same path for known and unknown logins**: both wait in the same queue for the same query;
//!   nothing about the answer depends on whether a login exists.
//! - **Few statements**: a batch is padded to a power of two (repeating its last login), so
//!   at most seven statement shapes ever reach a connection's statement cache.
//! - **Errors**: a failed batch answers each of its callers with the same kind of error
//!   (`UNAVAILABLE` stays `UNAVAILABLE`). A caller whose lookup cannot be queued (the task is
//!   gone with its runtime) queries on its own.

use std::sync::Arc;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::classify;
use super::entities::account;
use crate::recovery::ports::RepoError;

/// Most logins in one query.
const MAX_BATCH: usize = 64;

/// Batches in flight at once. Two, not one: a batch stuck on a connection that is going bad
/// (until `acquire_timeout_ms` or `statement_timeout_ms` ends it) does not hold every lookup.
const SLOTS: usize = 2;

/// Lookups that may wait for a slot; past that, a caller waits to queue (backpressure).
const QUEUE: usize = 4_096;

type Answer = Result<Option<account::Model>, RepoError>;

struct Lookup {
    login: String,
    answer: oneshot::Sender<Answer>,
}

/// The sending side; cheap to clone (every clone of the `Database` shares one task).
#[derive(Clone, Debug)]
pub(super) struct LoginLookups {
    sender: mpsc::Sender<Lookup>,
}

impl LoginLookups {
    /// Starts the task. Must be called inside a Tokio runtime.
    pub(super) fn start(conn: DatabaseConnection) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, receiver));
        Self { sender }
    }

    /// The account whose normalized login is `login`. `None` as the outer value: the task is
    /// gone (its runtime is shutting down), and the caller queries on its own.
    pub(super) async fn find(&self, login: &str) -> Option<Answer> {
        let (answer, answered) = oneshot::channel();
        let lookup = Lookup {
            login: login.to_owned(),
            answer,
        };
        self.sender.send(lookup).await.ok()?;
        answered.await.ok()
    }
}

async fn run(conn: DatabaseConnection, mut receiver: mpsc::Receiver<Lookup>) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    loop {
        // A free slot first, then the lookups: while every slot is busy, arrivals queue up
        // and leave together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        let conn = conn.clone();
        tokio::spawn(async move {
            answer(&conn, batch).await;
            drop(slot);
        });
    }
}

async fn answer(conn: &DatabaseConnection, batch: Vec<Lookup>) {
    let found = account::Entity::find()
        .filter(account::Column::LoginNormalized.is_in(padded(&batch)))
        .all(conn)
        .await
        .map_err(classify);
    match found {
        Ok(rows) => {
            for lookup in batch {
                let row = rows
                    .iter()
                    .find(|row| row.login_normalized == lookup.login)
                    .cloned();
                // A caller that gave up (its call was cancelled) is simply not answered.
                let _ = lookup.answer.send(Ok(row));
            }
        }
        Err(error) => {
            for lookup in batch {
                let _ = lookup.answer.send(Err(same_kind(&error)));
            }
        }
    }
}

/// The batch's logins, each once, padded to a power of two by repeating the last.
fn padded(batch: &[Lookup]) -> Vec<String> {
    let mut logins: Vec<String> = batch.iter().map(|l| l.login.clone()).collect();
    logins.sort_unstable();
    logins.dedup();
    let size = logins.len().next_power_of_two();
    if let Some(last) = logins.last().cloned() {
        logins.resize(size, last);
    }
    logins
}

/// One error per caller, of the same kind and message (the error itself is not `Clone`).
fn same_kind(error: &RepoError) -> RepoError {
    match error {
        RepoError::Unavailable(source) => RepoError::Unavailable(anyhow::anyhow!("{source:#}")),
        RepoError::Conflict => RepoError::Conflict,
        RepoError::Internal(source) => RepoError::Internal(anyhow::anyhow!("{source:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(logins: &[&str]) -> Vec<Lookup> {
        logins
            .iter()
            .map(|login| Lookup {
                login: (*login).to_owned(),
                answer: oneshot::channel().0,
            })
            .collect()
    }

    #[test]
    fn a_batch_is_deduplicated_and_padded_to_a_power_of_two() {
        assert_eq!(padded(&batch(&["a"])), ["a"]);
        assert_eq!(padded(&batch(&["b", "a", "b"])), ["a", "b"]);
        assert_eq!(padded(&batch(&["c", "a", "b"])), ["a", "b", "c", "c"]);
        let five = padded(&batch(&["e", "d", "c", "b", "a"]));
        assert_eq!(five.len(), 8);
        assert!(five[4..].iter().all(|login| login == "e"));
    }

    #[test]
    fn an_error_is_answered_to_each_caller_with_its_kind() {
        let unavailable = RepoError::Unavailable(anyhow::anyhow!("connection refused"));
        assert!(matches!(
            same_kind(&unavailable),
            RepoError::Unavailable(e) if e.to_string() == "connection refused"
        ));
        assert!(matches!(
            same_kind(&RepoError::Internal(anyhow::anyhow!("x"))),
            RepoError::Internal(_)
        ));
    }
}
