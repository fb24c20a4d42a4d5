//! SIGHUP rotates credentials at once. The signal goes to the whole
//! process: the test runs in a process of its own (nextest).

use std::time::Duration;

use crate::common::{
    eventually, spawn_app_env,
    stack::{Lifetimes, Stack, db_route, env_with, wait_ready},
};

#[tokio::test]
async fn sighup_rotates_credentials_immediately() {
    crate::common::own_process();
    let stack = Stack::start(Lifetimes::default()).await;
    let app = spawn_app_env(
        &env_with(&stack, &[("DB_ROTATION_INTERVAL", "10m")]),
        db_route,
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    // The listener is installed with the rotation task; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = app.db.clone().unwrap();
    let before = db.generation().unwrap();

    let sent = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    eventually(
        Duration::from_secs(10),
        "a new generation after SIGHUP",
        || {
            let id = db.generation().map(|g| g.id).unwrap_or(0);
            async move { id > before.id }
        },
    )
    .await;
    assert_ne!(db.generation().unwrap().username, before.username);
    assert_eq!(app.status("/test/db").await, 200);
    app.stop().await;
}
