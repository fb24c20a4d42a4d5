//! Rows of the internal API's calls, appended in batches.
//!
//! An introspection is a read at the rate of the callers; a synchronous
//! audit row each would make the chain's one lock, not the read, the limit
//! (3.3k rows/s here against 28k reads/s). Calls queue their row and one
//! task appends what queued every `FLUSH_EVERY` or `MAX_BATCH` rows with
//! `audit_append` (one head lock, one asynchronous commit per batch). A
//! full queue means the trail cannot keep up: the call is refused (503),
//! never answered unaudited beyond the queue. docs/audit.md has the
//! trade-off.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{RequestMeta, USER_AGENT_MAX, metrics, truncate};
use crate::db::Db;

/// How long a row may wait in the queue.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Rows per statement.
pub const MAX_BATCH: usize = 512;

/// One queued row.
#[derive(Debug, Clone)]
pub struct Entry {
    pub occurred_at: OffsetDateTime,
    pub event: &'static str,
    pub outcome: &'static str,
    pub user_id: Option<Uuid>,
    pub client_ip: IpAddr,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: Value,
}

impl Entry {
    pub fn new(
        event: &'static str,
        outcome: &'static str,
        user_id: Option<Uuid>,
        meta: &RequestMeta,
        detail: Value,
    ) -> Self {
        Self {
            occurred_at: OffsetDateTime::now_utc(),
            event,
            outcome,
            user_id,
            client_ip: meta.client_ip,
            user_agent: meta
                .user_agent
                .as_deref()
                .map(|ua| truncate(ua, USER_AGENT_MAX).to_string()),
            request_id: meta.request_id.clone(),
            detail,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the audit queue is full: the trail cannot keep up")]
pub struct QueueFull;

/// The calls' side: cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Entry>,
    dropped: Arc<AtomicU64>,
}

impl Batcher {
    /// Queues a row; `Err` when `capacity` rows already wait. A dropped
    /// row is counted, and the trail gets an `audit_rows_dropped` row
    /// with the count once the queue drains: the gap is on record.
    pub fn record(&self, entry: Entry) -> Result<(), QueueFull> {
        self.tx.try_send(entry).map_err(|_| {
            ::metrics::counter!(metrics::WRITE_FAILURES).increment(1);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            QueueFull
        })
    }
}

/// The queue, and the writer the caller spawns.
pub fn batcher(capacity: usize) -> (Batcher, Writer) {
    let (tx, rx) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Batcher {
            tx,
            dropped: dropped.clone(),
        },
        Writer { rx, dropped },
    )
}

pub struct Writer {
    rx: mpsc::Receiver<Entry>,
    dropped: Arc<AtomicU64>,
}

/// The row that records how many rows a full queue dropped.
fn dropped_row(n: u64) -> Entry {
    Entry {
        occurred_at: OffsetDateTime::now_utc(),
        event: "audit_rows_dropped",
        outcome: "queue_full",
        user_id: None,
        client_ip: IpAddr::from([0, 0, 0, 0]),
        user_agent: None,
        request_id: None,
        detail: serde_json::json!({"rows": n}),
    }
}

impl Writer {
    /// Appends batches until `cancel`, then what is still queued (within
    /// a few seconds: shutdown must not hang on a database that is gone).
    pub async fn run(mut self, db: Db, cancel: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                n = self.rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 {
                    // Every caller is gone (the server stopped first): the
                    // task still ends with the others, on cancel.
                    cancel.cancelled().await;
                    return;
                },
            }
            // Let the rest of this batch arrive, a short while.
            let until = tokio::time::Instant::now() + FLUSH_EVERY;
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    n = self.rx.recv_many(&mut batch, room) => if n == 0 { break },
                }
            }
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::error!(
                    event = "audit_rows_dropped",
                    rows = dropped,
                    "the audit queue was full: refusal and internal API rows were dropped"
                );
                batch.push(dropped_row(dropped));
            }
            append(&db, &mut batch).await;
        }
        self.rx.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while self.rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                append(&db, &mut batch).await;
            }
        })
        .await;
    }
}

async fn append(db: &Db, batch: &mut Vec<Entry>) {
    let n = batch.len();
    // Twice: a batch that met a pool being rotated away goes to the next.
    let mut result = Err(String::new());
    for _ in 0..2 {
        result = append_once(db, batch).await;
        if result.is_ok() {
            break;
        }
    }
    if let Err(error) = result {
        ::metrics::counter!(metrics::WRITE_FAILURES).increment(n as u64);
        tracing::error!(%error, rows = n, "could not append a batch of internal API audit rows");
    }
    batch.clear();
}

async fn append_once(db: &Db, batch: &[Entry]) -> Result<(), String> {
    let pool = db.pool().await.map_err(|e| e.to_string())?;
    let ips: Vec<String> = batch.iter().map(|e| e.client_ip.to_string()).collect();
    sqlx::query("select audit_append($1, $2, $3, $4, $5::inet[], $6, $7, $8)")
        .bind(batch.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.event).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.outcome).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.user_id).collect::<Vec<_>>())
        .bind(ips)
        .bind(
            batch
                .iter()
                .map(|e| e.user_agent.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|e| e.request_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|e| e.detail.clone()).collect::<Vec<_>>())
        .execute(&*pool)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let meta = RequestMeta {
            client_ip: IpAddr::from([203, 0, 113, 9]),
            user_agent: Some("x".repeat(600)),
            request_id: Some("r-1".into()),
        };
        Entry::new("login", "failure", None, &meta, serde_json::json!({}))
    }

    #[test]
    fn a_full_queue_refuses_and_keeps_count_of_what_it_dropped() {
        let (batcher, writer) = batcher(2);
        assert!(batcher.record(entry()).is_ok());
        assert!(batcher.clone().record(entry()).is_ok());
        assert!(batcher.record(entry()).is_err());
        assert!(batcher.record(entry()).is_err());
        assert_eq!(writer.dropped.load(Ordering::Relaxed), 2);
        let row = dropped_row(2);
        assert_eq!(
            (row.event, row.outcome),
            ("audit_rows_dropped", "queue_full")
        );
        assert_eq!(row.detail["rows"], 2);
    }

    #[test]
    fn a_queued_row_keeps_at_most_512_characters_of_user_agent() {
        assert_eq!(entry().user_agent.unwrap().len(), USER_AGENT_MAX);
    }
}
