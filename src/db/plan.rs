//! When to rotate, renew or wait: a pure function of the rotation state,
//! the policy and the (monotonic) time. The async loop in `rotation.rs`
//! performs what it returns and records the outcome; every case is in the
//! table tests below.

use std::time::{Duration, Instant};

/// Why a generation is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// No generation yet (startup, or the first one failed).
    Initial,
    /// `DB_ROTATION_INTERVAL` elapsed.
    Interval,
    /// The lease is two-thirds through, or too close to expiry to drain.
    Lease,
    /// The token that owns the lease is too close to expiry to drain.
    Token,
    /// SIGHUP.
    Signal,
    /// PostgreSQL refused the current role (revoked, dropped).
    RoleInvalid,
}

impl Trigger {
    /// Every trigger (metrics export each at zero from the start).
    pub const ALL: [Trigger; 6] = [
        Trigger::Initial,
        Trigger::Interval,
        Trigger::Lease,
        Trigger::Token,
        Trigger::Signal,
        Trigger::RoleInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Initial => "initial",
            Trigger::Interval => "interval",
            Trigger::Lease => "lease",
            Trigger::Token => "token",
            Trigger::Signal => "signal",
            Trigger::RoleInvalid => "role-invalid",
        }
    }
}

/// What to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The generation's token, so it outlives the generation's drain.
    Token,
    /// The lease, while rotations fail.
    Lease,
}

impl Renewal {
    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::Token => "token",
            Renewal::Lease => "lease",
        }
    }
}

/// The planner's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Rotate(Trigger),
    Renew(Renewal),
    /// A rotation is due but a failure's backoff holds it until then.
    Retry(Instant),
    /// Nothing to do before then (or before a request arrives).
    Wait(Instant),
}

/// The settings the planner follows.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub interval: Duration,
    pub drain: Duration,
    /// No two rotations start closer than this, whatever asks for them.
    pub min_spacing: Duration,
}

/// After a role-invalid report the current pool is broken: it may rotate
/// sooner than `min_spacing`, but never in a loop.
pub const ROLE_INVALID_SPACING: Duration = Duration::from_secs(1);

/// The serving generation, in monotonic time. `None` deadlines mean OpenBao
/// granted a TTL of 0: no expiry.
#[derive(Debug, Clone)]
pub struct Current {
    pub id: u64,
    pub created: Instant,
    pub lease_ttl: Duration,
    pub lease_deadline: Option<Instant>,
    /// False once a renewal was capped (the lease's max TTL is near).
    pub lease_renewable: bool,
    pub token_ttl: Duration,
    pub token_deadline: Option<Instant>,
    /// False for a non-renewable token and once a renewal was capped.
    pub token_renewable: bool,
}

/// Everything the loop has learnt, as plain data.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub current: Option<Current>,
    /// When the last rotation attempt started (success or failure).
    pub last_attempt: Option<Instant>,
    pub failures: u32,
    /// Backoff after a failed rotation: no attempt before then.
    pub retry_at: Option<Instant>,
    /// Backoff after a failed renewal: no renewal before then.
    pub renew_retry_at: Option<Instant>,
    /// A request (signal, role-invalid) for the current generation.
    pub requested: Option<Trigger>,
}

/// Time kept between a deadline (lease or token expiry) and the end of the
/// old generation's drain: a tenth of the lease, 1 to 10 s.
pub fn safety(lease_ttl: Duration) -> Duration {
    (lease_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

fn before(t: Instant, d: Duration) -> Instant {
    t.checked_sub(d).unwrap_or(t)
}

/// When the current generation is due for replacement, and why: the
/// earliest of the interval, 2/3 of the lease, and the last moment that
/// leaves the old generation time to drain before its lease or token dies.
pub fn due(c: &Current, p: &Policy) -> (Instant, Trigger) {
    due_by(c, p, true)
}

fn due_by(c: &Current, p: &Policy, count_token: bool) -> (Instant, Trigger) {
    let tail = p.drain + safety(c.lease_ttl);
    let mut best = (c.created + p.interval, Trigger::Interval);
    let mut consider = |at: Instant, why: Trigger| {
        if at < best.0 {
            best = (at, why);
        }
    };
    if let Some(lease) = c.lease_deadline {
        consider(c.created + c.lease_ttl * 2 / 3, Trigger::Lease);
        consider(before(lease, tail), Trigger::Lease);
    }
    if count_token && let Some(token) = c.token_deadline {
        consider(before(token, tail), Trigger::Token);
    }
    best
}

/// Why the granted lifetimes cannot follow the policy, if they cannot: a
/// generation must serve for `min_spacing` and then drain before its lease
/// or (unrenewable) token dies. Rotation still works, at most every
/// `min_spacing`, with a drain cut short.
pub fn misfit(c: &Current, p: &Policy) -> Option<String> {
    let need = p.min_spacing + p.drain + safety(c.lease_ttl);
    if c.lease_deadline.is_some() && c.lease_ttl < need {
        return Some(format!(
            "OpenBao granted a {}s database lease, shorter than DB_ROTATION_MIN_SPACING + DB_DRAIN_TIMEOUT + safety ({}s): raise the role's default_ttl or lower DB_DRAIN_TIMEOUT",
            c.lease_ttl.as_secs(),
            need.as_secs()
        ));
    }
    if c.token_deadline.is_some() && !c.token_renewable && c.token_ttl < need {
        return Some(format!(
            "OpenBao granted a {}s unrenewable token, shorter than DB_ROTATION_MIN_SPACING + DB_DRAIN_TIMEOUT + safety ({}s): raise the JWT role's token_ttl",
            c.token_ttl.as_secs(),
            need.as_secs()
        ));
    }
    None
}

/// Whether a renewal that asked for `asked` and got `granted` hit the max
/// TTL: renewing again would not buy time, so the planner stops asking.
pub fn capped(asked: Duration, granted: Duration) -> bool {
    granted < asked / 2
}

pub fn plan(s: &State, p: &Policy, now: Instant) -> Next {
    let Some(c) = &s.current else {
        return match s.retry_at {
            Some(at) if at > now => Next::Retry(at),
            _ => Next::Rotate(Trigger::Initial),
        };
    };
    // When a rotation may start: when due (now, if requested), but never
    // inside the minimum spacing or a failure's backoff.
    let start_of = |(due_at, why): (Instant, Trigger)| {
        let (due_at, why) = match s.requested {
            Some(t) => (now, t),
            None => (due_at, why),
        };
        let spacing = if why == Trigger::RoleInvalid {
            p.min_spacing.min(ROLE_INVALID_SPACING)
        } else {
            p.min_spacing
        };
        let spaced = s.last_attempt.map_or(now, |t| t + spacing);
        (
            due_at,
            due_at.max(spaced).max(s.retry_at.unwrap_or(now)),
            why,
        )
    };
    let (due_at, start, why) = start_of(due_by(c, p, true));
    if start <= now {
        return Next::Rotate(why);
    }
    // Renewals that must happen before the rotation can. The token is
    // renewed when, left alone, it would force a rotation earlier than
    // everything else would.
    let renew_from = s.renew_retry_at.unwrap_or(now).max(now);
    let tail = p.drain + safety(c.lease_ttl);
    let (_, start_without_token, _) = start_of(due_by(c, p, false));
    let mut wake = start;
    if c.token_renewable
        && let Some(token) = c.token_deadline
        && token < start_without_token + tail
    {
        let at = before(token, c.token_ttl / 2).max(renew_from);
        if at <= now {
            return Next::Renew(Renewal::Token);
        }
        wake = wake.min(at);
    }
    if s.failures > 0
        && c.lease_renewable
        && let Some(lease) = c.lease_deadline
    {
        let at = before(lease, c.lease_ttl / 3).max(renew_from);
        if at <= now {
            return Next::Renew(Renewal::Lease);
        }
        wake = wake.min(at);
    }
    let backoff = s.retry_at.unwrap_or(now);
    if backoff > now && backoff >= wake && due_at <= now {
        Next::Retry(wake)
    } else {
        Next::Wait(wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const M: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy {
            interval: 50 * M,
            drain: 30 * S,
            min_spacing: 10 * S,
        }
    }

    /// A generation created at `t0` with the default lifetimes (90 min
    /// lease and token, renewable).
    fn generation(t0: Instant) -> Current {
        Current {
            id: 1,
            created: t0,
            lease_ttl: 90 * M,
            lease_deadline: Some(t0 + 90 * M),
            lease_renewable: true,
            token_ttl: 90 * M,
            token_deadline: Some(t0 + 90 * M),
            token_renewable: true,
        }
    }

    fn serving(t0: Instant) -> State {
        State {
            current: Some(generation(t0)),
            last_attempt: Some(t0),
            ..State::default()
        }
    }

    struct Case {
        name: &'static str,
        state: fn(Instant) -> State,
        /// Seconds after t0.
        at: u32,
        expect: fn(Instant) -> Next,
    }

    #[test]
    fn plans() {
        let cases = [
            Case {
                name: "no generation: rotate at once",
                state: |_| State::default(),
                at: 0,
                expect: |_| Next::Rotate(Trigger::Initial),
            },
            Case {
                name: "no generation, first attempt failed: retry after the backoff",
                state: |t0| State {
                    failures: 1,
                    last_attempt: Some(t0),
                    retry_at: Some(t0 + 2 * S),
                    ..State::default()
                },
                at: 1,
                expect: |t0| Next::Retry(t0 + 2 * S),
            },
            Case {
                name: "no generation, backoff over: rotate",
                state: |t0| State {
                    failures: 3,
                    retry_at: Some(t0 + 2 * S),
                    ..State::default()
                },
                at: 2,
                expect: |_| Next::Rotate(Trigger::Initial),
            },
            Case {
                name: "steady state: wait for the interval",
                state: serving,
                at: 60,
                expect: |t0| Next::Wait(t0 + 50 * M),
            },
            Case {
                name: "interval reached",
                state: serving,
                at: 50 * 60,
                expect: |_| Next::Rotate(Trigger::Interval),
            },
            Case {
                name: "a 30 min lease: rotate at 2/3 of it",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.lease_ttl = 30 * M;
                    c.lease_deadline = Some(t0 + 30 * M);
                    s
                },
                at: 60,
                expect: |t0| Next::Wait(t0 + 20 * M),
            },
            Case {
                name: "an unrenewable token shorter than the lease: rotate a drain and safety before it dies",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.token_ttl = 20 * M;
                    c.token_deadline = Some(t0 + 20 * M);
                    c.token_renewable = false;
                    s
                },
                at: 60,
                expect: |t0| Next::Wait(t0 + 20 * M - 40 * S),
            },
            Case {
                name: "a renewable token that would die before the rotation's drain: renew at half its TTL",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.token_ttl = 20 * M;
                    c.token_deadline = Some(t0 + 20 * M);
                    s
                },
                at: 60,
                expect: |t0| Next::Wait(t0 + 10 * M),
            },
            Case {
                name: "...and at half its TTL: renew it",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.token_ttl = 20 * M;
                    c.token_deadline = Some(t0 + 20 * M);
                    s
                },
                at: 10 * 60,
                expect: |_| Next::Renew(Renewal::Token),
            },
            Case {
                name: "a renewal failed: no renewal before its backoff",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.token_ttl = 20 * M;
                    c.token_deadline = Some(t0 + 20 * M);
                    s.renew_retry_at = Some(t0 + 10 * M + 4 * S);
                    s
                },
                at: 10 * 60 + 1,
                expect: |t0| Next::Wait(t0 + 10 * M + 4 * S),
            },
            Case {
                name: "a capped renewal: never renewed again, the token deadline governs rotation",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.token_ttl = 20 * M;
                    c.token_deadline = Some(t0 + 12 * M);
                    c.token_renewable = false;
                    s
                },
                at: 10 * 60 + 1,
                expect: |t0| Next::Wait(t0 + 12 * M - 40 * S),
            },
            Case {
                name: "a lease shorter than drain + safety: due at creation, but spaced",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.lease_ttl = 20 * S;
                    c.lease_deadline = Some(t0 + 20 * S);
                    s
                },
                at: 0,
                expect: |t0| Next::Wait(t0 + 10 * S),
            },
            Case {
                name: "a token whose TTL is under the drain tail: due at creation, but spaced, never back to back",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.token_ttl = Duration::ZERO;
                    c.token_deadline = Some(t0);
                    c.token_renewable = false;
                    s
                },
                at: 3,
                expect: |t0| Next::Wait(t0 + 10 * S),
            },
            Case {
                name: "TTLs of 0 mean no expiry: only the interval governs",
                state: |t0| {
                    let mut s = serving(t0);
                    let c = s.current.as_mut().unwrap();
                    c.lease_ttl = Duration::ZERO;
                    c.lease_deadline = None;
                    c.token_ttl = Duration::ZERO;
                    c.token_deadline = None;
                    s
                },
                at: 60,
                expect: |t0| Next::Wait(t0 + 50 * M),
            },
            Case {
                name: "SIGHUP: rotate at once",
                state: |t0| State {
                    requested: Some(Trigger::Signal),
                    ..serving(t0)
                },
                at: 60,
                expect: |_| Next::Rotate(Trigger::Signal),
            },
            Case {
                name: "SIGHUP storm: the second signal waits for the minimum spacing",
                state: |t0| State {
                    requested: Some(Trigger::Signal),
                    ..serving(t0)
                },
                at: 2,
                expect: |t0| Next::Wait(t0 + 10 * S),
            },
            Case {
                name: "role invalid: rotate at once, even inside the minimum spacing",
                state: |t0| State {
                    requested: Some(Trigger::RoleInvalid),
                    ..serving(t0)
                },
                at: 2,
                expect: |_| Next::Rotate(Trigger::RoleInvalid),
            },
            Case {
                name: "role invalid again right after a rotation: not in a loop",
                state: |t0| State {
                    requested: Some(Trigger::RoleInvalid),
                    last_attempt: Some(t0 + 5 * S),
                    ..serving(t0)
                },
                at: 5,
                expect: |t0| Next::Wait(t0 + 6 * S),
            },
            Case {
                name: "a failed rotation: retried after its backoff, the pool keeps serving",
                state: |t0| State {
                    failures: 1,
                    last_attempt: Some(t0 + 50 * M),
                    retry_at: Some(t0 + 50 * M + 15 * S),
                    ..serving(t0)
                },
                at: 50 * 60 + 1,
                expect: |t0| Next::Retry(t0 + 50 * M + 15 * S),
            },
            Case {
                name: "failures in a row: a requested rotation still waits for the backoff",
                state: |t0| State {
                    failures: 4,
                    requested: Some(Trigger::Signal),
                    last_attempt: Some(t0 + 50 * M),
                    retry_at: Some(t0 + 50 * M + 40 * S),
                    ..serving(t0)
                },
                at: 50 * 60 + 20,
                expect: |t0| Next::Retry(t0 + 50 * M + 40 * S),
            },
            Case {
                name: "rotations failing and the lease past 2/3: renew the lease",
                state: |t0| State {
                    failures: 6,
                    last_attempt: Some(t0 + 61 * M),
                    retry_at: Some(t0 + 62 * M),
                    ..serving(t0)
                },
                at: 61 * 60,
                expect: |_| Next::Renew(Renewal::Lease),
            },
            Case {
                name: "rotations failing, lease renewal capped: only the retry is left",
                state: |t0| {
                    let mut s = State {
                        failures: 6,
                        last_attempt: Some(t0 + 61 * M),
                        retry_at: Some(t0 + 62 * M),
                        ..serving(t0)
                    };
                    s.current.as_mut().unwrap().lease_renewable = false;
                    s
                },
                at: 61 * 60,
                expect: |t0| Next::Retry(t0 + 62 * M),
            },
            Case {
                name: "rotations failing: the token is renewed so it does not take the lease with it",
                state: |t0| {
                    let mut s = State {
                        failures: 2,
                        last_attempt: Some(t0 + 58 * M + 50 * S),
                        retry_at: Some(t0 + 59 * M + 30 * S),
                        ..serving(t0)
                    };
                    let c = s.current.as_mut().unwrap();
                    c.token_ttl = 60 * M;
                    c.token_deadline = Some(t0 + 60 * M);
                    s
                },
                at: 59 * 60,
                expect: |_| Next::Renew(Renewal::Token),
            },
        ];
        for case in cases {
            let t0 = Instant::now();
            let got = plan(&(case.state)(t0), &policy(), t0 + case.at * S);
            assert_eq!(got, (case.expect)(t0), "{}", case.name);
        }
    }

    #[test]
    fn lifetimes_that_cannot_fit_are_named() {
        let t0 = Instant::now();
        let p = policy();
        assert_eq!(misfit(&generation(t0), &p), None, "the defaults fit");
        let mut short_lease = generation(t0);
        short_lease.lease_ttl = 20 * S;
        let why = misfit(&short_lease, &p).expect("20 s lease");
        assert!(why.contains("20s database lease"), "{why}");
        let mut short_token = generation(t0);
        short_token.token_ttl = 30 * S;
        assert_eq!(
            misfit(&short_token, &p),
            None,
            "renewable: renewals keep it"
        );
        short_token.token_renewable = false;
        assert!(
            misfit(&short_token, &p)
                .unwrap()
                .contains("unrenewable token")
        );
        let mut no_expiry = generation(t0);
        no_expiry.lease_ttl = Duration::ZERO;
        no_expiry.lease_deadline = None;
        assert_eq!(misfit(&no_expiry, &p), None, "TTL 0: no expiry");
    }

    #[test]
    fn a_renewal_granted_under_half_of_what_was_asked_is_capped() {
        assert!(!capped(90 * M, 90 * M));
        assert!(!capped(90 * M, 45 * M));
        assert!(capped(90 * M, 44 * M));
        assert!(capped(90 * M, Duration::ZERO));
    }

    #[test]
    fn trigger_names_are_stable() {
        let names: Vec<_> = Trigger::ALL.map(Trigger::as_str).into();
        assert_eq!(
            names,
            [
                "initial",
                "interval",
                "lease",
                "token",
                "signal",
                "role-invalid"
            ]
        );
    }
}
