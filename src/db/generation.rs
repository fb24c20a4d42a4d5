//! One credential generation: token + lease + pool.

use std::{
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};
use time::OffsetDateTime;

use super::DbError;
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
    pub(super) expiry: Mutex<Expiry>,
}

/// Expiries that renewals move.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expiry {
    pub lease: OffsetDateTime,
    pub token: OffsetDateTime,
}

/// What may be shown about a generation.
#[derive(Debug, Clone)]
pub struct GenerationInfo {
    pub id: u64,
    pub username: String,
    pub lease_expires_at: OffsetDateTime,
    pub token_expires_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
}

impl Generation {
    pub fn info(&self) -> GenerationInfo {
        let e = *self.expiry.lock().expect("expiry lock");
        GenerationInfo {
            id: self.id,
            username: self.username.clone(),
            lease_expires_at: e.lease,
            token_expires_at: e.token,
            created_at: self.created_at,
        }
    }

    pub(super) fn expiry(&self) -> Expiry {
        *self.expiry.lock().expect("expiry lock")
    }

    pub(super) fn set_expiry(&self, f: impl FnOnce(&mut Expiry)) {
        f(&mut self.expiry.lock().expect("expiry lock"));
    }
}

/// Connection options for `creds`, search_path set to the app schema.
pub fn connect_options(config: &DbConfig, username: &str, password: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(&config.host)
        .port(config.port)
        .database(&config.name)
        .username(username)
        .password(password)
        .ssl_mode(PgSslMode::from_str(&config.sslmode).unwrap_or(PgSslMode::Prefer))
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
