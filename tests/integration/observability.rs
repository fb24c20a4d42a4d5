//! What an operator sees of one full flow, captured for real: the spans
//! exported over OTLP to a receiver this test runs (joined to the caller's
//! `traceparent`), the trace context GitHub and OpenBao receive, the trace
//! id on the log lines, and no secret and no ERROR line in the logs.
//!
//! One test in this binary: it installs the process's subscriber.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::{
    LogCapture, TEST_PASSWORD, eventually, post_json, spawn_app_env,
    stack::{Lifetimes, Stack, env_with, wait_ready},
};
use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use precinct::{
    config::{AccessLog, OtlpConfig},
    db::Trigger,
};
use prost::Message;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const GITHUB_TOKEN: &str = "ghp_ObservabilityTestToken000000000000000";

/// A span as the receiver got it (ids in hex).
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
}

/// An OTLP/HTTP traces receiver: decodes each export into spans.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    async fn export(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
        let mut spans = spans.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                for s in scope.spans {
                    spans.push(Received {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        kind: s.kind,
                    });
                }
            }
        }
        vec![] // an empty ExportTraceServiceResponse
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn fake_github() -> MockServer {
    let gh = MockServer::start().await;
    let ok = |body: Value| {
        ResponseTemplate::new(200)
            .set_body_json(body)
            .insert_header("x-oauth-scopes", "repo, read:user")
            .insert_header("x-ratelimit-limit", "5000")
            .insert_header("x-ratelimit-remaining", "4998")
            .insert_header("x-ratelimit-reset", "1893456000")
    };
    Mock::given(matchers::path("/user"))
        .respond_with(ok(json!({"login": "octocat", "id": 1, "type": "User"})))
        .mount(&gh)
        .await;
    Mock::given(matchers::path("/user/repos"))
        .respond_with(ok(
            json!([{"id": 1296269, "name": "Hello-World", "full_name": "octocat/Hello-World",
            "private": false, "owner": {"login": "octocat", "id": 1, "type": "User"}}]),
        ))
        .mount(&gh)
        .await;
    gh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_is_traced_end_to_end_and_its_logs_hold_no_secret_and_no_error() {
    let (otlp_url, spans) = otlp_receiver().await;
    // As production logs, at debug: the scan below sees more than it would.
    let logs = LogCapture::install(
        "debug",
        AccessLog::All,
        Some(OtlpConfig {
            traces_endpoint: otlp_url,
            service_name: "precinct-test".into(),
            timeout: Duration::from_secs(5),
        }),
    );
    assert!(precinct::trace::exporting(), "the OTLP layer is installed");

    let stack = Stack::start(Lifetimes::default()).await;
    // OpenBao's audit log records the trace context it receives.
    let r = stack
        .bao_root(
            reqwest::Method::POST,
            "sys/config/auditing/request-headers/traceparent",
            json!({"hmac": false}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let gh = fake_github().await;
    let app = spawn_app_env(&env_with(&stack, &[("GITHUB_API_URL", &gh.uri())]), |_| {
        Router::new()
    })
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let mut secrets: Vec<String> = vec![TEST_PASSWORD.into(), GITHUB_TOKEN.into()];
    secrets.extend((app.secrets)());

    // The flow: register, login, GitHub not yet configured (a KV 404),
    // configure, a traced repos call, refresh, a reused refresh, logout, a
    // wrong password, a rotation.
    crate::common::register(&app, "octavia").await;
    let login = post_json(
        &app,
        "/api/v1/auth/login",
        json!({"username": "octavia", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(login.status(), 200);
    let tokens: Value = login.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    secrets.extend([access.clone(), refresh.clone()]);
    let unconfigured = app.get_authorized("/api/v1/github/repos", &access).await;
    assert!(
        unconfigured.status().is_client_error(),
        "{}",
        unconfigured.status()
    );
    let configured = app
        .client
        .post(app.url("/api/v1/github/configure"))
        .bearer_auth(&access)
        .json(&json!({"github_token": GITHUB_TOKEN}))
        .send()
        .await
        .unwrap();
    assert!(
        configured.status().is_success(),
        "{}",
        configured.text().await.unwrap()
    );
    let traced = app
        .client
        .get(app.url("/api/v1/github/repos"))
        .bearer_auth(&access)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    let refreshed: Value = post_json(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await
    .json()
    .await
    .unwrap();
    let second_refresh = refreshed["refresh_token"].as_str().unwrap().to_string();
    secrets.extend([
        refreshed["access_token"].as_str().unwrap().to_string(),
        second_refresh.clone(),
    ]);
    let reused = post_json(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(reused.status(), 401);
    let wrong = post_json(
        &app,
        "/api/v1/auth/login",
        json!({"username": "octavia", "password": "not the password at all"}),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let db = app.db.clone().unwrap();
    db.request_rotation(Trigger::Signal);
    eventually(Duration::from_secs(15), "the second generation", || {
        let db = db.clone();
        async move { db.generation().is_some_and(|g| g.id == 2) }
    })
    .await;
    secrets.extend((app.secrets)());

    // GitHub got our client span as the parent, in the caller's trace.
    let repos_call = gh
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/user/repos")
        .expect("GitHub was called");
    let traceparent = repos_call
        .headers
        .get("traceparent")
        .expect("traceparent sent to GitHub")
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], CALLER_TRACE, "GitHub sees the caller's trace");
    assert_ne!(parts[2], CALLER_SPAN, "with our span as its parent");
    let github_span_id = parts[2].to_string();

    // OpenBao's audit log recorded the same trace on the KV read.
    let audit = std::fs::read_to_string(stack.audit_log()).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("traceparent") && l.contains(CALLER_TRACE) && l.contains("kv")),
        "no OpenBao request carried the caller's trace"
    );

    // The spans arrive at the receiver with the right parents.
    tokio::task::spawn_blocking(precinct::telemetry::flush)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the traced spans exported", || {
        let spans = spans.clone();
        async move {
            spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == CALLER_TRACE)
                .count()
                >= 3
        }
    })
    .await;
    let spans = spans.lock().unwrap().clone();
    let in_trace: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .collect();
    let span_named = |name: &str| -> &Received {
        in_trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name:?}: {in_trace:#?}"))
    };
    let server = span_named("GET /api/v1/github/repos");
    assert_eq!(
        server.parent, CALLER_SPAN,
        "the server span's parent is the caller's"
    );
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    let github = span_named("GET /user/repos");
    assert_eq!(github.parent, server.span_id);
    assert_eq!(
        github.span_id, github_span_id,
        "the span GitHub was told about"
    );
    assert_eq!(github.kind, 3, "SPAN_KIND_CLIENT");
    let kv = span_named("KV read");
    assert_eq!(kv.parent, server.span_id);
    let other_traces = spans.iter().filter(|s| s.trace_id != CALLER_TRACE).count();
    println!(
        "OTLP: {} spans received, {} in the caller's trace ({}), {other_traces} in other traces",
        spans.len(),
        in_trace.len(),
        in_trace
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    app.stop().await;

    // The logs: every line of a request carries its trace id; the traced
    // request's lines carry the caller's.
    let text = logs.text();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"].is_string())
        .collect();
    assert!(
        of_requests.len() >= 10,
        "{} request lines",
        of_requests.len()
    );
    for line in &of_requests {
        let id = line["span"]["trace_id"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 32, "a request line without a trace id: {line}");
    }
    assert!(
        of_requests
            .iter()
            .any(|l| l["span"]["trace_id"] == CALLER_TRACE && l["message"] == "request completed"),
        "the traced request's access line carries the caller's trace id"
    );

    // No secret anywhere in the logs, and no ERROR for any of it.
    secrets.retain(|s| s.len() >= 8);
    assert!(secrets.len() >= 10, "{} secrets collected", secrets.len());
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .collect();
    assert!(leaked.is_empty(), "{} secrets in the logs", leaked.len());
    assert!(!text.contains("eyJhbGciOi"), "a JWT in the logs");
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(
        errors.is_empty(),
        "ERROR lines for a normal flow: {errors:#?}"
    );
    println!(
        "logs: {} lines ({} KB) at debug scanned for {} secrets: none found, no ERROR line",
        lines.len(),
        text.len() / 1024,
        secrets.len()
    );
}
