//! W3C trace context. A request joins its caller's trace (a valid
//! `traceparent`) or starts one; the trace id is on every log line of the
//! request, and calls to OpenBao and GitHub carry `traceparent` on.
//!
//! With OTLP export on, the spans are OpenTelemetry spans (the request's is
//! a server span whose parent is the caller's); with it off, no span is
//! exported and the context is only passed along: a caller's trace id still
//! reaches our logs and our upstreams, for the price of parsing one header.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use opentelemetry::{
    Context,
    propagation::TextMapPropagator,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    /// The request's context when nothing exports spans.
    static PASSED: Context;
}

pub(crate) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported over OTLP.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A request's place in a trace, read from its headers before its span
/// exists (so that the span is created with its trace id, formatted once).
pub struct Incoming {
    caller: Context,
    /// Not exporting: the context passed on (the caller's trace, or a new
    /// one, with a span id of ours).
    passed: Option<SpanContext>,
}

/// Reads the caller's `traceparent` (an invalid one starts a fresh trace).
pub fn incoming(headers: &HeaderMap) -> Incoming {
    let caller = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if exporting() {
        return Incoming {
            caller,
            passed: None,
        };
    }
    // Not exporting: keep the caller's trace (or start one) and pass it on
    // with a span id of our own, as an intermediary that does not record.
    let remote = caller.span().span_context().clone();
    let (trace_id, flags) = if remote.is_valid() {
        (remote.trace_id(), remote.trace_flags())
    } else {
        let fresh = TraceId::from_bytes(rand::random::<u128>().to_be_bytes());
        (fresh, TraceFlags::default())
    };
    let ours = SpanContext::new(
        trace_id,
        SpanId::from_bytes(rand::random::<u64>().to_be_bytes()),
        flags,
        true,
        remote.trace_state().clone(),
    );
    Incoming {
        caller: Context::new(),
        passed: Some(ours),
    }
}

/// The trace a request joined: see [`Incoming::join`].
pub struct Joined(Option<Context>);

impl Incoming {
    /// The trace id, when known before the span (not exporting); exported
    /// spans get theirs from the SDK, recorded by [`Incoming::join`].
    pub fn trace_id(&self) -> Option<TraceId> {
        self.passed.as_ref().map(SpanContext::trace_id)
    }

    /// Makes `span` (the request's) join the trace; [`Joined::run`] then
    /// serves the request in it.
    pub fn join(self, span: &tracing::Span) -> Joined {
        match self.passed {
            Some(ours) => Joined(Some(Context::new().with_remote_span_context(ours))),
            None => {
                if self.caller.span().span_context().is_valid() {
                    let _ = span.set_parent(self.caller);
                }
                let trace_id = span.context().span().span_context().trace_id();
                span.record("trace_id", tracing::field::display(trace_id));
                Joined(None)
            }
        }
    }
}

impl Joined {
    pub async fn run<F: Future>(self, fut: F) -> F::Output {
        match self.0 {
            Some(cx) => PASSED.scope(cx, fut).await,
            None => fut.await,
        }
    }
}

/// Adds `traceparent` (and `tracestate`) for the current span to an
/// outgoing request's headers.
pub fn inject(headers: &mut HeaderMap) {
    let cx = if exporting() {
        tracing::Span::current().context()
    } else {
        match PASSED.try_with(Context::clone) {
            Ok(cx) => cx,
            Err(_) => return,
        }
    };
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// A `traceparent` header value for the current context, if any.
pub fn traceparent() -> Option<axum::http::HeaderValue> {
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    headers.remove("traceparent")
}

/// A root span for background work (a rotation, a renewal, a key refresh):
/// its log lines carry a trace id of their own, its OpenBao calls carry it
/// on, and with OTLP export on it is exported as a trace of its own.
pub fn root_span(name: &'static str) -> tracing::Span {
    let span = if exporting() {
        tracing::info_span!(parent: None, "task", task = name, trace_id = tracing::field::Empty, otel.name = name)
    } else {
        tracing::info_span!(parent: None, "task", task = name, trace_id = tracing::field::Empty)
    };
    let trace_id = if exporting() {
        span.context().span().span_context().trace_id()
    } else {
        TraceId::from_bytes(rand::random::<u128>().to_be_bytes())
    };
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    /// What an upstream receives when a request came with `incoming`
    /// (export off, as in unit tests).
    async fn passed_on(traceparent_in: Option<&str>) -> Vec<String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = traceparent_in {
            headers.insert("traceparent", value.parse().unwrap());
        }
        let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
        let sent = incoming(&headers)
            .join(&span)
            .run(async { traceparent().map(|v| v.to_str().unwrap().to_string()) })
            .await
            .expect("a traceparent is passed on");
        sent.split('-').map(str::to_string).collect()
    }

    #[tokio::test]
    async fn a_callers_trace_is_passed_on_with_a_span_id_of_ours() {
        let cases = [
            // (incoming, keeps the caller's trace, flags sent)
            (Some(format!("00-{TRACE}-00f067aa0ba902b7-01")), true, "01"),
            (Some(format!("00-{TRACE}-00f067aa0ba902b7-00")), true, "00"),
            (None, false, "00"),
            (Some("garbage".to_string()), false, "00"),
            (Some(format!("00-{TRACE}-0000000000000000-01")), false, "00"),
            (
                Some(format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))),
                false,
                "00",
            ),
        ];
        for (incoming, keeps, flags) in cases {
            let parts = passed_on(incoming.as_deref()).await;
            assert_eq!(parts.len(), 4, "{incoming:?}");
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1] == TRACE, keeps, "{incoming:?} → {parts:?}");
            assert_eq!(parts[1].len(), 32);
            assert_ne!(parts[1], "0".repeat(32), "a valid trace id");
            assert_ne!(parts[2], "00f067aa0ba902b7", "our own span id");
            assert_eq!(parts[3], flags, "{incoming:?}");
        }
    }

    #[test]
    fn outside_a_request_nothing_is_sent() {
        assert!(traceparent().is_none());
    }
}
