//! OpenBao restarted and its state lost (a dev-mode restart, or a restore
//! from an old snapshot): precinct's tokens and leases are unknown to it.
//! precinct logs in again, rotates to fresh credentials, and treats the
//! refused revocations of what OpenBao forgot as the normal events they are:
//! no ERROR line, and `/me` answers throughout the recovery with no 500.
//!
//! One test in this binary: it installs the process's subscriber.

use std::time::Duration;

use crate::common::{
    LogCapture, eventually, spawn_app_env,
    stack::{Lifetimes, Stack, env_with, wait_ready},
};
use precinct::{config::AccessLog, db::Trigger};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_openbao_lost_its_state_precinct_recovers_without_an_error_line() {
    let logs = LogCapture::install("info", AccessLog::Errors, None);
    let mut stack = Stack::start(Lifetimes::default()).await;
    let app = spawn_app_env(&env_with(&stack, &[]), |_| axum::Router::new()).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let token = crate::common::access_token(&app, "restarted").await;
    let db = app.db.clone().unwrap();
    let before = db.generation().unwrap().id;

    // /me under a steady trickle for the whole episode.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (client, url, token, stop) = (
            app.client.clone(),
            app.url("/api/v1/auth/me"),
            token.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
            while !stop.is_cancelled() {
                let status = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                *statuses.entry(status).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };

    // OpenBao restarts empty, and is configured again (as Tilt's bootstrap
    // does); then the credentials are rotated (the planner would on its
    // own at the token's renewal; the signal makes the test quick).
    stack.stop_bao();
    stack.start_bao().await;
    stack
        .configure_bao()
        .await
        .expect("configure-openbao.sh succeeds");
    db.request_rotation(Trigger::Signal);
    eventually(
        Duration::from_secs(30),
        "a fresh generation from the new OpenBao",
        || {
            let db = db.clone();
            async move { db.generation().is_some_and(|g| g.id > before) }
        },
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    // The old generation is retired (its revocations refused) shortly after.
    eventually(
        Duration::from_secs(15),
        "the old generation retired",
        || {
            let text = logs.text();
            async move { text.contains("\"event\":\"generation_retired\"") }
        },
    )
    .await;
    stop.cancel();
    let statuses = load.await.unwrap();
    app.stop().await;

    let text = logs.text();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    println!(
        "OpenBao restarted empty: /me answers {statuses:?}; {} log lines, {} at ERROR, {} lease_already_gone",
        lines.len(),
        errors.len(),
        text.matches("lease_already_gone").count()
    );
    assert!(
        text.contains("\"event\":\"lease_already_gone\""),
        "the forgotten lease's revocation was refused, and said so at INFO"
    );
    assert!(errors.is_empty(), "ERROR lines for a recovery: {errors:#?}");
    assert!(
        !statuses.contains_key(&500),
        "no 500 during the recovery: {statuses:?}"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 10,
        "{statuses:?}"
    );
}
