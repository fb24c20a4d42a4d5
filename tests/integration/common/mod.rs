//! Shared test harness: the real application, started in-process on port 0.

use std::{collections::HashMap, net::SocketAddr};

use precinct::{Application, Config, readiness::Readiness};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod replicas;
pub mod stack;

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: Option<precinct::db::Db>,
    pub client: reqwest::Client,
    pub readiness: Readiness,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), precinct::app::AppError>>,
    /// `GET /metrics`, when METRICS_ADDR was set.
    pub metrics_addr: Option<SocketAddr>,
    /// The internal mutual-TLS API, when INTERNAL_ADDR was set.
    pub internal_addr: Option<SocketAddr>,
    /// The credentials the application holds now (database password,
    /// OpenBao tokens), for log scans.
    pub secrets: std::sync::Arc<dyn Fn() -> Vec<String> + Send + Sync>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Shuts down as SIGTERM would and expects a clean exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().expect("clean shutdown");
    }

    /// A GET on `path` with `token` as the bearer.
    pub async fn get_authorized(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Status of a GET on `path`.
    pub async fn status(&self, path: &str) -> u16 {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Starts the app with owned settings (e.g. from `Stack::app_env`).
pub async fn spawn_app_env(
    env: &[(String, String)],
    extra: impl FnOnce(precinct::http::AppState) -> axum::Router,
) -> TestApp {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with_routes(&pairs, extra).await
}

/// A configuration for tests: development mode on a free loopback port,
/// with `overrides` applied on top.
pub fn test_config(overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP_ENV".into(), "development".into()),
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("RUST_LOG".into(), "warn".into()),
        // No balancer in front of a test app: stop at once (tests that
        // shut down under load set it).
        ("SHUTDOWN_DELAY".into(), "0s".into()),
    ]);
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| vars.get(k).cloned()).expect("test config is valid")
}

pub async fn spawn_app(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with_routes(overrides, |_| axum::Router::new()).await
}

pub async fn spawn_app_with_routes(
    overrides: &[(&str, &str)],
    extra: impl FnOnce(precinct::http::AppState) -> axum::Router,
) -> TestApp {
    precinct::tls::install_crypto_provider();
    let config = test_config(overrides);
    init_logs();
    let app = Application::build_with_routes(config, extra)
        .await
        .expect("application builds");
    let addr = app.addr();
    let readiness = app.readiness().clone();
    let shutdown = app.shutdown_trigger();
    let db = app.db();
    let metrics_addr = app.metrics_addr();
    let internal_addr = app.internal_addr();
    let secrets = app.secrets_for_tests();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        metrics_addr,
        internal_addr,
        secrets,
        db,
        addr,
        client: http(),
        readiness,
        shutdown,
        handle,
    }
}

pub const TRUST_DOMAIN: &str = "demo.local";
pub const SPIFFE_ID: &str = "spiffe://demo.local/ns/99-apps/sa/backend";

/// A development agent on a fresh socket in `dir`, OIDC on a free port.
pub async fn start_agent(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut precinct::devagent::DevAgentConfig),
) -> precinct::devagent::DevAgent {
    let mut config = precinct::devagent::DevAgentConfig::new(
        dir.join("agent.sock"),
        TRUST_DOMAIN,
        SPIFFE_ID,
        "127.0.0.1:0".parse().unwrap(),
    );
    tweak(&mut config);
    init_logs();
    precinct::devagent::DevAgent::start(config)
        .await
        .expect("dev agent starts")
}

pub fn identity_config(endpoint: &str) -> precinct::config::IdentityConfig {
    precinct::config::IdentityConfig {
        endpoint: endpoint.to_string(),
        expected_id: Some(SPIFFE_ID.to_string()),
        startup_timeout: std::time::Duration::from_secs(10),
        jwt_audience: vec!["openbao".to_string()],
    }
}

/// Panics unless this test runs in a process of its own (cargo-nextest):
/// for tests that install the global log subscriber or signal the process.
pub fn own_process() {
    assert_eq!(
        std::env::var("NEXTEST_EXECUTION_MODE").as_deref(),
        Ok("process-per-test"),
        "this test needs a process of its own: run the suite with `cargo nextest run`"
    );
}

/// Polls `f` every 100 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Test logs: quiet unless `TEST_LOG` names a filter (e.g. `TEST_LOG=debug`).
pub fn init_logs() {
    precinct::telemetry::init(&precinct::config::LogConfig {
        format: precinct::config::LogFormat::Pretty,
        // As the binary does: the OpenBao client libraries stay silent.
        filter: format!(
            "{},rustify=off,vaultrs=off",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into())
        ),
        access: precinct::config::AccessLog::All,
        otlp: None,
    });
}

/// An HTTP client for tests (installs the process's rustls provider first).
pub fn http() -> reqwest::Client {
    precinct::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// POST `body` as JSON to `path` on `app`.
pub async fn post_json(app: &TestApp, path: &str, body: serde_json::Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// GET `url` and parse the JSON body (panics on any failure: tests only).
pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> T {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The `kid`s of a JWKS document, in its order.
pub fn jwks_kids(jwks: &serde_json::Value) -> Vec<&str> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect()
}

/// The process's log lines, captured: installs the global subscriber as
/// the binary does (JSON, `filter` with the OpenBao libraries silenced), so
/// a test that uses it needs a process of its own (nextest; checked).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn install(
        filter: &str,
        access: precinct::config::AccessLog,
        otlp: Option<precinct::config::OtlpConfig>,
    ) -> Self {
        own_process();
        precinct::tls::install_crypto_provider();
        let capture = Self::default();
        let writer = capture.clone();
        precinct::telemetry::init_with_writer(
            &precinct::config::LogConfig {
                format: precinct::config::LogFormat::Json,
                filter: precinct::config::log_filter(filter),
                access,
                otlp,
            },
            move || writer.clone(),
        );
        capture
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A supervisor for tasks a test starts by hand; a failure only shows in
/// readiness `tasks` (the grace period outlives the test).
pub fn test_supervisor(
    tasks: &tokio_util::task::TaskTracker,
    cancel: &tokio_util::sync::CancellationToken,
    readiness: &precinct::readiness::Readiness,
) -> precinct::supervise::Supervisor {
    precinct::supervise::Supervisor::new(
        tasks.clone(),
        cancel.clone(),
        readiness.register("tasks", "starting"),
        precinct::events::PodEvents::disabled(),
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
        std::time::Duration::from_secs(3600),
    )
}

/// The password test users get from [`register`].
pub const TEST_PASSWORD: &str = "correct horse battery staple 42";

/// Registers `username` (email `<username>@example.test`, [`TEST_PASSWORD`]),
/// expecting 201.
pub async fn register(app: &TestApp, username: &str) {
    let r = post_json(
        app,
        "/api/v1/auth/register",
        serde_json::json!({"username": username, "email": format!("{username}@example.test"), "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(
        r.status(),
        201,
        "register {username}: {}",
        r.text().await.unwrap()
    );
}

/// Registers `username` and logs in: its access token.
pub async fn access_token(app: &TestApp, username: &str) -> String {
    register(app, username).await;
    let r = post_json(
        app,
        "/api/v1/auth/login",
        serde_json::json!({"username": username, "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 200, "login {username}");
    r.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}
