//! Bringing the dependencies up, in order, in the background, while HTTP
//! already answers (readiness 503 with reasons). Each step is a function
//! named for what it waits for; each retries on its own, and one that gives
//! up stops the application with its message.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use crate::{
    backoff::Backoff,
    bao::{BaoClient, Session, SessionPublisher},
    config::Backends,
    db::{self, Db, Publisher},
    events::PodEvents,
    identity::Identity,
    readiness::{Check, Readiness},
    supervise::{Lifetime, Supervisor},
};

/// The internal API, bound at build, served once the identity is there
/// (its certificate is the workload's X.509-SVID).
pub(super) struct Internal {
    pub(super) listener: tokio::net::TcpListener,
    pub(super) config: crate::config::InternalConfig,
    pub(super) router: axum::Router,
    pub(super) addr: std::net::SocketAddr,
}

pub(super) struct BringUp {
    backends: Backends,
    identity_check: Check,
    bao_check: Check,
    db_check: Check,
    events: PodEvents,
    supervisor: Supervisor,
    session: SessionPublisher,
    db: Db,
    publisher: Publisher,
    /// Filled once the identity is there (the metrics read it).
    identity: Arc<OnceLock<Identity>>,
    internal: Option<Internal>,
}

impl BringUp {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        backends: Backends,
        readiness: &Readiness,
        events: PodEvents,
        supervisor: Supervisor,
        session: SessionPublisher,
        db: Db,
        publisher: Publisher,
        identity: Arc<OnceLock<Identity>>,
        internal: Option<Internal>,
    ) -> Self {
        let identity_check = readiness.register(
            "identity",
            format!(
                "connecting to the SPIFFE Workload API at {}",
                backends.identity.endpoint
            ),
        );
        Self {
            identity_check,
            bao_check: readiness.register("openbao", "waiting for workload identity"),
            db_check: readiness.register("database", "waiting for OpenBao"),
            backends,
            events,
            supervisor,
            session,
            db,
            publisher,
            identity,
            internal,
        }
    }

    /// Identity, then the OpenBao session, then the migrations, then the
    /// database engine; each step's tasks spawned as soon as it is done.
    pub(super) async fn run(mut self) {
        let Some(identity) = self.first_svid().await else {
            return;
        };
        if let Some(internal) = self.internal.take() {
            self.serve_internal(&identity, internal);
        }
        let cancel = self.supervisor.cancel().clone();
        self.supervisor.spawn(
            "identity-watch",
            Lifetime::UntilCancelled,
            identity.watch(
                self.identity_check.clone(),
                self.events.clone(),
                cancel.clone(),
            ),
        );
        let _ = self.identity.set(identity.clone());
        let Some(session) = self.openbao_login(&identity).await else {
            return;
        };
        self.supervisor.spawn(
            "openbao-session",
            Lifetime::UntilCancelled,
            session.upkeep(identity.clone(), self.bao_check.clone(), cancel.clone()),
        );
        self.session.publish(session);
        if self.backends.db.migrate_on_start && !self.migrations_applied(&identity).await {
            return;
        }
        self.start_database(identity);
    }

    /// Waits for the first X.509-SVID (up to `SPIFFE_STARTUP_TIMEOUT`); a
    /// missing or mismatched identity stops the application.
    async fn first_svid(&self) -> Option<Identity> {
        let connected = tokio::select! {
            _ = self.supervisor.cancel().cancelled() => return None,
            result = Identity::connect(&self.backends.identity) => result,
        };
        match connected {
            Ok(identity) => Some(identity),
            Err(e) => {
                self.identity_check.set_not_ready(e.to_string());
                tracing::error!(error = %e, "workload identity unavailable");
                self.supervisor.fail_now(e.to_string());
                None
            }
        }
    }

    /// Serves the internal API over mutual TLS with this identity; a TLS
    /// configuration that cannot be built stops the application.
    fn serve_internal(&self, identity: &Identity, internal: Internal) {
        let allowed: Arc<[crate::config::AllowedId]> = internal.config.allowed.clone().into();
        match crate::http::internal::tls_config(identity, allowed) {
            Ok(tls) => {
                tracing::info!(addr = %internal.addr, allowed = internal.config.allowed.len(), "internal API (mutual TLS) listening");
                self.supervisor.spawn(
                    "internal-api",
                    Lifetime::UntilCancelled,
                    crate::http::internal::serve(
                        internal.listener,
                        tls,
                        internal.config,
                        internal.router,
                        self.supervisor.cancel().clone(),
                    ),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "the internal API's TLS configuration cannot be built");
                self.supervisor
                    .fail_now(format!("internal API (INTERNAL_ADDR): {e}"));
            }
        }
    }

    /// Waits until OpenBao accepts a login with a JWT-SVID (retrying).
    async fn openbao_login(&self, identity: &Identity) -> Option<Session> {
        Session::establish(
            &self.backends.bao,
            identity,
            &self.bao_check,
            self.supervisor.cancel(),
        )
        .await
    }

    /// Waits until the migrations are applied, with a short-lived migrate
    /// role (retrying); `false` when stopped first.
    async fn migrations_applied(&self, identity: &Identity) -> bool {
        self.db_check.set_not_ready("running migrations");
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            let result = match BaoClient::login(&self.backends.bao, identity).await {
                Ok(client) => {
                    let r = db::migrate(&client, &self.backends.db).await;
                    let _ = client.revoke_self().await;
                    r
                }
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "migrations failed; retrying");
                    self.db_check
                        .set_not_ready(format!("migrations failed: {e}"));
                }
            }
            if !backoff.wait(self.supervisor.cancel()).await {
                return false;
            }
        }
    }

    /// Starts the credential engine: it creates the first generation.
    fn start_database(self, identity: Identity) {
        self.db_check
            .set_not_ready("obtaining database credentials");
        let engine = db::engine(
            self.publisher,
            self.db,
            identity,
            self.backends.bao,
            self.events,
            self.db_check,
            self.supervisor.cancel().clone(),
        );
        let supervisor = self.supervisor;
        supervisor.spawn("db-rotation", Lifetime::UntilCancelled, engine.rotation);
        supervisor.spawn("db-health", Lifetime::UntilCancelled, engine.health);
        supervisor.spawn("sighup", Lifetime::UntilCancelled, engine.sighup);
    }
}
