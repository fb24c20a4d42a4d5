//! One credential generation: token + lease + pool.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};
use time::OffsetDateTime;

use tokio::sync::mpsc;

use super::{DbError, Request};
use crate::{
    bao::{BaoClient, DbCredentials},
    config::DbConfig,
};

pub struct Generation {
    pub id: u64,
    pub pool: PgPool,
    pub username: String,
    pub lease_id: String,
    pub lease_ttl: Duration,
    pub created_at: OffsetDateTime,
    /// The token that created the lease; the lease dies with it.
    pub bao: BaoClient,
    /// Where this generation's handlers report a role PostgreSQL refused.
    pub(super) requests: mpsc::Sender<Request>,
    /// Why the granted lifetimes do not fit the rotation settings, if so.
    pub misfit: Option<String>,
    /// PostgreSQL refused this generation's role: hand it out no more.
    pub(super) invalid: std::sync::atomic::AtomicBool,
    /// Whether its pooled connections may be dead (pinged before use).
    pub(super) suspicion: Arc<Suspicion>,
    /// Tests scan logs for it (the `fault-injection` feature only).
    #[cfg(feature = "fault-injection")]
    pub(super) password: secrecy::SecretString,
}

/// What may be shown about a generation, as the engine publishes it when
/// the generation or its deadlines change. Wall-clock expiries (`None`:
/// granted 0, no expiry); the lease dies with its token, so the earlier of
/// the two is when the generation's credentials end.
#[derive(Debug, Clone)]
pub struct GenerationInfo {
    pub id: u64,
    pub username: String,
    pub lease_expires_at: Option<OffsetDateTime>,
    pub token_expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl GenerationInfo {
    /// When the credentials end: the earlier of lease and token.
    pub fn ends_at(&self) -> Option<OffsetDateTime> {
        match (self.lease_expires_at, self.token_expires_at) {
            (Some(l), Some(t)) => Some(l.min(t)),
            (l, t) => l.or(t),
        }
    }
}

/// A monotonic deadline as the wall-clock time it corresponds to now.
pub(super) fn wall(at: Instant) -> OffsetDateTime {
    let now = Instant::now();
    let wall_now = OffsetDateTime::now_utc();
    if at >= now {
        wall_now + (at - now)
    } else {
        wall_now - (now - at)
    }
}

impl Generation {
    pub(super) fn is_invalid(&self) -> bool {
        self.invalid.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the role refused; returns whether it already was.
    pub(super) fn mark_invalid(&self) -> bool {
        self.invalid
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }
}

/// When a pooled connection may be dead, so that it is pinged before use:
/// idle for longer than [`IDLE_PING`] (PostgreSQL, a proxy or the network
/// may have dropped it), or in the [`SUSPECT_FOR`] after one of this
/// generation's connections was found dead (killed sessions, a restart: the
/// others likely died with it). Under load, connections are idle for
/// microseconds and no query pays a second round trip; a connection found
/// dead mid-query is still retried on a fresh one (`retry_once`).
#[derive(Default)]
pub struct Suspicion {
    /// Unix milliseconds until which every acquire pings.
    until_ms: AtomicU64,
}

pub const IDLE_PING: Duration = Duration::from_secs(1);
pub const SUSPECT_FOR: Duration = Duration::from_secs(5);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Suspicion {
    /// A connection was found dead: ping every acquire for a while.
    pub fn raise(&self) {
        self.until_ms.fetch_max(
            unix_ms() + SUSPECT_FOR.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    pub fn should_ping(&self, idle_for: Duration) -> bool {
        idle_for > IDLE_PING || self.until_ms.load(Ordering::Relaxed) > unix_ms()
    }
}

/// Connection options for `creds`, search_path set to the app schema.
pub fn connect_options(config: &DbConfig, username: &str, password: &str) -> PgConnectOptions {
    let options = PgConnectOptions::new();
    let options = match &config.sslrootcert {
        Some(ca) => options.ssl_root_cert(ca),
        None => options,
    };
    options
        .host(&config.host)
        .port(config.port)
        .database(&config.name)
        .username(username)
        .password(password)
        .ssl_mode(PgSslMode::from_str(&config.sslmode).unwrap_or(PgSslMode::VerifyFull))
        .application_name("precinct")
        .options([("search_path", "precinct")])
}

/// Builds a pool for fresh credentials and proves it: a real connection
/// whose `current_user` is the new role answers `select 1`.
pub async fn build_pool(
    config: &DbConfig,
    creds: &DbCredentials,
    suspicion: Arc<Suspicion>,
) -> Result<PgPool, DbError> {
    let options = connect_options(config, &creds.username, creds.password.expose_secret());
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_max)
        .min_connections(config.pool_min)
        .acquire_timeout(config.acquire_timeout)
        // A broken connection (PostgreSQL restarted, sessions killed) is
        // replaced, not handed out: pinged first, but only when it may be
        // dead (see Suspicion), not before every query.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let ping = suspicion.should_ping(meta.idle_for);
            Box::pin(async move {
                if ping {
                    use sqlx::Connection;
                    // A dead one is closed and another taken, quietly.
                    return Ok(conn.ping().await.is_ok());
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options);
    let started = Instant::now();
    let who: (String, i32) = sqlx::query_as("select current_user::text, 1")
        .fetch_one(&pool)
        .await
        .map_err(|e| DbError::Unavailable(format!("new credentials do not connect: {e}")))?;
    if who.0 != creds.username {
        pool.close().await;
        return Err(DbError::Unavailable(format!(
            "connected as {} instead of {}",
            who.0, creds.username
        )));
    }
    tracing::debug!(elapsed = ?started.elapsed(), "new pool verified");
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_pinged_only_when_it_may_be_dead() {
        let s = Suspicion::default();
        // (case, idle for, expected)
        let calm: &[(&str, Duration, bool)] = &[
            (
                "busy: idle for microseconds",
                Duration::from_micros(50),
                false,
            ),
            ("idle just under the threshold", IDLE_PING, false),
            (
                "idle for a while",
                IDLE_PING + Duration::from_millis(1),
                true,
            ),
        ];
        for (case, idle, expected) in calm {
            assert_eq!(s.should_ping(*idle), *expected, "{case}");
        }
        s.raise();
        assert!(
            s.should_ping(Duration::ZERO),
            "after a dead connection, every acquire pings"
        );
    }
}
