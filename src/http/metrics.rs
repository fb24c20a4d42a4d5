//! `precinct_http_*`: requests by route template, method and status, their
//! latency, and how many are in flight. Recorded on the request path with
//! handles resolved once per thread; in flight is an atomic, exported at
//! scrape time by [`export_in_flight`].

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use crate::metrics::{Family, Kind, Metric};

pub const REQUESTS: &str = "precinct_http_requests_total";
pub const SECONDS: &str = "precinct_http_request_duration_seconds";
pub const IN_FLIGHT_GAUGE: &str = "precinct_http_requests_in_flight";
pub const INTERNAL_CALLS: &str = "precinct_internal_calls_total";
pub const INTERNAL_HANDSHAKES_REFUSED: &str = "precinct_internal_handshakes_refused_total";

/// Latency buckets: sub-millisecond to the 30 s timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub const FAMILY: Family = Family {
    metrics: &[
        Metric {
            name: REQUESTS,
            kind: Kind::Counter,
            help: "HTTP requests by route template, method and status",
        },
        Metric {
            name: SECONDS,
            kind: Kind::Histogram,
            help: "HTTP request latency by route template and method",
        },
        Metric {
            name: IN_FLIGHT_GAUGE,
            kind: Kind::Gauge,
            help: "HTTP requests being served",
        },
        Metric {
            name: INTERNAL_CALLS,
            kind: Kind::Counter,
            help: "Internal API calls by caller (the allowlist entry that admitted it), route and result",
        },
        Metric {
            name: INTERNAL_HANDSHAKES_REFUSED,
            kind: Kind::Counter,
            help: "Internal API handshakes refused, by reason",
        },
    ],
    buckets: &[(SECONDS, BUCKETS)],
    zero: || {
        for reason in REFUSALS {
            metrics::counter!(INTERNAL_HANDSHAKES_REFUSED, "reason" => reason).increment(0);
        }
    },
};

/// Why the internal listener refuses a handshake (the metric's label set).
pub const REFUSALS: [&str; 11] = [
    "id_not_allowed",
    "trust_domain_not_allowed",
    "untrusted_issuer",
    "no_client_certificate",
    "certificate_expired_or_not_yet_valid",
    "not_one_spiffe_id",
    "not_a_leaf",
    "not_tls",
    "handshake_timeout",
    "closed_during_handshake",
    "handshake_failed",
];

/// One internal API call of `caller` (an allowlist entry: a bounded label).
pub fn internal_call(caller: &str, route: &'static str, positive: bool) {
    if crate::metrics::enabled() {
        let result = if positive { "positive" } else { "negative" };
        metrics::counter!(INTERNAL_CALLS, "caller" => caller.to_string(), "route" => route, "result" => result)
            .increment(1);
    }
}

/// Sets the in-flight gauge from the request path's atomic (at scrape).
pub fn export_in_flight() {
    metrics::gauge!(IN_FLIGHT_GAUGE).set(IN_FLIGHT.load(Ordering::Relaxed) as f64);
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
                let c = metrics::counter!(REQUESTS, "route" => route.to_owned(), "method" => method, "status" => status.to_string());
                handles.counters.push(((method, status), c));
                &handles.counters.last().expect("just pushed").1
            }
        };
        counter.increment(1);
        let histogram = match handles.histograms.iter().find(|(m, _)| *m == method) {
            Some((_, h)) => h,
            None => {
                let h = metrics::histogram!(SECONDS, "route" => route.to_owned(), "method" => method);
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
