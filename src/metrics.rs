//! Prometheus metrics, served on their own listener (`METRICS_ADDR`): a
//! scrape never passes the public middleware, and the public port never
//! exposes internals.
//!
//! Counters and histograms are recorded where things happen (the rotation
//! engine, the supervisor, the retry of lost connections); gauges that
//! describe state (readiness, the lease's remaining life) are read at scrape
//! time from their owners, so the request path pays nothing for them.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{bao::SessionWatch, db::Db, identity::Identity, readiness::Readiness};

pub const ROTATIONS: &str = "precinct_db_rotations_total";
pub const ROTATION_SECONDS: &str = "precinct_db_rotation_duration_seconds";
pub const DRAIN_SECONDS: &str = "precinct_db_drain_duration_seconds";
pub const ACQUIRE_SECONDS: &str = "precinct_db_pool_acquire_seconds";
pub const GENERATION: &str = "precinct_db_generation";
pub const LAST_ROTATION: &str = "precinct_db_last_rotation_success_timestamp_seconds";
pub const CONNECTION_RETRIES: &str = "precinct_db_connection_retries_total";
pub const RENEWALS: &str = "precinct_db_renewals_total";
pub const TASK_FAILURES: &str = "precinct_task_failures_total";
pub const SVID_ROTATIONS: &str = "precinct_identity_svid_rotations_total";
pub const JWT_SVID_FETCHES: &str = "precinct_identity_jwt_svid_fetches_total";
pub const OPENBAO_RENEWALS: &str = "precinct_openbao_renewals_total";
pub const OPENBAO_RELOGINS: &str = "precinct_openbao_relogins_total";
pub const OPENBAO_ERRORS: &str = "precinct_openbao_errors_total";
pub const LOGINS: &str = "precinct_auth_logins_total";
pub const RATE_LIMITED: &str = "precinct_auth_rate_limited_total";
pub const LOGIN_FLOOR_EXCEEDED: &str = "precinct_auth_login_floor_exceeded_total";
pub const REFRESH_REUSE: &str = "precinct_auth_refresh_reuse_detected_total";
pub const KEY_REFRESHES: &str = "precinct_auth_signing_key_refreshes_total";
pub const GITHUB_CALLS: &str = "precinct_github_upstream_requests_total";
pub const GITHUB_ETAG_HITS: &str = "precinct_github_etag_hits_total";
pub const GITHUB_RATE_REMAINING: &str = "precinct_github_rate_limit_remaining";
pub const HTTP_REQUESTS: &str = "precinct_http_requests_total";
pub const HTTP_SECONDS: &str = "precinct_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "precinct_http_requests_in_flight";

/// Every metric with its help text: counters, histograms, then gauges.
const COUNTERS: &[(&str, &str)] = &[
    (ROTATIONS, "Credential rotations by trigger and outcome"),
    (
        CONNECTION_RETRIES,
        "Operations run again after their connection died",
    ),
    (
        RENEWALS,
        "Database token and lease renewals by what and outcome",
    ),
    (TASK_FAILURES, "Background tasks that panicked or ended"),
    (
        SVID_ROTATIONS,
        "X.509-SVIDs received from the Workload API after the first",
    ),
    (
        JWT_SVID_FETCHES,
        "JWT-SVID fetches from the Workload API by audience and outcome",
    ),
    (
        OPENBAO_RENEWALS,
        "Renewals of the OpenBao session token by outcome",
    ),
    (
        OPENBAO_RELOGINS,
        "Fresh OpenBao logins replacing the session token, by outcome",
    ),
    (OPENBAO_ERRORS, "Failed OpenBao calls by operation and kind"),
    (LOGINS, "Password logins by outcome"),
    (
        RATE_LIMITED,
        "Requests refused by a rate limiter, by limiter",
    ),
    (
        LOGIN_FLOOR_EXCEEDED,
        "Password checks that outlasted AUTH_LOGIN_MIN_DURATION (their timing tells schemes apart)",
    ),
    (
        REFRESH_REUSE,
        "Refresh tokens presented twice (their family was revoked)",
    ),
    (
        KEY_REFRESHES,
        "Fetches of the access-token signing keys by outcome",
    ),
    (
        GITHUB_CALLS,
        "Calls to the GitHub API by status (or timeout, network)",
    ),
    (
        GITHUB_ETAG_HITS,
        "GitHub answers served from the ETag cache (304)",
    ),
    (
        HTTP_REQUESTS,
        "HTTP requests by route template, method and status",
    ),
];
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        ROTATION_SECONDS,
        "Login + credentials + proven pool, per rotation",
    ),
    (DRAIN_SECONDS, "Time a retired generation took to drain"),
    (
        ACQUIRE_SECONDS,
        "Wait for a pooled connection, sampled by the health check every DB_HEALTH_INTERVAL",
    ),
    (
        HTTP_SECONDS,
        "HTTP request latency by route template and method",
    ),
];
const GAUGES: &[(&str, &str)] = &[
    (GENERATION, "The serving credential generation"),
    (LAST_ROTATION, "Unix time of the last successful rotation"),
    (
        "precinct_db_lease_expiry_seconds",
        "Seconds until the database lease expires",
    ),
    (
        "precinct_db_token_expiry_seconds",
        "Seconds until the token owning the lease expires",
    ),
    (
        "precinct_db_pool_connections",
        "Open connections of the serving pool",
    ),
    (
        "precinct_db_pool_idle_connections",
        "Idle connections of the serving pool",
    ),
    (
        "precinct_identity_svid_expiry_seconds",
        "Seconds until the X.509-SVID expires",
    ),
    (
        "precinct_identity_workload_api_connected",
        "1 when the Workload API socket accepts a connection",
    ),
    (
        "precinct_openbao_token_expiry_seconds",
        "Seconds until the OpenBao session token expires",
    ),
    (
        "precinct_auth_signing_key_age_seconds",
        "Age of the newest access-token signing key version",
    ),
    (
        GITHUB_RATE_REMAINING,
        "GitHub's x-ratelimit-remaining on its last answer",
    ),
    (HTTP_IN_FLIGHT, "HTTP requests being served"),
    (
        "precinct_dependency_ready",
        "1 when the dependency check counts as ready",
    ),
    (
        "precinct_dependency_degraded",
        "1 when the dependency check is degraded",
    ),
];

/// Latency buckets for HTTP (sub-millisecond to the 30 s timeout); the
/// rotation and drain histograms get the coarser default below.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide recorder (installed once; every application in the
/// process, tests included, records into it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_SECONDS.into()), HTTP_BUCKETS)
                .expect("valid buckets")
                .set_buckets_for_metric(Matcher::Full(ACQUIRE_SECONDS.into()), HTTP_BUCKETS)
                .expect("valid buckets")
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                )
                .expect("valid buckets")
                .install_recorder()
                .expect("the only metrics recorder");
            for (name, help) in COUNTERS {
                metrics::describe_counter!(*name, *help);
            }
            for (name, help) in HISTOGRAMS {
                metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
            }
            for (name, help) in GAUGES {
                metrics::describe_gauge!(*name, *help);
            }
            zero_counters();
            metrics::gauge!(
                "precinct_build_info",
                "version" => crate::build_info::VERSION,
                "commit" => crate::build_info::GIT_COMMIT,
                "build_date" => crate::build_info::BUILD_DATE
            )
            .set(1.0);
            handle
        })
        .clone()
}

/// Counters exist at 0 from the start: `increase()` cannot see a series
/// whose first sample is already 1, so an alert on a first failure would
/// never fire (scripts/alerts-test.yaml tests the alerts this way).
fn zero_counters() {
    use crate::db::{Renewal, Trigger};
    for trigger in Trigger::ALL {
        for outcome in ["success", "failure"] {
            metrics::counter!(ROTATIONS, "trigger" => trigger.as_str(), "outcome" => outcome)
                .increment(0);
        }
    }
    for outcome in ["success", "failure"] {
        for what in [Renewal::Token, Renewal::Lease] {
            metrics::counter!(RENEWALS, "what" => what.as_str(), "outcome" => outcome).increment(0);
        }
        metrics::counter!(OPENBAO_RENEWALS, "outcome" => outcome).increment(0);
        metrics::counter!(OPENBAO_RELOGINS, "outcome" => outcome).increment(0);
        metrics::counter!(KEY_REFRESHES, "outcome" => outcome).increment(0);
    }
    for outcome in ["success", "invalid_credentials", "rate_limited", "error"] {
        metrics::counter!(LOGINS, "outcome" => outcome).increment(0);
    }
    for limiter in [
        "login_ip",
        "login_username_ip",
        "login_username",
        "register_ip",
        "github_configure_user",
    ] {
        metrics::counter!(RATE_LIMITED, "limiter" => limiter).increment(0);
    }
    metrics::counter!(REFRESH_REUSE).increment(0);
    metrics::counter!(LOGIN_FLOOR_EXCEEDED).increment(0);
    metrics::counter!(SVID_ROTATIONS).increment(0);
    metrics::counter!(GITHUB_ETAG_HITS).increment(0);
    metrics::counter!(CONNECTION_RETRIES).increment(0);
}

/// Whether a recorder is installed: without `METRICS_ADDR` nothing records,
/// and the request path skips even building label sets.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Unix time the newest signing key version was created (0: unknown).
static SIGNING_KEY_CREATED: AtomicI64 = AtomicI64::new(0);

/// Records the newest signing key's creation time (read at scrape time).
pub fn signing_key_created(unix_seconds: i64) {
    SIGNING_KEY_CREATED.store(unix_seconds, Ordering::Relaxed);
}

/// Where scrape-time gauges are read from: filled in as bring-up proceeds.
#[derive(Clone, Default)]
pub struct Owners {
    pub identity: Arc<OnceLock<Identity>>,
    pub session: Option<SessionWatch>,
}

#[derive(Clone)]
struct Sources {
    handle: PrometheusHandle,
    readiness: Readiness,
    db: Option<Db>,
    owners: Owners,
}

async fn render(State(s): State<Sources>) -> impl IntoResponse {
    for (name, check) in s.readiness.report().checks {
        use crate::readiness::CheckStatus;
        metrics::gauge!("precinct_dependency_ready", "check" => name.clone())
            .set(f64::from(u8::from(check.status != CheckStatus::NotReady)));
        metrics::gauge!("precinct_dependency_degraded", "check" => name)
            .set(f64::from(u8::from(check.status == CheckStatus::Degraded)));
    }
    if let Some(identity) = s.owners.identity.get() {
        metrics::gauge!("precinct_identity_svid_expiry_seconds")
            .set(identity.svid_expiry_seconds());
        let connected = identity.workload_api_reachable().await;
        metrics::gauge!("precinct_identity_workload_api_connected")
            .set(f64::from(u8::from(connected)));
    }
    if let Some(session) = s.owners.session.as_ref().and_then(SessionWatch::get) {
        metrics::gauge!("precinct_openbao_token_expiry_seconds").set(session.expiry_seconds());
    }
    metrics::gauge!(HTTP_IN_FLIGHT).set(IN_FLIGHT.load(Ordering::Relaxed) as f64);
    let created = SIGNING_KEY_CREATED.load(Ordering::Relaxed);
    if created > 0 {
        let age = time::OffsetDateTime::now_utc().unix_timestamp() - created;
        metrics::gauge!("precinct_auth_signing_key_age_seconds").set(age as f64);
    }
    if let Some((size, idle)) = s.db.as_ref().and_then(|db| db.pool_stats()) {
        metrics::gauge!("precinct_db_pool_connections").set(f64::from(size));
        metrics::gauge!("precinct_db_pool_idle_connections").set(idle as f64);
    }
    if let Some(g) = s.db.as_ref().and_then(|db| db.generation()) {
        let now = time::OffsetDateTime::now_utc();
        if let Some(lease) = g.lease_expires_at {
            metrics::gauge!("precinct_db_lease_expiry_seconds").set((lease - now).as_seconds_f64());
        }
        if let Some(token) = g.token_expires_at {
            metrics::gauge!("precinct_db_token_expiry_seconds").set((token - now).as_seconds_f64());
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.handle.render(),
    )
}

/// Serves `GET /metrics` on `listener` until `cancel`.
pub fn spawn(
    listener: TcpListener,
    readiness: Readiness,
    db: Option<Db>,
    owners: Owners,
    cancel: CancellationToken,
) {
    let sources = Sources {
        handle: handle(),
        readiness,
        db,
        owners,
    };
    ENABLED.store(true, Ordering::Relaxed);
    // Histogram samples wait in buckets until drained: without a scrape
    // (no Prometheus yet, a scrape config gone) they would grow with every
    // request. Upkeep drains them on its own schedule.
    let upkeep = sources.handle.clone();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(sources);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
    });
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Seconds since the Unix epoch, for timestamp gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Requests being served: an atomic on the request path, a gauge at scrape.
static IN_FLIGHT: AtomicI64 = AtomicI64::new(0);

/// Counts a request in; [`http_request`] counts it out.
pub fn request_started() {
    IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
}

/// One route's handles, per method and status, resolved once per thread:
/// the request path then pays a hash of the route and two atomic updates,
/// never a registry lookup or an allocation.
#[derive(Default)]
struct RouteHandles {
    counters: Vec<((&'static str, u16), metrics::Counter)>,
    histograms: Vec<(&'static str, metrics::Histogram)>,
}

thread_local! {
    static HANDLES: std::cell::RefCell<std::collections::HashMap<Box<str>, RouteHandles>> =
        Default::default();
}

/// Records one served request (counted in by [`request_started`]).
pub fn http_request(route: &str, method: &axum::http::Method, status: u16, elapsed: Duration) {
    IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    let method = method_label(method);
    HANDLES.with_borrow_mut(|routes| {
        let handles = match routes.get_mut(route) {
            Some(h) => h,
            None => routes.entry(route.into()).or_default(),
        };
        let counter = match handles.counters.iter().find(|(k, _)| *k == (method, status)) {
            Some((_, c)) => c,
            None => {
                let c = metrics::counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method, "status" => status.to_string());
                handles.counters.push(((method, status), c));
                &handles.counters.last().expect("just pushed").1
            }
        };
        counter.increment(1);
        let histogram = match handles.histograms.iter().find(|(m, _)| *m == method) {
            Some((_, h)) => h,
            None => {
                let h = metrics::histogram!(HTTP_SECONDS, "route" => route.to_owned(), "method" => method);
                handles.histograms.push((method, h));
                &handles.histograms.last().expect("just pushed").1
            }
        };
        histogram.record(elapsed.as_secs_f64());
    });
}

/// Methods outside the standard set collapse into one label value.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
