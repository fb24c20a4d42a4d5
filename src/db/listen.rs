//! PostgreSQL `LISTEN`, on a connection of its own that follows the
//! credential generations: what one replica (or an operator, or a trigger)
//! announces, every replica hears within milliseconds.
//!
//! Notifications sent while the listener is disconnected are lost, so every
//! (re)connection is announced as [`Notice::Resync`] *after* `LISTEN` is in
//! place: consumers reload what they keep from the tables, and nothing that
//! happened in between is missed. The listener connects with the serving
//! generation's credentials and moves to the next generation as soon as it
//! is published (the old one's role is dropped at its retirement, and with
//! it every session it had).

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Db;
use crate::backoff::Backoff;

/// Sessions that ended (a trigger on `refresh_families` sends their ids).
pub const SESSIONS: &str = "precinct_sessions";
/// Signing keys changed in Transit (an operator, or a replica that saw it).
pub const KEYS: &str = "precinct_keys";

/// What consumers of [`Notifications`] receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Message {
        channel: String,
        payload: String,
    },
    /// The listener (re)connected: anything announced before may be lost.
    Resync,
}

/// Subscribe here; cheap to clone.
#[derive(Clone)]
pub struct Notifications {
    tx: broadcast::Sender<Notice>,
}

impl Notifications {
    /// A receiver of every notice from now on. A receiver that lags behind
    /// the buffer gets `Lagged`: treat it as [`Notice::Resync`].
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }
}

/// The listener's connection names itself so (`pg_stat_activity`).
pub const APPLICATION_NAME: &str = "precinct-listener";

/// Notifications on `channels`, and the future that keeps the listener
/// connected until `cancel` (the caller spawns it).
pub fn listen(
    db: Db,
    channels: &'static [&'static str],
    cancel: CancellationToken,
) -> (Notifications, impl Future<Output = ()> + Send + 'static) {
    let (tx, _) = broadcast::channel(1024);
    let notifications = Notifications { tx: tx.clone() };
    (notifications, run(db, channels, tx, cancel))
}

async fn run(
    db: Db,
    channels: &'static [&'static str],
    tx: broadcast::Sender<Notice>,
    cancel: CancellationToken,
) {
    let mut swaps = db.swaps();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            r = connect(&db, channels) => r,
        };
        let (mut listener, pool, generation) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "notification listener cannot connect yet; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = swaps.changed() => {}
                }
                continue;
            }
        };
        backoff.reset();
        tracing::debug!(generation, "notification listener connected");
        let _ = tx.send(Notice::Resync);
        let lost = loop {
            tokio::select! {
                _ = cancel.cancelled() => break None,
                changed = swaps.changed() => {
                    if changed.is_err() { break None; }
                    if *swaps.borrow_and_update() != generation {
                        break Some("a new credential generation");
                    }
                }
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => {
                        let _ = tx.send(Notice::Message {
                            channel: n.channel().to_string(),
                            payload: n.payload().to_string(),
                        });
                    }
                    Ok(None) | Err(_) => break Some("the connection was lost"),
                },
            }
        };
        drop(listener);
        pool.close().await;
        match lost {
            None => return,
            Some(why) => tracing::debug!(generation, why, "notification listener reconnecting"),
        }
    }
}

/// A listener on a one-connection pool with the serving generation's
/// credentials, listening on every channel; and that generation's id.
async fn connect(
    db: &Db,
    channels: &[&str],
) -> Result<(PgListener, sqlx::PgPool, u64), super::DbError> {
    let (options, generation) = {
        // Held only to read the options: a listener must not keep a
        // generation from draining.
        let serving = db.pool().await?;
        let options = serving
            .connect_options()
            .as_ref()
            .clone()
            .application_name(APPLICATION_NAME);
        (options, serving.generation())
    };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options);
    let listened = async {
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection is reported (Ok(None)) and re-established here,
        // in order: LISTEN first, then the resync.
        listener.eager_reconnect(false);
        listener.listen_all(channels.iter().copied()).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(Duration::from_secs(5), listened).await {
        Ok(Ok(listener)) => Ok((listener, pool, generation)),
        Ok(Err(e)) => {
            pool.close().await;
            Err(super::DbError::Unavailable(format!(
                "notification listener: {e}"
            )))
        }
        Err(_) => {
            pool.close().await;
            Err(super::DbError::Unavailable(
                "notification listener: connecting timed out".into(),
            ))
        }
    }
}
