//! Abuse limits that hold behind a proxy: registration and GitHub
//! configuration are rate-limited like login, and the client IP comes from
//! `X-Forwarded-For` only when the TCP peer is a trusted proxy.

use std::time::{Duration, Instant};

use crate::common::{
    TestApp,
    stack::{Stack, start_ready as start},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple";

async fn register(app: &TestApp, name: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({
            "username": name, "email": format!("{name}@nine-nine.example"), "password": PASSWORD
        }));
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

async fn audit_ips(stack: &Stack, event: &str) -> Vec<String> {
    // Refusals' rows are appended in batches, within 20 ms.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut admin = stack.admin().await;
    sqlx::query_scalar(
        "select host(client_ip) from precinct.audit_log where event = $1 order by occurred_at",
    )
    .bind(event)
    .fetch_all(&mut admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn registration_is_rate_limited_per_ip_before_any_hashing() {
    let (stack, app) = start(&[("AUTH_REGISTER_RATE_PER_IP", "2")]).await;
    let mut hashed = Duration::MAX;
    for name in ["boyle1", "boyle2"] {
        let started = Instant::now();
        assert_eq!(
            register(&app, name, None).await.status(),
            StatusCode::CREATED
        );
        hashed = hashed.min(started.elapsed());
    }
    let started = Instant::now();
    let third = register(&app, "boyle3", None).await;
    let took = started.elapsed();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().get("retry-after").is_some());
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // A registration pays Argon2id; a refusal must not.
    assert!(
        took < hashed / 2,
        "refused in {took:?}, a registration took {hashed:?}"
    );
    assert_eq!(audit_ips(&stack, "register").await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_bucket_and_audit_ip() {
    let (stack, app) = start(&[
        ("AUTH_REGISTER_RATE_PER_IP", "1"),
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
    .await;
    // Two clients behind the same proxy (the test is the proxy: 127.0.0.1).
    assert_eq!(
        register(&app, "holt1", Some("198.51.100.1")).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        register(&app, "holt2", Some("198.51.100.2")).await.status(),
        StatusCode::CREATED
    );
    // A client cannot escape its bucket by prepending addresses.
    assert_eq!(
        register(&app, "holt3", Some("203.0.113.9, 198.51.100.1"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        audit_ips(&stack, "register").await,
        vec!["198.51.100.1", "198.51.100.2", "198.51.100.1"]
    );
    app.stop().await;
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let (stack, app) = start(&[("AUTH_REGISTER_RATE_PER_IP", "1")]).await;
    assert_eq!(
        register(&app, "gina1", Some("198.51.100.1")).await.status(),
        StatusCode::CREATED
    );
    // Another forged address does not buy another bucket.
    assert_eq!(
        register(&app, "gina2", Some("198.51.100.2")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        audit_ips(&stack, "register").await,
        vec!["127.0.0.1", "127.0.0.1"]
    );
    app.stop().await;
}

#[tokio::test]
async fn github_configure_is_rate_limited_per_user() {
    let (_stack, app) = start(&[("GITHUB_CONFIGURE_RATE_PER_USER", "1")]).await;
    assert_eq!(
        register(&app, "terry", None).await.status(),
        StatusCode::CREATED
    );
    let login: Value = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "terry", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let configure = || {
        app.client
            .post(app.url("/api/v1/github/configure"))
            .bearer_auth(token)
            .json(&json!({"github_token": "not-a-github-token"}))
            .send()
    };
    // The first attempt is judged on its merits (a malformed token: 422)...
    assert_eq!(
        configure().await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // ...the next within the minute is refused before anything else.
    let second = configure().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().get("retry-after").is_some());
    app.stop().await;
}
