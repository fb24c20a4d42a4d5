//! The internal API over mutual TLS, against independent clients: Python's
//! `ssl` (OpenSSL) with SVIDs fetched by py-spiffe, and curl; and precinct's
//! own client (`precinct internal-check`). The dev agent hands out several
//! identities from one CA, one socket each, as SPIRE does per workload.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
// Async: the dev agent and the app run on this test's runtime, and a
// blocking wait for a child would starve them.
use tokio::process::Command;

use crate::common::{
    TEST_PASSWORD, TestApp, access_token, spawn_app_env,
    stack::{Lifetimes, Stack, env_with, wait_ready},
};

const CLIENT: &str = "spiffe://demo.local/ns/99-apps/sa/client";
const WORKER: &str = "spiffe://demo.local/ns/apps/sa/worker";
const STRANGER: &str = "spiffe://demo.local/ns/99-apps/sa/stranger";
const EVIL_SIBLING: &str = "spiffe://demo.local/ns/apps-evil/sa/worker";
const ALLOWED: &str = "spiffe://demo.local/ns/99-apps/sa/client, spiffe://demo.local/ns/apps/";

fn python() -> PathBuf {
    std::env::var("PRECINCT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".dev/venv/bin/python"))
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mtls_client.py")
}

/// The socket of `id` in the stack's directory.
fn socket(dir: &Path, id: &str) -> PathBuf {
    let path = id
        .trim_start_matches("spiffe://demo.local/ns/")
        .replace('/', "-");
    dir.join(format!("{path}.sock"))
}

/// A stack whose agent also hands out the test clients' identities, and an
/// app with the internal API on a free port.
async fn start(
    x509_ttl: Option<Duration>,
    extra: &[(&str, &str)],
) -> (Stack, TestApp, std::net::SocketAddr) {
    let stack = Stack::start_with_agent(Lifetimes::default(), |c| {
        let dir = c.socket.parent().unwrap().to_path_buf();
        for id in [CLIENT, WORKER, STRANGER, EVIL_SIBLING] {
            c.workloads.push((id.to_string(), socket(&dir, id)));
        }
        if let Some(ttl) = x509_ttl {
            c.x509_ttl = ttl;
        }
    })
    .await;
    let mut env = env_with(
        &stack,
        &[
            ("INTERNAL_ADDR", "127.0.0.1:0"),
            ("INTERNAL_ALLOWED_SPIFFE_IDS", ALLOWED),
            ("INTERNAL_HANDSHAKE_TIMEOUT", "1s"),
        ],
    );
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    let app = spawn_app_env(&env, |_| axum::Router::new()).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let addr = app.internal_addr.expect("the internal API listens");
    (stack, app, addr)
}

/// PEM files of `id`'s X.509-SVID, fetched by py-spiffe from its socket.
struct Pem {
    dir: tempfile::TempDir,
}

impl Pem {
    async fn fetch(stack: &Stack, id: &str) -> Pem {
        let (pem, fetched) = Pem::from_socket(&socket(stack.dir.path(), id)).await;
        assert_eq!(fetched, id);
        pem
    }

    /// The SVID a Workload API socket hands out (py-spiffe), and its ID.
    async fn from_socket(socket: &std::path::Path) -> (Pem, String) {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(python())
            .arg(script())
            .args(["svid", socket.to_str().unwrap()])
            .arg(dir.path())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (Pem { dir }, id)
    }

    /// Files signed by the agent's CA as `spec` says (what no agent issues).
    fn issued(stack: &Stack, spec: &precinct::devagent::LeafSpec) -> Pem {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = stack.agent().issue_for_tests(spec).unwrap();
        std::fs::write(dir.path().join("svid.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        std::fs::write(dir.path().join("bundle.pem"), stack.agent().bundle_pem()).unwrap();
        Pem { dir }
    }

    /// A valid-looking SVID for `id` from another agent's CA.
    fn issued_by(agent: &precinct::devagent::DevAgent, id: &str) -> Pem {
        let now = time::OffsetDateTime::now_utc();
        let spec = precinct::devagent::LeafSpec {
            uris: vec![id.to_string()],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::hours(1),
            ca: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = agent.issue_for_tests(&spec).unwrap();
        std::fs::write(dir.path().join("svid.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        Pem { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// One request over a new connection from Python's `ssl`.
async fn python_call(
    pem: Option<&Pem>,
    bundle: &str,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Value {
    let (cert, key) = pem.map_or((String::new(), String::new()), |p| {
        (p.path("svid.pem"), p.path("key.pem"))
    });
    let mut cmd = Command::new(python());
    cmd.arg(script()).args([
        "call",
        &cert,
        &key,
        bundle,
        &addr.ip().to_string(),
        &addr.port().to_string(),
        method,
        path,
    ]);
    if let Some(body) = body {
        cmd.arg(body);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn bundle(stack: &Stack, dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("bundle.pem");
    std::fs::write(&path, stack.agent().bundle_pem()).unwrap();
    path.display().to_string()
}

/// curl with a client certificate, verifying the server's chain against
/// the bundle and its name (`localhost`, a DNS SAN of the SVID beside its
/// SPIFFE ID, as a SPIRE entry's dnsNames put it there).
/// Python's `ssl` and curl, each presenting `pem`, are both refused at
/// the handshake.
async fn refused_by_both_clients(
    pem: &Pem,
    bundle: &str,
    addr: std::net::SocketAddr,
    token: &str,
    what: &str,
) {
    let form = format!("token={token}");
    let r = python_call(
        Some(pem),
        bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some(&form),
    )
    .await;
    assert!(r.get("error").is_some(), "{what} must be refused: {r}");
    let (ok, out) = curl(pem, bundle, addr, token).await;
    assert!(!ok, "curl with {what}: {out}");
}

async fn curl(pem: &Pem, bundle: &str, addr: std::net::SocketAddr, token: &str) -> (bool, String) {
    let port = addr.port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", bundle, "--cert"])
        .arg(pem.path("svid.pem"))
        .arg("--key")
        .arg(pem.path("key.pem"))
        .args(["--resolve", &format!("localhost:{port}:{}", addr.ip())])
        .args(["--data-urlencode", &format!("token={token}")])
        .arg(format!("https://localhost:{port}/internal/v1/introspect"))
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn independent_clients_reach_introspect_with_an_allowed_id_and_are_refused_otherwise() {
    let (stack, app, addr) = start(None, &[]).await;
    let token = access_token(&app, "rosa_i").await;
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(&stack, &tmp);
    let form = format!("token={token}");

    // Python's ssl, with py-spiffe's SVIDs: an exact ID and a prefix.
    for id in [CLIENT, WORKER] {
        let pem = Pem::fetch(&stack, id).await;
        let r = python_call(
            Some(&pem),
            &bundle,
            addr,
            "POST",
            "/internal/v1/introspect",
            Some(&form),
        )
        .await;
        assert_eq!(r["status"], 200, "{id}: {r}");
        let body = &r["body"];
        assert_eq!(body["active"], true, "{r}");
        assert_eq!(body["username"], "rosa_i");
        for claim in ["sub", "exp", "iat", "jti", "sid", "iss", "aud"] {
            assert!(!body[claim].is_null(), "{claim} in {body}");
        }
        let sub = body["sub"].as_str().unwrap();
        let r = python_call(
            Some(&pem),
            &bundle,
            addr,
            "GET",
            &format!("/internal/v1/users/{sub}"),
            None,
        )
        .await;
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["body"]["username"], "rosa_i");
        assert!(r["body"].get("email").is_none(), "public profile only: {r}");
    }
    // curl with the same kind of files.
    let pem = Pem::fetch(&stack, CLIENT).await;
    let (ok, out) = curl(&pem, &bundle, addr, &token).await;
    assert!(ok, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["active"],
        true,
        "{out}"
    );
    // No session resumption: a second connection offering the first's
    // session gets a full handshake (its certificate verified again).
    let out = Command::new(python())
        .arg(script())
        .args([
            "resume",
            &pem.path("svid.pem"),
            &pem.path("key.pem"),
            &bundle,
        ])
        .args([addr.ip().to_string(), addr.port().to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        resumed,
        json!({"first": 200, "second": 200, "reused": false, "ticket_offered": false}),
        "no ticket is issued and nothing is resumed"
    );

    // Valid SVIDs of the trust domain whose IDs are not allowed, and one
    // from another trust domain's CA: refused at the handshake.
    for id in [STRANGER, EVIL_SIBLING] {
        let pem = Pem::fetch(&stack, id).await;
        refused_by_both_clients(&pem, &bundle, addr, &token, id).await;
    }
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = precinct::devagent::DevAgent::start({
        let mut c = precinct::devagent::DevAgentConfig::new(
            foreign_dir.path().join("evil.sock"),
            "evil.local",
            "spiffe://evil.local/ns/99-apps/sa/client",
            "127.0.0.1:0".parse().unwrap(),
        );
        c.workloads.clear();
        c
    })
    .await
    .unwrap();
    let (pem, _) = Pem::from_socket(foreign.socket()).await;
    refused_by_both_clients(&pem, &bundle, addr, &token, "another CA's SVID").await;
    foreign.shutdown().await;
    app.stop().await;
}

#[tokio::test]
async fn a_logged_out_session_is_inactive_on_introspect_within_a_second() {
    let (stack, app, addr) = start(None, &[]).await;
    crate::common::register(&app, "jake_i").await;
    let r = crate::common::post_json(
        &app,
        "/api/v1/auth/login",
        json!({"username": "jake_i", "password": TEST_PASSWORD}),
    )
    .await;
    let tokens: Value = r.json().await.unwrap();
    let (access, refresh) = (
        tokens["access_token"].as_str().unwrap(),
        tokens["refresh_token"].as_str().unwrap(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(&stack, &tmp);
    let pem = Pem::fetch(&stack, CLIENT).await;
    let form = format!("token={access}");
    let r = python_call(
        Some(&pem),
        &bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some(&form),
    )
    .await;
    assert_eq!(r["body"]["active"], true, "{r}");
    let out = crate::common::post_json(
        &app,
        "/api/v1/auth/logout",
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(out.status(), 204);
    let logged_out = Instant::now();
    let r = python_call(
        Some(&pem),
        &bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some(&form),
    )
    .await;
    let took = logged_out.elapsed();
    assert_eq!(r["body"], json!({"active": false}), "{r}");
    println!("introspect after logout: inactive, answered {took:?} after the logout");
    assert!(took < Duration::from_secs(1));
    // Anything else that is not an active token: the same bare answer.
    for garbage in ["", "not-a-jwt", "a.b.c", &"x".repeat(5000)] {
        let r = python_call(
            Some(&pem),
            &bundle,
            addr,
            "POST",
            "/internal/v1/introspect",
            Some(&format!("token={garbage}")),
        )
        .await;
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["body"], json!({"active": false}), "{garbage:?}: {r}");
    }
    let r = python_call(
        Some(&pem),
        &bundle,
        addr,
        "GET",
        "/internal/v1/users/not-a-uuid",
        None,
    )
    .await;
    assert_eq!(r["status"], 400, "{r}");
    assert_eq!(r["body"]["error"]["code"], "invalid_path");
    let r = python_call(
        Some(&pem),
        &bundle,
        addr,
        "GET",
        &format!("/internal/v1/users/{}", uuid::Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(r["status"], 404, "{r}");
    // Every call that reached a handler is audited with its caller: six
    // introspections and the lookup of an unknown user (the malformed
    // path is refused before any lookup, and only logged).
    // (Appended in batches, within FLUSH_EVERY of the call.)
    let mut admin = stack.admin().await;
    let mut callers: Vec<String> = vec![];
    for _ in 0..50 {
        callers = sqlx::query_scalar(
            "select detail->>'caller' from precinct.audit_log where event like 'internal_%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        if callers.len() >= 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let more: i64 =
        sqlx::query_scalar("select count(*) from precinct.audit_log where event like 'internal_%'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!((callers.len(), more), (7, 7), "{callers:?}");
    assert!(callers.iter().all(|c| c == CLIENT), "{callers:?}");
    app.stop().await;
}

/// What no conforming client presents, and what is not a client at all:
/// each refused at the handshake, logged, counted; the listener keeps
/// serving the allowed client.
#[tokio::test]
async fn hostile_certificates_and_connections_are_refused_at_the_handshake() {
    let (stack, app, addr) = start(None, &[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(&stack, &tmp);
    let now = time::OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);
    let spec = |uris: &[&str], from: time::OffsetDateTime, to: time::OffsetDateTime, ca: bool| {
        precinct::devagent::LeafSpec {
            uris: uris.iter().map(|u| u.to_string()).collect(),
            not_before: from,
            not_after: to,
            ca,
        }
    };
    let cases = [
        (
            "expired",
            spec(&[CLIENT], now - hour * 2, now - hour, false),
        ),
        (
            "not yet valid",
            spec(&[CLIENT], now + hour, now + hour * 2, false),
        ),
        (
            "two URI SANs",
            spec(&[CLIENT, WORKER], now - hour, now + hour, false),
        ),
        ("no URI SAN", spec(&[], now - hour, now + hour, false)),
        (
            "a CA presented as a leaf",
            spec(&[CLIENT], now - hour, now + hour, true),
        ),
    ];
    for (case, spec) in &cases {
        let pem = Pem::issued(&stack, spec);
        let r = python_call(
            Some(&pem),
            &bundle,
            addr,
            "POST",
            "/internal/v1/introspect",
            Some("token=x"),
        )
        .await;
        assert!(r.get("error").is_some(), "{case} must be refused: {r}");
    }
    // A CA of the attacker's own, minting our trust domain's IDs.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = precinct::devagent::DevAgent::start(precinct::devagent::DevAgentConfig::new(
        rogue_dir.path().join("rogue.sock"),
        "demo.local",
        CLIENT,
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap();
    let forged = Pem::issued_by(&rogue, CLIENT);
    let r = python_call(
        Some(&forged),
        &bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some("token=x"),
    )
    .await;
    assert!(
        r.get("error").is_some(),
        "a rogue CA's SVID must be refused: {r}"
    );
    rogue.shutdown().await;
    // No client certificate.
    let r = python_call(
        None,
        &bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some("token=x"),
    )
    .await;
    assert!(
        r.get("error").is_some(),
        "no certificate must be refused: {r}"
    );
    // Plain HTTP to the TLS port: an answer of no kind, quickly.
    let plain = crate::common::http()
        .get(format!("http://{addr}/internal/v1/users/x"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A stalled handshake (TCP, then nothing) is dropped at the timeout,
    // while others are served meanwhile.
    let stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Hundreds of handshakes at once, all bad: each is closed by the server
    // (the client waits for that, so each is surely counted).
    let burst: Vec<_> = (0..300)
        .map(|_| {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
                s.write_all(b"\x16\x03\x01\x00\x05hello").await.ok()?;
                let mut rest = Vec::new();
                let closed =
                    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
                Some(closed.is_ok())
            })
        })
        .collect();
    let good = Pem::fetch(&stack, CLIENT).await;
    let started = Instant::now();
    let r = python_call(
        Some(&good),
        &bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some("token=x"),
    )
    .await;
    assert_eq!(
        r["status"], 200,
        "the allowed client is served during all that: {r}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut closed = 0;
    for b in burst {
        closed += usize::from(b.await.unwrap() == Some(true));
    }
    assert_eq!(closed, 300, "every bad handshake is answered by a close");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut probe = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncReadExt;
        let mut stalled = stalled;
        stalled.read(&mut probe).await
    })
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the stalled handshake was dropped: {closed:?}"
    );
    let metrics = crate::common::http()
        .get(format!("http://{}/metrics", app.metrics_addr.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = |reason: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("precinct_internal_handshakes_refused_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let total: f64 = precinct::http::metrics::REFUSALS
        .iter()
        .map(|r| refused(r))
        .sum();
    let by_reason: Vec<String> = precinct::http::metrics::REFUSALS
        .iter()
        .map(|r| format!("{r} {}", refused(r)))
        .collect();
    println!("refused handshakes: {total} ({})", by_reason.join(", "));
    // Each refusal under its own name: the five certificates, the rogue
    // CA's, no certificate, plain HTTP and the burst, the stalled one.
    let expected = [
        ("certificate_expired_or_not_yet_valid", 2.0),
        ("not_one_spiffe_id", 2.0),
        ("not_a_leaf", 1.0),
        ("no_client_certificate", 1.0),
        ("not_tls", 301.0),
        ("handshake_timeout", 1.0),
        ("untrusted_issuer", 1.0),
    ];
    for (reason, count) in expected {
        assert_eq!(refused(reason), count, "{reason}");
    }
    assert_eq!(total, 309.0);
    app.stop().await;
}

/// The server's SVID rotates every 2 s (4 s TTL) while a client opens a
/// new connection per request; the client's own SVID rotates too. Every
/// connection succeeds, and those after a rotation see the new serial.
#[tokio::test]
async fn svid_rotations_apply_to_the_next_handshake_and_drop_no_connection() {
    let (stack, app, addr) = start(Some(Duration::from_secs(4)), &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(&stack, &tmp);
    let client_before = stack.agent().serial_of(CLIENT).unwrap();
    let stream = tokio::spawn({
        let sock = socket(stack.dir.path(), CLIENT);
        async move {
            Command::new(python())
                .arg(script())
                .args([
                    "stream",
                    sock.to_str().unwrap(),
                    &bundle,
                    &addr.ip().to_string(),
                    &addr.port().to_string(),
                    "7",
                ])
                .output()
                .await
                .unwrap()
        }
    });
    // What the agent handed the server, in order, while the stream ran.
    let mut issued: Vec<String> = Vec::new();
    while !stream.is_finished() {
        let serial = stack
            .agent()
            .current_serial()
            .trim_start_matches('0')
            .to_string();
        if issued.last() != Some(&serial) {
            issued.push(serial);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = stream.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("stream of new connections across rotations: {r}; the agent issued {issued:?}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["calls"].as_u64().unwrap() > 20, "{r}");
    let seen: Vec<String> = r["server_serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().trim_start_matches('0').to_string())
        .collect();
    assert!(
        seen.len() >= 3,
        "the server's certificate changed at least twice: {seen:?}"
    );
    // Each certificate the clients met is one the agent issued, in the
    // order it issued them: after a rotation, no connection saw the old one.
    let mut at = 0;
    for s in &seen {
        let found = issued[at..].iter().position(|i| i == s);
        assert!(
            found.is_some(),
            "{s} out of order or unknown: seen {seen:?}, issued {issued:?}"
        );
        at += found.unwrap();
    }
    assert_ne!(
        stack.agent().serial_of(CLIENT).unwrap(),
        client_before,
        "the client's SVID rotated too"
    );
    app.stop().await;
}

/// precinct's own client: `precinct internal-check` with the client
/// identity's socket, as the k8s/dev Job runs it.
#[tokio::test]
async fn precincts_own_client_introspects_with_its_svid() {
    let (stack, app, addr) = start(None, &[]).await;
    crate::common::register(&app, "charles_i").await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_precinct"))
        .arg("internal-check")
        .env_clear()
        .env("INTERNAL_URL", format!("https://{addr}"))
        .env("PUBLIC_URL", app.url(""))
        .env("SERVER_SPIFFE_ID", crate::common::SPIFFE_ID)
        .env("CHECK_USERNAME", "charles_i")
        .env("CHECK_PASSWORD", TEST_PASSWORD)
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket(stack.dir.path(), CLIENT).display()),
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["client"], CLIENT);
    assert_eq!(line["introspection"]["active"], true);
    // Expecting another server ID: the client refuses precinct.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_precinct"))
        .arg("internal-check")
        .env_clear()
        .env("INTERNAL_URL", format!("https://{addr}"))
        .env("PUBLIC_URL", app.url(""))
        .env(
            "SERVER_SPIFFE_ID",
            "spiffe://demo.local/ns/99-apps/sa/impostor",
        )
        .env("CHECK_USERNAME", "charles_i")
        .env("CHECK_PASSWORD", TEST_PASSWORD)
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket(stack.dir.path(), CLIENT).display()),
        )
        .output()
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "the client checks the server's SPIFFE ID"
    );
    app.stop().await;
}

#[tokio::test]
async fn each_caller_is_rate_limited_with_the_json_error_shape() {
    let (stack, app, addr) = start(None, &[("INTERNAL_RATE_PER_CALLER", "3")]).await;
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(&stack, &tmp);
    let pem = Pem::fetch(&stack, CLIENT).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = python_call(
            Some(&pem),
            &bundle,
            addr,
            "POST",
            "/internal/v1/introspect",
            Some("token=x"),
        )
        .await;
        statuses.push(r["status"].as_u64().unwrap());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "{statuses:?}");
    let r = python_call(
        Some(&pem),
        &bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some("token=x"),
    )
    .await;
    assert_eq!(r["body"]["error"]["code"], "rate_limited", "{r}");
    // Another caller has its own budget.
    let other = Pem::fetch(&stack, WORKER).await;
    let r = python_call(
        Some(&other),
        &bundle,
        addr,
        "POST",
        "/internal/v1/introspect",
        Some("token=x"),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    app.stop().await;
}
