//! The long-lived OpenBao session used for KV and Transit: renewed at half
//! its TTL, replaced by a fresh login when renewal is refused or the max TTL
//! is near. Readiness `openbao` follows it.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{BaoClient, BaoError};
use crate::{backoff::Backoff, config::BaoConfig, identity::Identity, readiness::Check};

#[derive(Clone)]
pub struct Session {
    current: Arc<ArcSwap<BaoClient>>,
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
                    return Some(Self {
                        current: Arc::new(ArcSwap::from_pointee(client)),
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

    /// The current client (cheap).
    pub fn client(&self) -> Arc<BaoClient> {
        self.current.load_full()
    }

    /// Keeps the token alive until `cancel`; revokes it on the way out.
    pub fn spawn_upkeep(
        &self,
        identity: Identity,
        check: Check,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let this = self.clone();
        tasks.spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            let mut expires_at = this.client().token_expires_at;
            loop {
                let client = this.client();
                let now = OffsetDateTime::now_utc();
                let wake = expires_at - client.token_ttl / 2;
                let delay = (wake - now).max(time::Duration::milliseconds(200));
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay.unsigned_abs()) => {}
                }
                let relogin = match client.renew_self().await {
                    // Granted less than half the TTL: the max TTL is near.
                    Ok(granted) if granted < client.token_ttl / 2 || !client.renewable => true,
                    Ok(granted) => {
                        expires_at = OffsetDateTime::now_utc() + granted;
                        check.set_ready();
                        backoff.reset();
                        false
                    }
                    Err(e) if e.is_refusal() => {
                        tracing::info!(error = %e, "OpenBao session renewal refused; logging in again");
                        true
                    }
                    Err(e) => {
                        this.unreachable(&check, expires_at, &e);
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                        continue;
                    }
                };
                if relogin {
                    match BaoClient::login(client.config(), &identity).await {
                        Ok(fresh) => {
                            expires_at = fresh.token_expires_at;
                            let old = this.current.swap(Arc::new(fresh));
                            // The old session token owns no leases: revoke it.
                            let _ = old.revoke_self().await;
                            check.set_ready();
                            backoff.reset();
                            tracing::info!("OpenBao session renewed by a fresh login");
                        }
                        Err(e) => {
                            this.unreachable(&check, expires_at, &e);
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

    fn unreachable(&self, check: &Check, expires_at: OffsetDateTime, e: &BaoError) {
        tracing::warn!(error = %e, "OpenBao session upkeep failed; retrying");
        if expires_at <= OffsetDateTime::now_utc() {
            check.set_not_ready(format!("token expired; {e}"));
        }
    }
}
