//! Sessions that ended, as every replica knows them.
//!
//! A session is one login's refresh family; its access tokens carry its id
//! (`sid`). Logout, refresh-reuse detection and an administrator's
//! `UPDATE refresh_families SET revoked_at = now() …` end it in PostgreSQL,
//! where a trigger announces the ids (`NOTIFY precinct_sessions`). Each
//! replica keeps the sessions that ended within the longest access-token
//! lifetime (older ones have no live token left) in memory, so that every
//! route refuses their tokens within milliseconds without a query.
//!
//! A notification is a hint, the table is the truth: announced ids are
//! looked up before they count (a forged `NOTIFY` cannot end a live
//! session), and the whole set is reloaded after every (re)connection of
//! the listener and every `RESYNC_EVERY`, so a lost notification costs at
//! most that long.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use time::OffsetDateTime;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{
    Db, DbError,
    listen::{Notice, SESSIONS},
};

/// A full reload this often, whatever the notifications say.
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// The ended sessions whose tokens could still be alive.
pub struct EndedSessions {
    /// sid → when it may be forgotten (Unix seconds).
    ended: DashMap<Uuid, i64>,
    /// How long after its end a session's tokens can still verify.
    window: Duration,
}

impl EndedSessions {
    pub fn new(window: Duration) -> Self {
        Self {
            ended: DashMap::new(),
            window,
        }
    }

    /// Whether `sid` ended (one concurrent-map lookup).
    pub fn is_ended(&self, sid: &Uuid) -> bool {
        self.ended.contains_key(sid)
    }

    /// Records a session that ended at `ended_at` (this replica's own
    /// logout, or one it confirmed).
    pub fn end(&self, sid: Uuid, ended_at: OffsetDateTime) {
        let forget = (ended_at + self.window).unix_timestamp();
        self.ended.insert(sid, forget);
    }

    /// Drops the sessions whose tokens have all expired.
    fn purge(&self, now: OffsetDateTime) {
        let now = now.unix_timestamp();
        self.ended.retain(|_, forget| *forget > now);
    }

    pub fn len(&self) -> usize {
        self.ended.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ended.is_empty()
    }
}

/// What a `precinct_sessions` payload says: session ids, or "reload".
#[derive(Debug, PartialEq, Eq)]
pub enum Announced {
    Ids(Vec<Uuid>),
    Reload,
    /// Not ours: ignored.
    Garbage,
}

/// Parses a payload: `resync`, or comma-separated UUIDs (at most the 100 a
/// trigger sends at once; more, or anything else, is not ours).
pub fn parse(payload: &str) -> Announced {
    if payload == "resync" {
        return Announced::Reload;
    }
    let ids: Result<Vec<Uuid>, _> = payload.split(',').map(str::parse).collect();
    match ids {
        Ok(ids) if !ids.is_empty() && ids.len() <= 100 => Announced::Ids(ids),
        _ => Announced::Garbage,
    }
}

/// The owner task: follows the notifications, confirms them, reloads on
/// every `Resync` and every [`RESYNC_EVERY`], purges what expired.
pub async fn run(
    ended: Arc<EndedSessions>,
    db: Db,
    mut notices: broadcast::Receiver<Notice>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let reload = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => true,
            notice = notices.recv() => match notice {
                Ok(Notice::Resync) | Err(RecvError::Lagged(_)) => true,
                Ok(Notice::Message { channel, payload }) if channel == SESSIONS => {
                    match parse(&payload) {
                        Announced::Reload => true,
                        Announced::Ids(ids) => {
                            if let Err(e) = confirm(&ended, &db, &ids).await {
                                tracing::warn!(error = %e, "could not confirm ended sessions; reloading");
                                true
                            } else {
                                false
                            }
                        }
                        Announced::Garbage => {
                            tracing::debug!(payload_len = payload.len(), "a precinct_sessions payload that is not ours; ignored");
                            false
                        }
                    }
                }
                Ok(Notice::Message { .. }) => false,
                Err(RecvError::Closed) => {
                    cancel.cancelled().await;
                    return;
                }
            },
        };
        if reload {
            ended.purge(OffsetDateTime::now_utc());
            match tokio::time::timeout(Duration::from_secs(10), load(&ended, &db)).await {
                Ok(Ok(n)) => tracing::debug!(ended = n, "ended sessions reloaded"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not reload the ended sessions"),
                Err(_) => tracing::warn!("reloading the ended sessions timed out"),
            }
        }
    }
}

/// Adds the announced sessions that really ended (revoked, or gone).
async fn confirm(ended: &EndedSessions, db: &Db, ids: &[Uuid]) -> Result<(), DbError> {
    let pool = db.pool().await?;
    let live: Vec<Uuid> = sqlx::query_scalar("select live_sessions($1)")
        .bind(ids)
        .fetch_all(&*pool)
        .await
        .map_err(|e| pool.error(e))?;
    let now = OffsetDateTime::now_utc();
    for id in ids.iter().filter(|id| !live.contains(id)) {
        ended.end(*id, now);
    }
    Ok(())
}

/// Every session that ended within the window, from the table.
async fn load(ended: &EndedSessions, db: &Db) -> Result<usize, DbError> {
    let pool = db.pool().await?;
    let rows: Vec<(Uuid, OffsetDateTime)> =
        sqlx::query_as("select id, revoked_at from ended_sessions($1)")
            .bind(ended.window.as_secs_f64())
            .fetch_all(&*pool)
            .await
            .map_err(|e| pool.error(e))?;
    for (id, at) in &rows {
        ended.end(*id, *at);
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_that_are_not_ours_are_ignored() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(parse(&format!("{a},{b}")), Announced::Ids(vec![a, b]));
        assert_eq!(parse("resync"), Announced::Reload);
        let too_many = vec![a.to_string(); 101].join(",");
        for garbage in ["", "x", "DROP TABLE users", &format!("{a},"), &too_many] {
            assert_eq!(parse(garbage), Announced::Garbage, "{garbage:?}");
        }
        assert_eq!(parse(&"a".repeat(8000)), Announced::Garbage);
    }

    #[test]
    fn an_ended_session_is_forgotten_once_its_tokens_expired() {
        let s = EndedSessions::new(Duration::from_secs(900));
        let sid = Uuid::now_v7();
        let t0 = OffsetDateTime::now_utc();
        s.end(sid, t0);
        assert!(s.is_ended(&sid));
        s.purge(t0 + Duration::from_secs(899));
        assert!(s.is_ended(&sid));
        s.purge(t0 + Duration::from_secs(900));
        assert!(!s.is_ended(&sid));
    }
}
