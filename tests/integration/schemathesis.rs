//! The API contract, checked by an independent tool: schemathesis (PyPI)
//! generates requests from `/openapi.json` and checks every answer against
//! it (documented status, response schema, content type, no server error),
//! with a valid access token, against a running stack and a fake GitHub
//! that answers in GitHub's shapes.

use std::{process::Command, time::Duration};

use crate::common::{
    spawn_app_env,
    stack::{Lifetimes, Stack, env_with, wait_ready},
};
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

fn schemathesis() -> std::path::PathBuf {
    let python = std::env::var("PRECINCT_TEST_PYTHON")
        .expect("PRECINCT_TEST_PYTHON (scripts/test.sh sets it and installs schemathesis)");
    std::path::Path::new(&python).with_file_name("schemathesis")
}

async fn fake_github() -> MockServer {
    let gh = MockServer::start().await;
    let user = json!({
        "login": "octocat", "id": 1, "name": "The Octocat", "email": null,
        "avatar_url": "https://avatars.githubusercontent.com/u/1", "html_url": "https://github.com/octocat",
        "company": null, "location": null, "bio": null, "public_repos": 1, "followers": 0,
        "following": 0, "created_at": "2011-01-25T18:44:36Z"
    });
    Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(user)
                .insert_header("x-oauth-scopes", "repo, read:user")
                .insert_header("x-ratelimit-remaining", "4999"),
        )
        .mount(&gh)
        .await;
    let repo = json!({
        "id": 1296269, "name": "Hello-World", "full_name": "octocat/Hello-World",
        "owner": {"login": "octocat", "id": 1, "avatar_url": "https://avatars.githubusercontent.com/u/1",
                  "html_url": "https://github.com/octocat", "type": "User"},
        "private": false, "description": null, "html_url": "https://github.com/octocat/Hello-World",
        "default_branch": "main", "language": null, "stargazers_count": 80, "forks_count": 9,
        "fork": false, "archived": false, "updated_at": "2011-01-26T19:14:43Z", "pushed_at": null
    });
    Mock::given(method("GET"))
        .and(path("/user/repos"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([repo])))
        .mount(&gh)
        .await;
    gh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let stack = Stack::start(Lifetimes::default()).await;
    let gh = fake_github().await;
    let gh_uri = gh.uri();
    let app = spawn_app_env(
        &env_with(
            &stack,
            &[
                ("GITHUB_API_URL", &gh_uri),
                ("AUTH_LOGIN_RATE_PER_IP", "100000"),
                ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "100000"),
                ("AUTH_LOGIN_RATE_PER_USERNAME", "100000"),
                ("AUTH_REGISTER_RATE_PER_IP", "100000"),
                ("GITHUB_CONFIGURE_RATE_PER_USER", "100000"),
                ("AUTH_LOGIN_MIN_DURATION", "0s"),
                ("AUTH_HASH_CONCURRENCY", "2"),
                ("ACCESS_LOG", "off"),
            ],
        ),
        |_| axum::Router::new(),
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let bearer = crate::common::access_token(&app, "contract").await;

    let report = tempfile::tempdir().unwrap();
    let url = app.url("/openapi.json");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis())
            .args(["run", &url])
            .args(["--header", &format!("Authorization: Bearer {bearer}")])
            // Every check but one: `positive_data_acceptance` expects any
            // schema-valid body to be accepted, but the password policy
            // (not a common password, not the username) and uniqueness
            // cannot be expressed in a schema.
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
            ])
            .args(["--max-examples", "25", "--seed", "20261126"])
            .args(["--request-timeout", "10", "--suppress-health-check", "all"])
            .arg("--report-dir")
            .arg(report.path())
            .args(["--report", "junit"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
    drop(stack);
}
