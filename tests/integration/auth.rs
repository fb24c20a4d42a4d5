//! Accounts and tokens against real OpenBao Transit and PostgreSQL.

use std::time::{Duration, Instant};

use crate::common::{TestApp, post_json as post, stack::start_ready as start};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn register(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/api/v1/auth/register",
        json!({"username": username, "email": format!("{username}@example.com"), "password": password}),
    )
    .await
}

async fn login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/api/v1/auth/login",
        json!({"username": username, "password": password}),
    )
    .await
}

const PASSWORD: &str = "a-long-unusual-passphrase";

#[tokio::test]
async fn register_login_me_refresh_logout_full_flow() {
    let (stack, app) = start(&[]).await;
    let res = register(&app, "Rosa_Diaz", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(PASSWORD) && !text.contains("argon2"),
        "no secret echoed: {text}"
    );
    let user: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(user["username"], "Rosa_Diaz");
    assert_eq!(user["github_configured"], false);

    // Usernames compare case-insensitively.
    let res = login(&app, "rosa_diaz", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "precinct-access-token-v1");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    for claim in ["iss", "aud", "sub", "username", "iat", "exp", "jti"] {
        assert!(
            claims.get(claim).is_some(),
            "claim {claim} missing: {claims}"
        );
    }
    assert_eq!(claims["sub"], user["id"]);

    let res = me(&app, access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], "rosa_diaz@example.com");

    // The token verifies against the published JWKS, as any client would.
    let jwks: jsonwebtoken::jwk::JwkSet =
        crate::common::get_json(&app.client, app.url("/.well-known/jwks.json")).await;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find("precinct-access-token-v1").unwrap())
        .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["precinct-api"]);
    v.set_issuer(&["precinct"]);
    jsonwebtoken::decode::<Value>(access, &key, &v).expect("verifies with the JWKS");

    // Refresh rotates: the old refresh token is spent.
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let res = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": first_refresh}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(first_refresh, second_refresh);
    assert_eq!(
        me(&app, second["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );

    // Reusing the spent one revokes the whole family, including the new one.
    let res = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": first_refresh}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "refresh_reused");
    let res = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": second_refresh}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Logout revokes a fresh login's family.
    let tokens: Value = login(&app, "rosa_diaz", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let res = post(
        &app,
        "/api/v1/auth/logout",
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = post(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Audit rows for each event, none holding a secret.
    let mut admin = stack.admin().await;
    let rows: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        // Rows about requests (the trail's own rows and credential
        // rotations have no client).
        "select event, outcome, request_id, detail::text || coalesce(user_agent, '') \
         from precinct.audit_log where client_ip is not null order by seq",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let events: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    for expected in [
        ("register", "success"),
        ("login", "success"),
        ("refresh", "success"),
        ("refresh_reuse", "family_revoked"),
        ("logout", "success"),
    ] {
        assert!(events.contains(&expected), "{expected:?} not in {events:?}");
    }
    for row in &rows {
        assert!(row.2.is_some(), "request id recorded: {row:?}");
        assert!(
            !row.3.contains(PASSWORD) && !row.3.contains(&first_refresh),
            "{row:?}"
        );
    }
    // Refresh tokens are stored only as hashes.
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from precinct.refresh_tokens where token_hash = convert_to($1, 'UTF8')",
    )
    .bind(&first_refresh)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_bcrypt_hash_verifies_and_is_upgraded_to_argon2id_on_login() {
    let (stack, app) = start(&[]).await;
    let hash = bcrypt::hash("jake99", 12).unwrap();
    let mut admin = stack.admin().await;
    sqlx::query("insert into precinct.users (id, username, email, password_hash) values ($1, 'jake', 'jake@nine-nine.example', $2)")
        .bind(uuid::Uuid::now_v7())
        .bind(&hash)
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        login(&app, "jake", "jake98").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&app, "jake", "jake99").await.status(), StatusCode::OK);
    let stored: String =
        sqlx::query_scalar("select password_hash from precinct.users where username = 'jake'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert_eq!(login(&app, "jake", "jake99").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn registration_validates_each_field_and_hides_which_duplicate_collided() {
    let (_stack, app) = start(&[]).await;
    let cases = [
        (
            json!({"username": "ab", "email": "ok@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "bad name!", "email": "ok@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "valid_name", "email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"username": "valid_name", "email": "ok@example.com", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "valid_name", "email": "ok@example.com", "password": "password1234"}),
            "password",
        ),
        (
            json!({"username": "valid_name", "email": "ok@example.com", "password": "my-valid_name-is-long"}),
            "password",
        ),
        (
            json!({"username": "valid_name", "email": "ok@example.com", "password": "x".repeat(200)}),
            "password",
        ),
    ];
    for (body, field) in cases {
        let res = post(&app, "/api/v1/auth/register", body.clone()).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let text = res.text().await.unwrap();
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "validation_failed");
        assert_eq!(err["error"]["details"][0]["field"], field, "{text}");
        assert!(
            !text.contains(body["password"].as_str().unwrap()),
            "password echoed: {text}"
        );
    }
    // Malformed bodies get the same error shape.
    let res = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = post(
        &app,
        "/api/v1/auth/register",
        json!({"username": "x", "password": 12345678901234_i64, "email": "a@b.co"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(!res.text().await.unwrap().contains("12345678901234"));

    assert_eq!(
        register(&app, "amy_santiago", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    for (username, email) in [
        ("AMY_SANTIAGO", "other@example.com"),
        ("someone_else", "amy_santiago@example.com"),
    ] {
        let res = post(
            &app,
            "/api/v1/auth/register",
            json!({"username": username, "email": email, "password": PASSWORD}),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "account_exists");
        assert_eq!(
            err["error"]["message"],
            "an account with this username or email already exists"
        );
    }
}

#[tokio::test]
async fn access_token_verification_rejects_every_bad_token_with_the_right_code() {
    let (stack, app) = start(&[]).await;
    assert_eq!(
        register(&app, "terry_j", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let good: Value = login(&app, "terry_j", PASSWORD).await.json().await.unwrap();
    let good = good["access_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(good.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();

    let res = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "token_missing"
    );

    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "precinct-access-token-v1"});
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let expired = stack
        .sign_token(header.clone(), with("exp", json!(now - 60)))
        .await;
    let wrong_iss = stack
        .sign_token(header.clone(), with("iss", json!("someone-else")))
        .await;
    let wrong_aud = stack
        .sign_token(header.clone(), with("aud", json!("other-api")))
        .await;
    let unknown_kid = stack
        .sign_token(
            json!({"alg": "ES256", "kid": "precinct-access-token-v9"}),
            claims.clone(),
        )
        .await;
    let payload = good.split('.').nth(1).unwrap();
    let alg_none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
    );
    // Algorithm confusion: HS256 keyed with the public key.
    let jwks: Value = crate::common::get_json(&app.client, app.url("/.well-known/jwks.json")).await;
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("precinct-access-token-v1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(jwks["keys"][0]["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with("username", json!("admin")).to_string());
        parts.join(".")
    };

    let res = me(&app, &expired).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "token_expired"
    );
    for (name, token) in [
        ("wrong iss", wrong_iss.as_str()),
        ("wrong aud", wrong_aud.as_str()),
        ("unknown kid", unknown_kid.as_str()),
        ("alg none", alg_none.as_str()),
        ("HS256 confusion", hs256.as_str()),
        ("tampered payload", tampered.as_str()),
        ("malformed", "not.a.jwt"),
        ("garbage", "garbage"),
    ] {
        let res = me(&app, token).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "token_invalid",
            "{name}"
        );
    }
    assert_eq!(me(&app, good).await.status(), StatusCode::OK);
}

/// The kid of an access token.
fn kid(token: &str) -> String {
    let h: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    h["kid"].as_str().unwrap().to_string()
}

async fn access(app: &TestApp, username: &str) -> String {
    let body: Value = login(app, username, PASSWORD).await.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_rotated_signing_key_is_published_at_once_and_signs_only_once_pre_published() {
    let (stack, app) = start(&[
        ("AUTH_SIGNING_KEY_REFRESH", "1s"),
        ("AUTH_SIGNING_KEY_PREPUBLISH", "4s"),
    ])
    .await;
    assert_eq!(
        register(&app, "charles_b", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let before = access(&app, "charles_b").await;
    assert_eq!(kid(&before), "precinct-access-token-v1");

    let rotated = Instant::now();
    let r = stack
        .bao_root(
            reqwest::Method::POST,
            "transit/keys/precinct-access-token/rotate",
            json!({}),
        )
        .await;
    assert!(r.status().is_success());
    // Published within the refresh interval, newest first...
    crate::common::eventually(Duration::from_secs(5), "v2 in JWKS", || async {
        let jwks: Value =
            crate::common::get_json(&app.client, app.url("/.well-known/jwks.json")).await;
        crate::common::jwks_kids(&jwks) == ["precinct-access-token-v2", "precinct-access-token-v1"]
    })
    .await;
    // ...but v1 still signs until v2 is 4 s old.
    if rotated.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            kid(&access(&app, "charles_b").await),
            "precinct-access-token-v1"
        );
    }
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(rotated.elapsed())).await;
    crate::common::eventually(Duration::from_secs(3), "v2 signs", || async {
        kid(&access(&app, "charles_b").await) == "precinct-access-token-v2"
    })
    .await;
    let after = access(&app, "charles_b").await;
    assert_eq!(
        me(&app, &before).await.status(),
        StatusCode::OK,
        "the old version still verifies"
    );
    assert_eq!(me(&app, &after).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_superseded_signing_key_retires_after_the_longest_token_lifetime() {
    // Tokens live 30 s (+ 5 s leeway + 30 s skew): v1 retires 65 s after
    // v2 starts signing. The test waits that out.
    let (stack, app) = start(&[
        ("AUTH_SIGNING_KEY_REFRESH", "1s"),
        ("AUTH_SIGNING_KEY_PREPUBLISH", "2s"),
        ("AUTH_ACCESS_TOKEN_TTL", "30s"),
    ])
    .await;
    assert_eq!(
        register(&app, "raymond_h", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let r = stack
        .bao_root(
            reqwest::Method::POST,
            "transit/keys/precinct-access-token/rotate",
            json!({}),
        )
        .await;
    assert!(r.status().is_success());
    let active = Instant::now() + Duration::from_secs(2);
    crate::common::eventually(Duration::from_secs(10), "v2 signs", || async {
        kid(&access(&app, "raymond_h").await) == "precinct-access-token-v2"
    })
    .await;
    let retire_at = active + Duration::from_secs(65);
    tokio::time::sleep(
        retire_at.saturating_duration_since(Instant::now()) - Duration::from_secs(3),
    )
    .await;
    let jwks: Value = crate::common::get_json(&app.client, app.url("/.well-known/jwks.json")).await;
    assert_eq!(
        crate::common::jwks_kids(&jwks).len(),
        2,
        "v1 still published just before"
    );
    crate::common::eventually(Duration::from_secs(10), "v1 retired from JWKS", || async {
        let jwks: Value =
            crate::common::get_json(&app.client, app.url("/.well-known/jwks.json")).await;
        crate::common::jwks_kids(&jwks) == ["precinct-access-token-v2"]
    })
    .await;
    println!(
        "v1 left JWKS {:?} after the expected retirement",
        Instant::now().saturating_duration_since(retire_at)
    );
}

/// docs/runbooks.md, "Signing key compromise", step by step: rotate the
/// Transit key, retire the compromised version and announce it, revoke
/// every refresh family.
#[tokio::test]
async fn a_compromised_signing_key_is_retired_and_every_session_revoked() {
    let (stack, app) = start(&[]).await;
    assert_eq!(
        register(&app, "mallory_v", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let stolen: Value = login(&app, "mallory_v", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let stolen_access = stolen["access_token"].as_str().unwrap().to_string();
    let stolen_refresh = stolen["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(me(&app, &stolen_access).await.status(), StatusCode::OK);

    // 1. Rotate. 2. Retire every version before the new one, and tell
    // every replica (the default refresh is a minute: only the push can
    // make this quick).
    let key = "transit/keys/precinct-access-token";
    let r = stack
        .bao_root(reqwest::Method::POST, &format!("{key}/rotate"), json!({}))
        .await;
    assert!(r.status().is_success());
    let r = stack
        .bao_root(
            reqwest::Method::POST,
            &format!("{key}/config"),
            json!({"min_decryption_version": 2}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let mut admin = stack.admin().await;
    sqlx::query("NOTIFY precinct_keys")
        .execute(&mut admin)
        .await
        .unwrap();
    // The retired key's token is refused, though its session is alive and
    // the verified-token cache held it.
    let started = Instant::now();
    crate::common::eventually(
        Duration::from_secs(10),
        "the retired key's token refused",
        || {
            let (app, token) = (&app, &stolen_access);
            async move { me(app, token).await.status() == StatusCode::UNAUTHORIZED }
        },
    )
    .await;
    let took = started.elapsed();
    println!("retired signing key: its token refused {took:?} after the announcement");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let jwks: Value = crate::common::get_json(&app.client, app.url("/.well-known/jwks.json")).await;
    assert_eq!(
        crate::common::jwks_kids(&jwks),
        ["precinct-access-token-v2"]
    );
    // 3. Revoke every refresh family.
    sqlx::query("UPDATE precinct.refresh_families SET revoked_at = now() WHERE revoked_at IS NULL")
        .execute(&mut admin)
        .await
        .unwrap();
    let refresh = crate::common::post_json(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": stolen_refresh}),
    )
    .await;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED, "revoked family");
    // The user logs in again, with the new key, at once.
    let fresh = access(&app, "mallory_v").await;
    assert_eq!(kid(&fresh), "precinct-access-token-v2");
    assert_eq!(me(&app, &fresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logins_are_rate_limited_per_username_with_retry_after() {
    let (_stack, app) = start(&[("AUTH_LOGIN_RATE_PER_USERNAME", "3")]).await;
    for _ in 0..3 {
        assert_eq!(
            login(&app, "gina", "wrong-password-1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let res = login(&app, "GINA", "wrong-password-1").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Another username from the same IP is still allowed.
    assert_eq!(
        login(&app, "amy", "wrong-password-1").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logins_are_rate_limited_per_client_ip() {
    let (_stack, app) = start(&[("AUTH_LOGIN_RATE_PER_IP", "4")]).await;
    for i in 0..4 {
        assert_eq!(
            login(&app, &format!("user{i}"), "wrong-password-1")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&app, "user9", "wrong-password-1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_known_usernames_cost_the_same_time() {
    let (_stack, app) = start(&[
        ("AUTH_LOGIN_RATE_PER_IP", "1000"),
        ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "1000"),
        ("AUTH_LOGIN_RATE_PER_USERNAME", "1000"),
    ])
    .await;
    assert_eq!(
        register(&app, "hitchcock", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    // Interleaved, many tries: compare medians, not single timings.
    for i in 0..20 {
        let t = Instant::now();
        assert_eq!(
            login(&app, "hitchcock", "wrong-password-x").await.status(),
            StatusCode::UNAUTHORIZED
        );
        known.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(
            login(&app, &format!("nobody{i}"), "wrong-password-x")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        unknown.push(t.elapsed());
    }
    let (k, u) = (median(known), median(unknown));
    let ratio = k.as_secs_f64() / u.as_secs_f64();
    assert!(
        (0.7..1.4).contains(&ratio),
        "known {k:?} vs unknown {u:?} (ratio {ratio:.2})"
    );
    // And both paid for a real hash.
    assert!(u > Duration::from_millis(5), "{u:?}");
}
