//! A real stack for one test: the development SPIFFE agent, a real OpenBao
//! dev server on a free port, and a fresh PostgreSQL database bootstrapped
//! and configured exactly as scripts/dev.sh does. Nothing is mocked.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum::{Json, extract::State, routing::get};
use precinct::{
    devagent::DevAgent,
    http::{ApiError, AppState},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, Row};

/// Same value scripts/dev.sh uses, so a dev stack and tests can share a cluster.
pub const VAULT_DB_PASSWORD: &str = "precinct-vault-dev";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Lifetimes {
    pub token_ttl: &'static str,
    pub token_max_ttl: &'static str,
    pub lease_ttl: &'static str,
    pub lease_max_ttl: &'static str,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            token_ttl: "60s",
            token_max_ttl: "10m",
            lease_ttl: "60s",
            lease_max_ttl: "10m",
        }
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub agent: Option<DevAgent>,
    pub bao: Option<Child>,
    pub bao_port: u16,
    pub db_name: String,
    pub admin_url: String,
    pub lifetimes: Lifetimes,
}

pub fn bao_bin() -> PathBuf {
    std::env::var("PRECINCT_TEST_BAO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(ROOT).join(".dev/venv/bin/bao"))
}

pub fn admin_url() -> String {
    std::env::var("PRECINCT_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://precinct_admin:precinct_admin@127.0.0.1:5432/postgres".into()
    })
}

pub fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

impl Stack {
    pub async fn start(lifetimes: Lifetimes) -> Stack {
        Self::start_with_agent(lifetimes, |_| {}).await
    }

    /// As [`Stack::start`], with the dev agent's settings tweaked (e.g.
    /// short-lived SVIDs).
    pub async fn start_with_agent(
        lifetimes: Lifetimes,
        tweak: impl FnOnce(&mut precinct::devagent::DevAgentConfig),
    ) -> Stack {
        let bin = bao_bin();
        assert!(
            bin.exists(),
            "no OpenBao binary at {} (run scripts/test.sh, which installs it)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let agent = super::start_agent(dir.path(), tweak).await;
        let admin_url = admin_url();
        let db_name = format!(
            "precinct_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL admin connection (run scripts/test.sh, which sets it up)");
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{db_name}\""
            )))
            .await
            .unwrap();
        let mut conn = PgConnection::connect(&with_db(&admin_url, &db_name))
            .await
            .unwrap();
        // Role catalog rows are shared by all databases, and PostgreSQL's
        // catalog snapshots make concurrent GRANT/ALTER ROLE on them fail:
        // bootstrap one database at a time. Tests run in processes of their
        // own, and advisory locks are per database: the lock is taken in the
        // admin connection's database, the same for every test.
        sqlx::query("SELECT pg_advisory_lock(727274)")
            .execute(&mut admin)
            .await
            .unwrap();
        let bootstrap = std::fs::read_to_string(format!("{ROOT}/sql/bootstrap.sql")).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(bootstrap))
            .execute(&mut conn)
            .await
            .unwrap();
        // Under the bootstrap's lock: concurrent ALTER ROLEs collide.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT pg_advisory_xact_lock(727274); ALTER ROLE precinct_vault PASSWORD '{VAULT_DB_PASSWORD}'; COMMIT;"
        )))
        .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("SELECT pg_advisory_unlock(727274)")
            .execute(&mut admin)
            .await
            .unwrap();
        let mut stack = Stack {
            dir,
            agent: Some(agent),
            bao: None,
            bao_port: free_port(),
            db_name,
            admin_url,
            lifetimes,
        };
        stack.start_bao().await;
        stack
            .configure_bao()
            .await
            .expect("configure-openbao.sh succeeds");
        stack
    }

    pub fn bao_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.bao_port)
    }

    pub fn agent(&self) -> &DevAgent {
        self.agent.as_ref().unwrap()
    }

    pub async fn start_bao(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("bao.log")).unwrap();
        // A file audit device: every request OpenBao serves, countable by tests.
        let config = self.dir.path().join("bao.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                self.audit_log().display()
            ),
        )
        .unwrap();
        let child = Command::new(bao_bin())
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-config={}", config.display()))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.bao_port))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.bao = Some(child);
        let client = super::http();
        for _ in 0..100 {
            if let Ok(r) = client
                .get(format!("{}/v1/sys/health", self.bao_addr()))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("OpenBao dev server did not start");
    }

    pub fn audit_log(&self) -> std::path::PathBuf {
        self.dir.path().join("bao-audit.log")
    }

    /// Requests OpenBao has received for `path` (e.g. `transit/keys/x`),
    /// from its audit log.
    pub fn bao_requests(&self, path: &str) -> usize {
        let needle = format!("\"path\":\"{path}\"");
        std::fs::read_to_string(self.audit_log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"type\":\"request\"") && l.contains(&needle))
            .count()
    }

    /// SIGSTOP: OpenBao keeps its state, its connections hang (an overloaded
    /// or partitioned OpenBao).
    pub fn freeze_bao(&self) {
        self.signal_bao("-STOP");
    }

    pub fn thaw_bao(&self) {
        self.signal_bao("-CONT");
    }

    fn signal_bao(&self, signal: &str) {
        let pid = self.bao.as_ref().expect("OpenBao running").id();
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    pub fn stop_bao(&mut self) {
        if let Some(mut child) = self.bao.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs scripts/configure-openbao.sh against this stack; returns its output.
    /// (Async: OpenBao calls back into the in-process agent's OIDC endpoint.)
    pub async fn configure_bao(&self) -> Result<String, String> {
        self.configure_bao_with(&["sh"]).await
    }

    /// The same, under another shell (`["busybox", "sh"]`: the OpenBao image's).
    pub async fn configure_bao_with(&self, shell: &[&str]) -> Result<String, String> {
        let agent = self.agent();
        let out = tokio::process::Command::new(shell[0])
            .args(&shell[1..])
            .arg(format!("{ROOT}/scripts/configure-openbao.sh"))
            .env("BAO_BIN", bao_bin())
            .env("BAO_ADDR", self.bao_addr())
            .env("BAO_TOKEN", "root")
            .env("OIDC_DISCOVERY_URL", agent.issuer())
            .env("SPIFFE_ID", super::SPIFFE_ID)
            .env(
                "DB_CONNECTION_URL",
                format!(
                    "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:5432/{}?sslmode=disable",
                    self.db_name
                ),
            )
            .env("DB_VAULT_PASSWORD", VAULT_DB_PASSWORD)
            .env("DB_USERNAME_TEMPLATE", role_template(&self.db_name))
            .env("TOKEN_TTL", self.lifetimes.token_ttl)
            .env("TOKEN_MAX_TTL", self.lifetimes.token_max_ttl)
            .env("DB_LEASE_TTL", self.lifetimes.lease_ttl)
            .env("DB_LEASE_MAX_TTL", self.lifetimes.lease_max_ttl)
            .output()
            .await
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Settings that point the app at this stack, plus `extra`.
    pub fn app_env(&self) -> Vec<(String, String)> {
        vec![
            ("SPIFFE_ENDPOINT_SOCKET".into(), self.agent().endpoint()),
            ("EXPECTED_SPIFFE_ID".into(), super::SPIFFE_ID.into()),
            ("BAO_ADDR".into(), self.bao_addr()),
            ("DB_NAME".into(), self.db_name.clone()),
            ("DB_SSLMODE".into(), "disable".into()),
            ("DB_HEALTH_INTERVAL".into(), "300ms".into()),
            ("DB_LEASE_SAFETY_MARGIN".into(), "5s".into()),
            ("DB_DRAIN_TIMEOUT".into(), "3s".into()),
            // Tests rotate every few seconds; the spacing has its own unit tests.
            ("DB_ROTATION_MIN_SPACING".into(), "1s".into()),
            ("DB_ACQUIRE_TIMEOUT".into(), "3s".into()),
        ]
    }

    /// A superuser connection to this test's database.
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&with_db(&self.admin_url, &self.db_name))
            .await
            .unwrap()
    }

    /// A JWT with `header` and `claims`, signed by the stack's Transit key
    /// with the root token: what a holder of the signing key could mint.
    pub async fn sign_token(&self, header: Value, claims: Value) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.transit_sign("precinct-access-token", &input).await;
        format!("{input}.{sig}")
    }

    /// `message` signed by Transit key `key` with the root token (ES256,
    /// SHA-256): the base64url r || s.
    pub async fn transit_sign(&self, key: &str, message: &str) -> String {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let res: Value = self
            .bao_root(
                reqwest::Method::POST,
                &format!("transit/sign/{key}/sha2-256"),
                json!({"input": STANDARD.encode(message), "marshaling_algorithm": "jws"}),
            )
            .await
            .json()
            .await
            .unwrap();
        res["data"]["signature"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    }

    /// Calls OpenBao's HTTP API with the root token.
    pub async fn bao_root(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        super::http()
            .request(method, format!("{}/v1/{path}", self.bao_addr()))
            .header("X-Vault-Token", "root")
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// The tag this stack's dynamic roles carry: the random part of its database
/// name. Roles are cluster-wide and tests run in parallel: the tag tells
/// ours from everyone else's.
fn role_tag(db_name: &str) -> &str {
    db_name.trim_start_matches("precinct_t_")
}

/// OpenBao's `username_template` for this stack: `v-<role>-<tag>-<random>`.
pub fn role_template(db_name: &str) -> String {
    format!(
        "v-{{{{.RoleName | truncate 12}}}}-{}-{{{{random 8}}}}",
        role_tag(db_name)
    )
}

/// Drops every role a stack's OpenBao created (after ending their sessions)
/// and returns their names. Revocation drops them in the normal course; this
/// catches what a test left behind (a restarted or frozen OpenBao, a lease
/// still alive when the test ended).
pub async fn drop_tagged_roles(admin: &mut PgConnection, tag: &str) -> Vec<String> {
    let pattern = format!("v-%-{tag}-%");
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
            .bind(&pattern)
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for role in &roles {
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
        )
        .bind(role)
        .execute(&mut *admin)
        .await;
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP ROLE IF EXISTS \"{}\"",
                role.replace('"', "\"\"")
            )))
            .await;
    }
    roles
}

/// Drops a test's database, then the dynamic roles tagged with its name;
/// returns the roles it had to drop (revocation should have dropped them).
pub async fn cleanup_db(admin_url: &str, db: &str) -> Vec<String> {
    let Ok(mut admin) = PgConnection::connect(admin_url).await else {
        return Vec::new();
    };
    let _ = admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
        )))
        .await;
    drop_tagged_roles(&mut admin, role_tag(db)).await
}

/// The same from synchronous code (`Drop`): on a thread with its own runtime.
pub fn cleanup_db_blocking(admin_url: String, db: String) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup_db(&admin_url, &db))
    })
    .join();
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_bao();
        // The database is uniquely named; its roles are tagged with its name.
        cleanup_db_blocking(self.admin_url.clone(), self.db_name.clone());
    }
}

/// A fresh stack and the application on it, ready.
pub async fn start_ready(extra: &[(&str, &str)]) -> (Stack, super::TestApp) {
    let stack = Stack::start(Lifetimes::default()).await;
    let app = super::spawn_app_env(&env_with(&stack, extra), |_| axum::Router::new()).await;
    wait_ready(&app, Duration::from_secs(30)).await;
    (stack, app)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A DB-backed route: reads through the current pool, as every handler does.
pub fn db_route(state: AppState) -> axum::Router {
    async fn handler(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
        let db = state.db.as_ref().expect("db configured");
        let pool = db.pool().await?;
        let row = sqlx::query("select current_user::text as who, count(*) as users from users")
            .fetch_one(&*pool)
            .await
            .map_err(|e| pool.error(e))?;
        Ok(Json(
            json!({"who": row.get::<String, _>("who"), "users": row.get::<i64, _>("users")}),
        ))
    }
    axum::Router::new()
        .route("/test/db", get(handler))
        .with_state(state)
}

pub fn env_with(stack: &Stack, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = stack.app_env();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

pub async fn wait_ready(app: &super::TestApp, within: Duration) {
    let url = app.url("/api/v1/health/ready");
    super::eventually(within, "readiness 200", || {
        let (c, u) = (app.client.clone(), url.clone());
        async move {
            c.get(u)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
}
