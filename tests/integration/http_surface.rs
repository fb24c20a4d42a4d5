//! The HTTP surface every later feature builds on: probes, docs, error shape,
//! middleware and graceful shutdown.

use std::time::{Duration, Instant};

use crate::common::{spawn_app, spawn_app_with_routes};
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn root_names_the_service_and_links_docs() {
    let app = spawn_app(&[]).await;
    let body: Value = crate::common::get_json(&app.client, app.url("/")).await;
    assert_eq!(body["name"], "precinct");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["links"]["docs"], "/docs");
    assert_eq!(body["links"]["health"], "/api/v1/health");
}

#[tokio::test]
async fn liveness_is_ok_even_when_dependencies_are_not() {
    let app = spawn_app(&[]).await;
    let _db = app.readiness.register("database", "connecting");
    let res = app
        .client
        .get(app.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
/// The public body says which dependency is not ready, never why: reasons
/// hold role names, OpenBao messages and socket paths. They go to the logs
/// (and `Readiness::report` in process).
async fn readiness_is_503_per_dependency_until_every_dependency_is_ready_and_keeps_reasons_private()
{
    let app = spawn_app(&[]).await;
    let identity = app
        .readiness
        .register("identity", "waiting for the Workload API");
    let openbao = app.readiness.register("openbao", "token expired");
    identity.set_ready();

    let res = app
        .client
        .get(app.url("/api/v1/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["identity"]["status"], "ready");
    assert_eq!(body["checks"]["openbao"]["status"], "not_ready");
    assert!(
        !body.to_string().contains("token expired"),
        "no reason in the public body: {body}"
    );
    assert_eq!(
        app.readiness.report().checks["openbao"].reason.as_deref(),
        Some("token expired")
    );

    openbao.set_ready();
    let res = app
        .client
        .get(app.url("/api/v1/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn docs_serve_swagger_ui_and_its_assets_offline() {
    let app = spawn_app(&[]).await;
    let res = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let res = app
            .client
            .get(app.url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
        assert!(!res.bytes().await.unwrap().is_empty(), "{asset}");
    }
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        init.contains("/openapi.json"),
        "initializer points at our spec"
    );
    // /docs without the slash reaches the same page.
    let res = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn openapi_is_3_1_and_documents_every_route_and_the_error_shape() {
    let app = spawn_app(&[]).await;
    let spec: Value = crate::common::get_json(&app.client, app.url("/openapi.json")).await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/", "get"),
        ("/api/v1/health", "get"),
        ("/api/v1/health/ready", "get"),
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/me", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/api/v1/github/configure", "post"),
        ("/api/v1/github/configure", "delete"),
        ("/api/v1/github/repos", "get"),
        ("/api/v1/github/user", "get"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    // /me needs the bearer scheme, so "Authorize" in /docs applies to it.
    assert_eq!(
        spec["paths"]["/api/v1/auth/me"]["get"]["security"][0]["bearer_auth"],
        serde_json::json!([])
    );
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer_auth"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn unknown_route_answers_json_404_with_the_request_id() {
    let app = spawn_app(&[]).await;
    let res = app
        .client
        .get(app.url("/no/such/route"))
        .header("x-request-id", "test-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-request-id"], "test-req-1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "test-req-1");
}

#[tokio::test]
async fn a_request_id_is_minted_when_absent() {
    let app = spawn_app(&[]).await;
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    let header = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], header.as_str());
    assert_eq!(header.len(), 36, "a UUID");
}

#[tokio::test]
async fn wrong_method_answers_json_405_with_allow() {
    let app = spawn_app(&[]).await;
    let res = app
        .client
        .delete(app.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(res.headers().contains_key("allow"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn oversized_body_answers_json_413() {
    let app = spawn_app(&[("HTTP_BODY_LIMIT_BYTES", "1024")]).await;
    let res = app
        .client
        .post(app.url("/api/v1/health"))
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

/// Sends `head` and `body` on `stream`, reads one response: its status
/// line and headers (lowercased) and whether the server closed afterwards.
async fn raw_exchange(
    stream: &mut tokio::net::TcpStream,
    head: &str,
    body: &[u8],
) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        if seen.len() >= end + 4 + length {
            return (
                text[..end].to_string(),
                text[..end].contains("connection: close"),
            );
        }
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_its_413_and_the_connection_stays_usable() {
    let app = spawn_app(&[("HTTP_BODY_LIMIT_BYTES", "1024")]).await;
    // One keep-alive client, bodies just over and far over the limit, many
    // times: a 413 every time, never a reset while the client still writes.
    for round in 0..20 {
        for size in [1025, 70_000, 900_000] {
            let res = app
                .client
                .post(app.url("/api/v1/auth/login"))
                .header("content-type", "application/json")
                .body(vec![b' '; size])
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}, {size} bytes: {e:?}"));
            assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{size} bytes");
            assert!(res.headers().get("connection").is_none(), "{size} bytes");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "payload_too_large");
        }
    }

    // A chunked body (no length announced) is counted as it arrives; the
    // same connection then serves the next request.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
    let body = format!("{}0\r\n\r\n", chunk.repeat(4));
    let (head, closed) = raw_exchange(
        &mut stream,
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n",
        body.as_bytes(),
    )
    .await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(!closed, "{head}");
    let (head, _) = raw_exchange(
        &mut stream,
        "GET /api/v1/health HTTP/1.1\r\nhost: t\r\n\r\n",
        b"",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // A body announced too big to drain is refused before it is sent, and
    // the response says the connection closes.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (head, closed) = raw_exchange(
        &mut stream,
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         content-length: 10485760\r\n\r\n",
        b"",
    )
    .await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(closed, "{head}");

    // A body within the limit still reaches the handler whole.
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"username\": \"a\", \"password\": \"{}\"}}",
            "x".repeat(900)
        ))
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(res.status().as_u16() < 500, "{}", res.status());
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = spawn_app(&[]).await;
    let res = app
        .client
        .get(app.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    let h = res.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h.contains_key("content-security-policy"));
    assert!(
        !h.contains_key("strict-transport-security"),
        "no HSTS in development"
    );
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = spawn_app(&[("CORS_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/health"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_panicking_handler_answers_json_500() {
    let routes = axum::Router::new().route(
        "/test/panic",
        get(|| async {
            panic!("boom");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let app = spawn_app_with_routes(&[], |_| routes).await;
    let res = app.client.get(app.url("/test/panic")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal_error");
    assert!(
        !body.to_string().contains("boom"),
        "panic text stays in the logs"
    );
}

#[tokio::test]
async fn a_request_over_the_timeout_is_cut_with_json_503() {
    let routes = axum::Router::new().route(
        "/test/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let app = spawn_app_with_routes(&[("HTTP_REQUEST_TIMEOUT", "300ms")], |_| routes).await;
    let res = app.client.get(app.url("/test/slow")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
}

#[tokio::test]
async fn shutdown_turns_readiness_503_and_lets_in_flight_requests_finish() {
    let routes = axum::Router::new().route(
        "/test/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "finished"
        }),
    );
    let app = spawn_app_with_routes(
        &[("SHUTDOWN_DELAY", "1s"), ("SHUTDOWN_DRAIN_TIMEOUT", "10s")],
        |_| routes,
    )
    .await;
    let slow = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/test/slow");
        async move { client.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // During the delay the listener still serves, and readiness says no.
    let ready = app
        .client
        .get(app.url("/api/v1/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["reason"], "shutting down");

    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    assert_eq!(slow.text().await.unwrap(), "finished");
    app.handle.await.unwrap().expect("clean exit");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn drain_is_bounded_by_the_drain_timeout() {
    let routes = axum::Router::new().route(
        "/test/stuck",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "never"
        }),
    );
    let app = spawn_app_with_routes(
        &[
            ("SHUTDOWN_DRAIN_TIMEOUT", "500ms"),
            ("HTTP_REQUEST_TIMEOUT", "120s"),
        ],
        |_| routes,
    )
    .await;
    let stuck = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/test/stuck");
        async move { client.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.shutdown.cancel();
    // The application returns (and the process would exit) once the bound
    // passes, without waiting for the stuck request.
    app.handle
        .await
        .unwrap()
        .expect("exits cleanly after the bound");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!stuck.is_finished(), "the stuck request was not waited for");
    stuck.abort();
}
