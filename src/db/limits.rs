//! Rate limits for the service as a whole: one GCRA per key in PostgreSQL
//! (`rate_limit_take`, one statement per check: an atomic conditional
//! upsert per key on an UNLOGGED table), so N replicas allow what one
//! allows. This replica remembers the refusals it saw until they expire: a
//! client refused once is refused again without a query (a refusal can only
//! last longer as others take from the same key, never shorter).
//!
//! When PostgreSQL cannot answer, the check fails: callers refuse (503), a
//! limiter never turns into "unlimited".

use std::time::{Duration, Instant};

use crate::ratelimit::{Key, Quota};

use super::{Db, DbError};

/// One key to take a token from.
#[derive(Debug, Clone, Copy)]
pub struct Take {
    pub quota: Quota,
    pub key: Key,
    /// Skipped when the request's known-good key is known (the per-username
    /// backstop spares the user's own clients).
    pub spare_known_good: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused {
        limiter: &'static str,
        retry_after: Duration,
    },
}

/// How long a successful login keeps its (client IP, username) pair a
/// known-good client.
pub const KNOWN_GOOD_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Cheap to clone.
#[derive(Clone)]
pub struct Limits {
    db: Db,
    /// Keys this replica saw refused, until when.
    refused: std::sync::Arc<quick_cache::sync::Cache<Key, Instant>>,
}

impl Limits {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            refused: std::sync::Arc::new(quick_cache::sync::Cache::new(100_000)),
        }
    }

    /// Takes one token from each key in order; the first empty one refuses
    /// (and the ones after it are not taken from).
    pub async fn check(&self, takes: &[Take], known_good: Option<Key>) -> Result<Verdict, DbError> {
        let now = Instant::now();
        for t in takes.iter().filter(|t| !t.spare_known_good) {
            if let Some(until) = self.refused.get(&t.key)
                && until > now
            {
                return Ok(self.refusal(t.quota.limiter, until - now));
            }
        }
        let keys: Vec<&[u8]> = takes.iter().map(|t| t.key.as_slice()).collect();
        let emission: Vec<f64> = takes
            .iter()
            .map(|t| t.quota.emission().as_secs_f64() * 1000.0)
            .collect();
        let burst: Vec<i32> = takes.iter().map(|t| t.quota.burst() as i32).collect();
        let spare: Vec<bool> = takes.iter().map(|t| t.spare_known_good).collect();
        let pool = self.db.pool().await?;
        let (refused, retry_ms): (i32, f64) = sqlx::query_as(
            "select refused, retry_after_ms from rate_limit_take($1, $2, $3, $4, $5, $6)",
        )
        .bind(&keys)
        .bind(&emission)
        .bind(&burst)
        .bind(&spare)
        .bind(known_good.as_ref().map(|k| k.as_slice()))
        .bind(KNOWN_GOOD_FOR.as_secs_f64())
        .fetch_one(&*pool)
        .await
        // One statement that commits on its own: a lost connection leaves
        // it unknown whether the tokens were taken (503, not retried).
        .map_err(|e| pool.commit_error(e))?;
        let Some(take) = usize::try_from(refused)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| takes.get(i))
        else {
            return Ok(Verdict::Allowed);
        };
        let retry_after = Duration::from_secs_f64(retry_ms.max(1.0) / 1000.0);
        if !take.spare_known_good {
            self.refused.insert(take.key, now + retry_after);
        }
        Ok(self.refusal(take.quota.limiter, retry_after))
    }

    fn refusal(&self, limiter: &'static str, retry_after: Duration) -> Verdict {
        metrics::counter!(crate::ratelimit::RATE_LIMITED, "limiter" => limiter).increment(1);
        Verdict::Refused {
            limiter,
            retry_after,
        }
    }

    /// Records a known-good client (a successful login from it).
    pub async fn remember_known_good(&self, key: Key) -> Result<(), DbError> {
        let pool = self.db.pool().await?;
        sqlx::query(
            "insert into login_known_good (key, last_success) values ($1, now()) \
             on conflict (key) do update set last_success = now()",
        )
        .bind(key.as_slice())
        .execute(&*pool)
        .await
        .map_err(|e| pool.commit_error(e))?;
        Ok(())
    }
}

/// Deletes expired limiter rows and forgotten known-good clients, every
/// `every` until `cancel` (the caller spawns it; any replica may run it).
pub async fn sweep(db: Db, every: Duration, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(pool) = db.pool().await else { continue };
        let swept = sqlx::query("select rate_limits_sweep($1)")
            .bind(KNOWN_GOOD_FOR.as_secs_f64())
            .execute(&*pool)
            .await;
        if let Err(e) = swept {
            tracing::debug!(error = %e, "rate-limit sweep failed; next time");
        }
    }
}
