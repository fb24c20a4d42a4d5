//! The rotating pool: dynamic PostgreSQL credentials from OpenBao, swapped
//! atomically under load.
//!
//! A *generation* is an OpenBao token, the database lease it created and a
//! pool logged in with that lease's role. Handlers take the current one with
//! [`Db::pool`] (an `Arc` clone); a retiring generation is only closed once
//! no handler holds it, and only then is its lease revoked (which terminates
//! the role's sessions and drops the role). The design and its timeline are
//! in docs/rotation.md.
//!
//! [`channel`] makes the two sides together, as linkerd's `creds::watch()`
//! does: the request side ([`Db`], cheap to clone) reads the serving
//! generation and asks for rotations; the engine side ([`Publisher`], one
//! of it) is the only writer, and [`engine`] turns it into the tasks that
//! keep the credentials fresh.

mod generation;
pub mod limits;
pub mod listen;
pub mod metrics;
mod migrate;
pub mod plan;
mod rotation;

use std::{ops::Deref, sync::Arc};

use arc_swap::ArcSwapOption;
use sqlx::PgPool;
use tokio::sync::mpsc;

pub use generation::{Generation, GenerationInfo, connect_options};
pub use migrate::{MIGRATOR, migrate, owner_pool, release as release_owner_pool};
pub use plan::{Renewal, Trigger};
pub use rotation::{Leftover, engine};

use crate::{
    bao::BaoError,
    config::DbConfig,
    drain::{Hold, Tracked},
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No usable pool: not yet started, credentials lost, or Postgres down.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection died under a statement that had not committed:
    /// running the operation again on a fresh connection is safe.
    #[error("database connection lost: {0}")]
    Disconnected(String),
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Errors that may say "the connection died before anything committed".
pub trait Retryable {
    fn is_disconnected(&self) -> bool;
}

impl Retryable for DbError {
    fn is_disconnected(&self) -> bool {
        matches!(self, DbError::Disconnected(_))
    }
}

/// Runs `op`, and once more when its connection died before it committed
/// (a terminated backend, a reset, a pool closed by a retirement): the
/// second run takes a fresh connection, from the current generation. A
/// second loss answers 503 with `Retry-After`.
pub async fn retry_once<T, E, F, Fut>(op: F) -> Result<T, E>
where
    E: Retryable,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    match op().await {
        Err(e) if e.is_disconnected() => {
            ::metrics::counter!(metrics::CONNECTION_RETRIES).increment(1);
            tracing::info!(
                event = "db_connection_lost",
                "database connection lost before commit; retrying on a fresh connection"
            );
            op().await
        }
        other => other,
    }
}

/// A request to the rotation task, from whoever saw the reason.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub ask: Ask,
    /// The generation that saw the failure; a request from a retired
    /// generation is ignored. `None` for the serving one (SIGHUP).
    pub generation: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Rotate(Trigger),
    /// A statement failed the way a role dropped under its session fails
    /// (relation or schema not found, permission denied): check whether the
    /// role still exists, and rotate if not.
    CheckRole,
}

/// What both sides see. Only the [`Publisher`] writes `current` and `info`.
struct Shared {
    current: ArcSwapOption<Tracked<Generation>>,
    /// The serving generation's id, published on every swap: requests that
    /// found their generation invalid wait here for its successor.
    swapped: tokio::sync::watch::Sender<u64>,
    /// What the serving generation is, deadlines included, as the engine
    /// last learned it.
    info: tokio::sync::watch::Sender<Option<GenerationInfo>>,
    requests: mpsc::Sender<Request>,
    config: DbConfig,
    #[cfg(feature = "fault-injection")]
    panic_next: std::sync::atomic::AtomicBool,
}

/// The request side of the rotating pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

/// The engine side: the only writer of the serving generation. One exists.
pub struct Publisher {
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<Request>,
}

/// A pool with no generation yet: its readers and its one writer.
pub fn channel(config: DbConfig) -> (Db, Publisher) {
    // Requests only wake the loop: a few pending are as good as many.
    let (requests, inbox) = mpsc::channel(8);
    let shared = Arc::new(Shared {
        current: ArcSwapOption::empty(),
        swapped: tokio::sync::watch::Sender::new(0),
        info: tokio::sync::watch::Sender::new(None),
        requests,
        config,
        #[cfg(feature = "fault-injection")]
        panic_next: std::sync::atomic::AtomicBool::new(false),
    });
    (
        Db {
            shared: shared.clone(),
        },
        Publisher { shared, inbox },
    )
}

impl Publisher {
    /// Serves `next` from now on; returns the generation it replaces.
    fn swap(&self, next: Option<Arc<Tracked<Generation>>>) -> Option<Arc<Tracked<Generation>>> {
        let id = next.as_ref().map_or(0, |g| g.id);
        let old = self.shared.current.swap(next);
        self.shared.swapped.send_replace(id);
        old
    }

    fn serving(&self) -> Option<Arc<Tracked<Generation>>> {
        self.shared.current.load_full()
    }

    fn publish_info(&self, info: Option<GenerationInfo>) {
        self.shared.info.send_replace(info);
    }

    fn config(&self) -> &DbConfig {
        &self.shared.config
    }

    fn requests(&self) -> mpsc::Sender<Request> {
        self.shared.requests.clone()
    }

    #[cfg(feature = "fault-injection")]
    fn take_injected_panic(&self) -> bool {
        self.shared
            .panic_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// The current generation's pool, held for the length of a request. While
/// any handler holds one, its generation is not closed; the last one to
/// let go wakes the retirer.
pub struct PoolRef(Hold<Generation>);

impl Deref for PoolRef {
    type Target = PgPool;
    fn deref(&self) -> &PgPool {
        &self.0.pool
    }
}

impl PoolRef {
    /// The generation this pool belongs to.
    pub fn generation(&self) -> u64 {
        self.0.id
    }

    /// Classifies an error of a statement that did not commit anything by
    /// itself (a read, or a statement inside an open transaction). A role
    /// PostgreSQL refuses asks this generation's replacement.
    pub fn error(&self, e: sqlx::Error) -> DbError {
        self.classify(e, false)
    }

    /// Classifies an error of a statement that writes an audit row the
    /// change depends on: a row the trail refuses is a 503 (retryable),
    /// never a 500 (docs/audit.md, "When the trail cannot be written").
    pub fn unaudited(&self, e: sqlx::Error) -> DbError {
        match self.error(e) {
            DbError::Query(e) => {
                DbError::Unavailable(format!("the audit trail refused a row: {e}"))
            }
            other => other,
        }
    }

    /// Classifies an error of a commit, or of a statement that commits on
    /// its own: after a lost connection the outcome is unknown, so it is
    /// not retried (503).
    pub fn commit_error(&self, e: sqlx::Error) -> DbError {
        self.classify(e, true)
    }

    fn classify(&self, e: sqlx::Error, committing: bool) -> DbError {
        // Nothing committed: run again on a fresh connection (of the
        // successor, when this generation is invalid: Db::pool waits).
        // A commit's outcome is unknown: 503.
        let retry_unless_committing = |committed: String| {
            if committing {
                DbError::Unavailable(committed)
            } else {
                DbError::Disconnected(e.to_string())
            }
        };
        if role_is_invalid(&e) {
            if !self.0.mark_invalid() {
                tracing::warn!(event = "db_role_invalid", generation = self.0.id, error = %e, "database role rejected; rotating credentials now");
            }
            self.ask(Ask::Rotate(Trigger::RoleInvalid));
            return retry_unless_committing("database credentials were revoked; rotating".into());
        }
        if role_maybe_dropped(&e) {
            // A session whose role OpenBao dropped (revoked lease, expired
            // lease) no longer sees the schema; the rotation task checks
            // the role.
            tracing::warn!(event = "db_role_suspect", generation = self.0.id, error = %e, "statement failed as under a dropped role; checking the role");
            self.ask(Ask::CheckRole);
            return retry_unless_committing(e.to_string());
        }
        if connection_lost(&e) {
            // Its siblings may be dead too: ping them before use for a while.
            self.0.suspicion.raise();
            return retry_unless_committing(format!("connection lost during a commit: {e}"));
        }
        match e {
            sqlx::Error::PoolTimedOut => DbError::Unavailable(e.to_string()),
            other => DbError::Query(other),
        }
    }

    /// Asks the rotation task, on behalf of this generation.
    fn ask(&self, ask: Ask) {
        let _ = self.0.requests.try_send(Request {
            ask,
            generation: Some(self.0.id),
        });
    }
}

impl Db {
    /// The current pool. Errors with `Unavailable` before the first
    /// generation exists. While the serving generation is known to be
    /// invalid (PostgreSQL refused its role), waits for its successor, up to
    /// `DB_ACQUIRE_TIMEOUT` (at most 2 s): a request arriving during a forced rotation is
    /// served a little later rather than failed.
    pub async fn pool(&self) -> Result<PoolRef, DbError> {
        // The hot path: one load, one increment. Only a known-invalid
        // generation pays for the subscription and the deadline.
        if let Some(ready) = self.serving()? {
            return Ok(ready);
        }
        let mut swapped = self.shared.swapped.subscribe();
        let wait = self
            .shared
            .config
            .acquire_timeout
            .min(std::time::Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(ready) = self.serving()? {
                return Ok(ready);
            }
            if tokio::time::timeout_at(deadline, swapped.changed())
                .await
                .is_err()
            {
                return Err(DbError::Unavailable(
                    "database credentials were revoked; rotating".into(),
                ));
            }
        }
    }

    /// The serving generation's pool if it is valid; `Ok(None)` while it is
    /// known to be invalid; an error before the first generation.
    fn serving(&self) -> Result<Option<PoolRef>, DbError> {
        match self.shared.current.load().as_ref() {
            None => Err(DbError::Unavailable("no database credentials yet".into())),
            Some(g) if !g.is_invalid() => Ok(Some(PoolRef(g.hold()))),
            Some(_) => Ok(None),
        }
    }

    /// The serving generation's id, on every swap (0: none yet).
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.swapped.subscribe()
    }

    /// What the serving generation is (no secrets), deadlines included.
    pub fn generation(&self) -> Option<GenerationInfo> {
        self.shared.info.borrow().clone()
    }

    /// The serving generation's database password and OpenBao token, for
    /// tests that scan the logs for secrets (`fault-injection` only).
    #[cfg(feature = "fault-injection")]
    pub fn secrets_for_tests(&self) -> Vec<String> {
        use secrecy::ExposeSecret;
        let current = self.shared.current.load();
        let Some(g) = current.as_ref() else {
            return vec![];
        };
        vec![
            g.password.expose_secret().to_string(),
            g.bao.vault().settings.token.clone(),
        ]
    }

    /// The serving pool's open and idle connections (for `/metrics`).
    pub fn pool_stats(&self) -> Option<(u32, usize)> {
        let current = self.shared.current.load();
        let g = current.as_ref()?;
        Some((g.pool.size(), g.pool.num_idle()))
    }

    /// Asks the rotation task to rotate the serving generation now.
    pub fn request_rotation(&self, trigger: Trigger) {
        let _ = self.shared.requests.try_send(Request {
            ask: Ask::Rotate(trigger),
            generation: None,
        });
    }

    pub fn config(&self) -> &DbConfig {
        &self.shared.config
    }

    /// Test hook: the rotation task panics the next time it wakes.
    #[cfg(feature = "fault-injection")]
    pub fn inject_rotation_panic(&self) {
        self.shared
            .panic_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.request_rotation(Trigger::Signal);
    }
}

/// 28P01 invalid_password, 28000 invalid_authorization_specification (role
/// cannot log in), 42704 undefined_object (role does not exist), and the
/// "invalid role OID" a dropped role's surviving session reports.
/// The rest of the transaction on `conn` acts for `user`: row-level
/// security shows it that user's rows only (`set_user`, transaction-local;
/// see sql/migrations/20261201000002_assume_breach.sql).
pub async fn act_for(conn: &mut sqlx::PgConnection, user: uuid::Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("select set_user($1)")
        .bind(user)
        .execute(conn)
        .await
        .map(|_| ())
}

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

/// What a session sees once its role was dropped under it: 42P01
/// undefined_table, 42883 undefined_function and 3F000
/// invalid_schema_name (the schema is no longer usable), 42501
/// insufficient_privilege. A genuine schema problem looks
/// the same; the rotation task tells them apart by checking the role.
pub fn role_maybe_dropped(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(
                db.code().as_deref(),
                Some("42P01" | "42883" | "3F000" | "42501")
            )
        }
        _ => false,
    }
}

/// The connection, not the statement, failed: I/O errors, a pool closed
/// under the request (its generation retired), and PostgreSQL's class 08
/// (connection exception) and 57P01-03 (terminated by an administrator,
/// crash, or not accepting connections yet).
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct E(bool);
    impl Retryable for E {
        fn is_disconnected(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn a_lost_connection_is_retried_once_and_only_once() {
        let calls = AtomicU32::new(0);
        let r: Result<(), E> = retry_once(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(E(true))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let calls = AtomicU32::new(0);
        let r: Result<u32, E> = retry_once(|| async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(E(true))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.ok(), Some(7));

        let calls = AtomicU32::new(0);
        let r: Result<(), E> = retry_once(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(E(false))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "other errors are not retried"
        );
    }

    #[test]
    fn what_counts_as_a_lost_connection() {
        assert!(connection_lost(&sqlx::Error::PoolClosed));
        assert!(connection_lost(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!connection_lost(&sqlx::Error::PoolTimedOut));
        assert!(!connection_lost(&sqlx::Error::RowNotFound));
    }
}
