//! Access tokens and refresh families at the edges, against the real stack:
//! forged `kid` floods, OpenBao frozen (SIGSTOP) under use, concurrent
//! refreshes of one token, and Transit failing in the middle of a refresh.

use std::time::{Duration, Instant};

use crate::common::{
    TestApp, post_json as post,
    stack::{Stack, start_ready as start},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

const PASSWORD: &str = "correct-horse-battery-staple";
const KEYS_PATH: &str = "transit/keys/precinct-access-token";

/// Registers `name` and logs in: (access token, refresh token).
async fn session(app: &TestApp, name: &str) -> (String, String) {
    let r = post(
        app,
        "/api/v1/auth/register",
        json!({"username": name, "email": format!("{name}@nine-nine.example"), "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = post(
        app,
        "/api/v1/auth/login",
        json!({"username": name, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn me_status(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(app.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::GATEWAY_TIMEOUT)
}

/// The token with its header replaced (payload and signature kept).
fn with_header(token: &str, header: Value) -> String {
    let rest = token.split_once('.').unwrap().1;
    format!(
        "{}.{rest}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap())
    )
}

async fn audit_count(stack: &Stack, event: &str) -> i64 {
    // Refusals' rows are appended in batches, within 20 ms.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let mut admin = stack.admin().await;
    sqlx::query("select count(*) as n from precinct.audit_log where event = $1")
        .bind(event)
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get("n")
}

#[tokio::test]
async fn a_thousand_unknown_kids_cost_at_most_one_openbao_call_per_interval() {
    let (stack, app) = start(&[
        ("AUTH_SIGNING_KEY_REFRESH", "60s"),
        ("AUTH_SIGNING_KEY_MIN_REFRESH", "2s"),
    ])
    .await;
    let (token, _) = session(&app, "hitchcock").await;
    let reads_before = stack.bao_requests(KEYS_PATH);
    // Newer versions (each asks for a refresh), hostile and malformed kids.
    let forged: Vec<String> = (0..1000)
        .map(|i| {
            let kid = match i % 4 {
                0 | 1 => format!("precinct-access-token-v{}", 2 + i),
                2 => format!("../../sys/raw/{i}"),
                _ => "x".repeat(2000),
            };
            with_header(&token, json!({"alg": "ES256", "typ": "JWT", "kid": kid}))
        })
        .collect();
    let started = Instant::now();
    let statuses: Vec<StatusCode> = futures::stream::iter(forged.iter())
        .map(|t| me_status(&app, t))
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "every forged token is refused: {:?}",
        statuses
            .iter()
            .filter(|s| **s != StatusCode::UNAUTHORIZED)
            .collect::<Vec<_>>()
    );
    // Let a demanded fetch that was due land in the audit log.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let calls = stack.bao_requests(KEYS_PATH) - reads_before;
    let allowed = (elapsed + Duration::from_millis(2500)).as_secs_f64() / 2.0;
    println!(
        "1000 forged kids in {elapsed:?}: {calls} OpenBao key reads (at most {:.0} allowed)",
        allowed.ceil() + 1.0
    );
    assert!(calls as f64 <= allowed.ceil() + 1.0, "{calls} key reads");
    assert_eq!(
        me_status(&app, &token).await,
        StatusCode::OK,
        "the real token still works"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_openbao_frozen_issued_tokens_keep_verifying_and_login_answers_503() {
    let (stack, app) = start(&[
        ("AUTH_SIGNING_KEY_REFRESH", "1s"),
        ("BAO_REQUEST_TIMEOUT", "1s"),
    ])
    .await;
    let (token, _) = session(&app, "scully").await;
    stack.freeze_bao();
    // Several refresh periods with OpenBao not answering.
    let until = Instant::now() + Duration::from_secs(5);
    let (mut ok, mut slowest) = (0, Duration::ZERO);
    while Instant::now() < until {
        let t = Instant::now();
        let status = me_status(&app, &token).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(status, StatusCode::OK, "after {ok} answers");
        ok += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let login = post(
        &app,
        "/api/v1/auth/login",
        json!({"username": "scully", "password": PASSWORD}),
    )
    .await;
    let login_status = login.status();
    let retry_after = login.headers().get("retry-after").cloned();
    stack.thaw_bao();
    println!("OpenBao frozen 5 s: {ok} /me answers, all 200, slowest {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    assert_eq!(login_status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after.is_some());
    app.stop().await;
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    post(app, "/api/v1/auth/refresh", json!({"refresh_token": token})).await
}

async fn race(concurrent: usize) {
    let (stack, app) = start(&[]).await;
    let (_, refresh_token) = session(&app, &format!("racer{concurrent}")).await;
    let responses =
        futures::future::join_all((0..concurrent).map(|_| refresh(&app, &refresh_token))).await;
    let mut winners = Vec::new();
    let mut losers = 0;
    for r in responses {
        match r.status() {
            StatusCode::OK => {
                let body: Value = r.json().await.unwrap();
                winners.push(body["refresh_token"].as_str().unwrap().to_string());
            }
            StatusCode::UNAUTHORIZED => losers += 1,
            other => panic!("unexpected {other}"),
        }
    }
    println!(
        "{concurrent} concurrent refreshes of one token: {} won, {losers} refused",
        winners.len()
    );
    assert_eq!(winners.len(), 1, "exactly one refresh wins");
    assert_eq!(audit_count(&stack, "refresh").await, 1);
    assert!(
        audit_count(&stack, "refresh_reuse").await >= 1,
        "the reuse is recorded"
    );
    // The reuse revoked the family: the winner's successor is refused too.
    assert_eq!(
        refresh(&app, &winners[0]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test]
async fn two_concurrent_refreshes_of_one_token_one_wins_and_the_family_is_revoked() {
    race(2).await;
}

#[tokio::test]
async fn ten_concurrent_refreshes_of_one_token_one_wins_and_the_family_is_revoked() {
    race(10).await;
}

#[tokio::test]
async fn transit_unreachable_during_a_refresh_burns_nothing_and_the_retry_succeeds() {
    let (stack, app) = start(&[("BAO_REQUEST_TIMEOUT", "1s")]).await;
    let (_, refresh_token) = session(&app, "mulder").await;
    stack.freeze_bao();
    let during = refresh(&app, &refresh_token).await;
    let status = during.status();
    let retry_after = during.headers().get("retry-after").cloned();
    stack.thaw_bao();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after.is_some());
    assert_eq!(
        audit_count(&stack, "refresh_reuse").await,
        0,
        "no false theft alarm"
    );
    // The client's retry, once OpenBao answers: the same token still works.
    let retry = refresh(&app, &refresh_token).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let body: Value = retry.json().await.unwrap();
    let next = body["refresh_token"].as_str().unwrap();
    assert_eq!(
        refresh(&app, next).await.status(),
        StatusCode::OK,
        "the family lives on"
    );
    assert_eq!(audit_count(&stack, "refresh_reuse").await, 0);
    app.stop().await;
}

// An attacker's own P-256 key (throwaway, for this test only).
const ATTACKER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg86CgpDoBq1bSQt98
AbrhmRpwJ2Jtg+Ckj2tyqy4d4KuhRANCAAS9D8WKmELUlWlq8gExv53uy6gMAXO5
4T9tDGyTBu5aLjt78RbFd5Ly8FsM77sEpASBRDl7wYJrKEvU1HxyFLEO
-----END PRIVATE KEY-----";

#[tokio::test]
async fn keys_named_inside_the_token_jwk_or_jku_are_never_trusted() {
    let (stack, app) = start(&[]).await;
    let (token, _) = session(&app, "kevin").await;
    let reads_before = stack.bao_requests(KEYS_PATH);
    let payload = token.split('.').nth(1).unwrap();
    let attacker_jwk = json!({"kty": "EC", "crv": "P-256",
        "x": "vQ_FiphC1JVpavIBMb-d7suoDAFzueE_bQxskwbuWi4",
        "y": "O3vxFsV3kvLwWwzvuwSkBIFEOXvBgmsoS9TUfHIUsQ4"});
    let key = jsonwebtoken::EncodingKey::from_ec_pem(ATTACKER_KEY.as_bytes()).unwrap();
    let headers = [
        json!({"alg": "ES256", "kid": "precinct-access-token-v1", "jwk": attacker_jwk}),
        json!({"alg": "ES256", "jwk": attacker_jwk}),
        json!({"alg": "ES256", "kid": "precinct-access-token-v1", "jku": "http://127.0.0.1:9/keys.json"}),
    ];
    for header in headers {
        let input = format!(
            "{}.{payload}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        let forged = format!("{input}.{signature}");
        assert_eq!(
            me_status(&app, &forged).await,
            StatusCode::UNAUTHORIZED,
            "{header}"
        );
    }
    // A stripped signature.
    let stripped = format!("{}.{payload}.", token.split('.').next().unwrap());
    assert_eq!(me_status(&app, &stripped).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        stack.bao_requests(KEYS_PATH),
        reads_before,
        "no OpenBao call for any of them"
    );
    app.stop().await;
}
