//! The Transit public keys that verify access tokens, owned by one task.
//!
//! Verification reads the current key set with one atomic load and never
//! waits on OpenBao. The owner task fetches the keys at start, every
//! `AUTH_SIGNING_KEY_REFRESH`, and when a verifier meets an unknown `kid`,
//! but never twice within `AUTH_SIGNING_KEY_MIN_REFRESH`: a burst of forged
//! `kid`s costs at most one OpenBao call per interval. A failed fetch keeps
//! the last good keys in use and retries with backoff.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::DecodingKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vaultrs::api::transit::responses::ReadKeyData;

use crate::{
    bao::{BaoError, Session},
    readiness::Check,
};

pub struct PublicKey {
    pub x: String,
    pub y: String,
    pub decoding: DecodingKey,
}

/// One fetched set of key versions.
#[derive(Default)]
pub struct KeySet {
    pub keys: BTreeMap<u64, PublicKey>,
    /// The newest version: new tokens are signed with it.
    pub latest: u64,
}

/// When the owner task fetches next. Pure: tested by table below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Routine refresh after a success.
    pub every: Duration,
    /// Never two fetches closer than this (on demand or after failures).
    pub min_interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchHistory {
    pub last_attempt: Option<Instant>,
    pub last_success: Option<Instant>,
    pub failures_in_a_row: u32,
}

/// The instant of the next fetch. `demand`: a verifier met an unknown kid.
/// An instant in the past means "now".
pub fn next_fetch(h: &FetchHistory, s: &Schedule, demand: bool, now: Instant) -> Instant {
    let Some(last_attempt) = h.last_attempt else {
        return now;
    };
    let earliest = last_attempt + s.min_interval;
    let routine = if h.failures_in_a_row > 0 {
        // Backoff: min_interval, doubling, never beyond the routine period.
        let factor = 1u32 << (h.failures_in_a_row - 1).min(16);
        last_attempt + (s.min_interval.saturating_mul(factor)).min(s.every)
    } else {
        h.last_success.unwrap_or(last_attempt) + s.every
    };
    if demand {
        earliest
    } else {
        routine.max(earliest)
    }
}

/// Shared between the owner task (the only writer) and every verifier.
pub struct SigningKeys {
    current: ArcSwap<KeySet>,
    demand: Notify,
    demanded: AtomicBool,
}

impl Default for SigningKeys {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(KeySet::default()),
            demand: Notify::new(),
            demanded: AtomicBool::new(false),
        }
    }
}

impl SigningKeys {
    /// The current key set: one atomic load, no lock, no I/O.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Asks the owner for a fetch (coalesced: a thousand asks are one).
    pub fn request_refresh(&self) {
        if !self.demanded.swap(true, Ordering::AcqRel) {
            self.demand.notify_one();
        }
    }

    pub fn publish(&self, set: KeySet) {
        self.current.store(Arc::new(set));
    }
}

/// Where the keys come from.
#[derive(Clone)]
pub struct KeySource {
    pub session: Arc<tokio::sync::OnceCell<Session>>,
    pub mount: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error("OpenBao session not established yet")]
    NoSession,
    #[error("{0}")]
    Bao(String),
    #[error("transit key {0} is not an ecdsa-p256 key")]
    NotP256(String),
}

impl KeySource {
    /// Every version's public key, from Transit.
    pub async fn fetch(&self) -> Result<KeySet, KeyFetchError> {
        let session = self.session.get().ok_or(KeyFetchError::NoSession)?;
        let client = session.client();
        let key = vaultrs::transit::key::read(client.vault(), &self.mount, &self.key)
            .await
            .map_err(|e| {
                KeyFetchError::Bao(BaoError::from_client("transit key read", e).to_string())
            })?;
        let ReadKeyData::Asymmetric(entries) = key.keys else {
            return Err(KeyFetchError::NotP256(self.key.clone()));
        };
        let mut keys = BTreeMap::new();
        // The newest version's creation time, for the key-age gauge.
        let mut newest: Option<(u64, &str)> = None;
        for (version, entry) in &entries {
            let Ok(version) = version.parse::<u64>() else {
                continue;
            };
            if newest.is_none_or(|(v, _)| version > v) {
                newest = Some((version, &entry.creation_time));
            }
            let (x, y) = ec_point_from_spki_pem(&entry.public_key)
                .ok_or_else(|| KeyFetchError::NotP256(self.key.clone()))?;
            let decoding = DecodingKey::from_ec_components(&x, &y)
                .map_err(|_| KeyFetchError::NotP256(self.key.clone()))?;
            keys.insert(version, PublicKey { x, y, decoding });
        }
        let latest = keys.keys().max().copied().unwrap_or(0);
        if let Some(created) = newest.and_then(|(_, at)| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        }) {
            crate::metrics::signing_key_created(created.unix_timestamp());
        }
        Ok(KeySet { keys, latest })
    }
}

/// The owner task: fetches on schedule and on demand, publishes, reports
/// readiness (ready once keys were fetched; a later failure keeps them).
pub async fn run(
    keys: Arc<SigningKeys>,
    source: KeySource,
    schedule: Schedule,
    check: Check,
    on_change: impl Fn(&KeySet, &KeySet),
    cancel: CancellationToken,
) {
    let mut history = FetchHistory::default();
    loop {
        // Wait for the OpenBao session without counting it as a failure.
        if source.session.get().is_none() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        }
        keys.demanded.store(false, Ordering::Release);
        let attempt = Instant::now();
        history.last_attempt = Some(attempt);
        let fetched = tokio::select! {
            _ = cancel.cancelled() => return,
            r = source.fetch().instrument(crate::trace::root_span("signing key refresh")) => r,
        };
        match fetched {
            Ok(set) => {
                metrics::counter!(crate::metrics::KEY_REFRESHES, "outcome" => "success")
                    .increment(1);
                history.last_success = Some(attempt);
                history.failures_in_a_row = 0;
                on_change(&keys.current(), &set);
                keys.publish(set);
                check.set_ready();
            }
            Err(e) => {
                metrics::counter!(crate::metrics::KEY_REFRESHES, "outcome" => "failure")
                    .increment(1);
                history.failures_in_a_row += 1;
                let have = !keys.current().keys.is_empty();
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
            }
        }
        // Sleep until the routine fetch, or until demanded (not before the
        // minimum interval).
        loop {
            let demanded = keys.demanded.load(Ordering::Acquire);
            let at = next_fetch(&history, &schedule, demanded, Instant::now());
            if at <= Instant::now() {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(at.into()) => break,
                _ = keys.demand.notified() => {}
            }
        }
    }
}

/// x and y (base64url) of a P-256 SubjectPublicKeyInfo PEM: its last 65
/// bytes are the uncompressed point 0x04 || x || y.
pub(crate) fn ec_point_from_spki_pem(pem: &str) -> Option<(String, String)> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).ok()?;
    if der.len() != 91 || der[der.len() - 65] != 4 {
        return None;
    }
    let point = &der[der.len() - 64..];
    Some((
        URL_SAFE_NO_PAD.encode(&point[..32]),
        URL_SAFE_NO_PAD.encode(&point[32..]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schedule = Schedule {
        every: Duration::from_secs(60),
        min_interval: Duration::from_secs(5),
    };

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn next_fetch_follows_the_schedule_table() {
        let t0 = Instant::now();
        let ok_at = |s: u64| FetchHistory {
            last_attempt: Some(at(t0, s)),
            last_success: Some(at(t0, s)),
            failures_in_a_row: 0,
        };
        let failed = |s: u64, n: u32| FetchHistory {
            last_attempt: Some(at(t0, s)),
            last_success: None,
            failures_in_a_row: n,
        };
        // (case, history, demand, now, expected)
        let cases: Vec<(&str, FetchHistory, bool, Instant, Instant)> = vec![
            ("never fetched: now", FetchHistory::default(), false, t0, t0),
            (
                "never fetched, demanded: now",
                FetchHistory::default(),
                true,
                t0,
                t0,
            ),
            (
                "fresh keys: the routine refresh",
                ok_at(0),
                false,
                at(t0, 1),
                at(t0, 60),
            ),
            (
                "unknown kid right after a fetch: waits the minimum interval",
                ok_at(0),
                true,
                at(t0, 1),
                at(t0, 5),
            ),
            (
                "unknown kid long after a fetch: now (not before now)",
                ok_at(0),
                true,
                at(t0, 30),
                at(t0, 5),
            ),
            (
                "one failure: retry after the minimum interval",
                failed(0, 1),
                false,
                at(t0, 1),
                at(t0, 5),
            ),
            (
                "three failures: backoff doubles (4 × 5 s)",
                failed(0, 3),
                false,
                at(t0, 1),
                at(t0, 20),
            ),
            (
                "many failures: capped at the routine period",
                failed(0, 30),
                false,
                at(t0, 1),
                at(t0, 60),
            ),
            (
                "failures and a demand: still not before the minimum interval",
                failed(0, 4),
                true,
                at(t0, 1),
                at(t0, 5),
            ),
        ];
        for (case, history, demand, now, expected) in cases {
            let got = next_fetch(&history, &S, demand, now);
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn a_burst_of_demands_is_one_notification() {
        let keys = SigningKeys::default();
        for _ in 0..1000 {
            keys.request_refresh();
        }
        assert!(keys.demanded.load(Ordering::Acquire));
    }
}
