//! The HTTP side of GitHub: headers GitHub asks for, timeouts, conditional
//! requests, pagination from `Link`, rate-limit and error classification.

use std::time::Duration;
use tracing::Instrument;

use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::GithubConfig;

#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `rel` → page number, from GitHub's `Link` (first, prev, next, last).
    pub links: Vec<(String, u32)>,
}

impl Page {
    pub fn get(&self, rel: &str) -> Option<u32> {
        self.links.iter().find(|(r, _)| r == rel).map(|(_, n)| *n)
    }
}

/// GitHub's rate-limit headers, passed through to our client.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    pub limit: Option<String>,
    pub remaining: Option<String>,
    pub reset: Option<String>,
}

#[derive(Debug)]
pub struct Upstream {
    pub body: Option<Value>,
    pub etag: Option<String>,
    pub not_modified: bool,
    pub scopes: Vec<String>,
    pub page: Page,
    pub rate_limit: RateLimit,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("GitHub rejected the token")]
    Unauthorized,
    #[error("GitHub rate limit reached")]
    RateLimited {
        retry_after: Duration,
        rate_limit: RateLimit,
    },
    #[error("GitHub did not answer in time")]
    Timeout,
    #[error("GitHub answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot reach GitHub: {0}")]
    Network(String),
}

#[derive(Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    base: String,
    api_version: String,
}

impl GithubClient {
    pub fn new(config: &GithubConfig) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("precinct/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // A redirect could carry the user's token elsewhere: GitHub's API
            // answers what it answers, 3xx included.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client builds (crypto provider installed at startup)");
        Self {
            http,
            base: config.api_url.trim_end_matches('/').to_string(),
            api_version: config.api_version.clone(),
        }
    }

    pub async fn get(
        &self,
        token: &SecretString,
        path: &str,
        query: &[(&str, String)],
        if_none_match: Option<&str>,
    ) -> Result<Upstream, UpstreamError> {
        // A client span (exported when OTLP is on) whose context GitHub
        // receives as `traceparent`.
        let span = tracing::info_span!(
            "github",
            otel.kind = "client",
            otel.name = %format_args!("GET {path}"),
        );
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", &self.api_version)
            .bearer_auth(token.expose_secret());
        if let Some(etag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(traceparent) = span.in_scope(crate::trace::traceparent) {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().instrument(span).await.map_err(|e| {
            let kind = if e.is_timeout() { "timeout" } else { "network" };
            metrics::counter!(super::metrics::CALLS, "status" => kind).increment(1);
            if e.is_timeout() {
                UpstreamError::Timeout
            } else {
                UpstreamError::Network(e.without_url().to_string())
            }
        })?;
        metrics::counter!(super::metrics::CALLS, "status" => response.status().as_u16().to_string())
            .increment(1);
        let status = response.status();
        let h = response.headers().clone();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let rate_limit = RateLimit {
            limit: get("x-ratelimit-limit"),
            remaining: get("x-ratelimit-remaining"),
            reset: get("x-ratelimit-reset"),
        };
        if let Some(remaining) = rate_limit
            .remaining
            .as_deref()
            .and_then(|r| r.parse::<f64>().ok())
        {
            metrics::gauge!(super::metrics::RATE_REMAINING).set(remaining);
        }
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Upstream {
                body: None,
                etag: get("etag"),
                not_modified: true,
                scopes: vec![],
                page: parse_link(get("link").as_deref()),
                rate_limit,
            });
        }
        let bytes = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                UpstreamError::Timeout
            } else {
                UpstreamError::Network(e.without_url().to_string())
            }
        })?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let message = body
            .as_ref()
            .and_then(|b| b["message"].as_str())
            .unwrap_or_default()
            .to_string();
        match status {
            s if s.is_success() => Ok(Upstream {
                etag: get("etag"),
                not_modified: false,
                scopes: get("x-oauth-scopes")
                    .map(|s| {
                        s.split(',')
                            .map(|x| x.trim().to_string())
                            .filter(|x| !x.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                page: parse_link(get("link").as_deref()),
                body,
                rate_limit,
            }),
            StatusCode::UNAUTHORIZED => Err(UpstreamError::Unauthorized),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::FORBIDDEN
                if status == StatusCode::TOO_MANY_REQUESTS
                    || rate_limit.remaining.as_deref() == Some("0")
                    || h.contains_key(header::RETRY_AFTER)
                    || message.to_lowercase().contains("rate limit") =>
            {
                let retry_after = get("retry-after")
                    .and_then(|s| s.parse::<u64>().ok())
                    .or_else(|| {
                        let reset: i64 = rate_limit.reset.as_deref()?.parse().ok()?;
                        let now = time::OffsetDateTime::now_utc().unix_timestamp();
                        Some((reset - now).max(1) as u64)
                    })
                    .unwrap_or(60);
                Err(UpstreamError::RateLimited {
                    retry_after: Duration::from_secs(retry_after),
                    rate_limit,
                })
            }
            other => Err(UpstreamError::Status {
                status: other.as_u16(),
                message: if message.is_empty() {
                    other.to_string()
                } else {
                    message
                },
            }),
        }
    }
}

/// `<...&page=3>; rel="next", <...&page=9>; rel="last"` → next 3, last 9.
fn parse_link(link: Option<&str>) -> Page {
    let mut page = Page::default();
    for part in link.unwrap_or_default().split(',') {
        let Some((url, rel)) = part.split_once(';') else {
            continue;
        };
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        let number = url::Url::parse(url).ok().and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse::<u32>().ok())
        });
        let rel = rel
            .trim()
            .strip_prefix("rel=")
            .map(|r| r.trim_matches('"'))
            .filter(|r| ["first", "prev", "next", "last"].contains(r));
        if let (Some(rel), Some(number)) = (rel, number) {
            page.links.push((rel.to_string(), number));
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::parse_link;

    #[test]
    fn link_header_pagination() {
        let p = parse_link(Some(
            r#"<https://api.github.com/user/repos?page=3&per_page=2>; rel="next", <https://api.github.com/user/repos?page=9&per_page=2>; rel="last", <https://api.github.com/user/repos?page=1&per_page=2>; rel="first""#,
        ));
        assert_eq!(
            (p.get("next"), p.get("last"), p.get("first")),
            (Some(3), Some(9), Some(1))
        );
        assert_eq!(p.get("prev"), None);
        assert!(parse_link(None).links.is_empty());
        assert!(
            parse_link(Some(r#"<https://x/?page=2>; rel="evil""#))
                .links
                .is_empty()
        );
    }
}
