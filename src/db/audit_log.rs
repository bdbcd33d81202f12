//! Group commit of audit rows. `record_audit` used to be one synchronous INSERT — and
//! on PostgreSQL one commit, one WAL flush — inside every `StartRecovery`, `SendVerificationCode`
//! and wrong `VerifyCode`. Now the call puts the row on a bounded queue and returns; one task
//! writes what has queued up, up to `audit_batch_rows` rows in one multi-row INSERT, at most
//! `audit_flush_interval_ms` after the first of them arrived.
//!
//! Guarantees:
//! - **Backpressure, never loss by overload**: when the queue (`audit_queue_rows`) is full, the
//!   call waits for room; a row is never dropped to keep a call fast.
//! - **Clean shutdown loses nothing**: the server flushes the queue after the last call finished
//!   and before it closes the pool ([`Database::flush_audit`](super::Database::flush_audit)).
//! - **Erasure and export see every row**: both flush first, so a row queued just before an
//!   account is erased is stripped with the others, and an export is complete.
//! - **Crash window**: a process killed without a clean shutdown (SIGKILL, OOM, power loss)
//!   loses the rows still queued: at most `audit_flush_interval_ms` plus one INSERT's time of
//!   events, and never more than `audit_queue_rows` rows. `audit_flush_interval_ms = 0` turns
//!   batching off (one INSERT per event, inside the call, as before).
//! - A batch the database refuses as a whole is retried while the database is unreachable (the
//!   queue then fills and calls wait: they would fail on the database anyway), then row by row, so
//!   one bad row cannot take its neighbours with it; a row that still fails is logged (its event
//!   name only: audit rows hold no secret, but the log needs none of their content either).

use std::time::Duration;

use sea_orm::{DatabaseConnection, EntityTrait};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::entities::audit_event;
use super::{DatabaseSettings, audit_row, classify};
use crate::recovery::ports::{AuditRecord, RepoError};

enum Message {
    Row(AuditRecord),
    /// Answered once every row queued before it is written (or given up on).
    Flush(oneshot::Sender<()>),
}

/// The queue's sending side; cheap to clone (every clone of the `Database` shares one writer).
#[derive(Clone, Debug)]
pub(super) struct AuditLog {
    sender: mpsc::Sender<Message>,
}

/// How long a refused batch is retried while the database is unreachable.
const RETRY_DELAYS_MS: [u64; 4] = [50, 200, 1_000, 3_000];

impl AuditLog {
    /// Starts the writer task; `None` when batching is off (`audit_flush_interval_ms = 0`).
    /// Must be called inside a Tokio runtime.
    pub(super) fn start(conn: DatabaseConnection, settings: &DatabaseSettings) -> Option<Self> {
        if settings.audit_flush_interval_ms == 0 {
            return None;
        }
        let capacity = usize::try_from(settings.audit_queue_rows.max(1)).unwrap_or(4096);
        let batch_rows = usize::try_from(settings.audit_batch_rows.max(1)).unwrap_or(256);
        let linger = Duration::from_millis(settings.audit_flush_interval_ms);
        let (sender, receiver) = mpsc::channel(capacity);
        tokio::spawn(run(conn, receiver, batch_rows, linger));
        Some(Self { sender })
    }

    /// Queues `record`, waiting for room when the queue is full. `Err` gives the row back when
    /// the writer is gone (its runtime is shutting down): the caller then writes it itself.
    pub(super) async fn record(&self, record: AuditRecord) -> Result<(), AuditRecord> {
        match self.sender.reserve().await {
            Ok(permit) => {
                permit.send(Message::Row(record));
                Ok(())
            }
            Err(_closed) => Err(record),
        }
    }

    /// Returns once every row queued before this call is in the database (or was given up on
    /// and logged).
    pub(super) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn run(
    conn: DatabaseConnection,
    mut receiver: mpsc::Receiver<Message>,
    batch_rows: usize,
    linger: Duration,
) {
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(batch_rows);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let deadline = Instant::now() + linger;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Row(row)) => batch.push(row),
                Some(Message::Flush(done)) => flushes.push(done),
                None => {}
            }
            // A flush is answered at once; otherwise wait for more rows until the batch is
            // full or the first row has waited `linger`.
            if !flushes.is_empty() || batch.len() >= batch_rows {
                break;
            }
            match receiver.try_recv() {
                Ok(message) => next = Some(message),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(message)) => next = Some(message),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        if !batch.is_empty() {
            write(&conn, std::mem::take(&mut batch)).await;
            batch.reserve(batch_rows);
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn insert(conn: &DatabaseConnection, rows: &[AuditRecord]) -> Result<(), RepoError> {
    audit_event::Entity::insert_many(rows.iter().cloned().map(audit_row))
        .exec_without_returning(conn)
        .await
        .map(|_| ())
        .map_err(classify)
}

async fn write(conn: &DatabaseConnection, rows: Vec<AuditRecord>) {
    let mut outcome = insert(conn, &rows).await;
    for delay in RETRY_DELAYS_MS {
        match &outcome {
            Err(RepoError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                outcome = insert(conn, &rows).await;
            }
            _ => break,
        }
    }
    let Err(error) = outcome else {
        return;
    };
    if rows.len() == 1 {
        tracing::error!(error = %error, event = rows[0].event, "audit event could not be written");
        return;
    }
    tracing::warn!(error = %error, rows = rows.len(), "audit batch refused; writing its rows one by one");
    for row in &rows {
        if let Err(error) = insert(conn, std::slice::from_ref(row)).await {
            tracing::error!(error = %error, event = row.event, "audit event could not be written");
        }
    }
}
