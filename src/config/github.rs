//! The GitHub API and how tokens are kept.

use std::time::Duration;

use super::{
    env::AppEnv,
    vars::{ConfigError, Vars},
};

/// The GitHub API and how tokens are kept.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub api_url: String,
    pub api_version: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub kv_prefix: String,
    pub etag_cache_entries: usize,
    pub configure_per_user_per_minute: u32,
}

pub(super) fn parse(
    v: &mut Vars<'_>,
    env: AppEnv,
    allow_insecure: bool,
) -> Result<GithubConfig, ConfigError> {
    let api_url = v.string_or("GITHUB_API_URL", "https://api.github.com");
    let scheme = url::Url::parse(&api_url).map(|u| u.scheme().to_string());
    match scheme.as_deref() {
        Ok("https") => {}
        // A user's GitHub token would travel in clear text.
        Ok("http") if env.is_production() && !allow_insecure => {
            return Err(ConfigError::new(
                "GITHUB_API_URL",
                "plain http is refused in production (users' GitHub tokens would travel in clear text); use https or set ALLOW_INSECURE=true",
            ));
        }
        Ok("http") => {}
        _ => {
            return Err(ConfigError::new(
                "GITHUB_API_URL",
                format!("{api_url:?} is not an http(s) URL"),
            ));
        }
    }
    Ok(GithubConfig {
        api_url,
        api_version: v.string_or("GITHUB_API_VERSION", "2022-11-28"),
        timeout: v.duration_or("GITHUB_TIMEOUT", "10s")?,
        connect_timeout: v.duration_or("GITHUB_CONNECT_TIMEOUT", "3s")?,
        kv_prefix: v.string_or("GITHUB_KV_PREFIX", "github"),
        etag_cache_entries: v.parse_or("GITHUB_ETAG_CACHE_ENTRIES", 10_000)?,
        configure_per_user_per_minute: v.parse_or("GITHUB_CONFIGURE_RATE_PER_USER", 5)?,
    })
}
