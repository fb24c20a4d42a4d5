//! The engine: performs what the planner (`plan.rs`) decides — create a
//! generation, renew its token or lease, swap, drain, close, revoke — and
//! records the outcome. It owns the [`Publisher`], so it is the only writer
//! of the serving generation, and the deadlines, which it publishes as
//! [`GenerationInfo`]. Also the periodic health check behind readiness
//! `database`, and SIGHUP.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Ask, Db, DbError, GenerationInfo, Publisher, Request, Shared,
    generation::{Generation, build_pool, wall},
    metrics as m,
    plan::{self, Current, Next, Policy, Renewal, State, Trigger},
    role_is_invalid,
};
use crate::{
    backoff::Backoff, bao::BaoClient, config::BaoConfig, drain::Tracked, events::PodEvents,
    identity::Identity, readiness::Check,
};

/// Failed rotations are retried from 1 s, doubling to this cap: low enough
/// that the pool recovers within seconds of OpenBao's return, and one login
/// per few seconds per replica is no storm.
const RETRY_CAP: Duration = Duration::from_secs(4);

/// The engine's three tasks, for the caller to spawn: the rotation loop
/// (which creates the first generation), the health check and the SIGHUP
/// listener.
pub struct Tasks<R, H, S> {
    pub rotation: R,
    pub health: H,
    pub sighup: S,
}

/// The engine for `publisher`: it logs in to OpenBao (`bao`) as `identity`
/// for each generation and records Pod `events`; `check` is readiness
/// `database`. Everything stops on `cancel`.
pub fn engine(
    publisher: Publisher,
    db: Db,
    identity: Identity,
    bao: BaoConfig,
    events: PodEvents,
    check: Check,
    cancel: CancellationToken,
) -> Tasks<
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
> {
    let config = publisher.config().clone();
    let failing = Arc::new(AtomicBool::new(false));
    let engine = Engine {
        policy: Policy {
            interval: config.rotation_interval,
            drain: config.drain_timeout,
            min_spacing: config.rotation_min_spacing,
        },
        publisher,
        bao,
        events,
        failing: failing.clone(),
        identity,
        check: check.clone(),
        cancel: cancel.clone(),
        state: State::default(),
        backoff: Backoff::new(Duration::from_secs(1), RETRY_CAP),
        renew_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        next_id: 1,
        last_role_check: None,
        schema_error_reported: None,
        serving: None,
    };
    Tasks {
        rotation: engine.run(),
        health: health_loop(db.clone(), failing, check, cancel.clone()),
        sighup: sighup_loop(db, cancel),
    }
}

/// At shutdown, retires the serving generation if the engine could not (it
/// failed): no role is left waiting for its TTL.
#[derive(Clone)]
pub struct Leftover {
    shared: Arc<Shared>,
    drain: Duration,
}

impl Publisher {
    /// The handle that retires what this publisher serves, at shutdown.
    pub fn leftover(&self) -> Leftover {
        Leftover {
            shared: self.shared.clone(),
            drain: self.shared.config.drain_timeout,
        }
    }
}

impl Leftover {
    pub async fn retire(&self) {
        if let Some(g) = self.shared.current.swap(None) {
            tracing::warn!(
                generation = g.id,
                "retiring the serving generation for a rotation task that is gone"
            );
            retire(g, self.drain).await;
        }
    }
}

async fn sighup_loop(db: Db, cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        cancel.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!(event = "rotation_requested", trigger = "signal", "SIGHUP: rotating database credentials");
                db.request_rotation(Trigger::Signal);
            }
        }
    }
}

struct Engine {
    publisher: Publisher,
    bao: BaoConfig,
    events: PodEvents,
    /// The last rotation attempt failed (the health check judges the
    /// margin by it).
    failing: Arc<AtomicBool>,
    identity: Identity,
    check: Check,
    cancel: CancellationToken,
    policy: Policy,
    /// The planner's view, the serving generation's deadlines included:
    /// the one place they are kept.
    state: State,
    backoff: Backoff,
    renew_backoff: Backoff,
    next_id: u64,
    last_role_check: Option<Instant>,
    schema_error_reported: Option<u64>,
    /// The generation `state.current` describes.
    serving: Option<Arc<Tracked<Generation>>>,
}

impl Engine {
    async fn run(mut self) {
        loop {
            #[cfg(feature = "fault-injection")]
            if self.publisher.take_injected_panic() {
                panic!("injected rotation panic (fault-injection)");
            }
            match plan::plan(&self.state, &self.policy, Instant::now()) {
                Next::Rotate(trigger) => {
                    let span = crate::trace::root_span("db rotation");
                    self.rotate(trigger).instrument(span).await
                }
                Next::Renew(what) => {
                    let span = crate::trace::root_span("db renewal");
                    self.renew(what).instrument(span).await
                }
                Next::Retry(until) | Next::Wait(until) => {
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep_until(until.into()) => {}
                        Some(request) = self.publisher.inbox.recv() => self.accept(request).await,
                    }
                }
            }
            if self.cancel.is_cancelled() {
                break;
            }
        }
        // Shutting down: retire the serving generation cleanly.
        self.serving = None;
        self.publisher.publish_info(None);
        if let Some(g) = self.publisher.swap(None) {
            let span = crate::trace::root_span("db retirement");
            retire(g, self.policy.drain).instrument(span).await;
        }
    }

    /// Records a request, unless it comes from a generation already retired
    /// (a straggler's error must not rotate its successor).
    async fn accept(&mut self, request: Request) {
        let current = self.state.current.as_ref().map(|c| c.id);
        match (request.generation, current) {
            (Some(from), Some(now)) if from != now => {
                tracing::debug!(
                    from,
                    current = now,
                    ask = ?request.ask,
                    "request from a retired generation ignored"
                );
            }
            (_, None) => {} // the first generation is on its way anyway
            _ => match request.ask {
                Ask::Rotate(trigger) => self.request(trigger),
                Ask::CheckRole => self.check_role().await,
            },
        }
    }

    fn request(&mut self, trigger: Trigger) {
        // Role-invalid outranks a signal: it may skip the spacing.
        if self.state.requested != Some(Trigger::RoleInvalid) {
            self.state.requested = Some(trigger);
        }
    }

    /// A statement failed as under a dropped role: is the role still there?
    /// At most one check per second; a missing role rotates, a present one
    /// is a schema problem, logged once per generation.
    async fn check_role(&mut self) {
        if self
            .last_role_check
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_role_check = Some(Instant::now());
        let Some(g) = self.publisher.serving() else {
            return;
        };
        let check = sqlx::query_scalar::<_, bool>(
            "select exists(select 1 from pg_catalog.pg_roles where rolname = $1)",
        )
        .bind(&g.username)
        .fetch_one(&g.pool);
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(false)) => {
                tracing::warn!(event = "db_role_invalid", generation = g.id, role = %g.username, "the generation's role is gone; rotating");
                g.mark_invalid();
                self.request(Trigger::RoleInvalid);
            }
            Ok(Err(e)) if role_is_invalid(&e) => {
                tracing::warn!(event = "db_role_invalid", generation = g.id, error = %e, "the generation's role is refused; rotating");
                g.mark_invalid();
                self.request(Trigger::RoleInvalid);
            }
            Ok(Ok(true)) if self.schema_error_reported != Some(g.id) => {
                self.schema_error_reported = Some(g.id);
                tracing::error!(event = "db_schema_error", generation = g.id, role = %g.username, "a relation or schema is missing although the role exists: have the migrations run?");
            }
            _ => {}
        }
    }

    async fn rotate(&mut self, trigger: Trigger) {
        let started = Instant::now();
        self.state.last_attempt = Some(started);
        let id = self.next_id;
        match create(
            &self.bao,
            self.publisher.config(),
            self.publisher.requests(),
            &self.identity,
            id,
        )
        .await
        {
            Ok((generation, current)) => {
                self.next_id += 1;
                let misfit = plan::misfit(&current, &self.policy);
                let tracked = Tracked::new(Generation {
                    misfit,
                    ..generation
                });
                let old = self.publisher.swap(Some(tracked.clone()));
                // A proven generation: the database is ready now, not at the
                // next health tick.
                mark(&self.check, &tracked);
                self.state = State {
                    current: Some(current),
                    last_attempt: Some(started),
                    ..State::default()
                };
                self.serving = Some(tracked.clone());
                self.publish_info();
                self.backoff.reset();
                self.renew_backoff.reset();
                self.failing.store(false, Ordering::Relaxed);
                metrics::counter!(m::ROTATIONS, "trigger" => trigger.as_str(), "outcome" => "success")
                    .increment(1);
                metrics::histogram!(m::ROTATION_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::gauge!(m::GENERATION).set(id as f64);
                metrics::gauge!(m::LAST_ROTATION).set(crate::metrics::unix_now());
                let (next_at, next_why) =
                    plan::due(self.state.current.as_ref().unwrap(), &self.policy);
                tracing::info!(
                    event = "rotation_succeeded",
                    generation = id,
                    trigger = trigger.as_str(),
                    role = %tracked.username,
                    lease_ttl = ?tracked.lease_ttl,
                    next_rotation_in = ?next_at.saturating_duration_since(Instant::now()),
                    next_trigger = next_why.as_str(),
                    took = ?started.elapsed(),
                    "database credentials rotated"
                );
                if let Some(why) = &tracked.misfit {
                    tracing::warn!(event = "rotation_misfit", generation = id, reason = %why, "granted lifetimes do not fit the rotation settings; see docs/rotation.md");
                    let first = old
                        .as_ref()
                        .is_none_or(|o| o.misfit.as_deref() != Some(why));
                    if first {
                        self.events
                            .warning(
                                "CredentialsLifetimeMisfit",
                                "RotateCredentials",
                                why.clone(),
                            )
                            .await;
                    }
                }
                self.events
                    .normal(
                        "CredentialsRotated",
                        "RotateCredentials",
                        format!(
                            "generation {id} ({}): database role {}, lease {}s",
                            trigger.as_str(),
                            tracked.username,
                            tracked.lease_ttl.as_secs()
                        ),
                    )
                    .await;
                if let Some(old) = old {
                    retire(old, self.policy.drain).await;
                }
            }
            Err(e) => {
                self.state.failures += 1;
                self.failing.store(true, Ordering::Relaxed);
                metrics::counter!(m::ROTATIONS, "trigger" => trigger.as_str(), "outcome" => "failure")
                    .increment(1);
                let delay = self.backoff.next_delay();
                self.state.retry_at = Some(Instant::now() + delay);
                tracing::warn!(
                    event = "rotation_failed",
                    trigger = trigger.as_str(),
                    failures = self.state.failures,
                    error = %e,
                    retry_in = ?delay,
                    "credential rotation failed; the current pool keeps serving"
                );
                if self.state.failures == 1 || self.state.failures.is_power_of_two() {
                    self.events
                        .warning(
                            "CredentialsRotationFailed",
                            "RotateCredentials",
                            format!(
                                "{e} ({} in a row); the current pool keeps serving",
                                self.state.failures
                            ),
                        )
                        .await;
                }
                if self.state.current.is_none() {
                    self.check
                        .set_not_ready(format!("no database credentials yet: {e}"));
                }
            }
        }
    }

    async fn renew(&mut self, what: Renewal) {
        let (Some(g), Some(c)) = (self.serving.clone(), self.state.current.as_mut()) else {
            return;
        };
        let asked = match what {
            Renewal::Token => c.token_ttl,
            Renewal::Lease => c.lease_ttl,
        };
        let result = match what {
            Renewal::Token => g.bao.renew_self().await,
            Renewal::Lease => g.bao.renew_lease(&g.lease_id, c.lease_ttl).await,
        };
        let now = Instant::now();
        match result {
            Ok(granted) => {
                let deadline = (!granted.is_zero()).then(|| now + granted);
                let capped = plan::capped(asked, granted);
                match what {
                    Renewal::Token => {
                        c.token_deadline = deadline;
                        c.token_renewable &= !capped;
                    }
                    Renewal::Lease => {
                        c.lease_deadline = deadline;
                        c.lease_renewable &= !capped;
                    }
                }
                self.publish_info();
                self.state.renew_retry_at = None;
                self.renew_backoff.reset();
                metrics::counter!(m::RENEWALS, "what" => what.as_str(), "outcome" => "success")
                    .increment(1);
                tracing::info!(event = "renewal_succeeded", generation = g.id, what = ?what, ?granted, capped, "generation renewed");
            }
            Err(e) => {
                if e.is_refusal() {
                    // Refused (revoked, not renewable): asking again cannot help.
                    match what {
                        Renewal::Token => c.token_renewable = false,
                        Renewal::Lease => c.lease_renewable = false,
                    }
                }
                let delay = self.renew_backoff.next_delay();
                self.state.renew_retry_at = Some(now + delay);
                metrics::counter!(m::RENEWALS, "what" => what.as_str(), "outcome" => "failure")
                    .increment(1);
                tracing::warn!(event = "renewal_failed", generation = g.id, what = ?what, error = %e, retry_in = ?delay, "generation renewal failed");
            }
        }
    }
}

impl Engine {
    /// Tells readers what the serving generation is, deadlines included.
    fn publish_info(&self) {
        let info = self
            .serving
            .as_ref()
            .zip(self.state.current.as_ref())
            .map(|(g, c)| GenerationInfo {
                id: g.id,
                username: g.username.clone(),
                lease_expires_at: c.lease_deadline.map(wall),
                token_expires_at: c.token_deadline.map(wall),
                created_at: g.created_at,
            });
        self.publisher.publish_info(info);
    }
}

/// Ready, or degraded when the granted lifetimes do not fit the settings.
fn mark(check: &Check, g: &Generation) {
    match &g.misfit {
        Some(why) => check.set_degraded(why.clone()),
        None => check.set_ready(),
    }
}

/// One new generation: new token → new lease → new pool, proven. Anything
/// created before a failure is revoked.
async fn create(
    bao_config: &BaoConfig,
    config: &crate::config::DbConfig,
    requests: mpsc::Sender<Request>,
    identity: &Identity,
    id: u64,
) -> Result<(Generation, Current), DbError> {
    let bao = BaoClient::login(bao_config, identity).await?;
    let creds = match bao.db_credentials(&bao_config.db_role).await {
        Ok(c) => c,
        Err(e) => {
            let _ = bao.revoke_self().await;
            return Err(e.into());
        }
    };
    let granted = Instant::now();
    let suspicion = Arc::new(super::generation::Suspicion::default());
    let pool = match build_pool(config, &creds, suspicion.clone()).await {
        Ok(p) => p,
        Err(e) => {
            let _ = bao.revoke_lease(&creds.lease_id).await;
            let _ = bao.revoke_self().await;
            return Err(e);
        }
    };
    let current = Current {
        id,
        created: Instant::now(),
        lease_ttl: creds.lease_duration,
        lease_deadline: (!creds.lease_duration.is_zero()).then(|| granted + creds.lease_duration),
        lease_renewable: creds.renewable,
        token_ttl: bao.token_ttl,
        token_deadline: (!bao.token_ttl.is_zero()).then(|| bao.logged_in + bao.token_ttl),
        token_renewable: bao.renewable,
    };
    let generation = Generation {
        id,
        pool,
        username: creds.username,
        lease_id: creds.lease_id,
        lease_ttl: creds.lease_duration,
        created_at: OffsetDateTime::now_utc(),
        bao,
        requests,
        misfit: None,
        invalid: std::sync::atomic::AtomicBool::new(false),
        suspicion,
        #[cfg(feature = "fault-injection")]
        password: creds.password.clone(),
    };
    Ok((generation, current))
}

/// Drain (woken by the last holder) → close → revoke lease → revoke token.
pub(super) async fn retire(old: Arc<Tracked<Generation>>, drain_timeout: Duration) {
    let started = Instant::now();
    let holders = old.drain(drain_timeout).await;
    metrics::histogram!(m::DRAIN_SECONDS).record(started.elapsed().as_secs_f64());
    if holders > 0 {
        tracing::warn!(
            event = "drain_timeout",
            generation = old.id,
            holders,
            "drain timeout: closing the old pool under running requests"
        );
    }
    let remaining = drain_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(remaining, old.pool.close())
        .await
        .is_err()
    {
        tracing::warn!(
            generation = old.id,
            "old pool did not close in time; revoking anyway"
        );
    }
    // Revocation terminates the role's remaining sessions and drops it.
    // A refusal (403/400) means the token is gone already (expired, or an
    // OpenBao that lost its state): its leases went with it. Normal, not a
    // warning.
    match old.bao.revoke_lease(&old.lease_id).await {
        Ok(()) => {}
        Err(e) if e.is_refusal() => {
            tracing::info!(event = "lease_already_gone", generation = old.id, error = %e, "old lease not revocable: its token is gone, and the lease with it");
        }
        Err(e) => {
            tracing::warn!(generation = old.id, error = %e, "could not revoke the old lease; revoking its token");
        }
    }
    match old.bao.revoke_self().await {
        Ok(()) => {}
        Err(e) if e.is_refusal() => {
            tracing::info!(generation = old.id, error = %e, "old token already gone");
        }
        Err(e) => {
            tracing::warn!(generation = old.id, error = %e, "could not revoke the old token; it expires on its own");
        }
    }
    tracing::info!(event = "generation_retired", generation = old.id, role = %old.username, drained_in = ?started.elapsed(), "old generation retired");
}

async fn health_loop(db: Db, failing: Arc<AtomicBool>, check: Check, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(db.config().health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(g) = db.shared.current.load_full() else {
            continue; // the rotation loop reports why
        };
        if g.is_invalid() {
            check.set_not_ready("PostgreSQL refused the database role; rotating");
            continue;
        }
        // Close to the end with a rotation failing: the instance may lose its
        // credentials. (Close to the end with rotations working is the
        // planner's business: it rotates before the end.)
        let margin = db.config().lease_safety_margin;
        if let Some(end) = db.generation().and_then(|i| i.ends_at())
            && failing.load(Ordering::Relaxed)
        {
            let left: Duration = (end - time::OffsetDateTime::now_utc())
                .try_into()
                .unwrap_or(Duration::ZERO);
            if left < margin {
                check.set_not_ready(format!(
                    "database lease expires in {}s (under the {}s safety margin) and could not be rotated",
                    left.as_secs(),
                    margin.as_secs()
                ));
                continue;
            }
        }
        // The probe acquires as a request does: its wait for a connection is
        // the pool's acquire wait, sampled every health interval.
        let probe = tokio::time::timeout(db.config().acquire_timeout, async {
            let started = Instant::now();
            let mut conn = g.pool.acquire().await?;
            metrics::histogram!(m::ACQUIRE_SECONDS).record(started.elapsed().as_secs_f64());
            sqlx::query("select 1").execute(&mut *conn).await
        })
        .await;
        match probe {
            Ok(Ok(_)) => mark(&check, &g),
            Ok(Err(e)) => {
                if role_is_invalid(&e) {
                    let _ = g.requests.try_send(Request {
                        ask: Ask::Rotate(Trigger::RoleInvalid),
                        generation: Some(g.id),
                    });
                }
                check.set_not_ready(format!("database check failed: {e}"));
            }
            Err(_) => check.set_not_ready("database check timed out"),
        }
    }
}
