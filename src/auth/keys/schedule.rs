//! The two decisions about signing keys, as pure functions with table tests:
//! which version signs and which verify ([`plan`]), and when the owner task
//! fetches from Transit next ([`next_fetch`]).
//!
//! [`plan`] depends only on what Transit reports (the versions and their
//! `creation_time`), the settings and the clock, so every replica computes
//! the same answer without talking to the others: a new version is
//! published at once and signs only once it is older than any replica's
//! refresh interval plus clock skew (pre-publication, as SPIRE's
//! prepare/activate and Auth0's signing-key rotation do), and a superseded
//! version keeps verifying for the longest token lifetime, then retires.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// The settings [`plan`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A version signs only once it is this old (`AUTH_SIGNING_KEY_PREPUBLISH`):
    /// by then every replica has fetched it and verifies its tokens.
    pub prepublish: Duration,
    /// A superseded version still verifies this long after its successor
    /// started signing: the longest an access token lives (TTL, leeway and
    /// clock skew). Then it leaves JWKS and verification.
    pub retire_after: Duration,
}

/// What signs and what verifies, until `next_change`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub signing: u64,
    /// Versions that verify and that JWKS publishes, ascending.
    pub accepted: Vec<u64>,
    /// When this plan changes by itself (a version activates or retires).
    pub next_change: Option<OffsetDateTime>,
}

impl Plan {
    pub fn accepts(&self, version: u64) -> bool {
        self.accepted.binary_search(&version).is_ok()
    }
}

/// The plan for `versions` (version, creation time; ascending, as Transit
/// lists them once `min_decryption_version` has removed the retired ones).
/// `None` when there is no version at all.
pub fn plan(
    versions: &[(u64, OffsetDateTime)],
    rules: &Rules,
    now: OffsetDateTime,
) -> Option<Plan> {
    let (first, _) = *versions.first()?;
    let activation = |created: OffsetDateTime| created + rules.prepublish;
    let active = |created: OffsetDateTime| activation(created) <= now;
    // The newest active version signs. None active: every version is newer
    // than the pre-publication (a fresh install, or the old ones retired
    // in an emergency): the oldest there is signs, and every replica that
    // has keys at all has it.
    let signing = versions
        .iter()
        .rev()
        .find(|(_, created)| active(*created))
        .map_or(first, |(v, _)| *v);
    let mut next_change: Option<OffsetDateTime> = None;
    let mut consider = |at: OffsetDateTime| {
        if at > now && next_change.is_none_or(|n| at < n) {
            next_change = Some(at);
        }
    };
    let mut accepted = Vec::with_capacity(versions.len());
    for (i, (version, created)) in versions.iter().enumerate() {
        if *version > signing {
            // Published, verifying, not signing yet.
            consider(activation(*created));
            accepted.push(*version);
        } else if *version == signing {
            accepted.push(*version);
        } else {
            // Superseded when the first newer active version activated.
            let superseded = versions[i + 1..]
                .iter()
                .filter(|(_, c)| active(*c))
                .map(|(_, c)| activation(*c))
                .min()
                .unwrap_or(now);
            let retires = superseded + rules.retire_after;
            if now < retires {
                consider(retires);
                accepted.push(*version);
            }
        }
    }
    Some(Plan {
        signing,
        accepted,
        next_change,
    })
}

/// When the owner task fetches next.
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

/// The instant of the next fetch. `demand`: a verifier met an unknown kid,
/// or another replica announced a change. An instant in the past means "now".
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

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        prepublish: Duration::from_secs(120),
        retire_after: Duration::from_secs(960),
    };

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_000_000 + secs)
    }

    #[test]
    fn which_version_signs_and_which_verify() {
        // (case, versions as (version, created at), now, signing, accepted, next change)
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &[(u64, i64)], i64, u64, &[u64], Option<i64>)] = &[
            (
                "a fresh install: the only version signs at once",
                &[(1, 0)],
                5,
                1,
                &[1],
                None,
            ),
            ("steady state", &[(1, 0)], 10_000, 1, &[1], None),
            (
                "just rotated: the new version is published, the old one signs",
                &[(1, 0), (2, 10_000)],
                10_010,
                1,
                &[1, 2],
                Some(10_120),
            ),
            (
                "pre-published long enough: the new version signs, the old one verifies",
                &[(1, 0), (2, 10_000)],
                10_120,
                2,
                &[1, 2],
                Some(10_120 + 960),
            ),
            (
                "the old version retires after the longest token lifetime",
                &[(1, 0), (2, 10_000)],
                10_120 + 960,
                2,
                &[2],
                None,
            ),
            (
                "two rotations in a row: the oldest active signs, both new ones wait",
                &[(1, 0), (2, 10_000), (3, 10_050)],
                10_060,
                1,
                &[1, 2, 3],
                Some(10_120),
            ),
            (
                "two rotations in a row, the first one active",
                &[(1, 0), (2, 10_000), (3, 10_050)],
                10_130,
                2,
                &[1, 2, 3],
                Some(10_170),
            ),
            (
                "an emergency: old versions retired in Transit, the new one signs at once",
                &[(3, 10_000)],
                10_001,
                3,
                &[3],
                None,
            ),
            (
                "a creation time in the future (OpenBao's clock ahead): not active yet",
                &[(1, 0), (2, 10_500)],
                10_000,
                1,
                &[1, 2],
                Some(10_620),
            ),
        ];
        for (case, versions, now, signing, accepted, next) in cases {
            let versions: Vec<(u64, OffsetDateTime)> =
                versions.iter().map(|(v, c)| (*v, t(*c))).collect();
            let p = plan(&versions, &RULES, t(*now)).expect(case);
            assert_eq!(p.signing, *signing, "{case}: signing");
            assert_eq!(p.accepted, accepted.to_vec(), "{case}: accepted");
            assert_eq!(p.next_change, next.map(t), "{case}: next change");
        }
        assert_eq!(plan(&[], &RULES, t(0)), None, "no version: no plan");
    }

    #[test]
    fn every_replica_computes_the_same_plan_whenever_it_fetched() {
        // Two replicas with the same Transit answer and clock agree; the
        // signing version never moves before the pre-publication is over.
        let versions = [(1, t(0)), (2, t(10_000))];
        for now in (10_000..10_200).step_by(7) {
            let a = plan(&versions, &RULES, t(now)).unwrap();
            let b = plan(&versions, &RULES, t(now)).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.signing, if now >= 10_120 { 2 } else { 1 }, "at {now}");
            assert!(a.accepts(2), "published from the first fetch on");
        }
    }

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
}
