//! Dynamic credentials and the rotating pool, against real OpenBao and
//! PostgreSQL: short TTLs and intervals of seconds.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::common::{
    TestApp, eventually, spawn_app_env,
    stack::{Lifetimes, Stack, db_route, env_with, wait_ready},
};
use serde_json::{Value, json};

async fn generation(app: &TestApp) -> u64 {
    app.db
        .as_ref()
        .unwrap()
        .generation()
        .map(|g| g.id)
        .unwrap_or(0)
}

/// Concurrent clients hitting /test/db until stopped; counts outcomes.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(app: &TestApp, clients: usize) -> Load {
        let (ok, failed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let tasks = (0..clients)
            .map(|_| {
                let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
                let (client, url) = (app.client.clone(), app.url("/test/db"));
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!(
                                    "{}: {}",
                                    r.status(),
                                    r.text().await.unwrap_or_default()
                                ));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(e.to_string());
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_loses_no_request_and_leaves_no_old_role_behind() {
    let stack = Stack::start(Lifetimes::default()).await;
    let app = spawn_app_env(
        &env_with(
            &stack,
            &[
                ("DB_ROTATION_INTERVAL", "2s"),
                ("DB_DRAIN_TIMEOUT", "1500ms"),
            ],
        ),
        db_route,
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let first = generation(&app).await;

    let load = Load::start(&app, 8);
    let mut roles = BTreeSet::new();
    eventually(
        Duration::from_secs(40),
        "three rotations under load",
        || {
            if let Some(g) = app.db.as_ref().unwrap().generation() {
                roles.insert(g.username);
            }
            let current = app
                .db
                .as_ref()
                .unwrap()
                .generation()
                .map(|g| g.id)
                .unwrap_or(0);
            async move { current >= first + 3 }
        },
    )
    .await;
    let (ok, failed, errors) = load.finish().await;
    assert_eq!(
        failed,
        0,
        "failed requests during rotation: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "the load was real: {ok} requests");

    assert!(roles.len() >= 3, "{roles:?}");

    // Every retired generation's role is gone, with no session left behind;
    // a clean shutdown retires the last one too.
    app.stop().await;
    let mut admin = stack.admin().await;
    for role in &roles {
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_roles where rolname = $1)")
                .bind(role)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert!(!exists, "old role {role} still exists");
        let sessions: i64 =
            sqlx::query_scalar("select count(*) from pg_stat_activity where usename = $1")
                .bind(role)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert_eq!(sessions, 0, "old role {role} still has sessions");
    }
}

#[tokio::test]
async fn the_runtime_role_has_dml_only_and_the_schema_belongs_to_the_stable_owner() {
    let stack = Stack::start(Lifetimes::default()).await;
    let app = spawn_app_env(&stack.app_env(), db_route).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let pool = app.db.as_ref().unwrap().pool().await.unwrap();
    for ddl in [
        "create table precinct.intruder (id int)",
        "create table public.intruder (id int)",
        "drop table precinct.users",
        "alter table precinct.users add column x int",
    ] {
        let err = sqlx::query(ddl).execute(&*pool).await.expect_err(ddl);
        assert!(
            err.to_string().contains("permission denied")
                || err.to_string().contains("must be owner"),
            "{ddl}: {err}"
        );
    }
    // DML works where it is granted (an audit row), and only there: users
    // are created by register_user, never inserted directly
    // (tests/integration/data_layer.rs has every refusal).
    sqlx::query("insert into audit_log (event, outcome) values ('dml_check', 'appended')")
        .execute(&*pool)
        .await
        .unwrap();
    let err = sqlx::query("insert into users (id, username, email, password_hash) values ($1, 'dml_check', 'dml@example.com', 'x')")
        .bind(uuid::Uuid::new_v4())
        .execute(&*pool)
        .await
        .expect_err("no direct insert into users");
    assert!(err.to_string().contains("permission denied"), "{err}");
    let mut admin = stack.admin().await;
    let owners: Vec<String> = sqlx::query_scalar(
        "select distinct tableowner::text from pg_tables where schemaname = 'precinct'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(owners, vec!["precinct_owner".to_string()]);
    app.stop().await;
}

#[tokio::test]
async fn an_externally_revoked_lease_triggers_an_immediate_rotation() {
    let stack = Stack::start(Lifetimes::default()).await;
    let app = spawn_app_env(
        &env_with(&stack, &[("DB_ROTATION_INTERVAL", "10m")]),
        db_route,
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let before = app.db.as_ref().unwrap().generation().unwrap();
    let lease_id = {
        // The lease id is not exposed; find it as an operator would.
        let r = stack
            .bao_root(
                reqwest::Method::from_bytes(b"LIST").unwrap(),
                "sys/leases/lookup/database/creds/precinct-runtime/",
                json!({}),
            )
            .await
            .json::<Value>()
            .await
            .unwrap();
        let keys = r["data"]["keys"].as_array().unwrap().clone();
        assert_eq!(keys.len(), 1, "one runtime lease: {keys:?}");
        format!(
            "database/creds/precinct-runtime/{}",
            keys[0].as_str().unwrap()
        )
    };
    let r = stack
        .bao_root(
            reqwest::Method::PUT,
            "sys/leases/revoke",
            json!({"lease_id": lease_id}),
        )
        .await;
    assert!(
        r.status().is_success(),
        "{}: {}",
        r.status(),
        r.text().await.unwrap()
    );

    eventually(
        Duration::from_secs(10),
        "a new generation after revocation",
        || {
            let id = app
                .db
                .as_ref()
                .unwrap()
                .generation()
                .map(|g| g.id)
                .unwrap_or(0);
            async move { id > before.id }
        },
    )
    .await;
    let res = app.client.get(app.url("/test/db")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_ne!(body["who"], before.username.as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_outage_keeps_serving_then_readiness_follows_the_lease_margin_and_rotation_recovers()
 {
    let mut stack = Stack::start(Lifetimes {
        lease_ttl: "16s",
        ..Default::default()
    })
    .await;
    let app = spawn_app_env(
        &env_with(
            &stack,
            &[
                ("DB_ROTATION_INTERVAL", "3s"),
                ("DB_LEASE_SAFETY_MARGIN", "8s"),
                ("DB_DRAIN_TIMEOUT", "1s"),
            ],
        ),
        db_route,
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let before = app.db.as_ref().unwrap().generation().unwrap();
    stack.stop_bao();

    // OpenBao is gone: requests keep succeeding on the current generation.
    for _ in 0..10 {
        let r = app.client.get(app.url("/test/db")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the lease has less than the margin left, readiness says why.
    let url = app.url("/api/v1/health/ready");
    eventually(
        Duration::from_secs(20),
        "readiness 503 under the margin",
        || {
            let (c, u) = (app.client.clone(), url.clone());
            async move { c.get(u).send().await.unwrap().status() == 503 }
        },
    )
    .await;
    let reason = app.readiness.report().checks["database"]
        .reason
        .clone()
        .unwrap_or_default();
    assert!(reason.contains("lease expires"), "{reason}");
    // Still serving while unready.
    assert_eq!(app.status("/test/db").await, 200);

    // OpenBao returns (dev mode: empty, so configure it again): rotation
    // resumes without a restart.
    stack.start_bao().await;
    stack.configure_bao().await.unwrap();
    wait_ready(&app, Duration::from_secs(40)).await;
    let after = app.db.as_ref().unwrap().generation().unwrap();
    assert!(after.id > before.id);
    assert_eq!(app.status("/test/db").await, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_renewed_and_replaced_across_a_max_ttl_shorter_than_the_test() {
    let stack = Stack::start(Lifetimes {
        token_ttl: "3s",
        token_max_ttl: "6s",
        lease_ttl: "60s",
        lease_max_ttl: "10m",
    })
    .await;
    let app = spawn_app_env(
        &env_with(
            &stack,
            &[("DB_ROTATION_INTERVAL", "10m"), ("DB_DRAIN_TIMEOUT", "1s")],
        ),
        db_route,
    )
    .await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let first = generation(&app).await;
    let load = Load::start(&app, 4);
    // 15s is 2.5 max TTLs: without renewal and re-login, the token (and
    // with it the lease and the role) would be gone.
    let url = app.url("/api/v1/health/ready");
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let r = app.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (ok, failed, errors) = load.finish().await;
    assert_eq!(failed, 0, "{:?}", &errors[..errors.len().min(5)]);
    assert!(ok > 50);
    assert!(
        generation(&app).await >= first + 2,
        "generations replaced before their token's max TTL"
    );
    app.stop().await;
}

#[tokio::test]
async fn openbao_refuses_a_wrong_spiffe_id_or_audience() {
    let stack = Stack::start(Lifetimes::default()).await;
    let bao_config = {
        let env = stack.app_env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        crate::common::test_config(&pairs).backends.unwrap().bao
    };
    // An agent handing out another identity, trusted by nobody.
    let dir = tempfile::tempdir().unwrap();
    let impostor = crate::common::start_agent(dir.path(), |c| {
        c.spiffe_id = "spiffe://demo.local/ns/99-apps/sa/impostor".into();
    })
    .await;
    let mut id_config = crate::common::identity_config(&impostor.endpoint());
    id_config.expected_id = None;
    let identity = precinct::identity::Identity::connect(&id_config)
        .await
        .unwrap();
    let err = precinct::bao::BaoClient::login(&bao_config, &identity)
        .await
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(
        message.contains("backend-role") && message.contains("sa/impostor"),
        "{message}"
    );

    // The right identity with the wrong audience.
    let identity = precinct::identity::Identity::connect(&crate::common::identity_config(
        &stack.agent().endpoint(),
    ))
    .await
    .unwrap();
    let mut wrong_aud = bao_config.clone();
    wrong_aud.jwt_audience = vec!["not-openbao".into()];
    let err = precinct::bao::BaoClient::login(&wrong_aud, &identity)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, precinct::bao::BaoError::LoginDenied { .. }),
        "{err}"
    );
    // And the right one gets in.
    assert!(
        precinct::bao::BaoClient::login(&bao_config, &identity)
            .await
            .is_ok()
    );
    impostor.shutdown().await;
}

#[tokio::test]
async fn the_openbao_configuration_is_idempotent() {
    let stack = Stack::start(Lifetimes::default()).await;
    let again = stack.configure_bao().await.expect("a second run succeeds");
    assert!(again.contains("OpenBao configured"));
    let role = stack
        .bao_root(
            reqwest::Method::GET,
            "auth/jwt/role/backend-role",
            json!(null),
        )
        .await;
    let role: Value = role.json().await.unwrap();
    assert_eq!(role["data"]["bound_subject"], crate::common::SPIFFE_ID);
    assert_eq!(role["data"]["bound_audiences"], json!(["openbao"]));
    // Transit rotates the signing key by itself (precinct pre-publishes).
    let key: Value = stack
        .bao_root(
            reqwest::Method::GET,
            "transit/keys/precinct-access-token",
            json!(null),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(key["data"]["auto_rotate_period"], 720 * 3600);
    assert_eq!(key["data"]["latest_version"], 1, "a rerun adds no version");
}

/// Least privilege, asked of OpenBao itself: precinct's own tokens (the
/// session's and the generation's) reach the paths its policy names and
/// nothing beside them.
#[tokio::test]
async fn precincts_openbao_tokens_reach_only_the_paths_of_their_policy() {
    let (stack, app) = crate::common::stack::start_ready(&[]).await;
    let tokens: Vec<String> = (app.secrets)()
        .into_iter()
        .filter(|s| s.starts_with("s."))
        .collect();
    assert_eq!(tokens.len(), 2, "the generation's and the session's token");
    let http = crate::common::http();
    let status = |token: String, method: reqwest::Method, path: &'static str| {
        let (http, url) = (http.clone(), format!("{}/v1/{path}", stack.bao_addr()));
        async move {
            http.request(method, url)
                .header("X-Vault-Token", token)
                .json(&serde_json::json!({"input": "aGk=", "data": {"x": "y"}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    use reqwest::Method;
    for token in tokens {
        // Within the policy: allowed (an absent secret answers 404, not 403).
        assert_eq!(
            status(token.clone(), Method::GET, "secret/data/github/nobody").await,
            404
        );
        assert_eq!(
            status(
                token.clone(),
                Method::GET,
                "transit/keys/precinct-access-token"
            )
            .await,
            200
        );
        // Beside it: denied.
        for (method, path) in [
            (Method::GET, "secret/data/other/thing"),
            (Method::POST, "secret/data/other/thing"),
            (Method::GET, "secret/metadata/"),
            (Method::POST, "transit/sign/another-key"),
            (Method::POST, "transit/keys/precinct-access-token/rotate"),
            (Method::GET, "database/creds/another-role"),
            (Method::GET, "database/config/precinct"),
            (Method::GET, "sys/policies/acl/precinct-backend"),
            (Method::POST, "auth/token/create"),
            (Method::GET, "sys/audit"),
        ] {
            assert_eq!(
                status(token.clone(), method.clone(), path).await,
                403,
                "{method} {path}"
            );
        }
    }
    app.stop().await;
}
