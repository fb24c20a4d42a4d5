//! Wiring: builds every part, spawns every task (the only module that
//! does), registers the metric collectors, serves, shuts down. The order in
//! which the dependencies come up is `bring_up.rs`.

mod bring_up;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AuthService, TokenService},
    bao::SessionWatch,
    config::{AuthConfig, Config},
    db::{self, Db, Leftover},
    github::GithubService,
    http::{self, AppState},
    identity::Identity,
    metrics::{Collector, collector},
    readiness::Readiness,
    shutdown,
    supervise::{Lifetime, Supervisor},
};

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

/// The clock skew tolerated between replicas, and between them and OpenBao.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The longest an access token can verify after it was issued: its TTL,
/// the `exp` leeway and the clock skew. Superseded signing keys and ended
/// sessions are kept this long.
fn token_lifetime(a: &AuthConfig) -> Duration {
    a.access_ttl + Duration::from_secs(crate::auth::jwt::LEEWAY_SECONDS) + MAX_CLOCK_SKEW
}

/// A built application: listening, with its background tasks running.
pub struct Application {
    config: Arc<Config>,
    listener: TcpListener,
    addr: SocketAddr,
    readiness: Readiness,
    router: axum::Router,
    /// Owns every background task, the shutdown trigger and the first
    /// fatal error.
    supervisor: Supervisor,
    db: Option<Db>,
    /// Retires the serving generation at shutdown if its engine could not.
    leftover: Option<Leftover>,
    /// The OpenBao session, for the tests' secret scan.
    #[cfg(feature = "fault-injection")]
    session: SessionWatch,
    /// Where `GET /metrics` answers, when `METRICS_ADDR` is set.
    metrics_addr: Option<SocketAddr>,
    /// Where the internal mutual-TLS API answers, when `INTERNAL_ADDR` is set.
    internal_addr: Option<SocketAddr>,
}

/// The parts of the application that serve requests, made before any task.
struct Services {
    db: Option<(Db, db::Publisher)>,
    session: (crate::bao::SessionPublisher, SessionWatch),
    tokens: Option<TokenService>,
    auth: Option<AuthService>,
    github: Option<GithubService>,
    /// Appends the internal API's audit rows (spawned with the database).
    audit_writer: Option<crate::audit::batch::Writer>,
}

fn services(config: &Config) -> Services {
    let db = config.backends.as_ref().map(|b| db::channel(b.db.clone()));
    let (session_publisher, session) = crate::bao::session_channel();
    let limits = db
        .as_ref()
        .map(|(db, _)| db::limits::Limits::new(db.clone()));
    let a = &config.auth;
    let tokens = db.as_ref().map(|_| {
        TokenService::new(
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
        )
    });
    // A few seconds of the internal API at full rate: beyond that the
    // trail is not keeping up and calls are refused (docs/audit.md).
    let (audit, audit_writer) = crate::audit::batch::batcher(50_000);
    let auth =
        db.as_ref()
            .zip(tokens.clone())
            .zip(limits.clone())
            .map(|(((db, _), tokens), limits)| {
                let internal_rate = config
                    .internal
                    .as_ref()
                    .map_or(u32::MAX, |i| i.rate_per_caller_per_minute);
                AuthService::new(db.clone(), tokens, limits, a, internal_rate, audit.clone())
            });
    let audit_writer = db.as_ref().map(|_| audit_writer);
    let github = db.as_ref().zip(limits).map(|((db, _), limits)| {
        GithubService::new(&config.github, db.clone(), session.clone(), limits)
    });
    Services {
        db,
        session: (session_publisher, session),
        tokens,
        auth,
        github,
        audit_writer,
    }
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
        let supervisor = Supervisor::start(
            readiness.register("tasks", "starting"),
            events.clone(),
            config.tasks.failure_grace,
        );
        let Services {
            db,
            session: (session_publisher, session),
            tokens,
            auth,
            github,
            audit_writer,
        } = services(&config);
        let state = AppState::new(http::AppStateParts {
            config: config.clone(),
            readiness: readiness.clone(),
            db: db.as_ref().map(|(db, _)| db.clone()),
            auth,
            github,
        });
        let internal = match &config.internal {
            Some(internal) => {
                let listener =
                    TcpListener::bind(internal.addr)
                        .await
                        .map_err(|source| AppError::Bind {
                            addr: internal.addr,
                            source,
                        })?;
                let addr = listener.local_addr().map_err(AppError::Serve)?;
                Some(bring_up::Internal {
                    listener,
                    config: internal.clone(),
                    router: http::internal_router(state.clone()),
                    addr,
                })
            }
            None => None,
        };
        let internal_addr = internal.as_ref().map(|i| i.addr);
        let router = http::router(state.clone(), extra(state));
        let identity = Arc::new(OnceLock::new());

        if let Some(tokens) = &tokens {
            spawn_signing_keys(&supervisor, &config.auth, &readiness, &session, tokens);
        }
        let (db, leftover) = match config.backends.clone().zip(db) {
            Some((backends, (db, publisher))) => {
                let leftover = publisher.leftover();
                if let Some(tokens) = &tokens {
                    spawn_shared_state(&supervisor, &db, tokens);
                }
                spawn_audit(&supervisor, &db, &session, &config, audit_writer);
                let bring_up = bring_up::BringUp::new(
                    backends,
                    &readiness,
                    events,
                    supervisor.clone(),
                    session_publisher,
                    db.clone(),
                    publisher,
                    identity.clone(),
                    internal,
                );
                supervisor.spawn("bring-up", Lifetime::Finite, bring_up.run());
                (Some(db), Some(leftover))
            }
            None => {
                tracing::warn!(
                    "SPIFFE_ENDPOINT_SOCKET not set: serving without workload identity (development only)"
                );
                (None, None)
            }
        };
        let metrics_addr = match config.http.metrics_addr {
            Some(addr) => {
                let collectors = collectors(
                    &readiness,
                    &identity,
                    &session,
                    db.as_ref(),
                    tokens.as_ref(),
                );
                Some(spawn_metrics(&supervisor, addr, collectors).await?)
            }
            None => None,
        };
        Ok(Self {
            config,
            listener,
            addr,
            readiness,
            router,
            supervisor,
            db,
            leftover,
            #[cfg(feature = "fault-injection")]
            session,
            metrics_addr,
            internal_addr,
        })
    }

    /// Where the internal mutual-TLS API answers (`INTERNAL_ADDR`).
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_addr
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
        self.supervisor.shutdown_trigger().clone()
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
            supervisor,
            leftover,
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
            why = shutdown::requested(supervisor.shutdown_trigger().clone()) => {
                tracing::info!(reason = why, "shutting down: readiness now reports 503");
            }
            result = &mut server => {
                // The server never ends on its own unless it failed.
                supervisor.cancel().cancel();
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
        let bound = config.tasks.shutdown_timeout;
        if !supervisor.stop(bound).await {
            tracing::warn!(timeout = ?bound, "background tasks did not stop in time (SHUTDOWN_TASKS_TIMEOUT)");
        }
        if let Some(leftover) = leftover {
            leftover.retire().await;
        }
        tracing::info!("stopped");
        match supervisor.take_fatal() {
            Some(message) => Err(AppError::Dependency(message)),
            None => Ok(()),
        }
    }
}

/// The owner of the access-token public keys: it waits for the OpenBao
/// session, then fetches on schedule and on demand.
fn spawn_signing_keys(
    supervisor: &Supervisor,
    a: &AuthConfig,
    readiness: &Readiness,
    session: &SessionWatch,
    tokens: &TokenService,
) {
    let check = readiness.register("signing_keys", "waiting for OpenBao");
    let source = crate::auth::keys::KeySource {
        session: session.clone(),
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
    let on_change = {
        let tokens = tokens.clone();
        move |old: &_, new: &_| tokens.on_keys_changed(old, new)
    };
    supervisor.spawn(
        "signing-keys",
        Lifetime::UntilCancelled,
        crate::auth::keys::run(
            tokens.keys().clone(),
            source,
            schedule,
            rules,
            check,
            on_change,
            supervisor.cancel().clone(),
        ),
    );
}

/// What keeps this replica in step with the others, through PostgreSQL:
/// the notification listener, the ended sessions it feeds, the signing
/// keys' push in both directions, and the limiter's sweep.
fn spawn_shared_state(supervisor: &Supervisor, db: &Db, tokens: &TokenService) {
    let cancel = supervisor.cancel();
    let (notifications, listener) = db::listen::listen(
        db.clone(),
        &[db::listen::SESSIONS, db::listen::KEYS],
        cancel.clone(),
    );
    supervisor.spawn("db-listener", Lifetime::UntilCancelled, listener);
    supervisor.spawn(
        "ended-sessions",
        Lifetime::UntilCancelled,
        crate::auth::sessions::run(
            tokens.ended_sessions().clone(),
            db.clone(),
            notifications.subscribe(),
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "signing-keys-follow",
        Lifetime::UntilCancelled,
        crate::auth::keys::follow(
            tokens.keys().clone(),
            notifications.subscribe(),
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "signing-keys-announce",
        Lifetime::UntilCancelled,
        crate::auth::keys::announce(tokens.keys().clone(), db.clone(), cancel.clone()),
    );
    supervisor.spawn(
        "rate-limit-sweep",
        Lifetime::UntilCancelled,
        db::limits::sweep(db.clone(), Duration::from_secs(60), cancel.clone()),
    );
}

/// The audit trail's upkeep: signed checkpoints of the chain, and a row
/// per credential rotation.
fn spawn_audit(
    supervisor: &Supervisor,
    db: &Db,
    session: &SessionWatch,
    config: &Config,
    writer: Option<crate::audit::batch::Writer>,
) {
    let cancel = supervisor.cancel();
    if let Some(writer) = writer {
        supervisor.spawn(
            "audit-batches",
            Lifetime::UntilCancelled,
            writer.run(db.clone(), cancel.clone()),
        );
    }
    let checkpointer = crate::audit::checkpoint::Checkpointer::new(
        db.clone(),
        session.clone(),
        config.auth.transit_mount.clone(),
        config.audit.clone(),
    );
    supervisor.spawn(
        "audit-checkpoints",
        Lifetime::UntilCancelled,
        crate::audit::checkpoint::run(checkpointer, cancel.clone()),
    );
    supervisor.spawn(
        "audit-rotations",
        Lifetime::UntilCancelled,
        crate::audit::rotations::run(db.clone(), cancel.clone()),
    );
}

/// Every module's metrics, and the exporter's upkeep and listener.
async fn spawn_metrics(
    supervisor: &Supervisor,
    addr: SocketAddr,
    collectors: Vec<Collector>,
) -> Result<SocketAddr, AppError> {
    let (listener, local) = crate::metrics::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })?;
    let handle = crate::metrics::install(
        &[
            crate::supervise::FAMILY,
            crate::readiness::FAMILY,
            crate::ratelimit::FAMILY,
            crate::identity::metrics::FAMILY,
            crate::bao::metrics::FAMILY,
            crate::db::metrics::FAMILY,
            crate::audit::metrics::FAMILY,
            crate::auth::metrics::FAMILY,
            crate::github::metrics::FAMILY,
            crate::http::metrics::FAMILY,
        ],
        [
            ("version", crate::build_info::VERSION),
            ("commit", crate::build_info::GIT_COMMIT),
            ("build_date", crate::build_info::BUILD_DATE),
        ],
    );
    let cancel = supervisor.cancel().clone();
    supervisor.spawn(
        "metrics-upkeep",
        Lifetime::UntilCancelled,
        crate::metrics::upkeep(handle.clone(), cancel.clone()),
    );
    supervisor.spawn(
        "metrics",
        Lifetime::UntilCancelled,
        crate::metrics::serve(listener, handle, collectors, cancel),
    );
    tracing::info!(addr = %local, "metrics at /metrics");
    Ok(local)
}

/// The gauges read at scrape time, from their owners.
fn collectors(
    readiness: &Readiness,
    identity: &Arc<OnceLock<Identity>>,
    session: &SessionWatch,
    db: Option<&Db>,
    tokens: Option<&TokenService>,
) -> Vec<Collector> {
    let mut all = vec![
        {
            let readiness = readiness.clone();
            collector(move || {
                readiness.export();
                async {}
            })
        },
        collector(|| {
            crate::http::metrics::export_in_flight();
            async {}
        }),
        {
            let identity = identity.clone();
            collector(move || {
                let identity = identity.get().cloned();
                async move {
                    use crate::identity::metrics as m;
                    if let Some(identity) = identity {
                        metrics::gauge!(m::SVID_EXPIRY).set(identity.svid_expiry_seconds());
                        let connected = identity.workload_api_reachable().await;
                        metrics::gauge!(m::WORKLOAD_API_CONNECTED)
                            .set(f64::from(u8::from(connected)));
                    }
                }
            })
        },
        {
            let session = session.clone();
            collector(move || {
                if let Some(session) = session.get() {
                    metrics::gauge!(crate::bao::metrics::TOKEN_EXPIRY)
                        .set(session.expiry_seconds());
                }
                async {}
            })
        },
    ];
    if let Some(db) = db.cloned() {
        all.push(collector(move || {
            use crate::db::metrics as m;
            if let Some((size, idle)) = db.pool_stats() {
                metrics::gauge!(m::POOL_CONNECTIONS).set(f64::from(size));
                metrics::gauge!(m::POOL_IDLE).set(idle as f64);
            }
            if let Some(g) = db.generation() {
                let now = time::OffsetDateTime::now_utc();
                if let Some(lease) = g.lease_expires_at {
                    metrics::gauge!(m::LEASE_EXPIRY).set((lease - now).as_seconds_f64());
                }
                if let Some(token) = g.token_expires_at {
                    metrics::gauge!(m::TOKEN_EXPIRY).set((token - now).as_seconds_f64());
                }
            }
            async {}
        }));
    }
    if let Some(tokens) = tokens.cloned() {
        all.push(collector(move || {
            if let Some(newest) = tokens.keys().current().keys.values().next_back() {
                let age = time::OffsetDateTime::now_utc() - newest.created;
                metrics::gauge!(crate::auth::metrics::SIGNING_KEY_AGE).set(age.as_seconds_f64());
            }
            async {}
        }));
    }
    all
}
