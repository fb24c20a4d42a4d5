//! PostgreSQL restarts under a running service: the pool recovers without a
//! restart of precinct. It restarts the machine's PostgreSQL cluster, so it
//! runs alone (`.config/nextest.toml`).

use std::time::Duration;

use crate::common::{
    eventually, spawn_app_env,
    stack::{Lifetimes, Stack, db_route, wait_ready},
};

fn restart_postgres() {
    let versions = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster (scripts/test.sh installs one)");
    let version = versions
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .expect("a cluster version");
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("pg_ctlcluster runs");
    assert!(status.success(), "restarting PostgreSQL failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_after_postgres_restarts() {
    let stack = Stack::start(Lifetimes::default()).await;
    let app = spawn_app_env(&stack.app_env(), db_route).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    assert_eq!(app.status("/test/db").await, 200);

    tokio::task::spawn_blocking(restart_postgres).await.unwrap();

    let url = app.url("/test/db");
    eventually(Duration::from_secs(30), "queries succeed again", || {
        let (c, u) = (app.client.clone(), url.clone());
        async move {
            c.get(u)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    // A burst right after recovery: every request served.
    for _ in 0..20 {
        assert_eq!(app.status("/test/db").await, 200);
    }
    app.stop().await;
}
