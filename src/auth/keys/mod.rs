//! The Transit public keys that verify access tokens, owned by one task.
//!
//! Verification reads the current key set with one atomic load. The owner
//! task fetches the keys at start, every `AUTH_SIGNING_KEY_REFRESH`, when a
//! verifier meets a newer `kid` than it knows, and when another replica or
//! an operator announces a change (`NOTIFY precinct_keys`), but never twice
//! within `AUTH_SIGNING_KEY_MIN_REFRESH`: a burst of forged `kid`s costs at
//! most one OpenBao call per interval. A failed fetch keeps the last good
//! keys in use and retries with backoff. Which version signs and which
//! verify is [`schedule::plan`]: the same on every replica.

pub mod schedule;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use schedule::{FetchHistory, Plan, Rules, Schedule, next_fetch};

use crate::{
    bao::{
        SessionWatch,
        transit::{self, TransitError},
    },
    readiness::Check,
};

pub struct PublicKey {
    pub x: String,
    pub y: String,
    pub decoding: DecodingKey,
    /// Transit's `creation_time` of this version.
    pub created: OffsetDateTime,
}

/// One fetched set of key versions and the plan derived from it.
#[derive(Default)]
pub struct KeySet {
    /// Every version Transit reports.
    pub keys: BTreeMap<u64, PublicKey>,
    /// What signs and what verifies; `None` before the first fetch.
    pub plan: Option<Plan>,
    /// When the fetch behind this set started; `None`: never fetched.
    pub fetched_at: Option<Instant>,
}

impl KeySet {
    /// The public key of `version` if the plan accepts it.
    pub fn verifying(&self, version: u64) -> Option<&PublicKey> {
        self.plan
            .as_ref()
            .filter(|p| p.accepts(version))
            .and_then(|_| self.keys.get(&version))
    }

    /// The version new tokens are signed with (0: no keys yet).
    pub fn signing(&self) -> u64 {
        self.plan.as_ref().map_or(0, |p| p.signing)
    }

    /// The newest version known, accepted or not.
    pub fn newest(&self) -> u64 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    /// The same keys under the plan for `now`.
    fn replanned(&self, rules: &Rules, now: OffsetDateTime) -> KeySet {
        let versions: Vec<(u64, OffsetDateTime)> =
            self.keys.iter().map(|(v, k)| (*v, k.created)).collect();
        KeySet {
            keys: self
                .keys
                .iter()
                .map(|(v, k)| {
                    (
                        *v,
                        PublicKey {
                            x: k.x.clone(),
                            y: k.y.clone(),
                            decoding: k.decoding.clone(),
                            created: k.created,
                        },
                    )
                })
                .collect(),
            plan: schedule::plan(&versions, rules, now),
            fetched_at: self.fetched_at,
        }
    }
}

/// Shared between the owner task (the only writer) and every verifier.
pub struct SigningKeys {
    current: ArcSwap<KeySet>,
    demand: Notify,
    demanded: AtomicBool,
    /// Bumped on every publication: verifiers waiting for a fetch watch it.
    published: watch::Sender<u64>,
    /// A fetch found other versions than the one before: tell the others.
    changed: Notify,
}

impl Default for SigningKeys {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(KeySet::default()),
            demand: Notify::new(),
            demanded: AtomicBool::new(false),
            published: watch::Sender::new(0),
            changed: Notify::new(),
        }
    }
}

impl SigningKeys {
    /// The current key set: one atomic load, no lock, no I/O.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// The current key set, owned (for a caller that may swap it).
    pub fn current_full(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Asks the owner for a fetch (coalesced: a thousand asks are one).
    pub fn request_refresh(&self) {
        if !self.demanded.swap(true, Ordering::AcqRel) {
            self.demand.notify_one();
        }
    }

    /// Asks for a fetch and waits, up to `within`, for one that started
    /// after the ask (single flight: every waiter waits for the same fetch).
    /// Returns the newest set either way.
    pub async fn refreshed(&self, within: Duration) -> Arc<KeySet> {
        let asked = Instant::now();
        let mut published = self.published.subscribe();
        self.request_refresh();
        let wait = async {
            loop {
                if self.current().fetched_at.is_some_and(|at| at >= asked) {
                    return;
                }
                if published.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        self.current.load_full()
    }

    pub fn publish(&self, set: KeySet) {
        self.current.store(Arc::new(set));
        self.published.send_modify(|n| *n += 1);
    }
}

/// Where the keys come from.
#[derive(Clone)]
pub struct KeySource {
    pub session: SessionWatch,
    pub mount: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error("{0}")]
    Bao(String),
    #[error("transit key {0} is not an ecdsa-p256 key")]
    NotP256(String),
}

impl KeySource {
    /// Every version's public key and creation time, from Transit.
    pub async fn fetch(&self) -> Result<BTreeMap<u64, PublicKey>, KeyFetchError> {
        let client = self.session.ready().await;
        let versions = transit::public_keys(client.vault(), &self.mount, &self.key)
            .await
            .map_err(|e| match e {
                TransitError::NotP256(k) => KeyFetchError::NotP256(k),
                e => KeyFetchError::Bao(e.to_string()),
            })?;
        let mut keys = BTreeMap::new();
        for (version, entry) in versions {
            let created = OffsetDateTime::parse(
                &entry.creation_time,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| {
                KeyFetchError::Bao(format!(
                    "transit key {} version {version}: creation_time {:?}: {e}",
                    self.key, entry.creation_time
                ))
            })?;
            keys.insert(
                version,
                PublicKey {
                    x: entry.x,
                    y: entry.y,
                    decoding: entry.decoding,
                    created,
                },
            );
        }
        Ok(keys)
    }
}

/// The owner task: fetches on schedule and on demand, re-plans when the
/// plan says it changes (a version activates or retires), publishes, and
/// reports readiness (ready once keys were fetched; a later failure keeps
/// them).
pub async fn run(
    keys: Arc<SigningKeys>,
    source: KeySource,
    schedule: Schedule,
    rules: Rules,
    check: Check,
    on_change: impl Fn(&KeySet, &KeySet),
    cancel: CancellationToken,
) {
    let mut history = FetchHistory::default();
    let publish = |set: KeySet| {
        on_change(&keys.current(), &set);
        keys.publish(set);
    };
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = source.session.ready() => {}
    }
    loop {
        keys.demanded.store(false, Ordering::Release);
        let attempt = Instant::now();
        history.last_attempt = Some(attempt);
        let fetched = tokio::select! {
            _ = cancel.cancelled() => return,
            r = source.fetch().instrument(crate::trace::root_span("signing key refresh")) => r,
        };
        match fetched {
            Ok(versions) => {
                metrics::counter!(crate::auth::metrics::KEY_REFRESHES, "outcome" => "success")
                    .increment(1);
                history.last_success = Some(attempt);
                history.failures_in_a_row = 0;
                let set = KeySet {
                    keys: versions,
                    plan: None,
                    fetched_at: Some(attempt),
                }
                .replanned(&rules, OffsetDateTime::now_utc());
                if set.plan.is_some() {
                    check.set_ready();
                } else {
                    check.set_not_ready("access-token signing keys: Transit has no version");
                }
                let before = keys.current();
                if before.fetched_at.is_some() && !before.keys.keys().eq(set.keys.keys()) {
                    keys.changed.notify_one();
                }
                drop(before);
                publish(set);
            }
            Err(e) => {
                metrics::counter!(crate::auth::metrics::KEY_REFRESHES, "outcome" => "failure")
                    .increment(1);
                history.failures_in_a_row += 1;
                let have = keys.current().plan.is_some();
                tracing::warn!(
                    event = "signing_keys_refresh_failed",
                    error = %e,
                    failures = history.failures_in_a_row,
                    keeping_last_good = have,
                    "could not refresh the access-token signing keys"
                );
                if !have {
                    check.set_not_ready(format!("access-token signing keys: {e}"));
                }
                // Waiters for this fetch learn it is over.
                keys.published.send_modify(|n| *n += 1);
            }
        }
        // Sleep until the routine fetch, until demanded (not before the
        // minimum interval), or until the plan changes by itself.
        loop {
            let demanded = keys.demanded.load(Ordering::Acquire);
            let at = next_fetch(&history, &schedule, demanded, Instant::now());
            if at <= Instant::now() {
                break;
            }
            let replan = keys
                .current()
                .plan
                .as_ref()
                .and_then(|p| p.next_change)
                .map(|when| {
                    let wait = (when - OffsetDateTime::now_utc())
                        .try_into()
                        .unwrap_or(Duration::ZERO);
                    tokio::time::Instant::now() + wait
                });
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(at.into()) => break,
                _ = keys.demand.notified() => {}
                _ = sleep_until_some(replan) => {
                    let set = keys.current().replanned(&rules, OffsetDateTime::now_utc());
                    publish(set);
                }
            }
        }
    }
}

/// Follows the announcements of other replicas and operators
/// (`NOTIFY precinct_keys`): each asks for a fetch (coalesced, never closer
/// than the minimum interval, so forged announcements cost nothing more).
/// After the listener reconnected, announcements may have been lost: fetch.
pub async fn follow(
    keys: Arc<SigningKeys>,
    mut notices: tokio::sync::broadcast::Receiver<crate::db::listen::Notice>,
    cancel: CancellationToken,
) {
    use crate::db::listen::{KEYS, Notice};
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let notice = tokio::select! {
            _ = cancel.cancelled() => return,
            n = notices.recv() => n,
        };
        match notice {
            Ok(Notice::Message { channel, .. }) if channel == KEYS => keys.request_refresh(),
            Ok(Notice::Resync) | Err(RecvError::Lagged(_)) => keys.request_refresh(),
            Ok(Notice::Message { .. }) => {}
            Err(RecvError::Closed) => {
                cancel.cancelled().await;
                return;
            }
        }
    }
}

/// Tells every other replica when this one's fetch found other versions
/// than before (a rotation, a retirement): they fetch at once instead of
/// at their next routine refresh.
pub async fn announce(keys: Arc<SigningKeys>, db: crate::db::Db, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = keys.changed.notified() => {}
        }
        let sent = async {
            let pool = db.pool().await?;
            sqlx::query("select pg_notify($1, 'changed')")
                .bind(crate::db::listen::KEYS)
                .execute(&*pool)
                .await
                .map_err(|e| pool.error(e))
        };
        match sent.await {
            Ok(_) => tracing::info!(
                event = "signing_keys_announced",
                "signing key versions changed in Transit: told the other replicas"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not tell the other replicas that the signing keys changed")
            }
        }
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_demands_is_one_notification() {
        let keys = SigningKeys::default();
        for _ in 0..1000 {
            keys.request_refresh();
        }
        assert!(keys.demanded.load(Ordering::Acquire));
    }
}
