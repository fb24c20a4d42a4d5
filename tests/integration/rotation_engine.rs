//! The rotation engine against real OpenBao and PostgreSQL: readiness as
//! soon as a generation is proven, requests tied to the generation that
//! saw the failure, lost connections retried, supervision of the rotation
//! task, and a shutdown that leaves no role behind.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{
    eventually, spawn_app_env,
    stack::{Lifetimes, Stack, db_route, env_with, start_ready, wait_ready},
};
use precinct::db::Trigger;
use sqlx::{Connection, PgConnection};

async fn role_exists(name: &str) -> bool {
    let mut admin = PgConnection::connect(&crate::common::stack::admin_url())
        .await
        .unwrap();
    sqlx::query_scalar::<_, bool>("select exists(select 1 from pg_roles where rolname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

/// Terminates every session of `role`, as a failover or an idle-killer does.
async fn terminate_sessions(role: &str) -> i64 {
    let mut admin = PgConnection::connect(&crate::common::stack::admin_url())
        .await
        .unwrap();
    sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity where usename = $1) t",
    )
    .bind(role)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

/// Without waiting for the periodic health check: the database is ready
/// the moment its first generation is proven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_generation_makes_the_database_ready_at_once() {
    let stack = Stack::start(Lifetimes::default()).await;
    let started = Instant::now();
    let app = spawn_app_env(&env_with(&stack, &[("DB_HEALTH_INTERVAL", "1h")]), |_| {
        axum::Router::new()
    })
    .await;
    // The health loop ticks once at start (before any generation exists),
    // then not for an hour: only the rotation can make it ready.
    wait_ready(&app, Duration::from_secs(20)).await;
    println!("exec to ready in process: {:?}", started.elapsed());
    app.stop().await;
}

/// A straggler on a retired generation that sees "role does not exist"
/// must not rotate its successor; the same error on the serving
/// generation rotates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_error_from_a_retired_generation_does_not_rotate_its_successor() {
    let (stack, app) = start_ready(&[("DB_DRAIN_TIMEOUT", "4s")]).await;
    let db = app.db.clone().unwrap();
    let first = db.pool().await.unwrap();
    assert_eq!(first.generation(), 1);
    db.request_rotation(Trigger::Signal);
    eventually(Duration::from_secs(10), "generation 2", || {
        let db = db.clone();
        async move { db.generation().map(|g| g.id) == Some(2) }
    })
    .await;
    // Still held, so still draining: a real error from PostgreSQL, code
    // 42704, as a dropped role gives.
    let err = sqlx::query("select 'precinct_no_such_role'::regrole")
        .execute(&*first)
        .await
        .unwrap_err();
    assert!(precinct::db::role_is_invalid(&err), "{err}");
    let _ = first.error(err);
    drop(first);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        db.generation().unwrap().id,
        2,
        "the retired generation's report was ignored"
    );

    let second = db.pool().await.unwrap();
    let err = sqlx::query("select 'precinct_no_such_role'::regrole")
        .execute(&*second)
        .await
        .unwrap_err();
    let _ = second.error(err);
    drop(second);
    eventually(Duration::from_secs(10), "generation 3", || {
        let db = db.clone();
        async move { db.generation().map(|g| g.id) == Some(3) }
    })
    .await;
    app.stop().await;
    drop(stack);
}

/// Every session of the pool's role is terminated twice under concurrent
/// `/me` load: a request whose connection died is run again on a fresh
/// one. Nothing answers 500; at most the requests in flight may get 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_sessions_are_retried_on_a_fresh_connection() {
    let (stack, app) = start_ready(&[]).await;
    let token = crate::common::access_token(&app, "sessions").await;
    let role = app.db.as_ref().unwrap().generation().unwrap().username;
    let (ok, unavailable, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let concurrency = 8;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (url, token, client) = (
            app.url("/api/v1/auth/me"),
            token.clone(),
            app.client.clone(),
        );
        let (ok, unavailable, other, stop) =
            (ok.clone(), unavailable.clone(), other.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                match r.status().as_u16() {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    503 => unavailable.fetch_add(1, Ordering::Relaxed),
                    s => {
                        eprintln!("unexpected {s}: {}", r.text().await.unwrap());
                        other.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut terminated = 0;
    for _ in 0..2 {
        terminated += terminate_sessions(&role).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, unavailable, other) = (
        ok.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    println!("terminated {terminated} sessions: {ok} × 200, {unavailable} × 503, {other} other");
    assert!(terminated >= 2, "sessions were terminated");
    assert_eq!(other, 0, "no 500 (or anything else) for a lost connection");
    assert!(
        unavailable <= 2 * concurrency,
        "at most the requests in flight fail: {unavailable}"
    );
    assert!(ok > 100);
    app.stop().await;
    drop(stack);
}

/// The rotation task panics (a test-only hook): readiness `tasks` says so
/// at once, and after TASK_FAILURE_GRACE the application stops with an
/// error (the process exits non-zero; Kubernetes restarts it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_rotation_task_makes_the_instance_unready_then_stops_it() {
    let (stack, app) = start_ready(&[("TASK_FAILURE_GRACE", "2s")]).await;
    app.db.as_ref().unwrap().inject_rotation_panic();
    eventually(Duration::from_secs(5), "tasks not ready", || {
        let r = app.readiness.clone();
        async move {
            r.report().checks["tasks"]
                .reason
                .as_deref()
                .is_some_and(|m| m.contains("db-rotation panicked"))
        }
    })
    .await;
    assert_eq!(app.status("/api/v1/health/ready").await, 503);
    let stopped = tokio::time::timeout(Duration::from_secs(30), app.handle)
        .await
        .expect("the application stops after the grace period")
        .unwrap();
    let err = stopped.expect_err("a failed task ends the application with an error");
    assert!(err.to_string().contains("db-rotation panicked"), "{err}");
    drop(stack);
}

/// SIGTERM under load: the requests finish, then the serving generation is
/// drained and its lease and token revoked before the application returns:
/// the role is gone from pg_roles, nothing waits for its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_revokes_the_lease_and_drops_the_role_before_exit() {
    let stack = Stack::start(Lifetimes::default()).await;
    let app = spawn_app_env(&env_with(&stack, &[]), db_route).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let role = app.db.as_ref().unwrap().generation().unwrap().username;
    assert!(role_exists(&role).await);
    let revokes_before = stack.bao_requests("sys/leases/revoke");
    let mut load = Vec::new();
    for _ in 0..8 {
        let (url, client) = (app.url("/test/db"), app.client.clone());
        load.push(tokio::spawn(async move {
            let mut served = 0;
            while let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    served += 1;
                }
            }
            served
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.shutdown.cancel();
    app.handle.await.unwrap().expect("clean shutdown");
    let mut served = 0;
    for l in load {
        served += l.await.unwrap();
    }
    assert!(served > 10, "load was running: {served}");
    assert!(
        !role_exists(&role).await,
        "role {role} still exists after exit"
    );
    assert!(
        stack.bao_requests("sys/leases/revoke") > revokes_before,
        "the lease was revoked"
    );
    drop(stack);
}

/// OpenBao's revocation terminates a role's sessions, then drops the role;
/// a session opened in between survives with a dropped role and sees
/// "relation does not exist". Such an error is retried on a fresh
/// connection, and the rotation task, finding the role gone, rotates:
/// never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_dropped_under_live_sessions_rotates_without_a_500() {
    let (stack, app) = start_ready(&[]).await;
    let token = crate::common::access_token(&app, "dropped").await;
    let role = app.db.as_ref().unwrap().generation().unwrap().username;
    // Warm the pool: several live sessions of the role.
    for _ in 0..20 {
        let r = app.get_authorized("/api/v1/auth/me", &token).await;
        assert_eq!(r.status(), 200);
    }
    let mut admin = PgConnection::connect(&crate::common::stack::admin_url())
        .await
        .unwrap();
    // Drop the role without ending its sessions (what the window between
    // OpenBao's terminate and drop leaves behind).
    sqlx::query(sqlx::AssertSqlSafe(format!("drop role \"{role}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let r = app
            .client
            .get(app.url("/api/v1/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        *statuses.entry(r.status().as_u16()).or_default() += 1;
    }
    println!("after the drop: {statuses:?}");
    assert!(!statuses.contains_key(&500), "{statuses:?}");
    assert_eq!(
        app.db.as_ref().unwrap().generation().unwrap().id,
        2,
        "rotated"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 10,
        "serving again: {statuses:?}"
    );
    app.stop().await;
    drop(stack);
}
