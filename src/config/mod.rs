//! Every environment variable precinct reads, parsed and validated once.
//!
//! Parsing goes through [`Vars`], which records each name it reads: the test
//! that keeps `docs/configuration.md` in sync asks it for that list instead of
//! trusting a hand-kept one.

mod audit;
mod auth;
mod bao;
mod db;
mod env;
mod github;
mod http;
mod identity;
mod internal;
mod log;
mod tasks;
mod vars;

use std::collections::BTreeSet;

pub use audit::AuditConfig;
pub use auth::AuthConfig;
pub use bao::BaoConfig;
pub use db::DbConfig;
pub use env::AppEnv;
pub use github::GithubConfig;
pub use http::{CorsOrigins, DEFAULT_CORS_ORIGINS, HttpConfig};
pub use identity::IdentityConfig;
pub use internal::{AllowedId, InternalConfig, authorize, parse_allowed};
pub use log::{AccessLog, LogConfig, LogFormat, OtlpConfig, SILENCED_TARGETS, log_filter};
pub use tasks::TasksConfig;
pub use vars::ConfigError;
pub(crate) use vars::Vars;

/// What precinct runs on: an identity, and what it logs in to with it.
/// Together or not at all: OpenBao needs the identity, the database needs
/// OpenBao.
#[derive(Debug, Clone)]
pub struct Backends {
    pub identity: IdentityConfig,
    pub bao: BaoConfig,
    pub db: DbConfig,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub env: AppEnv,
    /// Explicit opt-in that lets production run with settings we otherwise
    /// refuse there (wildcard CORS, plain-http OpenBao).
    pub allow_insecure: bool,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// `None` only in development without `SPIFFE_ENDPOINT_SOCKET`: the HTTP
    /// surface runs alone, without identity or anything that needs it.
    pub backends: Option<Backends>,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub github: GithubConfig,
    pub tasks: TasksConfig,
    /// The internal mutual-TLS API; `None` when `INTERNAL_ADDR` is unset.
    pub internal: Option<InternalConfig>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::parse(&mut Vars::new(&lookup))
    }

    /// The names of every variable parsing reads, in order, whether set or not.
    pub fn variables_read(lookup: impl Fn(&str) -> Option<String>) -> BTreeSet<&'static str> {
        let mut vars = Vars::new(&lookup);
        let _ = Self::parse(&mut vars);
        vars.read.into_iter().collect()
    }

    fn parse(v: &mut Vars<'_>) -> Result<Self, ConfigError> {
        let env: AppEnv = v.parse_or("APP_ENV", AppEnv::Production)?;
        let allow_insecure = v.bool_or("ALLOW_INSECURE", false)?;
        let log = log::parse(v, env)?;
        let http = http::parse(v, env, allow_insecure)?;
        let identity = identity::parse(v, env)?;
        let bao = bao::parse(v, env, allow_insecure, identity.as_ref())?;
        let db = db::parse(v, env)?;
        let auth = auth::parse(v)?;
        let audit = audit::parse(v)?;
        let github = github::parse(v, env, allow_insecure)?;
        let tasks = tasks::parse(v, &db, &bao)?;
        let internal = internal::parse(v)?;
        if internal.is_some() && identity.is_none() {
            return Err(ConfigError::new(
                "INTERNAL_ADDR",
                "needs SPIFFE_ENDPOINT_SOCKET: the listener's certificate is the workload's X.509-SVID",
            ));
        }
        let backends = identity.map(|identity| Backends { identity, bao, db });

        Ok(Config {
            env,
            allow_insecure,
            http,
            log,
            backends,
            auth,
            audit,
            github,
            tasks,
            internal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, time::Duration};

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |k| map.get(k).cloned())
    }

    const SOCKET: (&str, &str) = (
        "SPIFFE_ENDPOINT_SOCKET",
        "unix:///run/spire/sockets/agent.sock",
    );
    const BAO: (&str, &str) = ("BAO_ADDR", "https://openbao:8200");

    #[test]
    fn production_fails_closed() {
        let c = load(&[SOCKET, BAO]).unwrap();
        assert_eq!(c.backends.as_ref().unwrap().db.sslmode, "verify-full");
        let dev = load(&[("APP_ENV", "development"), SOCKET]).unwrap();
        assert_eq!(dev.backends.as_ref().unwrap().db.sslmode, "prefer");
        let e = load(&[SOCKET, BAO, ("GITHUB_API_URL", "http://github.internal")]).unwrap_err();
        assert_eq!(e.var, "GITHUB_API_URL");
        assert!(
            load(&[
                SOCKET,
                BAO,
                ("GITHUB_API_URL", "http://github.internal"),
                ("ALLOW_INSECURE", "true")
            ])
            .is_ok()
        );
        let e = load(&[SOCKET, BAO, ("DB_SSLROOTCERT", "/nonexistent/ca.crt")]).unwrap_err();
        assert_eq!(e.var, "DB_SSLROOTCERT");
    }

    #[test]
    fn production_requires_the_workload_api_socket() {
        assert_eq!(load(&[]).unwrap_err().var, "SPIFFE_ENDPOINT_SOCKET");
        let c = load(&[("APP_ENV", "development")]).unwrap();
        assert!(
            c.backends.is_none(),
            "development may run the HTTP surface alone"
        );
    }

    #[test]
    fn identity_settings_are_validated() {
        let c = load(&[SOCKET, BAO, ("JWT_SVID_AUDIENCE", "openbao, other")]).unwrap();
        let id = c.backends.unwrap().identity;
        assert_eq!(id.jwt_audience, vec!["openbao", "other"]);
        assert_eq!(id.startup_timeout, Duration::from_secs(30));
        let err = load(&[SOCKET, BAO, ("EXPECTED_SPIFFE_ID", "not-a-spiffe-id")]).unwrap_err();
        assert_eq!(err.var, "EXPECTED_SPIFFE_ID");
        let err = load(&[("SPIFFE_ENDPOINT_SOCKET", "http://x")]).unwrap_err();
        assert_eq!(err.var, "SPIFFE_ENDPOINT_SOCKET");
        let c = load(&[("SPIFFE_ENDPOINT_SOCKET", "/tmp/agent.sock"), BAO]).unwrap();
        assert_eq!(
            c.backends.unwrap().identity.endpoint,
            "unix:///tmp/agent.sock"
        );
    }

    #[test]
    fn production_refuses_plain_http_openbao_without_opt_in() {
        let err = load(&[SOCKET, ("BAO_ADDR", "http://bao:8200")]).unwrap_err();
        assert_eq!(err.var, "BAO_ADDR");
        let err = load(&[SOCKET, ("VAULT_ADDR", "http://bao:8200")]).unwrap_err();
        assert_eq!(err.var, "VAULT_ADDR", "the variable actually used is named");
        let ok = load(&[SOCKET, ("BAO_ADDR", "https://bao:8200")]).unwrap();
        assert_eq!(ok.backends.unwrap().bao.addr.as_str(), "https://bao:8200/");
        assert!(
            load(&[
                SOCKET,
                ("BAO_ADDR", "http://bao:8200"),
                ("ALLOW_INSECURE", "1")
            ])
            .is_ok()
        );
    }

    #[test]
    fn rotation_settings_are_checked_together() {
        let dev = ("APP_ENV", "development");
        let err = load(&[
            dev,
            SOCKET,
            ("DB_ROTATION_INTERVAL", "1m"),
            ("DB_DRAIN_TIMEOUT", "2m"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "DB_DRAIN_TIMEOUT");
        let c = load(&[dev, SOCKET]).unwrap().backends.unwrap().db;
        assert_eq!(c.rotation_interval, Duration::from_secs(50 * 60));
        assert_eq!(c.pool_max, 10);
    }

    #[test]
    fn defaults_are_production_safe() {
        let c = load(&[SOCKET, BAO]).unwrap();
        assert_eq!(c.env, AppEnv::Production);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.http.addr.to_string(), "0.0.0.0:8000");
        assert_eq!(
            c.http.cors_origins,
            CorsOrigins::List(vec![
                "http://localhost:3000".into(),
                "http://127.0.0.1:3000".into()
            ])
        );
    }

    #[test]
    fn development_defaults_to_pretty_logs() {
        let c = load(&[("APP_ENV", "development")]).unwrap();
        assert_eq!(c.log.format, LogFormat::Pretty);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("HTTP_ADDR", "not-an-address"),
            ("APP_ENV", "staging"),
            ("LOG_FORMAT", "xml"),
            ("CORS_ORIGINS", "localhost:3000"),
            ("HTTP_REQUEST_TIMEOUT", "soon"),
            ("HTTP_BODY_LIMIT_BYTES", "-1"),
            ("ALLOW_INSECURE", "maybe"),
        ] {
            let err = load(&[SOCKET, BAO, (var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{err}");
            assert!(err.to_string().contains(var));
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn production_refuses_wildcard_cors_without_opt_in() {
        let err = load(&[SOCKET, BAO, ("CORS_ORIGINS", "*")]).unwrap_err();
        assert_eq!(err.var, "CORS_ORIGINS");
        assert!(
            load(&[
                SOCKET,
                BAO,
                ("CORS_ORIGINS", "*"),
                ("ALLOW_INSECURE", "true")
            ])
            .is_ok()
        );
        assert!(load(&[("CORS_ORIGINS", "*"), ("APP_ENV", "development")]).is_ok());
    }
}

#[cfg(test)]
mod log_filter_tests {
    use tracing::Level;
    use tracing_subscriber::{EnvFilter, layer::SubscriberExt};

    /// Whatever RUST_LOG asks, the silenced targets log nothing, and the
    /// rest of the request is honoured.
    #[test]
    fn silenced_targets_stay_off_under_any_rust_log() {
        for requested in [
            "trace",
            "trace,vaultrs=trace,rustify=trace",
            "warn,vaultrs=error",
        ] {
            let filter = EnvFilter::new(super::log_filter(requested));
            let subscriber = tracing_subscriber::registry().with(filter);
            tracing::subscriber::with_default(subscriber, || {
                assert!(
                    !tracing::event_enabled!(target: "vaultrs::api", Level::ERROR),
                    "{requested}: vaultrs enabled"
                );
                assert!(
                    !tracing::event_enabled!(target: "rustify::client", Level::ERROR),
                    "{requested}: rustify enabled"
                );
                assert!(tracing::event_enabled!(target: "precinct::db", Level::WARN));
            });
        }
    }
}
