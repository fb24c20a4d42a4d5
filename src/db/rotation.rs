//! The rotation task: creates generations, renews what must live longer,
//! swaps, drains, closes, revokes. Also the periodic health check behind
//! readiness `database`, and SIGHUP.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    Db, DbError,
    generation::{Expiry, Generation, build_pool},
    role_is_invalid,
};
use crate::{backoff::Backoff, bao::BaoClient, identity::Identity, readiness::Check};

/// Starts the rotation loop (which creates the first generation), the
/// health check and the SIGHUP listener.
pub fn spawn(
    db: Db,
    identity: Identity,
    check: Check,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(rotation_loop(
        db.clone(),
        identity,
        check.clone(),
        cancel.clone(),
    ));
    tasks.spawn(health_loop(db.clone(), check, cancel.clone()));
    tasks.spawn(sighup_loop(db, cancel));
}

async fn sighup_loop(db: Db, cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: rotating database credentials now");
                db.request_rotation();
            }
        }
    }
}

/// Time kept between a deadline (lease or token expiry) and the end of the
/// old generation's drain.
fn safety(lease_ttl: Duration) -> Duration {
    (lease_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// When the generation must be replaced: the interval, 2/3 of the lease,
/// and early enough that neither the lease nor the token that owns it can
/// expire before the old pool has drained.
fn rotate_at(g: &Generation, db: &Db) -> OffsetDateTime {
    let c = db.config();
    let e = g.expiry();
    let tail = c.drain_timeout + safety(g.lease_ttl);
    [
        g.created_at + c.rotation_interval,
        g.created_at + g.lease_ttl * 2 / 3,
        e.lease - tail,
        e.token - tail,
    ]
    .into_iter()
    .min()
    .expect("non-empty")
}

/// When to renew the generation's token: at half its TTL, if it would
/// otherwise expire before the generation's planned end.
fn renew_token_at(g: &Generation, db: &Db) -> Option<OffsetDateTime> {
    let e = g.expiry();
    let planned_end = g.created_at + db.config().rotation_interval + db.config().drain_timeout;
    (g.bao.renewable && e.token < planned_end + safety(g.lease_ttl))
        .then(|| e.token - g.bao.token_ttl / 2)
}

async fn rotation_loop(db: Db, identity: Identity, check: Check, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut next_id = 1u64;
    let mut retry_at: Option<Instant> = None;
    loop {
        // Not held across the rotation: retiring waits for every holder.
        let now = OffsetDateTime::now_utc();
        let (rotate_due, renew_due) = match db.inner.current.load().as_ref() {
            None => (now, None),
            Some(g) => (rotate_at(g, &db), renew_token_at(g, &db)),
        };
        // After a failure the backoff decides; otherwise the schedule does.
        let wake = match retry_at {
            Some(at) => now + at.saturating_duration_since(Instant::now()),
            None => renew_due.map_or(rotate_due, |r| r.min(rotate_due)),
        };
        let sleep = (wake - now).max(time::Duration::ZERO).unsigned_abs();
        let forced = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(sleep) => false,
            _ = db.inner.rotate_now.notified() => true,
        };
        let now = OffsetDateTime::now_utc();
        if !forced
            && retry_at.is_none()
            && now < rotate_due
            && renew_due.is_some()
            && let Some(g) = db.inner.current.load_full()
        {
            renew_token(&g).await;
            continue;
        }
        match rotate(&db, &identity, next_id).await {
            Ok(()) => {
                next_id += 1;
                retry_at = None;
                backoff.reset();
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "credential rotation failed; the current pool keeps serving");
                db.inner
                    .events
                    .warning(
                        "CredentialsRotationFailed",
                        "RotateCredentials",
                        format!(
                            "{e}; retrying in {}s, the current pool keeps serving",
                            delay.as_secs()
                        ),
                    )
                    .await;
                if let Some(g) = db.inner.current.load_full() {
                    keep_alive(&g).await;
                } else {
                    check.set_not_ready(format!("no database credentials yet: {e}"));
                }
                retry_at = Some(Instant::now() + delay);
            }
        }
    }
    // Shutting down: retire the serving generation cleanly.
    if let Some(g) = db.inner.current.swap(None) {
        retire(g, db.config().drain_timeout).await;
    }
}

async fn renew_token(g: &Generation) {
    match g.bao.renew_self().await {
        Ok(granted) => {
            g.set_expiry(|e| e.token = OffsetDateTime::now_utc() + granted);
            tracing::debug!(generation = g.id, ?granted, "generation token renewed");
        }
        Err(e) => tracing::warn!(generation = g.id, error = %e, "generation token renewal failed"),
    }
}

/// While rotations fail, stretch what can be stretched (token, then lease).
async fn keep_alive(g: &Generation) {
    let now = OffsetDateTime::now_utc();
    let e = g.expiry();
    if g.bao.renewable && e.token - now < g.bao.token_ttl / 2 {
        renew_token(g).await;
    }
    if e.lease - now < g.lease_ttl / 3 {
        match g.bao.renew_lease(&g.lease_id, g.lease_ttl).await {
            Ok(granted) => {
                g.set_expiry(|e| e.lease = OffsetDateTime::now_utc() + granted);
                tracing::info!(
                    generation = g.id,
                    ?granted,
                    "database lease renewed while rotation fails"
                );
            }
            Err(e) => {
                tracing::warn!(generation = g.id, error = %e, "database lease renewal failed")
            }
        }
    }
}

/// One rotation: new token → new lease → new pool, proven → swap → retire
/// the old generation. Anything created before a failure is revoked.
async fn rotate(db: &Db, identity: &Identity, id: u64) -> Result<(), DbError> {
    let started = Instant::now();
    let bao = BaoClient::login(&db.inner.bao, identity).await?;
    let creds = match bao.db_credentials(&db.inner.bao.db_role).await {
        Ok(c) => c,
        Err(e) => {
            let _ = bao.revoke_self().await;
            return Err(e.into());
        }
    };
    let pool = match build_pool(db.config(), &creds).await {
        Ok(p) => p,
        Err(e) => {
            let _ = bao.revoke_lease(&creds.lease_id).await;
            let _ = bao.revoke_self().await;
            return Err(e);
        }
    };
    let now = OffsetDateTime::now_utc();
    let generation = Arc::new(Generation {
        id,
        pool,
        username: creds.username,
        lease_id: creds.lease_id,
        lease_ttl: creds.lease_duration,
        created_at: now,
        expiry: Mutex::new(Expiry {
            lease: now + creds.lease_duration,
            token: bao.token_expires_at,
        }),
        bao,
    });
    let next = rotate_at(&generation, db);
    let old = db.inner.current.swap(Some(generation.clone()));
    tracing::info!(
        generation = id,
        role = %generation.username,
        lease_ttl = ?generation.lease_ttl,
        next_rotation = %next,
        took = ?started.elapsed(),
        "database credentials rotated"
    );
    if (next - now).unsigned_abs() < db.config().rotation_interval {
        tracing::warn!(
            next_rotation = %next,
            "lease or token lifetime forces rotation before DB_ROTATION_INTERVAL; see docs/rotation.md"
        );
    }
    db.inner
        .events
        .normal(
            "CredentialsRotated",
            "RotateCredentials",
            format!(
                "generation {id}: database role {}, lease {}s",
                generation.username,
                generation.lease_ttl.as_secs()
            ),
        )
        .await;
    if let Some(old) = old {
        retire(old, db.config().drain_timeout).await;
    }
    Ok(())
}

/// Drain → close → revoke lease → revoke token.
async fn retire(old: Arc<Generation>, drain_timeout: Duration) {
    let deadline = Instant::now() + drain_timeout;
    // Handlers hold the generation (PoolRef) for the whole request.
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holders = Arc::strong_count(&old) - 1;
    if holders > 0 {
        tracing::warn!(
            generation = old.id,
            holders,
            "drain timeout: closing the old pool under running requests"
        );
    }
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(remaining, old.pool.close())
        .await
        .is_err()
    {
        tracing::warn!(
            generation = old.id,
            "old pool did not close in time; revoking anyway"
        );
    }
    // Revocation terminates the role's remaining sessions and drops it.
    if let Err(e) = old.bao.revoke_lease(&old.lease_id).await {
        tracing::warn!(generation = old.id, error = %e, "could not revoke the old lease; revoking its token");
    }
    if let Err(e) = old.bao.revoke_self().await {
        tracing::warn!(generation = old.id, error = %e, "could not revoke the old token; it expires on its own");
    }
    tracing::info!(generation = old.id, role = %old.username, "old generation retired");
}

async fn health_loop(db: Db, check: Check, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(db.config().health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(g) = db.inner.current.load_full() else {
            continue; // the rotation loop reports why
        };
        let left = g.expiry().lease - OffsetDateTime::now_utc();
        let margin = db.config().lease_safety_margin;
        if left < margin {
            check.set_not_ready(format!(
                "database lease expires in {}s (under the {}s safety margin) and could not be rotated",
                left.whole_seconds().max(0),
                margin.as_secs()
            ));
            continue;
        }
        let probe = tokio::time::timeout(
            db.config().acquire_timeout,
            sqlx::query("select 1").execute(&g.pool),
        )
        .await;
        match probe {
            Ok(Ok(_)) => check.set_ready(),
            Ok(Err(e)) => {
                if role_is_invalid(&e) {
                    db.request_rotation();
                }
                check.set_not_ready(format!("database check failed: {e}"));
            }
            Err(_) => check.set_not_ready("database check timed out"),
        }
    }
}
