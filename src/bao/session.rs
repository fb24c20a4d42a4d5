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
    supervise::{Lifetime, Supervisor},
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
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
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

    /// Keeps the token alive until cancelled; revokes it on the way out.
    pub fn spawn_upkeep(&self, identity: Identity, check: Check, supervisor: &Supervisor) {
        let this = self.clone();
        let cancel = supervisor.cancel().clone();
        supervisor.spawn("openbao-session", Lifetime::UntilCancelled, async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            loop {
                let ttl = this.client().token_ttl;
                if ttl.is_zero() {
                    // A token without expiry needs no upkeep.
                    cancel.cancelled().await;
                    break;
                }
                let expires_at = this.expires_at();
                let wake = expires_at
                    .checked_sub(ttl / 2)
                    .unwrap_or(expires_at)
                    .max(Instant::now() + Duration::from_millis(200));
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(wake.into()) => {}
                }
                let client = this.client();
                let renewed = client
                    .renew_self()
                    .instrument(crate::trace::root_span("openbao session renewal"))
                    .await;
                let outcome = if renewed.is_ok() { "success" } else { "failure" };
                metrics::counter!(crate::metrics::OPENBAO_RENEWALS, "outcome" => outcome).increment(1);
                let relogin = match renewed {
                    // Granted less than half the TTL: the max TTL is near.
                    Ok(granted) if granted < client.token_ttl / 2 || !client.renewable => true,
                    Ok(granted) => {
                        this.set_expiry(Instant::now() + granted);
                        check.set_ready();
                        backoff.reset();
                        false
                    }
                    Err(e) if e.is_refusal() => {
                        tracing::info!(error = %e, "OpenBao session renewal refused; logging in again");
                        true
                    }
                    Err(e) => {
                        this.unreachable(&check, &e);
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                        continue;
                    }
                };
                if relogin {
                    match BaoClient::login(client.config(), &identity)
                        .instrument(crate::trace::root_span("openbao session login"))
                        .await
                    {
                        Ok(fresh) => {
                            metrics::counter!(crate::metrics::OPENBAO_RELOGINS, "outcome" => "success").increment(1);
                            this.set_expiry(fresh.logged_in + fresh.token_ttl);
                            let old = this.current.swap(Tracked::new(fresh));
                            check.set_ready();
                            backoff.reset();
                            tracing::info!(event = "openbao_relogin", "OpenBao session renewed by a fresh login");
                            // The old token owns no leases: revoke it once the
                            // calls still using it are done.
                            drop(client);
                            tokio::spawn(async move {
                                let left = old.drain(SESSION_DRAIN).await;
                                if left > 0 {
                                    tracing::warn!(holders = left, "old OpenBao session token revoked under running calls");
                                }
                                let _ = old.revoke_self().await;
                            });
                        }
                        Err(e) => {
                            metrics::counter!(crate::metrics::OPENBAO_RELOGINS, "outcome" => "failure").increment(1);
                            this.unreachable(&check, &e);
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = tokio::time::sleep(backoff.next_delay()) => {}
                            }
                        }
                    }
                }
            }
            let _ = this.client().revoke_self().await;
        });
    }

    fn unreachable(&self, check: &Check, e: &BaoError) {
        tracing::warn!(error = %e, "OpenBao session upkeep failed; retrying");
        if self.expires_at() <= Instant::now() {
            check.set_not_ready(format!("token expired; {e}"));
        }
    }
}
