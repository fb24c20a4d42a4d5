//! Wiring: builds every part in order and serves until asked to stop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    backoff::Backoff,
    bao::{BaoClient, Session, SessionPublisher, SessionWatch},
    config::Config,
    db::{self, Db},
    http::{self, AppState},
    identity::Identity,
    readiness::Readiness,
    shutdown,
};

use crate::supervise::{Fatal, Lifetime, Supervisor};

/// Errors that stop the application from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// A dependency could not be brought up (after its own retries).
    #[error("{0}")]
    Dependency(String),
}

/// A built application: listening, with its background tasks running.
pub struct Application {
    owners: crate::metrics::Owners,
    config: Arc<Config>,
    listener: TcpListener,
    addr: SocketAddr,
    readiness: Readiness,
    router: axum::Router,
    /// Cancelled once the HTTP server has drained: background tasks stop.
    tasks_cancel: CancellationToken,
    tasks: TaskTracker,
    shutdown_trigger: CancellationToken,
    fatal: Fatal,
    db: Option<Db>,
    /// The OpenBao session, once logged in: its readers, and the slot
    /// bring-up fills.
    session: SessionWatch,
    session_publisher: Option<SessionPublisher>,
    events: crate::events::PodEvents,
    /// Access tokens: their public keys have an owner task of their own.
    tokens: Option<crate::auth::TokenService>,
    /// Owns every background task.
    supervisor: Supervisor,
    /// Where `GET /metrics` answers, when `METRICS_ADDR` is set.
    metrics_addr: Option<SocketAddr>,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and builds the router.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        Self::build_with_routes(config, |_| axum::Router::new()).await
    }

    /// As [`Application::build`], with extra routes (made from the shared
    /// state) mounted inside the same middleware stack: tests mount
    /// deliberately slow, failing or database-backed routes.
    pub async fn build_with_routes(
        config: Config,
        extra: impl FnOnce(AppState) -> axum::Router,
    ) -> Result<Self, AppError> {
        let config = Arc::new(config);
        let listener = TcpListener::bind(config.http.addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.http.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(AppError::Serve)?;
        let readiness = Readiness::new();
        let events = crate::events::PodEvents::detect().await;
        if events.is_enabled() {
            tracing::info!("recording Kubernetes Events on this pod");
        }
        let db = config
            .backends
            .as_ref()
            .map(|b| Db::new(b.db.clone(), b.bao.clone(), events.clone()));
        let (session_publisher, session) = crate::bao::session_channel();
        let limits = db
            .as_ref()
            .map(|db| crate::db::limits::Limits::new(db.clone()));
        let auth = db.as_ref().zip(limits.as_ref()).map(|(db, limits)| {
            let a = &config.auth;
            let tokens = crate::auth::TokenService::new(
                session.clone(),
                Arc::new(crate::auth::keys::SigningKeys::default()),
                Arc::new(crate::auth::sessions::EndedSessions::new(token_lifetime(a))),
                crate::auth::TokenSettings {
                    mount: a.transit_mount.clone(),
                    key: a.signing_key.clone(),
                    issuer: a.issuer.clone(),
                    audience: a.audience.clone(),
                    ttl: a.access_ttl,
                    cache_size: a.token_cache_size,
                    // Long enough for a demanded fetch to happen and land.
                    unknown_kid_wait: a.signing_key_min_refresh + Duration::from_millis(500),
                },
            );
            crate::auth::AuthService::new(db.clone(), tokens, limits.clone(), a)
        });
        let github = db.as_ref().zip(limits.as_ref()).map(|(db, limits)| {
            crate::github::GithubService::new(
                &config.github,
                db.clone(),
                session.clone(),
                limits.clone(),
            )
        });
        let tokens = auth.as_ref().map(|a| a.tokens().clone());
        let state = AppState::new(crate::http::AppStateParts {
            config: config.clone(),
            readiness: readiness.clone(),
            db: db.clone(),
            auth,
            github,
        });
        let extra = extra(state.clone());
        let (tasks_cancel, tasks, shutdown_trigger, fatal) = (
            CancellationToken::new(),
            TaskTracker::new(),
            CancellationToken::new(),
            Fatal::default(),
        );
        let supervisor = Supervisor::new(
            tasks.clone(),
            tasks_cancel.clone(),
            readiness.register("tasks", "starting"),
            events.clone(),
            fatal.clone(),
            shutdown_trigger.clone(),
            config.tasks.failure_grace,
        );
        let owners = crate::metrics::Owners {
            identity: Default::default(),
            session: Some(session.clone()),
        };
        let metrics_addr = match config.http.metrics_addr {
            Some(addr) => {
                let (listener, local) = crate::metrics::bind(addr)
                    .await
                    .map_err(|source| AppError::Bind { addr, source })?;
                crate::metrics::spawn(
                    listener,
                    readiness.clone(),
                    db.clone(),
                    owners.clone(),
                    tasks_cancel.clone(),
                );
                tracing::info!(addr = %local, "metrics at /metrics");
                Some(local)
            }
            None => None,
        };
        let app = Self {
            metrics_addr,
            owners,
            router: http::router(state, extra),
            config,
            listener,
            addr,
            readiness,
            tasks_cancel,
            tasks,
            shutdown_trigger,
            fatal,
            db,
            session,
            session_publisher: Some(session_publisher),
            events,
            tokens,
            supervisor,
        };
        let mut app = app;
        app.spawn_bring_up();
        app.spawn_shared_state();
        Ok(app)
    }

    /// What keeps this replica in step with the others, through
    /// PostgreSQL: the notification listener, the ended sessions it feeds,
    /// the signing keys' push in both directions, and the limiter's sweep.
    fn spawn_shared_state(&self) {
        let (Some(db), Some(tokens)) = (self.db.clone(), self.tokens.clone()) else {
            return;
        };
        let cancel = self.tasks_cancel.clone();
        let (notifications, listener) = crate::db::listen::listen(
            db.clone(),
            &[crate::db::listen::SESSIONS, crate::db::listen::KEYS],
            cancel.clone(),
        );
        self.supervisor
            .spawn("db-listener", Lifetime::UntilCancelled, listener);
        self.supervisor.spawn(
            "ended-sessions",
            Lifetime::UntilCancelled,
            crate::auth::sessions::run(
                tokens.ended_sessions().clone(),
                db.clone(),
                notifications.subscribe(),
                cancel.clone(),
            ),
        );
        self.supervisor.spawn(
            "signing-keys-follow",
            Lifetime::UntilCancelled,
            crate::auth::keys::follow(
                tokens.keys().clone(),
                notifications.subscribe(),
                cancel.clone(),
            ),
        );
        self.supervisor.spawn(
            "signing-keys-announce",
            Lifetime::UntilCancelled,
            crate::auth::keys::announce(tokens.keys().clone(), db.clone(), cancel.clone()),
        );
        self.supervisor.spawn(
            "rate-limit-sweep",
            Lifetime::UntilCancelled,
            crate::db::limits::sweep(db, Duration::from_secs(60), cancel),
        );
    }

    /// Brings the dependencies up in order, in the background, while HTTP
    /// already answers (readiness 503 with reasons). Each step retries on its
    /// own; a step that gives up stops the application with its message.
    fn spawn_bring_up(&mut self) {
        let Some(crate::config::Backends {
            identity: identity_config,
            bao: bao_config,
            ..
        }) = self.config.backends.clone()
        else {
            tracing::warn!(
                "SPIFFE_ENDPOINT_SOCKET not set: serving without workload identity (development only)"
            );
            return;
        };
        let check = self.readiness.register(
            "identity",
            format!(
                "connecting to the SPIFFE Workload API at {}",
                identity_config.endpoint
            ),
        );
        let bao_check = self
            .readiness
            .register("openbao", "waiting for workload identity");
        let db_check = self.readiness.register("database", "waiting for OpenBao");
        if let Some(tokens) = self.tokens.clone() {
            self.spawn_signing_keys(tokens);
        }
        let (cancel, supervisor, fatal, trigger) = (
            self.tasks_cancel.clone(),
            self.supervisor.clone(),
            self.fatal.clone(),
            self.shutdown_trigger.clone(),
        );
        let events = self.events.clone();
        let identity_cell = self.owners.identity.clone();
        let (db, session_publisher) = (
            self.db.clone().expect("db with identity"),
            self.session_publisher.take().expect("bring-up runs once"),
        );
        self.supervisor
            .spawn("bring-up", Lifetime::Finite, async move {
                let identity = tokio::select! {
                    _ = cancel.cancelled() => return,
                    result = Identity::connect(&identity_config) => match result {
                        Ok(identity) => identity,
                        Err(e) => {
                            check.set_not_ready(e.to_string());
                            tracing::error!(error = %e, "workload identity unavailable");
                            *fatal.lock().expect("fatal lock") = Some(e.to_string());
                            trigger.cancel();
                            return;
                        }
                    },
                };
                identity.spawn_watch(check, events, &supervisor);
                let _ = identity_cell.set(identity.clone());

                let Some(session) =
                    Session::establish(&bao_config, &identity, &bao_check, &cancel).await
                else {
                    return;
                };
                session.spawn_upkeep(identity.clone(), bao_check, &supervisor);
                session_publisher.publish(session);

                if db.config().migrate_on_start {
                    db_check.set_not_ready("running migrations");
                    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
                    loop {
                        let result = match BaoClient::login(&bao_config, &identity).await {
                            Ok(client) => {
                                let r = db::migrate(&client, db.config()).await;
                                let _ = client.revoke_self().await;
                                r
                            }
                            Err(e) => Err(e.into()),
                        };
                        match result {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "migrations failed; retrying");
                                db_check.set_not_ready(format!("migrations failed: {e}"));
                            }
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                }
                db_check.set_not_ready("obtaining database credentials");
                db::spawn(db, identity, db_check, &supervisor);
            });
    }

    /// The owner of the access-token public keys: it waits for the OpenBao
    /// session, then fetches on schedule and on demand.
    fn spawn_signing_keys(&self, tokens: crate::auth::TokenService) {
        let a = &self.config.auth;
        let check = self
            .readiness
            .register("signing_keys", "waiting for OpenBao");
        let source = crate::auth::keys::KeySource {
            session: self.session.clone(),
            mount: a.transit_mount.clone(),
            key: a.signing_key.clone(),
        };
        let schedule = crate::auth::keys::Schedule {
            every: a.signing_key_refresh,
            min_interval: a.signing_key_min_refresh,
        };
        let rules = crate::auth::keys::Rules {
            prepublish: a.signing_key_prepublish,
            retire_after: token_lifetime(a),
        };
        let keys = tokens.keys().clone();
        let cancel = self.tasks_cancel.clone();
        self.supervisor.spawn(
            "signing-keys",
            Lifetime::UntilCancelled,
            crate::auth::keys::run(
                keys,
                source,
                schedule,
                rules,
                check,
                move |old, new| tokens.on_keys_changed(old, new),
                cancel,
            ),
        );
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The credentials the application holds when called (the serving
    /// generation's database password and OpenBao token, the session
    /// token): tests scan logs for them.
    #[cfg(feature = "fault-injection")]
    pub fn secrets_for_tests(&self) -> Arc<dyn Fn() -> Vec<String> + Send + Sync> {
        let (db, session) = (self.db.clone(), self.session.clone());
        Arc::new(move || {
            let mut secrets = db.as_ref().map(Db::secrets_for_tests).unwrap_or_default();
            if let Some(client) = session.client() {
                secrets.push(client.vault().settings.token.clone());
            }
            secrets
        })
    }

    /// Where `GET /metrics` answers (`METRICS_ADDR`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The rotating pool (tests watch its generations).
    pub fn db(&self) -> Option<Db> {
        self.db.clone()
    }

    /// Cancelling this token shuts the application down exactly as SIGTERM does.
    pub fn shutdown_trigger(&self) -> CancellationToken {
        self.shutdown_trigger.clone()
    }

    /// Serves until SIGTERM/SIGINT or the trigger, then shuts down gracefully:
    /// readiness turns 503 at once, requests keep being served for
    /// `SHUTDOWN_DELAY`, the listener closes, in-flight requests get up to
    /// `SHUTDOWN_DRAIN_TIMEOUT`, background tasks are cancelled and joined.
    pub async fn run_until_stopped(self) -> Result<(), AppError> {
        let Self {
            config,
            listener,
            addr,
            readiness,
            router,
            tasks_cancel,
            tasks,
            shutdown_trigger,
            fatal,
            db,
            ..
        } = self;
        tracing::info!(%addr, docs = %format!("http://{addr}/docs"), "listening");

        let stop_accepting = CancellationToken::new();
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
        let mut server = tokio::spawn(async move { server.await });

        tokio::select! {
            why = shutdown::requested(shutdown_trigger) => {
                tracing::info!(reason = why, "shutting down: readiness now reports 503");
            }
            result = &mut server => {
                // The server never ends on its own unless it failed.
                tasks_cancel.cancel();
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(AppError::Serve(e)),
                    Err(e) => Err(AppError::Serve(std::io::Error::other(e))),
                };
            }
        }
        readiness.begin_drain();
        // Requests are still served while balancers notice the 503; a
        // second SIGTERM or Ctrl-C cuts the wait short.
        if !config.http.shutdown_delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(config.http.shutdown_delay) => {}
                why = shutdown::signal() => {
                    tracing::info!(reason = why, "second signal: closing the listener now");
                }
            }
        }
        stop_accepting.cancel();
        match tokio::time::timeout(config.http.drain_timeout, &mut server).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server error while draining"),
            Ok(_) => tracing::info!("in-flight requests drained"),
            Err(_) => {
                tracing::warn!(
                    timeout = ?config.http.drain_timeout,
                    "drain timeout reached; dropping remaining requests"
                );
                server.abort();
            }
        }
        tasks_cancel.cancel();
        tasks.close();
        let bound = config.tasks.shutdown_timeout;
        if tokio::time::timeout(bound, tasks.wait()).await.is_err() {
            tracing::warn!(timeout = ?bound, "background tasks did not stop in time (SHUTDOWN_TASKS_TIMEOUT)");
        }
        if let Some(db) = db {
            db.retire_current().await;
        }
        tracing::info!("stopped");
        match fatal.lock().expect("fatal lock").take() {
            Some(message) => Err(AppError::Dependency(message)),
            None => Ok(()),
        }
    }
}

/// The longest an access token can verify after it was issued: its TTL,
/// the `exp` leeway and the clock skew allowed between replicas and
/// OpenBao. Superseded signing keys and ended sessions are kept this long.
fn token_lifetime(a: &crate::config::AuthConfig) -> Duration {
    a.access_ttl + Duration::from_secs(crate::auth::jwt::LEEWAY_SECONDS) + MAX_CLOCK_SKEW
}

/// The clock skew tolerated between replicas, and between them and OpenBao.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
