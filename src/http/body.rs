//! Request bodies, read whole (and bounded) before any handler runs.
//!
//! hyper closes a connection whose request body was left unread, and a
//! socket closed with unread bytes sends a TCP reset: a client still
//! writing a body over the limit then sees "broken pipe" instead of our
//! 413. So a body over the limit is read to its end and thrown away, within
//! [`DRAIN_MAX`] bytes and [`DRAIN_TIME`] (nginx's lingering close), and the
//! 413 goes out on a connection that stays usable. A body that announces
//! more than that, or will not end in time, gets its 413 with
//! `Connection: close`.

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{
    StreamExt,
    future::{BoxFuture, Either},
};

use super::ApiError;

/// The most a refused body is read (and discarded) to keep its connection.
pub const DRAIN_MAX: u64 = 1 << 20;
/// The longest a refused body is read to keep its connection.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// What to do with a request body, from what its headers announce.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// No body at all: nothing to read.
    Empty,
    /// Read it: it is (or may be) within the limit.
    Read,
    /// Over the limit and too big to drain: refuse without reading.
    RefuseAndClose,
}

/// The plan for a body that announces `length` (its exact size, when the
/// request says) under `limit`.
pub fn plan(length: Option<u64>, limit: usize) -> Plan {
    match length {
        Some(0) => Plan::Empty,
        Some(n) if n > limit as u64 && n > DRAIN_MAX => Plan::RefuseAndClose,
        _ => Plan::Read,
    }
}

/// Layer: reads the body whole (at most `limit` bytes) and hands the
/// handler a complete one, or answers 413 (or 400 for a body that breaks
/// off) on a connection left in a clean state. A request without a body
/// goes straight through (no boxed future, no clone of the inner stack:
/// most requests are GETs).
#[derive(Clone)]
pub struct ReadWholeLayer {
    limit: usize,
}

impl ReadWholeLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> tower::Layer<S> for ReadWholeLayer {
    type Service = ReadWhole<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ReadWhole {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`ReadWholeLayer`].
#[derive(Clone)]
pub struct ReadWhole<S> {
    inner: S,
    limit: usize,
}

impl<S> tower::Service<Request> for ReadWhole<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match plan(req.body().size_hint().exact(), self.limit) {
            Plan::Empty => Either::Left(self.inner.call(req)),
            Plan::RefuseAndClose => Either::Right(Box::pin(async { Ok(too_large(false)) })),
            Plan::Read => {
                // The service that was polled ready serves this request; its
                // clone waits for the next one.
                let fresh = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, fresh);
                let limit = self.limit;
                Either::Right(Box::pin(async move {
                    match read(req, limit).await {
                        Ok(req) => ready.call(req).await,
                        Err(refusal) => Ok(refusal),
                    }
                }))
            }
        }
    }
}

/// The request with its body read whole, or the answer that refuses it.
async fn read(req: Request, limit: usize) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(ApiError::from_status(StatusCode::BAD_REQUEST).into_response());
        };
        read += chunk.len();
        if read > limit {
            let drained = tokio::time::timeout(DRAIN_TIME, async {
                let mut seen = read as u64;
                while let Some(Ok(chunk)) = stream.next().await {
                    seen += chunk.len() as u64;
                    if seen > DRAIN_MAX {
                        return false;
                    }
                }
                true
            })
            .await;
            return Err(too_large(drained == Ok(true)));
        }
        chunks.push(chunk);
    }
    let whole = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => chunks.concat().into(),
    };
    Ok(Request::from_parts(parts, Body::from(whole)))
}

fn too_large(connection_clean: bool) -> Response {
    let mut response = ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response();
    if !connection_clean {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_what_the_headers_announce() {
        let limit = 64 * 1024;
        let cases = [
            (Some(0), Plan::Empty, "no body"),
            (Some(10), Plan::Read, "small body"),
            (Some(limit as u64), Plan::Read, "exactly the limit"),
            (
                Some(limit as u64 + 1),
                Plan::Read,
                "over: drained for a clean 413",
            ),
            (Some(DRAIN_MAX), Plan::Read, "the most that is drained"),
            (
                Some(DRAIN_MAX + 1),
                Plan::RefuseAndClose,
                "too big to drain",
            ),
            (None, Plan::Read, "chunked: counted while read"),
        ];
        for (length, expected, why) in cases {
            assert_eq!(plan(length, limit), expected, "{why}");
        }
    }

    #[test]
    fn a_limit_above_the_drain_bound_still_reads_what_it_allows() {
        let limit = 2 * DRAIN_MAX as usize;
        assert_eq!(plan(Some(DRAIN_MAX + 1), limit), Plan::Read);
        assert_eq!(plan(Some(limit as u64 + 1), limit), Plan::RefuseAndClose);
    }
}
