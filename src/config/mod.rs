//! Every environment variable precinct reads, parsed and validated once.
//!
//! Parsing goes through [`Vars`], which records each name it reads: the test
//! that keeps `docs/configuration.md` in sync asks it for that list instead of
//! trusting a hand-kept one.

use std::{collections::BTreeSet, fmt, net::SocketAddr, str::FromStr, time::Duration};

/// A configuration error: always names the variable, fits on one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    pub fn is_production(self) -> bool {
        self == AppEnv::Production
    }
}

impl FromStr for AppEnv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "development" | "dev" => Ok(Self::Development),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!(
                "expected `development` or `production`, got {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected `json` or `pretty`, got {other:?}")),
        }
    }
}

/// Which requests get an access-log line (a JSON line per request is a real
/// share of the cost under load, and hundreds of MB an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    /// Every request (probes at debug).
    All,
    /// Only responses with status 500 or above.
    Errors,
    Off,
}

impl FromStr for AccessLog {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "errors" => Ok(Self::Errors),
            "off" => Ok(Self::Off),
            other => Err(format!("expected `all`, `errors` or `off`, got {other:?}")),
        }
    }
}

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

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
    pub access: AccessLog,
    /// Where spans go over OTLP (none: nothing is exported; requests still
    /// carry a trace id in their logs and pass `traceparent` on).
    pub otlp: Option<OtlpConfig>,
}

/// OpenTelemetry export, from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full traces URL (`…/v1/traces`).
    pub traces_endpoint: String,
    pub service_name: String,
    pub timeout: Duration,
}

/// Where the workload identity comes from.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `unix:///path/to/agent.sock` (or `tcp://host:port`).
    pub endpoint: String,
    pub expected_id: Option<String>,
    pub startup_timeout: Duration,
    /// Audience of the JWT-SVID presented to OpenBao.
    pub jwt_audience: Vec<String>,
}

/// How precinct reaches OpenBao.
#[derive(Debug, Clone)]
pub struct BaoConfig {
    pub addr: url::Url,
    pub cacert: Option<std::path::PathBuf>,
    pub jwt_mount: String,
    pub jwt_role: String,
    pub jwt_audience: Vec<String>,
    pub db_mount: String,
    pub db_role: String,
    pub db_migrate_role: String,
    pub kv_mount: String,
    pub request_timeout: Duration,
}

/// Database connection and credential rotation.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub sslmode: String,
    /// CA bundle that verifies PostgreSQL's certificate (a private CA);
    /// the system's web PKI roots otherwise.
    pub sslrootcert: Option<std::path::PathBuf>,
    pub pool_max: u32,
    pub pool_min: u32,
    pub acquire_timeout: Duration,
    pub rotation_interval: Duration,
    pub drain_timeout: Duration,
    /// No two rotations start closer than this (SIGHUP storms, short TTLs).
    pub rotation_min_spacing: Duration,
    pub lease_safety_margin: Duration,
    pub health_interval: Duration,
    pub migrate_on_start: bool,
}

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
    pub identity: Option<IdentityConfig>,
    /// Present whenever `identity` is: OpenBao and the database need it.
    pub bao: Option<BaoConfig>,
    pub db: Option<DbConfig>,
    pub auth: AuthConfig,
    pub github: GithubConfig,
    pub tasks: TasksConfig,
}

/// Background tasks: how long shutdown waits for them, and how long a failed
/// one leaves the process up before it exits non-zero.
#[derive(Debug, Clone)]
pub struct TasksConfig {
    /// Defaults above the pool's drain plus two OpenBao calls (revoke the
    /// lease, then the token), so a shutdown never leaves a role behind.
    pub shutdown_timeout: Duration,
    pub failure_grace: Duration,
}

pub const DEFAULT_CORS_ORIGINS: &str = "http://localhost:3000,http://127.0.0.1:3000";

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
        let default_format = match env {
            AppEnv::Development => LogFormat::Pretty,
            AppEnv::Production => LogFormat::Json,
        };
        let log = LogConfig {
            format: v.parse_or("LOG_FORMAT", default_format)?,
            filter: log_filter(&v.string_or("RUST_LOG", "info")),
            access: v.parse_or(
                "ACCESS_LOG",
                match env {
                    AppEnv::Development => AccessLog::All,
                    AppEnv::Production => AccessLog::Errors,
                },
            )?,
            otlp: otlp(v)?,
        };

        let cors_raw = v.string_or("CORS_ORIGINS", DEFAULT_CORS_ORIGINS);
        let cors_origins =
            parse_cors(&cors_raw).map_err(|m| ConfigError::new("CORS_ORIGINS", m))?;
        if cors_origins == CorsOrigins::Any && env.is_production() && !allow_insecure {
            return Err(ConfigError::new(
                "CORS_ORIGINS",
                "`*` is refused in production; list the origins or set ALLOW_INSECURE=true",
            ));
        }

        let trusted_raw = v.string_or("TRUSTED_PROXIES", "");
        let trusted_proxies = parse_trusted_proxies(&trusted_raw)
            .map_err(|m| ConfigError::new("TRUSTED_PROXIES", m))?;
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

        let identity = parse_identity(v, env)?;
        let bao = parse_bao(v, env, allow_insecure, identity.as_ref())?;
        let db = parse_db(v, env)?;
        let auth = parse_auth(v)?;
        let github = parse_github(v, env, allow_insecure)?;
        let retire_bound = db.drain_timeout + bao.request_timeout * 2 + Duration::from_secs(5);
        let tasks = TasksConfig {
            shutdown_timeout: v.duration_or(
                "SHUTDOWN_TASKS_TIMEOUT",
                &humantime::format_duration(retire_bound).to_string(),
            )?,
            failure_grace: v.duration_or("TASK_FAILURE_GRACE", "10s")?,
        };
        let (bao, db) = match identity {
            Some(_) => (Some(bao), Some(db)),
            None => (None, None),
        };

        Ok(Config {
            env,
            allow_insecure,
            http,
            log,
            identity,
            bao,
            db,
            auth,
            github,
            tasks,
        })
    }
}

fn parse_identity(v: &mut Vars<'_>, env: AppEnv) -> Result<Option<IdentityConfig>, ConfigError> {
    let endpoint = v.get("SPIFFE_ENDPOINT_SOCKET");
    let expected_id = v.get("EXPECTED_SPIFFE_ID");
    let startup_timeout = v.duration_or("SPIFFE_STARTUP_TIMEOUT", "30s")?;
    let audience_raw = v.string_or("JWT_SVID_AUDIENCE", "openbao");
    let Some(endpoint) = endpoint else {
        if env.is_production() {
            return Err(ConfigError::new(
                "SPIFFE_ENDPOINT_SOCKET",
                "is required in production (e.g. unix:///run/spire/sockets/agent.sock)",
            ));
        }
        return Ok(None);
    };
    let endpoint = match endpoint.strip_prefix('/') {
        // Accept a bare absolute path, as some SPIRE setups document it.
        Some(_) => format!("unix://{endpoint}"),
        None => endpoint,
    };
    if !(endpoint.starts_with("unix://") || endpoint.starts_with("tcp://")) {
        return Err(ConfigError::new(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("{endpoint:?} is not a unix:///path or tcp://host:port address"),
        ));
    }
    if let Some(id) = &expected_id {
        spiffe::SpiffeId::new(id)
            .map_err(|e| ConfigError::new("EXPECTED_SPIFFE_ID", format!("{id:?}: {e}")))?;
    }
    let jwt_audience: Vec<String> = audience_raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if jwt_audience.is_empty() {
        return Err(ConfigError::new(
            "JWT_SVID_AUDIENCE",
            "must name at least one audience",
        ));
    }
    Ok(Some(IdentityConfig {
        endpoint,
        expected_id,
        startup_timeout,
        jwt_audience,
    }))
}

fn parse_bao(
    v: &mut Vars<'_>,
    env: AppEnv,
    allow_insecure: bool,
    identity: Option<&IdentityConfig>,
) -> Result<BaoConfig, ConfigError> {
    // BAO_ADDR wins; VAULT_ADDR is accepted for tools that only know Vault.
    let bao_addr = v.get("BAO_ADDR");
    let vault_addr = v.get("VAULT_ADDR");
    let (var, raw) = match (bao_addr, vault_addr) {
        (Some(a), _) => ("BAO_ADDR", a),
        (None, Some(a)) => ("VAULT_ADDR", a),
        (None, None) => ("BAO_ADDR", "http://127.0.0.1:8200".to_string()),
    };
    let addr: url::Url = raw
        .parse()
        .map_err(|e| ConfigError::new(var, format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(addr.scheme(), "http" | "https") {
        return Err(ConfigError::new(var, "must be an http:// or https:// URL"));
    }
    if addr.scheme() == "http" && env.is_production() && !allow_insecure {
        return Err(ConfigError::new(
            var,
            "plain http is refused in production; use https (with BAO_CACERT) or set ALLOW_INSECURE=true",
        ));
    }
    let cacert = v.get("BAO_CACERT").map(std::path::PathBuf::from);
    if let Some(path) = &cacert
        && !path.is_file()
    {
        return Err(ConfigError::new(
            "BAO_CACERT",
            format!("{} is not a readable file", path.display()),
        ));
    }
    Ok(BaoConfig {
        addr,
        cacert,
        jwt_mount: v.string_or("BAO_JWT_MOUNT", "jwt"),
        jwt_role: v.string_or("BAO_JWT_ROLE", "backend-role"),
        jwt_audience: identity
            .map(|i| i.jwt_audience.clone())
            .unwrap_or_else(|| vec!["openbao".into()]),
        db_mount: v.string_or("BAO_DB_MOUNT", "database"),
        db_role: v.string_or("BAO_DB_ROLE", "precinct-runtime"),
        db_migrate_role: v.string_or("BAO_DB_MIGRATE_ROLE", "precinct-migrate"),
        kv_mount: v.string_or("BAO_KV_MOUNT", "secret"),
        request_timeout: v.duration_or("BAO_REQUEST_TIMEOUT", "10s")?,
    })
}

fn parse_db(v: &mut Vars<'_>, env: AppEnv) -> Result<DbConfig, ConfigError> {
    // Production verifies the server's certificate and name by default.
    let sslmode = v.string_or(
        "DB_SSLMODE",
        if env.is_production() {
            "verify-full"
        } else {
            "prefer"
        },
    );
    let sslrootcert = v.get("DB_SSLROOTCERT").map(std::path::PathBuf::from);
    if let Some(path) = &sslrootcert
        && !path.is_file()
    {
        return Err(ConfigError::new(
            "DB_SSLROOTCERT",
            format!(
                "{} is not a readable file (a PEM CA bundle)",
                path.display()
            ),
        ));
    }
    if ![
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ]
    .contains(&sslmode.as_str())
    {
        return Err(ConfigError::new(
            "DB_SSLMODE",
            format!(
                "{sslmode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ),
        ));
    }
    let c = DbConfig {
        host: v.string_or("DB_HOST", "127.0.0.1"),
        port: v.parse_or("DB_PORT", 5432)?,
        name: v.string_or("DB_NAME", "precinct"),
        sslmode,
        sslrootcert,
        pool_max: v.parse_or("DB_POOL_MAX", 10)?,
        pool_min: v.parse_or("DB_POOL_MIN", 1)?,
        acquire_timeout: v.duration_or("DB_ACQUIRE_TIMEOUT", "5s")?,
        rotation_interval: v.duration_or("DB_ROTATION_INTERVAL", "50m")?,
        drain_timeout: v.duration_or("DB_DRAIN_TIMEOUT", "30s")?,
        rotation_min_spacing: v.duration_or("DB_ROTATION_MIN_SPACING", "10s")?,
        lease_safety_margin: v.duration_or("DB_LEASE_SAFETY_MARGIN", "5m")?,
        health_interval: v.duration_or("DB_HEALTH_INTERVAL", "5s")?,
        migrate_on_start: v.bool_or("DB_MIGRATE_ON_START", true)?,
    };
    if c.pool_max == 0 || c.pool_min > c.pool_max {
        return Err(ConfigError::new(
            "DB_POOL_MAX",
            "must be at least 1 and at least DB_POOL_MIN",
        ));
    }
    if c.drain_timeout >= c.rotation_interval {
        return Err(ConfigError::new(
            "DB_DRAIN_TIMEOUT",
            "must be shorter than DB_ROTATION_INTERVAL (an old pool drains while the new one serves)",
        ));
    }
    if c.health_interval.is_zero() {
        return Err(ConfigError::new(
            "DB_HEALTH_INTERVAL",
            "must be greater than 0",
        ));
    }
    Ok(c)
}

fn parse_auth(v: &mut Vars<'_>) -> Result<AuthConfig, ConfigError> {
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

fn parse_github(
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

/// The OpenBao client libraries log each failed request again at ERROR
/// without context, and their debug output carries request bodies (tokens,
/// secrets): they stay off whatever `RUST_LOG` says, appended last so that
/// no earlier directive can turn them back on.
pub const SILENCED_TARGETS: &[&str] = &["rustify", "vaultrs"];

pub fn log_filter(requested: &str) -> String {
    let mut filter = requested.trim().trim_end_matches(',').to_string();
    for target in SILENCED_TARGETS {
        filter.push_str(&format!(",{target}=off"));
    }
    filter.trim_start_matches(',').to_string()
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

/// OTLP export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full
/// URL) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` added, as
/// the specification says) is set, unless `OTEL_SDK_DISABLED=true`. Only
/// `http/protobuf` is built in: another `OTEL_EXPORTER_OTLP_PROTOCOL` is
/// refused rather than silently ignored.
fn otlp(v: &mut Vars<'_>) -> Result<Option<OtlpConfig>, ConfigError> {
    let disabled = v.bool_or("OTEL_SDK_DISABLED", false)?;
    let traces = v.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base = v.get("OTEL_EXPORTER_OTLP_ENDPOINT");
    let protocol = v.string_or("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    let service_name = v.string_or("OTEL_SERVICE_NAME", "precinct");
    let timeout = v.duration_or("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")?;
    let (name, endpoint) = match (traces, base) {
        _ if disabled => return Ok(None),
        (Some(full), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", full),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    if protocol != "http/protobuf" {
        return Err(ConfigError::new(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            format!("{protocol:?} is not supported; precinct exports http/protobuf"),
        ));
    }
    let url = url::Url::parse(&endpoint)
        .map_err(|e| ConfigError::new(name, format!("not a URL ({e}): {endpoint:?}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(name, "must be an http:// or https:// URL"));
    }
    Ok(Some(OtlpConfig {
        traces_endpoint: endpoint,
        service_name,
        timeout,
    }))
}

/// Typed access to variables, recording each name read.
pub(crate) struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    read: Vec<&'static str>,
}

impl<'a> Vars<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            read: Vec::new(),
        }
    }

    /// The value if set and not blank.
    pub(crate) fn get(&mut self, name: &'static str) -> Option<String> {
        self.read.push(name);
        (self.lookup)(name)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub(crate) fn string_or(&mut self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    pub(crate) fn parse_opt<T>(&mut self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    pub(crate) fn parse_or<T>(&mut self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    pub(crate) fn bool_or(
        &mut self,
        name: &'static str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match self.get(name).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::new(
                name,
                format!("expected true or false, got {other:?}"),
            )),
        }
    }

    /// A humantime duration such as `50m`, `30s`, `1h 30m`.
    pub(crate) fn duration_or(
        &mut self,
        name: &'static str,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let raw = self.string_or(name, default);
        humantime::parse_duration(&raw).map_err(|e| {
            ConfigError::new(
                name,
                format!("cannot parse {raw:?} as a duration like 30s or 50m: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        assert_eq!(c.db.as_ref().unwrap().sslmode, "verify-full");
        let dev = load(&[("APP_ENV", "development"), SOCKET]).unwrap();
        assert_eq!(dev.db.as_ref().unwrap().sslmode, "prefer");
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
            c.identity.is_none(),
            "development may run the HTTP surface alone"
        );
    }

    #[test]
    fn identity_settings_are_validated() {
        let c = load(&[SOCKET, BAO, ("JWT_SVID_AUDIENCE", "openbao, other")]).unwrap();
        let id = c.identity.unwrap();
        assert_eq!(id.jwt_audience, vec!["openbao", "other"]);
        assert_eq!(id.startup_timeout, Duration::from_secs(30));
        let err = load(&[SOCKET, BAO, ("EXPECTED_SPIFFE_ID", "not-a-spiffe-id")]).unwrap_err();
        assert_eq!(err.var, "EXPECTED_SPIFFE_ID");
        let err = load(&[("SPIFFE_ENDPOINT_SOCKET", "http://x")]).unwrap_err();
        assert_eq!(err.var, "SPIFFE_ENDPOINT_SOCKET");
        let c = load(&[("SPIFFE_ENDPOINT_SOCKET", "/tmp/agent.sock"), BAO]).unwrap();
        assert_eq!(c.identity.unwrap().endpoint, "unix:///tmp/agent.sock");
    }

    #[test]
    fn production_refuses_plain_http_openbao_without_opt_in() {
        let err = load(&[SOCKET, ("BAO_ADDR", "http://bao:8200")]).unwrap_err();
        assert_eq!(err.var, "BAO_ADDR");
        let err = load(&[SOCKET, ("VAULT_ADDR", "http://bao:8200")]).unwrap_err();
        assert_eq!(err.var, "VAULT_ADDR", "the variable actually used is named");
        let ok = load(&[SOCKET, ("BAO_ADDR", "https://bao:8200")]).unwrap();
        assert_eq!(ok.bao.unwrap().addr.as_str(), "https://bao:8200/");
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
        let c = load(&[dev, SOCKET]).unwrap().db.unwrap();
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
