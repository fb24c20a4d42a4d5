//! The rotating pool: dynamic PostgreSQL credentials from OpenBao, swapped
//! atomically under load.
//!
//! A *generation* is an OpenBao token, the database lease it created and a
//! pool logged in with that lease's role. Handlers take the current one with
//! [`Db::pool`] (an `Arc` clone); a retiring generation is only closed once
//! no handler holds it, and only then is its lease revoked (which terminates
//! the role's sessions and drops the role). The design and its timeline are
//! in docs/rotation.md.

mod generation;
mod migrate;
mod rotation;

use std::{ops::Deref, sync::Arc};

use arc_swap::ArcSwapOption;
use sqlx::PgPool;
use tokio::sync::Notify;

pub use generation::{Generation, GenerationInfo};
pub use migrate::{MIGRATOR, migrate};
pub use rotation::spawn;

use crate::{
    bao::BaoError,
    config::{BaoConfig, DbConfig},
    events::PodEvents,
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No usable pool: not yet started, credentials lost, or Postgres down.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

struct Inner {
    current: ArcSwapOption<Generation>,
    rotate_now: Notify,
    config: DbConfig,
    bao: BaoConfig,
    events: PodEvents,
}

/// Handle to the rotating pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

/// The current generation's pool, held for the length of a request. While
/// any handler holds one, its generation is not closed.
pub struct PoolRef(Arc<Generation>);

impl Deref for PoolRef {
    type Target = PgPool;
    fn deref(&self) -> &PgPool {
        &self.0.pool
    }
}

impl Db {
    /// `events` records rotations and their failures on the Pod.
    pub fn new(config: DbConfig, bao: BaoConfig, events: PodEvents) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                rotate_now: Notify::new(),
                config,
                bao,
                events,
            }),
        }
    }

    /// The current pool. Errors with `Unavailable` before the first
    /// generation exists.
    pub fn pool(&self) -> Result<PoolRef, DbError> {
        self.inner
            .current
            .load_full()
            .map(PoolRef)
            .ok_or_else(|| DbError::Unavailable("no database credentials yet".into()))
    }

    /// What the current generation is (no secrets).
    pub fn generation(&self) -> Option<GenerationInfo> {
        self.inner.current.load().as_ref().map(|g| g.info())
    }

    /// Asks the rotation task to rotate now (SIGHUP, invalid role).
    pub fn request_rotation(&self) {
        self.inner.rotate_now.notify_one();
    }

    /// Classifies a query error, requesting a rotation when Postgres says
    /// the current role is no longer valid.
    pub fn classify(&self, e: sqlx::Error) -> DbError {
        if role_is_invalid(&e) {
            tracing::warn!(error = %e, "database role rejected; rotating credentials now");
            self.request_rotation();
            return DbError::Unavailable("database credentials were revoked; rotating".into());
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                DbError::Unavailable(e.to_string())
            }
            other => DbError::Query(other),
        }
    }

    pub fn config(&self) -> &DbConfig {
        &self.inner.config
    }
}

/// 28P01 invalid_password, 28000 invalid_authorization_specification (role
/// cannot log in), 42704 undefined_object (role does not exist), and the
/// "invalid role OID" a dropped role's surviving session reports.
pub fn role_is_invalid(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("28P01" | "28000" | "42704"))
                || db.message().contains("invalid role OID")
                || (db.code().as_deref() == Some("42501") && db.message().contains("role"))
        }
        _ => false,
    }
}
