//! One credential generation: token + lease + pool.

use std::{
    str::FromStr,
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
pub async fn build_pool(config: &DbConfig, creds: &DbCredentials) -> Result<PgPool, DbError> {
    let options = connect_options(config, &creds.username, creds.password.expose_secret());
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_max)
        .min_connections(config.pool_min)
        .acquire_timeout(config.acquire_timeout)
        // A broken connection (Postgres restarted) is replaced, not handed out.
        .test_before_acquire(true)
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
