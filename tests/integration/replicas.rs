//! Three real replicas of one build (separate processes, one OpenBao, one
//! PostgreSQL) behind a real HAProxy, as a Service spreads them: signing
//! keys, limits, sessions and start-up agree across them.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    TEST_PASSWORD,
    replicas::Replicas,
    stack::{Lifetimes, Stack},
};

fn client() -> reqwest::Client {
    crate::common::http()
}

async fn register(base: &str, username: &str) {
    let r = client()
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"username": username, "email": format!("{username}@example.test"), "password": TEST_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

/// A login from client address `from` (sent as X-Forwarded-For: the
/// replicas trust the loopback, as they would an ingress).
async fn login_from(base: &str, username: &str, password: &str, from: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/api/v1/auth/login"))
        .header("x-forwarded-for", from)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

/// (access token, refresh token) of a fresh login.
async fn tokens(base: &str, username: &str) -> (String, String) {
    let r = login_from(base, username, TEST_PASSWORD, "198.51.100.1").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn get(base: &str, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn me(base: &str, token: &str) -> StatusCode {
    get(base, "/api/v1/auth/me", token).await.status()
}

fn kid(token: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

const KEY: &str = "transit/keys/precinct-access-token";

async fn rotate(stack: &Stack) {
    let r = stack
        .bao_root(reqwest::Method::POST, &format!("{KEY}/rotate"), json!({}))
        .await;
    assert!(r.status().is_success());
}

#[tokio::test]
async fn replicas_started_at_once_migrate_once_and_all_serve() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(&stack, 3, &[]).await;
    let mut admin = stack.admin().await;
    let applied: Vec<(i64, i64)> = sqlx::query_as(
        "select version, count(*) from precinct._sqlx_migrations group by version order by version",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(applied.len() >= 4, "{applied:?}");
    assert!(applied.iter().all(|(_, n)| *n == 1), "{applied:?}");
    register(&replicas.lb, "terry_j").await;
    let (access, _) = tokens(&replicas.urls[0], "terry_j").await;
    for url in &replicas.urls {
        assert_eq!(me(url, &access).await, StatusCode::OK, "{url}");
    }
}

/// Tokens issued by one replica, verified by the others, continuously,
/// while Transit rotates the signing key: none is refused.
#[tokio::test]
async fn a_key_rotation_under_cross_replica_traffic_refuses_no_valid_token() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(
        &stack,
        3,
        &[
            ("AUTH_SIGNING_KEY_REFRESH", "2s"),
            ("AUTH_SIGNING_KEY_PREPUBLISH", "4s"),
            // A login every few milliseconds from one client.
            ("AUTH_LOGIN_RATE_PER_IP", "100000"),
            ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "100000"),
            ("AUTH_LOGIN_RATE_PER_USERNAME", "100000"),
        ],
    )
    .await;
    register(&replicas.lb, "amy_s").await;
    let started = Instant::now();
    let mut rotated = false;
    let (mut calls, mut refused, mut kids) = (0, 0, std::collections::BTreeSet::new());
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(12) {
        if !rotated && started.elapsed() > Duration::from_secs(1) {
            rotate(&stack).await;
            rotated = true;
        }
        let issuer = &replicas.urls[i % 3];
        let (access, _) = tokens(issuer, "amy_s").await;
        kids.insert(kid(&access));
        for (j, url) in replicas.urls.iter().enumerate() {
            if j != i % 3 {
                calls += 1;
                let status = me(url, &access).await;
                if status == StatusCode::UNAUTHORIZED {
                    refused += 1;
                }
                assert_ne!(status.as_u16() / 100, 5, "{url}");
            }
        }
        i += 1;
    }
    println!("key rotation: {calls} cross-replica calls, {refused} x 401, kids seen {kids:?}");
    assert_eq!(refused, 0, "{}", replicas.logs());
    assert!(
        kids.contains("precinct-access-token-v2"),
        "the new version signed: {kids:?}"
    );
}

/// docs/runbooks.md's retirement (min_decryption_version, then the
/// announcement): every replica refuses the retired version's tokens
/// within 2 s, though their session is alive.
#[tokio::test]
async fn a_retired_key_is_refused_by_every_replica_within_two_seconds() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(&stack, 3, &[]).await;
    register(&replicas.lb, "rosa_d").await;
    let (old, _) = tokens(&replicas.urls[0], "rosa_d").await;
    for url in &replicas.urls {
        assert_eq!(me(url, &old).await, StatusCode::OK);
    }
    rotate(&stack).await;
    let r = stack
        .bao_root(
            reqwest::Method::POST,
            &format!("{KEY}/config"),
            json!({"min_decryption_version": 2}),
        )
        .await;
    assert!(r.status().is_success());
    let mut admin = stack.admin().await;
    sqlx::query("NOTIFY precinct_keys")
        .execute(&mut admin)
        .await
        .unwrap();
    let announced = Instant::now();
    let mut refused_after = Vec::new();
    for url in &replicas.urls {
        while me(url, &old).await == StatusCode::OK {
            assert!(
                announced.elapsed() < Duration::from_secs(10),
                "{url} still accepts the retired key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        refused_after.push(announced.elapsed());
    }
    println!("retirement: refused by each replica after {refused_after:?}");
    assert!(
        refused_after.iter().all(|t| *t < Duration::from_secs(2)),
        "{refused_after:?}"
    );
    // The new version signs at once on every replica (nothing else is left).
    let (fresh, _) = tokens(&replicas.urls[2], "rosa_d").await;
    assert_eq!(kid(&fresh), "precinct-access-token-v2");
    for url in &replicas.urls {
        assert_eq!(me(url, &fresh).await, StatusCode::OK);
    }
}

/// How many of `attempts` requests a limit let through (not 429).
async fn accepted<F, Fut>(attempts: usize, mut send: F) -> usize
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = StatusCode>,
{
    let mut n = 0;
    for i in 0..attempts {
        let status = send(i).await;
        assert_ne!(status.as_u16() / 100, 5, "attempt {i}: {status}");
        if status != StatusCode::TOO_MANY_REQUESTS {
            n += 1;
        }
    }
    n
}

/// Each limit, once with one replica and once with three behind the same
/// balancer: the totals are the same (within one refill).
#[tokio::test]
async fn every_limit_holds_in_total_with_one_or_three_replicas() {
    let stack = Stack::start(Lifetimes::default()).await;
    let limits = [
        ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "6"),
        ("AUTH_LOGIN_RATE_PER_IP", "8"),
        ("AUTH_REGISTER_RATE_PER_IP", "4"),
        ("GITHUB_CONFIGURE_RATE_PER_USER", "3"),
        // Unreachable: configure fails after the limit (502), not 5xx from us.
        ("GITHUB_API_URL", "http://127.0.0.1:9"),
    ];
    let mut totals = Vec::new();
    for (n, phase) in [(1, "a"), (3, "b")] {
        let replicas = Replicas::start(&stack, n, &limits).await;
        let lb = replicas.lb.clone();
        let user = format!("boyle_{phase}");
        register(&lb, &user).await;
        let (access, _) = tokens(&lb, &user).await;
        let pair = accepted(12, |_| {
            let (lb, user) = (lb.clone(), user.clone());
            async move {
                let from = if phase == "a" {
                    "203.0.113.10"
                } else {
                    "203.0.113.11"
                };
                login_from(&lb, &user, "wrong-password-1", from)
                    .await
                    .status()
            }
        })
        .await;
        let ip = format!("203.0.113.{}", if phase == "a" { 20 } else { 21 });
        let per_ip = accepted(16, |i| {
            let (lb, ip) = (lb.clone(), ip.clone());
            async move {
                login_from(&lb, &format!("nobody{i}"), "wrong-password-1", &ip)
                    .await
                    .status()
            }
        })
        .await;
        let reg_ip = format!("203.0.113.{}", if phase == "a" { 30 } else { 31 });
        let registrations = accepted(8, |i| {
            let (lb, reg_ip) = (lb.clone(), reg_ip.clone());
            async move {
                client()
                    .post(format!("{lb}/api/v1/auth/register"))
                    .header("x-forwarded-for", &reg_ip)
                    .json(&json!({"username": format!("reg{phase}{i}"), "email": format!("reg{phase}{i}@example.test"), "password": TEST_PASSWORD}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .await;
        let configure = accepted(6, |_| {
            let (lb, access) = (lb.clone(), access.clone());
            async move {
                let status = client()
                    .post(format!("{lb}/api/v1/github/configure"))
                    .bearer_auth(&access)
                    .json(&json!({"github_token": format!("ghp_{}", "a".repeat(36))}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                // Past the limit, GitHub is unreachable (by design here).
                if status == StatusCode::BAD_GATEWAY {
                    StatusCode::OK
                } else {
                    status
                }
            }
        })
        .await;
        println!(
            "{n} replica(s): per (IP, username) {pair}/12, per IP {per_ip}/16, registrations per IP {registrations}/8, GitHub configure per user {configure}/6"
        );
        totals.push([pair, per_ip, registrations, configure]);
        drop(replicas);
    }
    let expected = [6, 8, 4, 3];
    for (one_or_three, got) in totals.iter().enumerate() {
        for (limit, (got, want)) in got.iter().zip(expected).enumerate() {
            assert!(
                (want..=want + 1).contains(got),
                "run {one_or_three}, limit {limit}: {got} accepted, the limit is {want}"
            );
        }
    }
}

/// A distributed guessing attack on one username, spread over every
/// replica: the user's known-good client still logs in through any
/// replica; a new address meets the backstop.
#[tokio::test]
async fn the_known_good_client_gets_in_through_every_replica_under_attack() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(
        &stack,
        3,
        &[
            ("AUTH_LOGIN_RATE_PER_USERNAME", "6"),
            ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "100"),
            ("AUTH_LOGIN_RATE_PER_IP", "100"),
        ],
    )
    .await;
    register(&replicas.lb, "hitchcock").await;
    let home = "198.51.100.77";
    let ok = login_from(&replicas.urls[0], "hitchcock", TEST_PASSWORD, home).await;
    assert_eq!(ok.status(), StatusCode::OK);
    // Guesses from many addresses through every replica empty the backstop.
    let mut limited = 0;
    for i in 0..30 {
        let url = &replicas.urls[i % 3];
        let status = login_from(
            url,
            "hitchcock",
            "wrong-password-1",
            &format!("203.0.113.{}", 100 + i),
        )
        .await
        .status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!(limited >= 20, "the backstop held: {limited} of 30 refused");
    for url in &replicas.urls {
        let r = login_from(url, "hitchcock", TEST_PASSWORD, home).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "known-good client through {url}"
        );
    }
    let stranger = login_from(
        &replicas.urls[1],
        "hitchcock",
        TEST_PASSWORD,
        "203.0.113.250",
    )
    .await;
    assert_eq!(
        stranger.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a new address meets the backstop"
    );
}

/// Logout on one replica: every replica refuses the access token within a
/// second, on `/me` (checked in its query) and on a GitHub route (told by
/// the push). Refresh reuse is detected across replicas as well.
#[tokio::test]
async fn a_logout_is_seen_by_every_replica_within_a_second() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(&stack, 3, &[]).await;
    register(&replicas.lb, "scully").await;
    let (access, refresh) = tokens(&replicas.urls[0], "scully").await;
    for url in &replicas.urls {
        assert_eq!(me(url, &access).await, StatusCode::OK);
        let github = get(url, "/api/v1/github/user", &access).await.status();
        assert_eq!(
            github,
            StatusCode::NOT_FOUND,
            "not configured, but authenticated"
        );
    }
    let r = client()
        .post(format!("{}/api/v1/auth/logout", replicas.urls[1]))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let out = Instant::now();
    // Every (replica, route) polled at once: each figure is when that
    // replica's refusal arrived, not the sum of the probes before it.
    let probes = replicas.urls.iter().flat_map(|url| {
        ["/api/v1/auth/me", "/api/v1/github/user"].map(|path| {
            let access = &access;
            async move {
                loop {
                    let r = get(url, path, access).await;
                    if r.status() == StatusCode::UNAUTHORIZED {
                        let at = out.elapsed();
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "token_revoked", "{url}{path}");
                        return (url.clone(), path, at);
                    }
                    assert!(
                        out.elapsed() < Duration::from_secs(5),
                        "{url}{path} still serves the token"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    });
    let seen = futures::future::join_all(probes).await;
    println!("logout seen: {seen:?}");
    assert!(
        seen.iter().all(|(_, _, t)| *t < Duration::from_secs(1)),
        "{seen:?}"
    );

    // Refresh reuse: spent on one replica, presented again on another.
    let (_, refresh) = tokens(&replicas.urls[0], "scully").await;
    let spend = |url: String, token: String| async move {
        client()
            .post(format!("{url}/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap()
    };
    let first = spend(replicas.urls[0].clone(), refresh.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let successor: Value = first.json().await.unwrap();
    let reuse = spend(replicas.urls[2].clone(), refresh).await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    let fresh_access = successor["access_token"].as_str().unwrap();
    crate::common::eventually(
        Duration::from_secs(1),
        "the reused family's access token refused everywhere",
        || async {
            let mut all = true;
            for url in &replicas.urls {
                all &= get(url, "/api/v1/github/user", fresh_access).await.status()
                    == StatusCode::UNAUTHORIZED;
            }
            all
        },
    )
    .await;
}

async fn listener_pids(admin: &mut sqlx::PgConnection) -> Vec<i32> {
    sqlx::query_scalar(
        "select pid from pg_stat_activity \
         where application_name = 'precinct-listener' and datname = current_database() order by pid",
    )
    .fetch_all(admin)
    .await
    .unwrap()
}

/// PostgreSQL terminates every replica's listener in the same transaction
/// that ends a session: the notification goes to nobody. The resync after
/// the reconnect still ends the session everywhere.
#[tokio::test]
async fn the_push_resyncs_after_postgres_terminates_the_listeners() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(&stack, 3, &[]).await;
    register(&replicas.lb, "peralta").await;
    let (access, _) = tokens(&replicas.urls[0], "peralta").await;
    let sid: uuid::Uuid = {
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(access.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        claims["sid"].as_str().unwrap().parse().unwrap()
    };
    let mut admin = stack.admin().await;
    let before = listener_pids(&mut admin).await;
    assert_eq!(before.len(), 3, "one listener per replica: {before:?}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
           WHERE application_name = 'precinct-listener' AND datname = current_database(); \
         SELECT pg_sleep(0.2); \
         UPDATE precinct.refresh_families SET revoked_at = now() WHERE id = '{sid}'; \
         COMMIT;"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let ended = Instant::now();
    crate::common::eventually(
        Duration::from_secs(3),
        "every replica refuses the ended session",
        || async {
            let mut all = true;
            for url in &replicas.urls {
                all &= get(url, "/api/v1/github/user", &access).await.status()
                    == StatusCode::UNAUTHORIZED;
            }
            all
        },
    )
    .await;
    let took = ended.elapsed();
    let after = listener_pids(&mut admin).await;
    println!(
        "listeners {before:?} terminated, back as {after:?}; the session ended everywhere after {took:?}"
    );
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|p| !before.contains(p)), "new connections");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A replica restarted under load through the balancer: no request is
/// refused 401 (it answers 503 until it has keys, and is not routed to
/// until ready), and none fails.
#[tokio::test]
async fn a_replica_restarted_under_load_refuses_nothing() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(&stack, 3, &[]).await;
    register(&replicas.lb, "holt").await;
    let (access, _) = tokens(&replicas.lb, "holt").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (lb, access, stop) = (replicas.lb.clone(), access.clone(), stop.clone());
        tokio::spawn(async move {
            let client = client();
            futures::stream::iter(0..)
                .take_while(|_| {
                    let done = stop.load(std::sync::atomic::Ordering::Relaxed);
                    async move { !done }
                })
                .map(|_| {
                    let (client, lb, access) = (client.clone(), lb.clone(), access.clone());
                    async move {
                        client
                            .get(format!("{lb}/api/v1/auth/me"))
                            .bearer_auth(&access)
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0)
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<u16>>()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    replicas.restart(2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let failed = statuses.iter().filter(|s| **s != 200).count();
    println!(
        "restart under load: {} requests, {unauthorized} x 401, {failed} not 200",
        statuses.len()
    );
    assert!(statuses.len() > 100);
    assert_eq!(unauthorized, 0, "{}", replicas.logs());
    assert_eq!(failed, 0, "{}", replicas.logs());
}

/// The same failed login takes the same time on every replica, one of
/// them started while its node was busy.
#[tokio::test]
async fn a_failed_login_takes_the_same_time_on_every_replica() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(
        &stack,
        3,
        &[
            ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "1000"),
            ("AUTH_LOGIN_RATE_PER_IP", "1000"),
            ("AUTH_LOGIN_RATE_PER_USERNAME", "1000"),
        ],
    )
    .await;
    register(&replicas.lb, "gina_l").await;
    // Replica 3 starts again while both cores are busy.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let burners: Vec<_> = (0..4)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    replicas.restart(3).await;
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    let mut medians = Vec::new();
    for url in &replicas.urls {
        let mut times = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            let r = login_from(url, "gina_l", "wrong-password-1", "198.51.100.9").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            times.push(started.elapsed());
        }
        times.sort();
        medians.push(times[times.len() / 2]);
    }
    println!("failed-login medians per replica: {medians:?}");
    let (min, max) = (medians.iter().min().unwrap(), medians.iter().max().unwrap());
    assert!(max.as_secs_f64() <= min.as_secs_f64() * 1.2, "{medians:?}");
}

/// Hostile input against what the replicas share: each answers 401 or 429
/// with the JSON error shape, never a 5xx, and costs OpenBao at most one
/// key read per replica per interval; nothing locks out a known-good
/// client or ends a live session.
#[tokio::test]
async fn hostile_input_to_the_shared_state_answers_401_or_429_never_5xx() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(
        &stack,
        3,
        &[
            ("AUTH_SIGNING_KEY_MIN_REFRESH", "2s"),
            ("AUTH_SIGNING_KEY_REFRESH", "60s"),
        ],
    )
    .await;
    register(&replicas.lb, "jake_p").await;
    register(&replicas.lb, "amy_p").await;
    let home = "198.51.100.1";
    let (jake, _) = tokens(&replicas.urls[0], "jake_p").await;
    let (amy, _) = tokens(&replicas.urls[0], "amy_p").await;
    let claims = |t: &str| -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let (jake_claims, amy_sid) = (claims(&jake), claims(&amy)["sid"].clone());
    let expect_401 = |r: reqwest::Response, what: &'static str| async move {
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
    };
    // Tokens signed with the real key (what only a key holder could mint):
    // another user's session, and a session that does not exist.
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "precinct-access-token-v1"});
    let mut other_sid = jake_claims.clone();
    other_sid["sid"] = amy_sid.clone();
    let mut forged_sid = jake_claims.clone();
    forged_sid["sid"] = json!(uuid::Uuid::now_v7());
    for (token, what) in [
        (
            stack.sign_token(header.clone(), other_sid).await,
            "another user's session",
        ),
        (
            stack.sign_token(header.clone(), forged_sid).await,
            "a session nobody started",
        ),
    ] {
        for url in &replicas.urls {
            expect_401(get(url, "/api/v1/auth/me", &token).await, what).await;
        }
    }
    // A storm of plausible unknown kids over every replica (each waits for
    // one refresh: a rotation this replica has not fetched yet looks so).
    let reads_before = stack.bao_requests(KEY);
    let storm_started = Instant::now();
    let forged: Vec<(String, String)> = (0..120)
        .map(|i| {
            let mut parts: Vec<String> = jake.split('.').map(str::to_string).collect();
            parts[0] = URL_SAFE_NO_PAD.encode(
                json!({"alg": "ES256", "typ": "JWT", "kid": format!("precinct-access-token-v{}", 2 + i % 16)})
                    .to_string(),
            );
            (replicas.urls[i % 3].clone(), parts.join("."))
        })
        .collect();
    let statuses: Vec<StatusCode> = futures::stream::iter(forged)
        .map(|(url, token)| async move { me(&url, &token).await })
        .buffer_unordered(40)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reads = stack.bao_requests(KEY) - reads_before;
    let per_replica_bound = (storm_started.elapsed().as_secs_f64() / 2.0).ceil() as usize + 1;
    println!(
        "120 forged kids over 3 replicas: {reads} key reads (bound {})",
        3 * per_replica_bound
    );
    assert!(reads <= 3 * per_replica_bound, "{reads} key reads");
    // Limiter keys from a 60 KB username and an IPv6 address with a zone.
    let huge = "u".repeat(60 * 1024);
    for url in &replicas.urls {
        let r = login_from(url, &huge, "wrong-password-1", home).await;
        assert!(matches!(r.status().as_u16(), 401 | 413), "{}", r.status());
        let r = login_from(url, "jake_p", "wrong-password-1", "fe80::1%eth0").await;
        expect_401(r, "a zoned IPv6 address").await;
    }
    // NOTIFY payloads that are not ours, and one naming a live session.
    let mut admin = stack.admin().await;
    for payload in [
        "garbage".to_string(),
        "x".repeat(7999),
        amy_sid.as_str().unwrap().to_string(),
        format!("{},{}", amy_sid.as_str().unwrap(), "not-a-uuid"),
    ] {
        sqlx::query("select pg_notify('precinct_sessions', $1)")
            .bind(&payload)
            .execute(&mut admin)
            .await
            .unwrap();
    }
    for _ in 0..200 {
        sqlx::query("select pg_notify('precinct_keys', 'whatever')")
            .execute(&mut admin)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for url in &replicas.urls {
        assert_eq!(
            me(url, &amy).await,
            StatusCode::OK,
            "a live session stays live: {url}"
        );
        assert_eq!(me(url, &jake).await, StatusCode::OK, "{url}");
    }
    // Nothing locked out the known-good clients.
    for url in &replicas.urls {
        let r = login_from(url, "amy_p", TEST_PASSWORD, "198.51.100.1").await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
    }
}
