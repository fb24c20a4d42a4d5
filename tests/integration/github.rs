//! The GitHub proxy against a local fake GitHub (wiremock) answering with
//! GitHub's real shapes and headers; OpenBao KV and PostgreSQL are real.

use std::time::Duration;

use crate::common::{
    TestApp, spawn_app_env,
    stack::{Lifetimes, Stack, env_with, wait_ready},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

const TOKEN_A: &str = "ghp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const TOKEN_B: &str = "ghp_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const BAD: &str = "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";

fn github_user(login: &str, id: i64) -> Value {
    json!({
        "login": login, "id": id, "node_id": "MDQ6VXNlcjE=", "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "url": format!("https://api.github.com/users/{login}"), "html_url": format!("https://github.com/{login}"),
        "type": "User", "site_admin": false, "name": "The Octocat", "company": "@github", "blog": "https://github.blog",
        "location": "San Francisco", "email": null, "bio": null, "public_repos": 8, "public_gists": 8,
        "followers": 9000, "following": 9, "created_at": "2011-01-25T18:44:36Z", "updated_at": "2024-01-22T12:00:00Z"
    })
}

fn repo(id: i64, name: &str) -> Value {
    json!({
        "id": id, "node_id": "R_kgDO", "name": name, "full_name": format!("octocat/{name}"), "private": false,
        "owner": {"login": "octocat", "id": 1, "type": "User"}, "html_url": format!("https://github.com/octocat/{name}"),
        "description": "My first repository on GitHub!", "fork": false, "language": "Rust", "forks_count": 9,
        "stargazers_count": 80, "watchers_count": 80, "default_branch": "main", "archived": false,
        "created_at": "2011-01-26T19:01:12Z", "updated_at": "2024-01-22T12:00:00Z", "pushed_at": "2024-01-22T12:00:00Z",
        "permissions": {"admin": true, "push": true, "pull": true}
    })
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(body)
        .insert_header("x-oauth-scopes", "repo, read:user")
        .insert_header("x-ratelimit-limit", "5000")
        .insert_header("x-ratelimit-remaining", "4999")
        .insert_header("x-ratelimit-reset", "1893456000")
        .insert_header("x-github-api-version-selected", "2022-11-28")
}

fn bad_credentials() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({
        "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"
    }))
}

/// A fake GitHub: /user per token; every request must carry GitHub's headers.
async fn fake_github() -> MockServer {
    let gh = MockServer::start().await;
    for (token, login, id) in [(TOKEN_A, "octocat", 1), (TOKEN_B, "hubot", 2)] {
        Mock::given(method("GET"))
            .and(path("/user"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .and(header("accept", "application/vnd.github+json"))
            .and(header("x-github-api-version", "2022-11-28"))
            .respond_with(ok(github_user(login, id)))
            .mount(&gh)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(bad_credentials())
        .mount(&gh)
        .await;
    gh
}

struct Ctx {
    stack: Stack,
    app: TestApp,
    gh: MockServer,
}

async fn start(extra: &[(&str, &str)]) -> Ctx {
    let stack = Stack::start(Lifetimes::default()).await;
    let gh = fake_github().await;
    let mut env = vec![("GITHUB_API_URL", gh.uri())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_env(&env_with(&stack, &pairs), |_| axum::Router::new()).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    Ctx { stack, app, gh }
}

/// Registers and logs in `username`; returns (user id, access token).
async fn user(app: &TestApp, username: &str) -> (String, String) {
    let password = "a-long-unusual-passphrase";
    let res = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": password}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let id = body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("register {username}: {body}"))
        .to_string();
    let tokens: Value = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (id, tokens["access_token"].as_str().unwrap().to_string())
}

async fn configure(app: &TestApp, bearer: &str, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/github/configure"))
        .bearer_auth(bearer)
        .json(&json!({"github_token": token}))
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, bearer: &str, path: &str) -> reqwest::Response {
    app.get_authorized(path, bearer).await
}

async fn kv_token(stack: &Stack, user_id: &str) -> Option<String> {
    let res = stack
        .bao_root(
            reqwest::Method::GET,
            &format!("secret/data/github/user-{user_id}/token"),
            json!(null),
        )
        .await;
    if res.status() == 404 {
        return None;
    }
    let body: Value = res.json().await.unwrap();
    body["data"]["data"]["token"].as_str().map(str::to_string)
}

#[tokio::test]
async fn a_valid_token_is_verified_then_kept_in_openbao_and_never_in_postgres() {
    let Ctx {
        stack,
        app,
        gh: _gh,
    } = start(&[]).await;
    let (id, bearer) = user(&app, "jake_p").await;
    let res = configure(&app, &bearer, TOKEN_A).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(!text.contains(TOKEN_A), "token echoed: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"status": "configured", "github_login": "octocat", "scopes": ["repo", "read:user"]})
    );

    assert_eq!(
        kv_token(&stack, &id).await.as_deref(),
        Some(TOKEN_A),
        "token in OpenBao KV v2"
    );
    let mut admin = stack.admin().await;
    let everything: String = sqlx::query_scalar(
        "select coalesce(string_agg(t, ' '), '') from (select row_to_json(g)::text as t from precinct.github_integrations g \
         union all select row_to_json(a)::text from precinct.audit_log a \
         union all select row_to_json(u)::text from precinct.users u) x",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(everything.contains("octocat"), "metadata is in Postgres");
    assert!(
        !everything.contains(TOKEN_A),
        "the token is not in Postgres"
    );
    let (login, scopes, status): (String, Vec<String>, String) = sqlx::query_as(
        "select github_login, scopes, token_status from precinct.github_integrations",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((login.as_str(), status.as_str()), ("octocat", "valid"));
    assert_eq!(scopes, vec!["repo", "read:user"]);

    let me: Value = get(&app, &bearer, "/api/v1/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["github_configured"], true);
    let profile = get(&app, &bearer, "/api/v1/github/user").await;
    assert_eq!(profile.status(), StatusCode::OK);
    assert_eq!(profile.headers()["x-ratelimit-remaining"], "4999");
    let profile: Value = profile.json().await.unwrap();
    assert_eq!(profile["login"], "octocat");
    assert_eq!(profile["followers"], 9000);
    let accessed: Option<time::OffsetDateTime> =
        sqlx::query_scalar("select last_accessed_at from precinct.github_integrations")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(accessed.is_some(), "last_accessed_at updated");

    // Forget it: KV and row gone, reads say not configured.
    let res = app
        .client
        .delete(app.url("/api/v1/github/configure"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(kv_token(&stack, &id).await, None);
    let res = get(&app, &bearer, "/api/v1/github/repos").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "github_not_configured"
    );
    let events: Vec<String> = sqlx::query_scalar(
        "select event from precinct.audit_log where event like 'github%' order by id",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(events, vec!["github_configure", "github_delete"]);
}

#[tokio::test]
async fn a_malformed_or_refused_token_is_not_stored() {
    let Ctx {
        stack,
        app,
        gh: _gh,
    } = start(&[]).await;
    let (id, bearer) = user(&app, "amy_s").await;
    let res = configure(&app, &bearer, "not-a-token").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["field"], "github_token");
    let res = configure(&app, &bearer, BAD).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = res.text().await.unwrap();
    assert!(!text.contains(BAD));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["code"],
        "github_token_rejected"
    );
    assert_eq!(kv_token(&stack, &id).await, None);
    // Without an access token nothing is reachable.
    let res = app
        .client
        .post(app.url("/api/v1/github/configure"))
        .json(&json!({"github_token": TOKEN_A}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repos_are_paginated_from_link_and_served_from_cache_on_304() {
    let Ctx {
        app,
        gh,
        stack: _stack,
    } = start(&[]).await;
    let (_, bearer) = user(&app, "rosa_d").await;
    assert_eq!(
        configure(&app, &bearer, TOKEN_A).await.status(),
        StatusCode::OK
    );
    let base = gh.uri();
    // A conditional request with our ETag: 304, no body, no rate limit spent.
    Mock::given(method("GET"))
        .and(path("/user/repos"))
        .and(header("if-none-match", "\"etag-1\""))
        .respond_with(
            ResponseTemplate::new(304)
                .insert_header("etag", "\"etag-1\"")
                .insert_header("x-ratelimit-remaining", "4999"),
        )
        .expect(1)
        .mount(&gh)
        .await;
    Mock::given(method("GET"))
        .and(path("/user/repos"))
        .and(query_param("page", "2"))
        .and(query_param("per_page", "2"))
        .and(query_param("sort", "updated"))
        .respond_with(
            ok(json!([repo(1, "Hello-World"), repo(2, "Spoon-Knife")]))
                .insert_header("etag", "\"etag-1\"")
                .insert_header(
                    "link",
                    format!(
                        "<{base}/user/repos?page=3&per_page=2&sort=updated>; rel=\"next\", <{base}/user/repos?page=5&per_page=2&sort=updated>; rel=\"last\", <{base}/user/repos?page=1&per_page=2&sort=updated>; rel=\"first\""
                    )
                    .as_str(),
                ),
        )
        .expect(1)
        .mount(&gh)
        .await;

    let path = "/api/v1/github/repos?page=2&per_page=2&sort=updated";
    let first = get(&app, &bearer, path).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-ratelimit-remaining"], "4999");
    // GitHub's Link, pointing at precinct's own route with the same query.
    assert_eq!(
        first.headers()["link"],
        "</api/v1/github/repos?page=3&per_page=2&sort=updated>; rel=\"next\", \
         </api/v1/github/repos?page=5&per_page=2&sort=updated>; rel=\"last\", \
         </api/v1/github/repos?page=1&per_page=2&sort=updated>; rel=\"first\""
    );
    let first: Value = first.json().await.unwrap();
    // A JSON array of repositories in GitHub's shape, as seed clients expect.
    assert!(first.is_array(), "{first}");
    assert_eq!(first[0]["full_name"], "octocat/Hello-World");
    assert_eq!(first[0]["owner"]["login"], "octocat");
    assert!(
        first[0].get("permissions").is_none(),
        "a documented schema, not passthrough"
    );
    let second = get(&app, &bearer, path).await;
    assert!(second.headers().get("link").is_some(), "304: Link kept");
    let second: Value = second.json().await.unwrap();
    assert_eq!(second, first, "304 served from the cache");

    for bad in [
        "per_page=0",
        "per_page=101",
        "page=0",
        "sort=stars",
        "direction=up",
        "visibility=secret",
        "affiliation=friends",
        "affiliation=owner,%20collaborator",
        "page=abc",
    ] {
        let res = get(&app, &bearer, &format!("/api/v1/github/repos?{bad}")).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn upstream_failures_map_to_429_424_502_and_504() {
    let Ctx { stack, app, gh } = start(&[("GITHUB_TIMEOUT", "1s")]).await;
    let (_, bearer) = user(&app, "terry_j").await;
    assert_eq!(
        configure(&app, &bearer, TOKEN_A).await.status(),
        StatusCode::OK
    );
    let repos = |q: &'static str| {
        Mock::given(method("GET"))
            .and(path("/user/repos"))
            .and(query_param("sort", q))
    };

    // Primary rate limit: 403 with remaining 0; Retry-After from the reset.
    let reset = (time::OffsetDateTime::now_utc().unix_timestamp() + 120).to_string();
    repos("created")
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}))
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.as_str()),
        )
        .mount(&gh)
        .await;
    let res = get(&app, &bearer, "/api/v1/github/repos?sort=created").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=121).contains(&retry), "{retry}");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");

    // Secondary rate limit: 403 with Retry-After.
    repos("pushed")
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}))
                .insert_header("retry-after", "30"),
        )
        .mount(&gh)
        .await;
    let res = get(&app, &bearer, "/api/v1/github/repos?sort=pushed").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "30");

    // 5xx: 502 with GitHub's message.
    repos("full_name")
        .respond_with(
            ResponseTemplate::new(503).set_body_json(json!({"message": "Service Unavailable"})),
        )
        .mount(&gh)
        .await;
    let res = get(&app, &bearer, "/api/v1/github/repos?sort=full_name").await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Service Unavailable")
    );

    // Too slow: 504.
    repos("updated")
        .respond_with(ok(json!([])).set_delay(Duration::from_secs(3)))
        .mount(&gh)
        .await;
    let res = get(&app, &bearer, "/api/v1/github/repos?sort=updated").await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);

    // The token was revoked on GitHub: 424, reconfigure; marked invalid.
    Mock::given(method("GET"))
        .and(path("/user/repos"))
        .respond_with(bad_credentials())
        .mount(&gh)
        .await;
    let res = get(&app, &bearer, "/api/v1/github/repos").await;
    assert_eq!(res.status(), StatusCode::FAILED_DEPENDENCY);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "github_token_invalid"
    );
    let mut admin = stack.admin().await;
    let status: String =
        sqlx::query_scalar("select token_status from precinct.github_integrations")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(status, "invalid");
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from precinct.audit_log where event = 'github_token_invalid'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let me: Value = get(&app, &bearer, "/api/v1/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["github_configured"], false);
}

#[tokio::test]
async fn one_user_can_never_reach_another_users_token() {
    let Ctx {
        app,
        gh,
        stack: _stack,
    } = start(&[]).await;
    let (_, alice) = user(&app, "alice_a").await;
    let (_, bob) = user(&app, "bob_b").await;
    assert_eq!(
        configure(&app, &alice, TOKEN_A).await.status(),
        StatusCode::OK
    );
    // Bob has nothing configured: Alice's token is not his fallback.
    let res = get(&app, &bob, "/api/v1/github/user").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        configure(&app, &bob, TOKEN_B).await.status(),
        StatusCode::OK
    );
    let a: Value = get(&app, &alice, "/api/v1/github/user")
        .await
        .json()
        .await
        .unwrap();
    let b: Value = get(&app, &bob, "/api/v1/github/user")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (a["login"].as_str(), b["login"].as_str()),
        (Some("octocat"), Some("hubot"))
    );
    // Every call to GitHub carried the caller's own token.
    let requests = gh.received_requests().await.unwrap();
    let bob_calls = requests
        .iter()
        .filter(|r| {
            r.headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {TOKEN_B}"))
        })
        .count();
    assert!(bob_calls >= 2, "configure and profile used Bob's token");
    // Deleting Bob's token leaves Alice's untouched.
    let res = app
        .client
        .delete(app.url("/api/v1/github/configure"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&app, &alice, "/api/v1/github/user").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&app, &bob, "/api/v1/github/user").await.status(),
        StatusCode::NOT_FOUND
    );
}
