//! `precinct bootstrap-files`: the image carries the configuration as code
//! that the k8s bootstrap Job runs, and those scripts need nothing but `sh`
//! and their tool (psql, bao).

use std::{os::unix::fs::PermissionsExt, process::Command};

use crate::common::stack::{Lifetimes, Stack, VAULT_DB_PASSWORD, admin_url, with_db};
use sqlx::{Connection, PgConnection};

const BIN: &str = env!("CARGO_BIN_EXE_precinct");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn write_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("bootstrap-files")
        .arg(dir.path().join("bootstrap"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
    dir
}

#[test]
fn bootstrap_files_are_the_repository_scripts_of_this_build() {
    let dir = write_files();
    for (name, repo_path, executable) in [
        ("configure-openbao.sh", "scripts/configure-openbao.sh", true),
        ("bootstrap-db.sh", "scripts/bootstrap-db.sh", true),
        ("bootstrap.sql", "sql/bootstrap.sql", false),
    ] {
        let written = dir.path().join("bootstrap").join(name);
        assert_eq!(
            std::fs::read_to_string(&written).unwrap(),
            std::fs::read_to_string(format!("{ROOT}/{repo_path}")).unwrap(),
            "{name} differs from {repo_path}"
        );
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o111 != 0, executable, "{name} mode {mode:o}");
    }
}

#[test]
fn bootstrap_files_into_an_unwritable_place_fail_with_the_path() {
    let out = Command::new(BIN)
        .args(["bootstrap-files", "/proc/precinct-cannot-write-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/proc/precinct-cannot-write-here"),
        "{stderr}"
    );
}

/// What the Job's database step runs: the written script, under a strict
/// POSIX shell, twice (a re-run of the Job must change nothing and fail on
/// nothing), then OpenBao's login works and the schema belongs to the owner.
#[tokio::test]
async fn the_database_bootstrap_is_posix_sh_and_idempotent() {
    let dir = write_files();
    let files = dir.path().join("bootstrap");
    let db_name = format!("bootstrap_{}", std::process::id());
    for run in 1..=2 {
        let out = tokio::process::Command::new("sh")
            .arg(files.join("bootstrap-db.sh"))
            .env("DATABASE_ADMIN_URL", admin_url())
            .env("DB_NAME", &db_name)
            .env("DB_VAULT_PASSWORD", VAULT_DB_PASSWORD)
            .env("SQL_DIR", &files)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
        assert!(!stderr.contains("ERROR"), "run {run}: {stderr}");
    }

    let vault_url = {
        let mut u = url::Url::parse(&with_db(&admin_url(), &db_name)).unwrap();
        u.set_username("precinct_vault").unwrap();
        u.set_password(Some(VAULT_DB_PASSWORD)).unwrap();
        u.to_string()
    };
    let mut vault = PgConnection::connect(&vault_url)
        .await
        .expect("OpenBao's login works after the bootstrap");
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'precinct'",
    )
    .fetch_one(&mut vault)
    .await
    .unwrap();
    assert_eq!(owner, "precinct_owner");
    vault.close().await.unwrap();

    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{db_name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

/// The Job's OpenBao step runs in the OpenBao image, whose shell is BusyBox:
/// over an already configured OpenBao (a re-run of the Job) it succeeds and
/// changes nothing the backend relies on.
#[tokio::test]
async fn configure_openbao_reruns_cleanly_under_busybox_sh() {
    let stack = Stack::start(Lifetimes::default()).await;
    let out = stack
        .configure_bao_with(&["busybox", "sh"])
        .await
        .expect("configure-openbao.sh under busybox sh");
    assert!(out.contains("OpenBao configured"), "{out}");
    let role: serde_json::Value = stack
        .bao_root(
            reqwest::Method::GET,
            "auth/jwt/role/backend-role",
            serde_json::Value::Null,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        role["data"]["bound_subject"],
        crate::common::SPIFFE_ID,
        "{role}"
    );
}

fn seed(database_url: &str, wait_seconds: &str) -> std::process::Output {
    Command::new("dash")
        .arg(format!("{ROOT}/scripts/seed-dev-users.sh"))
        .env("DATABASE_URL", database_url)
        .env("WAIT_SECONDS", wait_seconds)
        .output()
        .unwrap()
}

/// The k8s/dev seed Job (and scripts/dev.sh): once the backend has created
/// its tables, the demo users exist and log in with `<name>99`; a second run
/// changes nothing.
#[tokio::test]
async fn the_dev_seed_adds_the_demo_users_once_the_backend_has_migrated() {
    let stack = Stack::start(Lifetimes::default()).await;
    let url = with_db(&admin_url(), &stack.db_name);
    // Before the backend has migrated: a clear refusal after the wait.
    let early = seed(&url, "1");
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("precinct.users does not exist"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );

    let app = crate::common::spawn_app_env(&stack.app_env(), |_| axum::Router::new()).await;
    crate::common::stack::wait_ready(&app, std::time::Duration::from_secs(30)).await;
    for _ in 0..2 {
        let out = seed(&url, "30");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "demo users present: amy charles gina jake rosa terry"
        );
    }
    let login = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "jake", "password": "jake99"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    app.stop().await;
}
