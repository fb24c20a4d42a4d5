//! `GET /metrics` on its own listener: the metrics exist and move. One test
//! in this binary: the recorder is process-wide.

use std::time::Duration;

use crate::common::{
    eventually,
    stack::{Lifetimes, Stack, env_with, wait_ready},
};
use precinct::db::Trigger;

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first sample whose line starts with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The value of the sample of `name` that carries every label in `labels`
/// (in whatever order the exporter wrote them).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_apart_and_follow_rotations() {
    // Short-lived X.509-SVIDs: the dev agent rotates them every few seconds.
    let stack = Stack::start_with_agent(Lifetimes::default(), |agent| {
        agent.x509_ttl = Duration::from_secs(4)
    })
    .await;
    let app = crate::common::spawn_app_env(
        &env_with(&stack, &[("METRICS_ADDR", "127.0.0.1:0")]),
        |_| axum::Router::new(),
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let addr = app.metrics_addr.expect("metrics listener");
    assert_ne!(addr.port(), app.addr.port(), "its own listener");
    // The public port does not serve them.
    assert_eq!(app.status("/metrics").await, 404);

    let text = scrape(addr).await;
    let build = text
        .lines()
        .find(|l| l.starts_with("precinct_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!("commit=\"{}\"", precinct::build_info::GIT_COMMIT)),
        "{build}"
    );
    assert_eq!(value(&text, "precinct_db_generation"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "precinct_db_rotations_total{trigger=\"initial\",outcome=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "precinct_dependency_ready{check=\"database\"}"),
        Some(1.0)
    );
    let lease = value(&text, "precinct_db_lease_expiry_seconds").expect("lease gauge");
    assert!(lease > 0.0 && lease <= 60.0, "{lease}");

    app.db.as_ref().unwrap().request_rotation(Trigger::Signal);
    eventually(
        Duration::from_secs(10),
        "a signal rotation counted",
        || async move {
            let text = scrape(addr).await;
            value(
                &text,
                "precinct_db_rotations_total{trigger=\"signal\",outcome=\"success\"}",
            ) == Some(1.0)
                && value(&text, "precinct_db_generation") == Some(2.0)
        },
    )
    .await;
    let text = scrape(addr).await;
    assert!(
        text.contains("precinct_db_rotation_duration_seconds_bucket"),
        "histogram"
    );

    // HTTP: by route template, method and status; an unknown path is
    // "unmatched" and never appears itself.
    let token = crate::common::access_token(&app, "metered").await;
    let me = app.get_authorized("/api/v1/auth/me", &token).await;
    assert_eq!(me.status(), 200);
    assert_eq!(app.status("/api/v1/no-such-thing/4242").await, 404);
    let wrong = crate::common::post_json(
        &app,
        "/api/v1/auth/login",
        serde_json::json!({"username": "metered", "password": "wrong wrong wrong"}),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let text = scrape(addr).await;
    let requests = "precinct_http_requests_total";
    let me_route = [
        ("route", "/api/v1/auth/me"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(sample(&text, requests, &me_route), Some(1.0), "{text}");
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert!(sample(&text, requests, &unmatched) >= Some(1.0));
    assert!(!text.contains("no-such-thing"), "a raw path in a label");
    assert!(
        text.contains("precinct_http_request_duration_seconds_bucket{route=\"/api/v1/auth/me\"")
    );
    assert!(sample(&text, "precinct_http_requests_in_flight", &[]).is_some());
    // Auth, identity, OpenBao, pool.
    let logins = "precinct_auth_logins_total";
    assert_eq!(sample(&text, logins, &[("outcome", "success")]), Some(1.0));
    assert_eq!(
        sample(&text, logins, &[("outcome", "invalid_credentials")]),
        Some(1.0)
    );
    let fetches = "precinct_identity_jwt_svid_fetches_total";
    assert!(sample(&text, fetches, &[("outcome", "success")]) >= Some(1.0));
    let connected = "precinct_identity_workload_api_connected";
    assert_eq!(sample(&text, connected, &[]), Some(1.0));
    let token_left = sample(&text, "precinct_openbao_token_expiry_seconds", &[]).unwrap();
    assert!(token_left > 0.0 && token_left <= 60.0, "{token_left}");
    let key_age = sample(&text, "precinct_auth_signing_key_age_seconds", &[]).unwrap();
    assert!((0.0..3600.0).contains(&key_age), "{key_age}");
    assert!(sample(&text, "precinct_db_pool_connections", &[]) >= Some(1.0));
    let acquires = sample(&text, "precinct_db_pool_acquire_seconds_count", &[]);
    assert!(acquires >= Some(1.0), "acquire wait sampled: {acquires:?}");

    // The SVID expiry gauge follows the dev agent's rotations: within a
    // 4 s lifetime, and up again after each rotation.
    let svid = "precinct_identity_svid_expiry_seconds";
    let rotations = "precinct_identity_svid_rotations_total";
    let before = sample(&text, rotations, &[]).unwrap_or(0.0);
    let (mut last, mut jumps) = (sample(&text, svid, &[]).unwrap(), 0);
    let started = std::time::Instant::now();
    while jumps < 2 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sample(&scrape(addr).await, svid, &[]).unwrap();
        assert!(now > 0.0 && now <= 4.0, "SVID expiry {now}");
        if now > last + 0.5 {
            jumps += 1;
        }
        last = now;
    }
    assert_eq!(jumps, 2, "the gauge rose at two rotations");
    let after = sample(&scrape(addr).await, rotations, &[]).unwrap();
    assert!(
        after >= before + 2.0,
        "rotations counted: {before} → {after}"
    );
    app.stop().await;
}
