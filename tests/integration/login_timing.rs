//! Timing and lockout, measured against a running stack.
//!
//! A failed login takes the same time whether the username is unknown, holds
//! a legacy bcrypt hash (cost 12, as the original system), or an Argon2id
//! hash; an attacker cannot lock a user out.

use std::time::{Duration, Instant};

use crate::common::{post_json, stack::start_ready};
use serde_json::json;
use sqlx::{Connection, PgConnection};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn failed_login(app: &crate::common::TestApp, username: &str) -> Duration {
    let started = Instant::now();
    let r = post_json(
        app,
        "/api/v1/auth/login",
        json!({"username": username, "password": "not-the-password-at-all"}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status(), 401, "{username}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_bcrypt_and_argon2_users_cost_the_same_on_a_failed_login() {
    let (stack, app) = start_ready(&[
        ("AUTH_LOGIN_RATE_PER_IP", "100000"),
        ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "100000"),
        ("AUTH_LOGIN_RATE_PER_USERNAME", "100000"),
    ])
    .await;
    // A legacy account, as the original system stored it (bcrypt, cost 12).
    let legacy = bcrypt::hash("legacy-password-99", 12).unwrap();
    let mut admin = PgConnection::connect(&crate::common::stack::with_db(
        &crate::common::stack::admin_url(),
        &stack.db_name,
    ))
    .await
    .unwrap();
    sqlx::query(
        "insert into precinct.users (id, username, email, password_hash) values (gen_random_uuid(), 'legacy', 'legacy@example.test', $1)",
    )
    .bind(&legacy)
    .execute(&mut admin)
    .await
    .unwrap();
    // An Argon2id account.
    let r = post_json(
        &app,
        "/api/v1/auth/register",
        json!({"username": "modern", "email": "modern@example.test", "password": "a-long-unusual-passphrase"}),
    )
    .await;
    assert_eq!(r.status(), 201);

    // Warm-up: the floor calibrates on the first checks.
    for name in ["legacy", "modern", "nobody"] {
        failed_login(&app, name).await;
    }
    let rounds = 11;
    let (mut unknown, mut bcrypt, mut argon2) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        unknown.push(failed_login(&app, &format!("nobody{i}")).await);
        bcrypt.push(failed_login(&app, "legacy").await);
        argon2.push(failed_login(&app, "modern").await);
    }
    let (u, b, a) = (median(unknown), median(bcrypt), median(argon2));
    println!("failed-login medians over {rounds}: unknown {u:?}, bcrypt {b:?}, argon2id {a:?}");
    let slowest = u.max(b).max(a).as_secs_f64();
    let fastest = u.min(b).min(a).as_secs_f64();
    assert!(
        slowest / fastest < 1.2,
        "timing tells the classes apart: unknown {u:?}, bcrypt {b:?}, argon2id {a:?}"
    );
    // Without the floor, an Argon2id check is several times faster than a
    // cost-12 bcrypt one: the floor is what makes them equal.
    let started = Instant::now();
    assert!(!bcrypt::verify("x", &legacy).unwrap());
    let raw_bcrypt = started.elapsed();
    assert!(
        b >= raw_bcrypt,
        "the bcrypt login is no faster than bcrypt itself"
    );
    app.stop().await;
}

/// Eleven bad logins a minute used to lock anyone out. Now an attacker
/// exhausts only their own (address, username) pair; guessing from many
/// addresses meets the per-username backstop, which spares a client that
/// logged in successfully before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_cannot_lock_a_user_out() {
    let (_stack, app) = start_ready(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTH_LOGIN_RATE_PER_IP", "1000"),
        ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "5"),
        ("AUTH_LOGIN_RATE_PER_USERNAME", "12"),
        ("AUTH_LOGIN_MIN_DURATION", "0s"),
    ])
    .await;
    let password = "a-long-unusual-passphrase";
    let r = post_json(
        &app,
        "/api/v1/auth/register",
        json!({"username": "victim", "email": "victim@example.test", "password": password}),
    )
    .await;
    assert_eq!(r.status(), 201);
    async fn login_from(app: &crate::common::TestApp, from: &str, password: &str) -> u16 {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", from)
            .json(&json!({"username": "victim", "password": password}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    let login = |from: &str, password: &str| {
        let (from, password) = (from.to_string(), password.to_string());
        let app = &app;
        async move { login_from(app, &from, &password).await }
    };
    // The victim's usual client logs in once: a known-good pair.
    assert_eq!(
        login("198.51.100.7", "a-long-unusual-passphrase").await,
        200
    );
    // One attacker address: its pair is exhausted after 5.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(login("203.0.113.66", "guess").await);
    }
    assert_eq!(&statuses[..5], &[401; 5]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Many attacker addresses: the username backstop (12 a minute) trips.
    // A slow node may take long enough for a token or two to come back,
    // so count until the first refusal rather than to a fixed number.
    let mut addresses = (100..=254).map(|i| format!("203.0.113.{i}"));
    let mut before_trip = Vec::new();
    loop {
        let from = addresses
            .next()
            .expect("the backstop trips within 155 addresses");
        match login(&from, "guess").await {
            429 => break,
            status => before_trip.push(status),
        }
    }
    assert!(before_trip.iter().all(|s| *s == 401), "{before_trip:?}");
    assert!(
        before_trip.len() >= 6,
        "12 minus the 6 taken above: {before_trip:?}"
    );
    // A new address meets it too. (A token that came back in the moment
    // between is taken by one wrong login; then the next address meets it.)
    let mut new_address = Vec::new();
    for i in 0..3 {
        let status = login(&format!("192.0.2.{}", 50 + i), "guess").await;
        new_address.push(status);
        if status == 429 {
            break;
        }
    }
    assert_eq!(
        new_address.last(),
        Some(&429),
        "a new address meets the backstop: {new_address:?}"
    );
    assert!(
        new_address.iter().all(|s| [401, 429].contains(s)),
        "{new_address:?}"
    );
    // ...and the victim still gets in from the known-good client.
    assert_eq!(
        login("198.51.100.7", "a-long-unusual-passphrase").await,
        200
    );
    app.stop().await;
}
