//! The request id: accepted from `x-request-id` when sane, minted otherwise,
//! echoed on the response, attached to the request's span (so every log line
//! of the request carries it) and readable by error responses.

use axum::http::{HeaderMap, HeaderName};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served, when called inside one.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.clone()).ok()
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// The caller's id if it is short printable ASCII (it ends up in our logs),
/// else a fresh UUIDv7 (time-ordered, so logs sort by it).
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_id_and_replaces_a_hostile_one() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, "abc-123".parse().unwrap());
        assert_eq!(from_headers(&h), "abc-123");
        h.insert(&X_REQUEST_ID, "a b\tc".parse().unwrap());
        assert_ne!(from_headers(&h), "a b\tc");
        assert_eq!(from_headers(&HeaderMap::new()).len(), 36);
    }
}
