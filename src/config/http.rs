//! The HTTP listener, its limits, proxies, CORS and shutdown.

use std::{net::SocketAddr, time::Duration};

use super::{
    env::AppEnv,
    vars::{ConfigError, Vars},
};

/// Allowed browser origins. `Any` is the `*` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Where `GET /metrics` listens (its own listener); `None`: no metrics.
    pub metrics_addr: Option<SocketAddr>,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies, ingress).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub cors_origins: CorsOrigins,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    /// How long readiness reports 503 while still serving, before the
    /// listener closes: lets Kubernetes take the pod out of its endpoints.
    pub shutdown_delay: Duration,
    /// Upper bound for in-flight requests to finish once the listener closed.
    pub drain_timeout: Duration,
}

pub const DEFAULT_CORS_ORIGINS: &str = "http://localhost:3000,http://127.0.0.1:3000";

pub(super) fn parse(
    v: &mut Vars<'_>,
    env: AppEnv,
    allow_insecure: bool,
) -> Result<HttpConfig, ConfigError> {
    let cors_raw = v.string_or("CORS_ORIGINS", DEFAULT_CORS_ORIGINS);
    let cors_origins = parse_cors(&cors_raw).map_err(|m| ConfigError::new("CORS_ORIGINS", m))?;
    if cors_origins == CorsOrigins::Any && env.is_production() && !allow_insecure {
        return Err(ConfigError::new(
            "CORS_ORIGINS",
            "`*` is refused in production; list the origins or set ALLOW_INSECURE=true",
        ));
    }

    let trusted_raw = v.string_or("TRUSTED_PROXIES", "");
    let trusted_proxies =
        parse_trusted_proxies(&trusted_raw).map_err(|m| ConfigError::new("TRUSTED_PROXIES", m))?;
    let http = HttpConfig {
        addr: v.parse_or("HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8000)))?,
        metrics_addr: match v.get("METRICS_ADDR") {
            None => None,
            Some(raw) => Some(raw.parse().map_err(|e| {
                ConfigError::new(
                    "METRICS_ADDR",
                    format!("cannot parse {raw:?} as host:port: {e}"),
                )
            })?),
        },
        trusted_proxies,
        cors_origins,
        request_timeout: v.duration_or("HTTP_REQUEST_TIMEOUT", "30s")?,
        body_limit_bytes: v.parse_or("HTTP_BODY_LIMIT_BYTES", 64 * 1024)?,
        shutdown_delay: v.duration_or("SHUTDOWN_DELAY", "5s")?,
        drain_timeout: v.duration_or("SHUTDOWN_DRAIN_TIMEOUT", "20s")?,
    };
    if http.body_limit_bytes == 0 {
        return Err(ConfigError::new(
            "HTTP_BODY_LIMIT_BYTES",
            "must be greater than 0",
        ));
    }
    if http.request_timeout.is_zero() {
        return Err(ConfigError::new(
            "HTTP_REQUEST_TIMEOUT",
            "must be greater than 0",
        ));
    }
    Ok(http)
}

/// `10.0.0.0/8, 192.168.1.7` → networks (a bare address is a /32 or /128).
fn parse_trusted_proxies(raw: &str) -> Result<Vec<ipnet::IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or CIDR like 10.0.0.0/8"))
        })
        .collect()
}

fn parse_cors(raw: &str) -> Result<CorsOrigins, String> {
    let items: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items == ["*"] {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::with_capacity(items.len());
    for item in items {
        if item == "*" {
            return Err("`*` cannot be combined with other origins".into());
        }
        let ok = (item.starts_with("http://") || item.starts_with("https://"))
            && !item.ends_with('/')
            && axum::http::HeaderValue::from_str(item).is_ok();
        if !ok {
            return Err(format!(
                "{item:?} is not an origin like https://app.example.com (scheme, host, optional port, no path)"
            ));
        }
        origins.push(item.to_string());
    }
    Ok(CorsOrigins::List(origins))
}
