//! Shared test harness: the real application, started in-process on port 0.
#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr};

use precinct::{Application, Config, readiness::Readiness};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub readiness: Readiness,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), precinct::app::AppError>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// A configuration for tests: development mode on a free loopback port,
/// with `overrides` applied on top.
pub fn test_config(overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP_ENV".into(), "development".into()),
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("RUST_LOG".into(), "warn".into()),
    ]);
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| vars.get(k).cloned()).expect("test config is valid")
}

pub async fn spawn_app(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with_routes(overrides, axum::Router::new()).await
}

pub async fn spawn_app_with_routes(overrides: &[(&str, &str)], extra: axum::Router) -> TestApp {
    precinct::tls::install_crypto_provider();
    let config = test_config(overrides);
    precinct::telemetry::init(&config.log);
    let app = Application::build_with_routes(config, extra)
        .await
        .expect("application builds");
    let addr = app.addr();
    let readiness = app.readiness().clone();
    let shutdown = app.shutdown_trigger();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        client: reqwest::Client::new(),
        readiness,
        shutdown,
        handle,
    }
}
