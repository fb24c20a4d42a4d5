//! Hostile input against a running stack: every route, every body field and
//! query parameter, with NUL and other control characters, Unicode format
//! characters, oversized and mistyped values. A client's input never gets
//! a 5xx; token responses are never cacheable.

use crate::common::{post_json, stack::start_ready};
use serde_json::{Value, json};

const NASTY: &[&str] = &[
    "jake\u{0}",
    "\u{0}",
    "a\u{7}b",
    "a\u{1b}[31mred",
    "rosa\u{202e}moc.elgoog",
    "zero\u{200d}width",
    "\u{feff}bom",
    "%00",
    "../../etc/passwd",
    "' or 1=1 --",
    "\u{10ffff}",
];

fn oversized() -> String {
    "x".repeat(70_000)
}

async fn expect_client_error(res: reqwest::Response, what: &str) -> u16 {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    assert!(status < 500, "{what}: {status} {text}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_answers_5xx_to_hostile_input() {
    let (_stack, app) = start_ready(&[
        ("AUTH_LOGIN_RATE_PER_IP", "100000"),
        ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "100000"),
        ("AUTH_LOGIN_RATE_PER_USERNAME", "100000"),
        ("AUTH_REGISTER_RATE_PER_IP", "100000"),
        ("AUTH_LOGIN_MIN_DURATION", "0s"),
        // Nothing is configured for GitHub: its routes answer before calling it.
        ("GITHUB_API_URL", "http://127.0.0.1:9"),
    ])
    .await;
    // A real user and token, so authenticated routes get past the extractor.
    let password = crate::common::TEST_PASSWORD;
    crate::common::register(&app, "hostile").await;
    let login = post_json(
        &app,
        "/api/v1/auth/login",
        json!({"username": "hostile", "password": password}),
    )
    .await;
    assert_eq!(login.status(), 200);
    for (name, value) in [("cache-control", "no-store"), ("pragma", "no-cache")] {
        assert_eq!(login.headers()[name], value, "login response {name}");
    }
    let tokens: Value = login.json().await.unwrap();
    let bearer = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = post_json(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert_eq!(refresh.status(), 200);
    assert_eq!(refresh.headers()["cache-control"], "no-store");
    assert_eq!(refresh.headers()["pragma"], "no-cache");

    let mut sent = 0;
    let mut big = vec![oversized()];
    big.extend(NASTY.iter().map(|s| s.to_string()));
    for v in &big {
        let v = v.as_str();
        let bodies = [
            (
                "/api/v1/auth/register",
                json!({"username": v, "email": "a@b.co", "password": password}),
            ),
            (
                "/api/v1/auth/register",
                json!({"username": "okname", "email": v, "password": password}),
            ),
            (
                "/api/v1/auth/register",
                json!({"username": "okname2", "email": format!("x{v}@b.co"), "password": password}),
            ),
            (
                "/api/v1/auth/register",
                json!({"username": "okname3", "email": "c@d.co", "password": v}),
            ),
            (
                "/api/v1/auth/login",
                json!({"username": v, "password": password}),
            ),
            (
                "/api/v1/auth/login",
                json!({"username": "hostile", "password": v}),
            ),
            ("/api/v1/auth/refresh", json!({"refresh_token": v})),
            ("/api/v1/auth/logout", json!({"refresh_token": v})),
        ];
        for (path, body) in bodies {
            let status = expect_client_error(post_json(&app, path, body.clone()).await, path).await;
            sent += 1;
            if path == "/api/v1/auth/login" && v.contains('\u{0}') {
                assert_eq!(status, 401, "NUL in a login is a wrong login");
            }
        }
        let r = app
            .client
            .post(app.url("/api/v1/github/configure"))
            .bearer_auth(&bearer)
            .json(&json!({"github_token": v}))
            .send()
            .await
            .unwrap();
        expect_client_error(r, "github configure").await;
        if v.len() > 8_000 {
            continue; // bodies only: a URL that long is refused by the HTTP layer
        }
        for param in [
            "page",
            "per_page",
            "sort",
            "direction",
            "visibility",
            "affiliation",
        ] {
            let url =
                reqwest::Url::parse_with_params(&app.url("/api/v1/github/repos"), &[(param, v)])
                    .unwrap();
            let r = app
                .client
                .get(url)
                .bearer_auth(&bearer)
                .send()
                .await
                .unwrap();
            expect_client_error(r, param).await;
            sent += 1;
        }
        // Hostile bearer tokens and paths.
        let r = app
            .client
            .get(app.url("/api/v1/auth/me"))
            .header(
                "authorization",
                format!("Bearer {}", v.replace('\u{0}', "")),
            )
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(expect_client_error(r, "bearer").await, 401);
        }
        let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        for path in [
            format!("/api/v1/github/{encoded}"),
            format!("/api/v1/auth/{encoded}"),
            format!("/{encoded}"),
        ] {
            let r = app.client.get(app.url(&path)).send().await.unwrap();
            expect_client_error(r, &path).await;
            sent += 1;
        }
    }
    // Wrong types, wrong shapes, not JSON at all.
    for body in [
        json!([]),
        json!(null),
        json!("string"),
        json!({"username": 1, "password": true}),
        json!({"username": {"$ne": null}, "password": ["x"]}),
        json!({"username": "a", "password": "b", "extra": 1}),
    ] {
        for path in [
            "/api/v1/auth/login",
            "/api/v1/auth/register",
            "/api/v1/auth/refresh",
        ] {
            expect_client_error(post_json(&app, path, body.clone()).await, path).await;
            sent += 1;
        }
    }
    for raw in ["{", "\u{0}", "{\"username\":\"a\u{0}\"", "not json"] {
        let r = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("content-type", "application/json")
            .body(raw.to_string())
            .send()
            .await
            .unwrap();
        expect_client_error(r, raw).await;
        sent += 1;
    }
    // Unicode format characters in an email are refused, not stored.
    let r = post_json(
        &app,
        "/api/v1/auth/register",
        json!({"username": "spoof", "email": "rosa\u{202e}moc@nine-nine.example", "password": password}),
    )
    .await;
    assert_eq!(r.status(), 422);
    println!("{sent} hostile requests, no 5xx");
    app.stop().await;
}
