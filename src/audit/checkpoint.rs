//! Signed checkpoints: every `AUDIT_CHECKPOINT_ROWS` rows or
//! `AUDIT_CHECKPOINT_INTERVAL`, whichever comes first (and only when rows
//! followed the last one), precinct signs the chain's head with its Transit
//! audit key and appends the signature as an `audit_checkpoint` row, logs
//! it as an event and copies it to OpenBao KV: three places, two of them
//! outside the database. A database superuser can recompute a hash chain;
//! only a holder of precinct's OpenBao token can sign.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{
    chain::{Checkpoint, checkpoint_message, hex},
    metrics,
};
use crate::{
    bao::{SessionWatch, transit},
    config::AuditConfig,
    db::{Db, DbError},
};

/// The chain's end and its last checkpoint, as `audit_head()` reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub seq: i64,
    pub row_hash: Vec<u8>,
    /// The seq of the last checkpoint row (0, the genesis, before any).
    pub checkpoint_row_seq: i64,
    /// The seq that checkpoint signed (the genesis, 0, before any). Rows
    /// appended while it was being signed lie between the two.
    pub checkpoint_covers_seq: i64,
    /// How long ago it was written (None: never).
    pub checkpoint_age: Option<Duration>,
}

/// Whether to sign now: rows that no checkpoint signed (those after the one
/// it covers, but for the checkpoint row itself), and either enough of them
/// or for long enough.
pub fn due(head: &Head, rows: u64, every: Duration) -> bool {
    let checkpoint_row = i64::from(head.checkpoint_row_seq > head.checkpoint_covers_seq);
    let pending =
        u64::try_from(head.seq - head.checkpoint_covers_seq - checkpoint_row).unwrap_or(0);
    pending > 0 && (pending >= rows || head.checkpoint_age.is_none_or(|age| age >= every))
}

/// How often to look at the head: often enough that a burst of rows is
/// signed soon after it crosses the threshold.
pub fn poll_interval(every: Duration) -> Duration {
    (every / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("transit: {0}")]
    Transit(#[from] transit::TransitError),
    #[error("the OpenBao session is not established yet")]
    NoSession,
}

pub struct Checkpointer {
    db: Db,
    session: SessionWatch,
    transit_mount: String,
    config: AuditConfig,
}

impl Checkpointer {
    pub fn new(db: Db, session: SessionWatch, transit_mount: String, config: AuditConfig) -> Self {
        Self {
            db,
            session,
            transit_mount,
            config,
        }
    }

    async fn head(&self) -> Result<Head, DbError> {
        let pool = self.db.pool().await?;
        let (seq, row_hash, checkpoint_row_seq, age, checkpoint_covers_seq): (
            i64,
            Vec<u8>,
            i64,
            f64,
            i64,
        ) = sqlx::query_as(
            "select seq, row_hash, checkpoint_row_seq, checkpoint_age_secs, checkpoint_covers_seq \
             from audit_head()",
        )
        .fetch_one(&*pool)
        .await
        .map_err(|e| pool.error(e))?;
        Ok(Head {
            seq,
            row_hash,
            checkpoint_row_seq,
            checkpoint_covers_seq,
            checkpoint_age: age
                .is_finite()
                .then(|| Duration::from_secs_f64(age.max(0.0))),
        })
    }

    /// Signs the head if [`due`]: the checkpoint written, or None (not
    /// due, or another replica's was as recent).
    pub async fn once(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let head = self.head().await?;
        if !due(
            &head,
            self.config.checkpoint_rows,
            self.config.checkpoint_interval,
        ) {
            return Ok(None);
        }
        let client = self.session.client().ok_or(CheckpointError::NoSession)?;
        let head_hex = hex(&head.row_hash);
        let (key_version, signature) = transit::sign(
            client.vault(),
            &self.transit_mount,
            &self.config.signing_key,
            None,
            checkpoint_message(head.seq, &head_hex).as_bytes(),
        )
        .await?;
        let cp = Checkpoint {
            covers_seq: head.seq,
            head: head_hex,
            key: self.config.signing_key.clone(),
            key_version,
            signature,
        };
        // A pool again, not the one held across the Transit call: a rotation
        // meanwhile must not wait on this generation.
        let pool = self.db.pool().await?;
        let row_seq: Option<i64> =
            sqlx::query_scalar("select audit_checkpoint($1, $2, $3, $4, $5)")
                .bind(cp.covers_seq)
                .bind(&head.row_hash)
                .bind(&cp.key)
                .bind(i32::try_from(cp.key_version).unwrap_or(i32::MAX))
                .bind(&cp.signature)
                .fetch_one(&*pool)
                .await
                .map_err(|e| pool.error(e))?;
        let Some(row_seq) = row_seq else {
            return Ok(None);
        };
        // The copy a database administrator cannot reach.
        tracing::info!(
            event = "audit_checkpoint",
            covers_seq = cp.covers_seq,
            head = %cp.head,
            key = %cp.key,
            key_version = cp.key_version,
            signature = %cp.signature,
            row_seq,
            "audit chain head signed"
        );
        // The checkpoint as verify reads it back, and where its row is.
        let mut copy = serde_json::to_value(&cp).expect("a checkpoint serializes");
        copy["row_seq"] = row_seq.into();
        if let Err(e) = client.kv_write(&self.config.kv_path, &copy).await {
            // The row and the log event stand; the next checkpoint retries.
            tracing::warn!(error = %e, "could not copy the audit checkpoint to OpenBao KV");
        }
        Ok(Some(cp))
    }
}

/// Checkpoints until `cancel` (the caller spawns it; every replica runs
/// one, the database lets one checkpoint through per head).
pub async fn run(checkpointer: Checkpointer, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(poll_interval(checkpointer.config.checkpoint_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match checkpointer.once().await {
            Ok(Some(_)) => {
                ::metrics::counter!(metrics::CHECKPOINTS, "outcome" => "signed").increment(1);
            }
            Ok(None) | Err(CheckpointError::NoSession) => {}
            // The database's own alerts cover it; the head waits for it.
            Err(CheckpointError::Db(e)) => {
                tracing::debug!(error = %e, "audit checkpoint: database not available; next time");
            }
            Err(e) => {
                ::metrics::counter!(metrics::CHECKPOINTS, "outcome" => "failed").increment(1);
                tracing::warn!(error = %e, "could not checkpoint the audit chain; next time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head at `seq` whose last checkpoint is the row `checkpoint_row_seq`
    /// and signed the row just before it (the usual case).
    fn head(seq: i64, checkpoint_row_seq: i64, age_secs: Option<u64>) -> Head {
        let covers = if checkpoint_row_seq == 0 {
            0
        } else {
            checkpoint_row_seq - 1
        };
        raced(seq, checkpoint_row_seq, covers, age_secs)
    }

    /// A head whose last checkpoint signed `covers`, rows having been
    /// appended while it was being signed.
    fn raced(seq: i64, checkpoint_row_seq: i64, covers: i64, age_secs: Option<u64>) -> Head {
        Head {
            seq,
            row_hash: vec![],
            checkpoint_row_seq,
            checkpoint_covers_seq: covers,
            checkpoint_age: age_secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_checkpoint_is_due_after_enough_rows_or_long_enough() {
        let every = Duration::from_secs(60);
        let cases = [
            // (head, due, why)
            (head(0, 0, None), false, "a fresh trail: only the genesis"),
            (
                head(5, 0, None),
                true,
                "rows and no checkpoint yet: seal them",
            ),
            (
                head(10, 10, Some(3600)),
                false,
                "nothing since the last one, however old",
            ),
            (head(11, 10, Some(5)), false, "one row, recent checkpoint"),
            (
                head(11, 10, Some(60)),
                true,
                "one row, checkpoint as old as the interval",
            ),
            (head(1010, 10, Some(1)), true, "as many rows as the setting"),
            (head(1009, 10, Some(1)), false, "one row short"),
            (
                head(9, 10, Some(99)),
                false,
                "a head behind the checkpoint (never negative)",
            ),
            (
                raced(2308, 2308, 2304, Some(60)),
                true,
                "rows appended while the last one was signed, the checkpoint row the head",
            ),
            (
                raced(2308, 2308, 2304, Some(5)),
                false,
                "the same three rows, checkpoint recent",
            ),
            (
                raced(2308, 2308, 2307, Some(3600)),
                false,
                "the checkpoint row is all that followed what it signed",
            ),
        ];
        for (h, expected, why) in cases {
            assert_eq!(due(&h, 1000, every), expected, "{why}: {h:?}");
        }
    }

    #[test]
    fn the_head_is_looked_at_a_few_times_per_interval() {
        assert_eq!(
            poll_interval(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            poll_interval(Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        assert_eq!(
            poll_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
    }
}
