//! Accounts, tokens, signing keys and login limits.

use std::time::Duration;

use super::vars::{ConfigError, Vars};

/// Accounts and tokens.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub transit_mount: String,
    pub signing_key: String,
    pub signing_key_refresh: Duration,
    /// Never two fetches of the public keys closer than this.
    pub signing_key_min_refresh: Duration,
    /// A new key version signs only once it is this old (published first).
    pub signing_key_prepublish: Duration,
    /// Verified access tokens remembered (0: verify every time).
    pub token_cache_size: usize,
    pub hash_concurrency: usize,
    pub login_per_ip_per_minute: u32,
    /// The backstop: does not apply to known-good (IP, username) pairs.
    pub login_per_username_per_minute: u32,
    pub login_per_username_ip_per_minute: u32,
    /// The least a password check lasts, on every replica.
    pub login_min_duration: Duration,
    pub register_per_ip_per_minute: u32,
}

pub(super) fn parse(v: &mut Vars<'_>) -> Result<AuthConfig, ConfigError> {
    // One core stays free for everything else while logins hash.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let signing_key_refresh = v.duration_or("AUTH_SIGNING_KEY_REFRESH", "60s")?;
    // The defaults never exceed the routine period, nor fall below it.
    let min_refresh_default =
        humantime::format_duration(signing_key_refresh.min(Duration::from_secs(1))).to_string();
    let prepublish_default =
        humantime::format_duration((signing_key_refresh * 2).max(Duration::from_secs(120)))
            .to_string();
    let c = AuthConfig {
        issuer: v.string_or("AUTH_TOKEN_ISSUER", "precinct"),
        audience: v.string_or("AUTH_TOKEN_AUDIENCE", "precinct-api"),
        access_ttl: v.duration_or("AUTH_ACCESS_TOKEN_TTL", "15m")?,
        refresh_ttl: v.duration_or("AUTH_REFRESH_TOKEN_TTL", "7d")?,
        transit_mount: v.string_or("BAO_TRANSIT_MOUNT", "transit"),
        signing_key: v.string_or("AUTH_SIGNING_KEY", "precinct-access-token"),
        signing_key_refresh,
        signing_key_min_refresh: v
            .duration_or("AUTH_SIGNING_KEY_MIN_REFRESH", &min_refresh_default)?,
        signing_key_prepublish: v
            .duration_or("AUTH_SIGNING_KEY_PREPUBLISH", &prepublish_default)?,
        token_cache_size: v.parse_or("AUTH_TOKEN_CACHE_SIZE", 10_000)?,
        hash_concurrency: v.parse_or("AUTH_HASH_CONCURRENCY", cores.saturating_sub(1).max(1))?,
        login_per_ip_per_minute: v.parse_or("AUTH_LOGIN_RATE_PER_IP", 30)?,
        login_per_username_ip_per_minute: v.parse_or("AUTH_LOGIN_RATE_PER_USERNAME_IP", 10)?,
        login_per_username_per_minute: v.parse_or("AUTH_LOGIN_RATE_PER_USERNAME", 100)?,
        login_min_duration: v.duration_or("AUTH_LOGIN_MIN_DURATION", "400ms")?,
        register_per_ip_per_minute: v.parse_or("AUTH_REGISTER_RATE_PER_IP", 5)?,
    };
    if c.access_ttl < Duration::from_secs(30) || c.access_ttl > Duration::from_secs(24 * 3600) {
        return Err(ConfigError::new(
            "AUTH_ACCESS_TOKEN_TTL",
            "must be between 30s and 24h",
        ));
    }
    if c.signing_key_min_refresh.is_zero() || c.signing_key_min_refresh > c.signing_key_refresh {
        return Err(ConfigError::new(
            "AUTH_SIGNING_KEY_MIN_REFRESH",
            "must be greater than 0 and at most AUTH_SIGNING_KEY_REFRESH",
        ));
    }
    if c.signing_key_prepublish <= c.signing_key_refresh {
        return Err(ConfigError::new(
            "AUTH_SIGNING_KEY_PREPUBLISH",
            "must exceed AUTH_SIGNING_KEY_REFRESH (plus the clock skew between replicas and OpenBao): every replica must have fetched a version before it signs",
        ));
    }
    if c.login_min_duration > Duration::from_secs(2) {
        return Err(ConfigError::new(
            "AUTH_LOGIN_MIN_DURATION",
            "must be at most 2s",
        ));
    }
    if c.hash_concurrency == 0 {
        return Err(ConfigError::new(
            "AUTH_HASH_CONCURRENCY",
            "must be at least 1",
        ));
    }
    if c.login_per_ip_per_minute == 0
        || c.login_per_username_per_minute == 0
        || c.login_per_username_ip_per_minute == 0
    {
        return Err(ConfigError::new(
            "AUTH_LOGIN_RATE_PER_IP",
            "login rates must be at least 1 per minute",
        ));
    }
    Ok(c)
}
