//! The test harness leaves nothing cluster-wide behind: PostgreSQL roles are
//! shared by everything on the machine, so every dynamic role a test's
//! OpenBao creates is dropped with the test's stack, even when OpenBao could
//! not revoke it (stopped, frozen, restarted).

use std::time::Duration;

use crate::common::{
    spawn_app_env,
    stack::{Lifetimes, Stack, db_route, env_with, wait_ready},
};
use sqlx::{Connection, PgConnection};

async fn roles_like(pattern: &str) -> Vec<String> {
    let mut admin = PgConnection::connect(&crate::common::stack::admin_url())
        .await
        .unwrap();
    sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1")
        .bind(pattern)
        .fetch_all(&mut admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stack_drops_the_dynamic_roles_its_openbao_created_even_unrevoked() {
    let mut stack = Stack::start(Lifetimes::default()).await;
    let tag = stack.db_name.trim_start_matches("precinct_t_").to_string();
    let pattern = format!("v-%-{tag}-%");
    let app = spawn_app_env(&env_with(&stack, &[]), db_route).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    let ours = roles_like(&pattern).await;
    let username = app.db.as_ref().unwrap().generation().unwrap().username;
    assert!(
        ours.contains(&username),
        "the app's role {username} carries the stack's tag: {ours:?}"
    );
    // OpenBao dies before the app can revoke anything: its lease is orphaned.
    stack.stop_bao();
    app.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), app.handle).await;
    assert!(
        !roles_like(&pattern).await.is_empty(),
        "still there before the stack drops"
    );
    drop(stack);
    assert_eq!(roles_like(&pattern).await, Vec::<String>::new());
}
