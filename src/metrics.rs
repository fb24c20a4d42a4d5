//! The Prometheus exporter, on its own listener (`METRICS_ADDR`): a scrape
//! never passes the public middleware, and the public port never exposes
//! internals.
//!
//! It knows no domain module. Each module owns its metrics in its own
//! `metrics.rs` (names, help texts, zero-initialisation, the handles it
//! records into), as linkerd2-proxy registers a sub-registry per component,
//! and hands them to [`install`] as a [`Family`]. State that is read rather
//! than recorded (readiness, an expiry still to come) is gathered at scrape
//! time by the [`Collector`]s `app` registers, closures over the owners.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a metric is, for its `# TYPE` and `# HELP` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    /// Recorded in seconds.
    Histogram,
    Gauge,
}

/// One metric a module exports.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// A module's metrics: their descriptions, histogram buckets that are not
/// the default, and what exists at zero from the start (`increase()` cannot
/// see a series whose first sample is already 1, so an alert on a first
/// failure would never fire).
pub struct Family {
    pub metrics: &'static [Metric],
    pub buckets: &'static [(&'static str, &'static [f64])],
    pub zero: fn(),
}

/// Seconds-scale work (a rotation, a drain): the default histogram buckets.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Installs the process-wide recorder with `families` (once; every
/// application in the process, tests included, records into it) and the
/// build identity.
pub fn install(families: &[Family], build: [(&'static str, &'static str); 3]) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for family in families {
                for (name, buckets) in family.buckets {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                        .expect("valid buckets");
                }
            }
            let handle = builder
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
                .expect("valid buckets")
                .install_recorder()
                .expect("the only metrics recorder");
            for family in families {
                for m in family.metrics {
                    match m.kind {
                        Kind::Counter => metrics::describe_counter!(m.name, m.help),
                        Kind::Histogram => {
                            metrics::describe_histogram!(m.name, metrics::Unit::Seconds, m.help)
                        }
                        Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
                    }
                }
                (family.zero)();
            }
            metrics::describe_gauge!("precinct_build_info", "The build: version, commit, date");
            let [version, commit, date] = build;
            metrics::gauge!("precinct_build_info", version.0 => version.1, commit.0 => commit.1, date.0 => date.1)
                .set(1.0);
            handle
        })
        .clone()
}

/// Whether a recorder serves: without `METRICS_ADDR` nothing is exported,
/// and the request path skips even building label sets.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Gathers state at scrape time (sets gauges from their owners).
pub type Collector =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static>;

/// A collector from an async closure.
pub fn collector<F, Fut>(f: F) -> Collector
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move || Box::pin(f()))
}

struct Sources {
    handle: PrometheusHandle,
    collectors: Vec<Collector>,
}

async fn render(State(s): State<std::sync::Arc<Sources>>) -> impl IntoResponse {
    for collect in &s.collectors {
        collect().await;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.handle.render(),
    )
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves `GET /metrics` on `listener` until `cancel` (the caller spawns it).
pub fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    collectors: Vec<Collector>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    ENABLED.store(true, Ordering::Relaxed);
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(std::sync::Arc::new(Sources { handle, collectors }));
    async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
    }
}

/// Histogram samples wait in buckets until drained: without a scrape (no
/// Prometheus yet, a scrape config gone) they would grow with every
/// request. This drains them on its own schedule until `cancel`.
pub async fn upkeep(handle: PrometheusHandle, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Seconds since the Unix epoch, for timestamp gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
