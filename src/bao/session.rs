//! The long-lived OpenBao session used for KV and Transit: renewed at half
//! its TTL, replaced by a fresh login when renewal is refused or the max TTL
//! is near. Readiness `openbao` follows it.
//!
//! Callers hold the token for the length of their call ([`SessionClient`]);
//! a replaced token is revoked only once every call holding it finished.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{BaoClient, BaoError};
use crate::{
    backoff::Backoff,
    config::BaoConfig,
    drain::{Hold, Tracked},
    identity::Identity,
    readiness::Check,
};

/// How long a replaced session token waits for the calls still using it.
const SESSION_DRAIN: Duration = Duration::from_secs(30);

/// The session's client, held for one call.
pub type SessionClient = Hold<BaoClient>;

/// The readers' side of the OpenBao session: empty until bring-up has
/// logged in, then the session, whose token its upkeep replaces in place.
#[derive(Clone)]
pub struct SessionWatch(tokio::sync::watch::Receiver<Option<Session>>);

/// The writer's side: bring-up publishes the session once it logged in.
pub struct SessionPublisher(tokio::sync::watch::Sender<Option<Session>>);

/// A session slot, empty, and its readers.
pub fn channel() -> (SessionPublisher, SessionWatch) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    (SessionPublisher(tx), SessionWatch(rx))
}

impl SessionPublisher {
    pub fn publish(&self, session: Session) {
        self.0.send_replace(Some(session));
    }
}

impl SessionWatch {
    /// The session, if established (requests: never wait for a login).
    pub fn get(&self) -> Option<Session> {
        self.0.borrow().clone()
    }

    /// The current client, if the session is established.
    pub fn client(&self) -> Option<SessionClient> {
        self.0.borrow().as_ref().map(Session::client)
    }

    /// Waits for the session (background owners that need it to start).
    pub async fn ready(&self) -> SessionClient {
        let mut rx = self.0.clone();
        let session = match rx.wait_for(Option::is_some).await {
            Ok(session) => session.clone(),
            // The publisher is gone without a session: the application is
            // stopping before it logged in; nothing will come.
            Err(_) => None,
        };
        match session {
            Some(session) => session.client(),
            None => std::future::pending().await,
        }
    }
}

#[derive(Clone)]
pub struct Session {
    current: Arc<ArcSwap<Tracked<BaoClient>>>,
    /// When the current token expires, as the upkeep last learned it.
    expires_at: Arc<std::sync::Mutex<Instant>>,
}

impl Session {
    /// Logs in, retrying with backoff until it works or `cancel` fires.
    pub async fn establish(
        config: &BaoConfig,
        identity: &Identity,
        check: &Check,
        cancel: &CancellationToken,
    ) -> Option<Self> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match BaoClient::login(config, identity).await {
                Ok(client) => {
                    check.set_ready();
                    let expires_at = client.logged_in + client.token_ttl;
                    return Some(Self {
                        current: Arc::new(ArcSwap::new(Tracked::new(client))),
                        expires_at: Arc::new(std::sync::Mutex::new(expires_at)),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "OpenBao login failed; retrying");
                    check.set_not_ready(format!("login failed: {e}"));
                }
            }
            if !backoff.wait(cancel).await {
                return None;
            }
        }
    }

    /// When the current token expires: the upkeep's schedule and the
    /// `/metrics` gauge read the same value.
    fn expires_at(&self) -> Instant {
        *self.expires_at.lock().expect("expiry lock")
    }

    /// Seconds until the session token expires (negative once expired).
    pub fn expiry_seconds(&self) -> f64 {
        let at = self.expires_at();
        let now = Instant::now();
        if at >= now {
            (at - now).as_secs_f64()
        } else {
            -(now - at).as_secs_f64()
        }
    }

    fn set_expiry(&self, at: Instant) {
        *self.expires_at.lock().expect("expiry lock") = at;
    }

    /// The current client, held until dropped (cheap).
    pub fn client(&self) -> SessionClient {
        self.current.load().hold()
    }

    /// Keeps the token alive until `cancel`, then revokes it (the caller
    /// spawns it). What to do next is [`next`]; this loop performs it. A
    /// replaced token is revoked once the calls still holding it finished,
    /// inside this task, so shutdown waits for those revocations too.
    pub fn upkeep(
        &self,
        identity: Identity,
        check: Check,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            let mut retiring = futures::stream::FuturesUnordered::new();
            let mut state = {
                let client = this.client();
                Upkeep::logged_in(client.token_ttl, client.renewable, this.expires_at())
            };
            loop {
                let step = next(&state, Instant::now());
                let wake = match step {
                    Step::Idle => None,
                    Step::Wait(at) => Some(at),
                    Step::Renew | Step::Relogin => Some(Instant::now()),
                };
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = sleep_until(wake) => {}
                    Some(()) = futures::StreamExt::next(&mut retiring) => continue,
                }
                state = match next(&state, Instant::now()) {
                    Step::Renew => {
                        let client = this.client();
                        let renewed = client
                            .renew_self()
                            .instrument(crate::trace::root_span("openbao session renewal"))
                            .await;
                        let outcome = if renewed.is_ok() {
                            "success"
                        } else {
                            "failure"
                        };
                        metrics::counter!(super::metrics::RENEWALS, "outcome" => outcome)
                            .increment(1);
                        let renewal = match renewed {
                            Ok(granted) => Renewal::Granted(granted),
                            Err(e) if e.is_refusal() => {
                                tracing::info!(error = %e, "OpenBao session renewal refused; logging in again");
                                Renewal::Refused
                            }
                            Err(e) => {
                                this.unreachable(&check, &e);
                                Renewal::Failed
                            }
                        };
                        let state =
                            after_renewal(state, renewal, Instant::now(), backoff.next_delay());
                        if state.failures == 0 {
                            backoff.reset();
                            this.set_expiry(state.expires_at);
                            check.set_ready();
                        }
                        state
                    }
                    Step::Relogin => {
                        let login = BaoClient::login(this.client().config(), &identity)
                            .instrument(crate::trace::root_span("openbao session login"))
                            .await;
                        let outcome = if login.is_ok() { "success" } else { "failure" };
                        metrics::counter!(super::metrics::RELOGINS, "outcome" => outcome)
                            .increment(1);
                        match login {
                            Ok(fresh) => {
                                let state = Upkeep::logged_in(
                                    fresh.token_ttl,
                                    fresh.renewable,
                                    fresh.logged_in + fresh.token_ttl,
                                );
                                this.set_expiry(state.expires_at);
                                let old = this.current.swap(Tracked::new(fresh));
                                check.set_ready();
                                backoff.reset();
                                tracing::info!(
                                    event = "openbao_relogin",
                                    "OpenBao session renewed by a fresh login"
                                );
                                // The old token owns no leases: revoke it once
                                // the calls still using it are done.
                                retiring.push(retire(old));
                                state
                            }
                            Err(e) => {
                                this.unreachable(&check, &e);
                                after_failed_login(state, Instant::now(), backoff.next_delay())
                            }
                        }
                    }
                    Step::Idle | Step::Wait(_) => state,
                };
            }
            while futures::StreamExt::next(&mut retiring).await.is_some() {}
            let _ = this.client().revoke_self().await;
        }
    }

    fn unreachable(&self, check: &Check, e: &BaoError) {
        tracing::warn!(error = %e, "OpenBao session upkeep failed; retrying");
        if self.expires_at() <= Instant::now() {
            check.set_not_ready(format!("token expired; {e}"));
        }
    }
}

/// Drains a replaced token's holders (bounded), then revokes it.
async fn retire(old: Arc<Tracked<BaoClient>>) {
    let left = old.drain(SESSION_DRAIN).await;
    if left > 0 {
        tracing::warn!(
            holders = left,
            "old OpenBao session token revoked under running calls"
        );
    }
    let _ = old.revoke_self().await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What the upkeep knows of the session token, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upkeep {
    /// The TTL granted at login (0: the token does not expire).
    pub ttl: Duration,
    pub renewable: bool,
    pub expires_at: Instant,
    /// A renewal said the end is near (or refused): log in again.
    pub relogin: bool,
    /// Failed calls in a row, and when to try again.
    pub failures: u32,
    pub retry_at: Option<Instant>,
}

impl Upkeep {
    pub fn logged_in(ttl: Duration, renewable: bool, expires_at: Instant) -> Self {
        Self {
            ttl,
            renewable,
            expires_at,
            relogin: false,
            failures: 0,
            retry_at: None,
        }
    }
}

/// The upkeep's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to keep alive.
    Idle,
    Wait(Instant),
    Renew,
    Relogin,
}

/// Renew at half the TTL before expiry; log in again when told to; after a
/// failure, not before its backoff.
pub fn next(u: &Upkeep, now: Instant) -> Step {
    if u.ttl.is_zero() {
        return Step::Idle;
    }
    if let Some(at) = u.retry_at
        && at > now
    {
        return Step::Wait(at);
    }
    if u.relogin {
        return Step::Relogin;
    }
    let renew_at = u.expires_at.checked_sub(u.ttl / 2).unwrap_or(u.expires_at);
    if renew_at <= now {
        Step::Renew
    } else {
        Step::Wait(renew_at)
    }
}

/// What a renewal answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Granted(Duration),
    /// 4xx: this token cannot be extended.
    Refused,
    /// OpenBao did not answer.
    Failed,
}

/// The state after a renewal: granted less than half the TTL (the max TTL
/// is near) or not renewable means a fresh login; a failure waits `delay`.
pub fn after_renewal(u: Upkeep, r: Renewal, now: Instant, delay: Duration) -> Upkeep {
    match r {
        Renewal::Granted(granted) if granted < u.ttl / 2 || !u.renewable => Upkeep {
            relogin: true,
            failures: 0,
            retry_at: None,
            ..u
        },
        Renewal::Granted(granted) => Upkeep {
            expires_at: now + granted,
            failures: 0,
            retry_at: None,
            ..u
        },
        Renewal::Refused => Upkeep {
            relogin: true,
            failures: 0,
            retry_at: None,
            ..u
        },
        Renewal::Failed => Upkeep {
            failures: u.failures + 1,
            retry_at: Some(now + delay),
            ..u
        },
    }
}

/// A fresh login failed: keep the token we have and try again after `delay`.
pub fn after_failed_login(u: Upkeep, now: Instant, delay: Duration) -> Upkeep {
    Upkeep {
        failures: u.failures + 1,
        retry_at: Some(now + delay),
        ..u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn logged_in(t0: Instant) -> Upkeep {
        Upkeep::logged_in(90 * S, true, t0 + 90 * S)
    }

    #[test]
    fn the_next_step_follows_the_token() {
        let t0 = Instant::now();
        // (case, state, now (s after t0), expected)
        let cases: Vec<(&str, Upkeep, u32, Step)> = vec![
            (
                "fresh token: wait for half its TTL",
                logged_in(t0),
                1,
                Step::Wait(t0 + 45 * S),
            ),
            ("half the TTL gone: renew", logged_in(t0), 45, Step::Renew),
            (
                "late (a frozen process): renew at once",
                logged_in(t0),
                200,
                Step::Renew,
            ),
            (
                "a token without expiry: nothing to do",
                Upkeep::logged_in(Duration::ZERO, false, t0),
                1000,
                Step::Idle,
            ),
            (
                "told to log in again",
                Upkeep {
                    relogin: true,
                    ..logged_in(t0)
                },
                1,
                Step::Relogin,
            ),
            (
                "after a failure: wait for the backoff",
                Upkeep {
                    failures: 1,
                    retry_at: Some(t0 + 50 * S),
                    ..logged_in(t0)
                },
                46,
                Step::Wait(t0 + 50 * S),
            ),
            (
                "backoff over: renew again",
                Upkeep {
                    failures: 1,
                    retry_at: Some(t0 + 50 * S),
                    ..logged_in(t0)
                },
                50,
                Step::Renew,
            ),
            (
                "a failed re-login waits, then logs in again",
                Upkeep {
                    relogin: true,
                    failures: 2,
                    retry_at: Some(t0 + 10 * S),
                    ..logged_in(t0)
                },
                10,
                Step::Relogin,
            ),
        ];
        for (case, state, at, expected) in cases {
            assert_eq!(next(&state, t0 + S * at), expected, "{case}");
        }
    }

    #[test]
    fn a_renewal_extends_or_asks_for_a_login() {
        let t0 = Instant::now();
        let now = t0 + 45 * S;
        let delay = 2 * S;
        // (case, state, answer, expected)
        let cases: Vec<(&str, Upkeep, Renewal, Upkeep)> = vec![
            (
                "granted the full TTL: the expiry moves",
                logged_in(t0),
                Renewal::Granted(90 * S),
                Upkeep {
                    expires_at: now + 90 * S,
                    ..logged_in(t0)
                },
            ),
            (
                "granted less than half (the max TTL is near): log in again",
                logged_in(t0),
                Renewal::Granted(30 * S),
                Upkeep {
                    relogin: true,
                    ..logged_in(t0)
                },
            ),
            (
                "a token that is not renewable: log in again",
                Upkeep {
                    renewable: false,
                    ..logged_in(t0)
                },
                Renewal::Granted(90 * S),
                Upkeep {
                    renewable: false,
                    relogin: true,
                    ..logged_in(t0)
                },
            ),
            (
                "refused: log in again",
                logged_in(t0),
                Renewal::Refused,
                Upkeep {
                    relogin: true,
                    ..logged_in(t0)
                },
            ),
            (
                "no answer: keep the token, retry after the backoff",
                logged_in(t0),
                Renewal::Failed,
                Upkeep {
                    failures: 1,
                    retry_at: Some(now + delay),
                    ..logged_in(t0)
                },
            ),
            (
                "a success after failures clears them",
                Upkeep {
                    failures: 3,
                    retry_at: Some(now),
                    ..logged_in(t0)
                },
                Renewal::Granted(90 * S),
                Upkeep {
                    expires_at: now + 90 * S,
                    ..logged_in(t0)
                },
            ),
        ];
        for (case, state, answer, expected) in cases {
            assert_eq!(after_renewal(state, answer, now, delay), expected, "{case}");
        }
        let failed = after_failed_login(
            Upkeep {
                relogin: true,
                ..logged_in(t0)
            },
            now,
            delay,
        );
        assert_eq!(
            (failed.relogin, failed.failures, failed.retry_at),
            (true, 1, Some(now + delay)),
            "a failed login keeps asking for one, after the backoff"
        );
    }
}
