//! Prometheus metrics, served on their own listener (`METRICS_ADDR`): a
//! scrape never passes the public middleware, and the public port never
//! exposes internals.
//!
//! Counters and histograms are recorded where things happen (the rotation
//! engine, the supervisor, the retry of lost connections); gauges that
//! describe state (readiness, the lease's remaining life) are read at scrape
//! time from their owners, so the request path pays nothing for them.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{db::Db, readiness::Readiness};

pub const ROTATIONS: &str = "precinct_db_rotations_total";
pub const ROTATION_SECONDS: &str = "precinct_db_rotation_duration_seconds";
pub const DRAIN_SECONDS: &str = "precinct_db_drain_duration_seconds";
pub const GENERATION: &str = "precinct_db_generation";
pub const LAST_ROTATION: &str = "precinct_db_last_rotation_success_timestamp_seconds";
pub const CONNECTION_RETRIES: &str = "precinct_db_connection_retries_total";
pub const RENEWALS: &str = "precinct_db_renewals_total";
pub const TASK_FAILURES: &str = "precinct_task_failures_total";

/// The process-wide recorder (installed once; every application in the
/// process, tests included, records into it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                )
                .expect("valid buckets")
                .install_recorder()
                .expect("the only metrics recorder");
            metrics::describe_counter!(ROTATIONS, "Credential rotations by trigger and outcome");
            metrics::describe_histogram!(
                ROTATION_SECONDS,
                "Login + credentials + proven pool, per rotation"
            );
            metrics::describe_histogram!(DRAIN_SECONDS, "Time a retired generation took to drain");
            metrics::describe_gauge!(GENERATION, "The serving credential generation");
            metrics::describe_gauge!(LAST_ROTATION, "Unix time of the last successful rotation");
            metrics::describe_counter!(
                CONNECTION_RETRIES,
                "Operations run again after their connection died"
            );
            metrics::describe_counter!(RENEWALS, "Token and lease renewals by what and outcome");
            metrics::describe_counter!(TASK_FAILURES, "Background tasks that panicked or ended");
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

#[derive(Clone)]
struct Sources {
    handle: PrometheusHandle,
    readiness: Readiness,
    db: Option<Db>,
}

async fn render(State(s): State<Sources>) -> impl IntoResponse {
    for (name, check) in s.readiness.report().checks {
        use crate::readiness::CheckStatus;
        metrics::gauge!("precinct_dependency_ready", "check" => name.clone())
            .set(f64::from(u8::from(check.status != CheckStatus::NotReady)));
        metrics::gauge!("precinct_dependency_degraded", "check" => name)
            .set(f64::from(u8::from(check.status == CheckStatus::Degraded)));
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
    cancel: CancellationToken,
) {
    let sources = Sources {
        handle: handle(),
        readiness,
        db,
    };
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
