//! Assume breach in the data layer (docs/audit.md, threat model §10): with
//! the credentials OpenBao issues precinct, the audit trail can only grow,
//! and rows belong to the transaction acting for their user. The trail's
//! chain and checkpoints hold under concurrent replicas, and
//! `precinct audit verify` names each kind of tampering.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};
use uuid::Uuid;

use crate::common::{
    TEST_PASSWORD, eventually, post_json,
    replicas::Replicas,
    stack::{Lifetimes, Stack, env_with, start_ready},
};

/// A connection with credentials OpenBao's database engine issues for
/// precinct's runtime role, as precinct itself would get them.
async fn runtime_connection(stack: &Stack) -> PgConnection {
    issued_connection(stack, "precinct-runtime").await
}

async fn issued_connection(stack: &Stack, role: &str) -> PgConnection {
    let creds: Value = stack
        .bao_root(
            reqwest::Method::GET,
            &format!("database/creds/{role}"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(5432)
        .database(&stack.db_name)
        .username(creds["data"]["username"].as_str().unwrap())
        .password(creds["data"]["password"].as_str().unwrap())
        .options([("search_path", "precinct")])
        .connect()
        .await
        .unwrap()
}

/// The SQLSTATE of a statement that must fail.
async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
    {
        Ok(r) => panic!("{sql:?} was allowed ({} rows)", r.rows_affected()),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.to_string()))
            .unwrap_or_else(|| panic!("{sql:?}: {e}")),
    }
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql:?}: {e}"))
}

async fn user_id(admin: &mut PgConnection, username: &str) -> Uuid {
    sqlx::query_scalar("select id from precinct.users where username = $1")
        .bind(username)
        .fetch_one(admin)
        .await
        .unwrap()
}

async fn login(app: &crate::common::TestApp, username: &str) -> Value {
    let r = post_json(
        app,
        "/api/v1/auth/login",
        json!({"username": username, "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "login {username}");
    r.json().await.unwrap()
}

const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The last row written by a request (a checkpoint may follow it, and
/// checkpoints do not wait on checkpoints).
const WRITTEN_HEAD: &str =
    "select max(seq) from precinct.audit_log where event <> 'audit_checkpoint'";

#[tokio::test]
async fn the_runtime_role_appends_to_the_audit_log_and_can_do_nothing_else_to_it() {
    let (stack, app) = start_ready(&[]).await;
    crate::common::register(&app, "amy_santiago").await;
    // The bootstrap runs again at every deploy: it must not widen anything.
    let bootstrap =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/bootstrap.sql")).unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(bootstrap))
        .execute(&mut stack.admin().await)
        .await
        .unwrap();
    let mut conn = runtime_connection(&stack).await;
    let who: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(who.starts_with("v-"), "an OpenBao-issued role: {who}");
    for sql in [
        "delete from audit_log",
        "update audit_log set outcome = 'success'",
        "truncate audit_log",
        "insert into audit_log (event, outcome, seq, row_hash) values ('login', 'success', 999, '\\x00')",
        "update audit_chain_head set seq = 0",
        "select password_hash from users",
        "update users set password_hash = 'x'",
        "insert into users (id, username, email, password_hash) values (gen_random_uuid(), 'eve', 'e@x', 'x')",
        "delete from users",
        "update refresh_tokens set token_hash = '\\x00'",
        "select * from _sqlx_migrations",
        "delete from _sqlx_migrations",
        "create table precinct.evil (x int)",
        "alter table audit_log disable trigger audit_append_only",
        "drop policy own_rows on audit_log",
        "alter table users no force row level security",
    ] {
        assert_eq!(
            refused(&mut conn, sql).await,
            INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    // Appending is what it may do: PostgreSQL numbers and chains the row.
    let before = count(&mut conn, "select seq from audit_head()").await;
    sqlx::query("insert into audit_log (event, outcome) values ('test_event', 'appended')")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut admin = stack.admin().await;
    let (seq, chained): (i64, bool) = sqlx::query_as(
        "select a.seq, a.prev_hash = p.row_hash from precinct.audit_log a \
         join precinct.audit_log p on p.seq = a.seq - 1 where a.event = 'test_event'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(seq > before && chained, "seq {seq} after {before}, chained");
    // Not even the owner role (the migrate credentials) rewrites history.
    let mut owner = issued_connection(&stack, "precinct-migrate").await;
    sqlx::raw_sql("set role precinct_owner")
        .execute(&mut owner)
        .await
        .unwrap();
    for sql in [
        "delete from audit_log",
        "update audit_log set outcome = 'x'",
        "truncate audit_log",
    ] {
        assert_eq!(
            refused(&mut owner, sql).await,
            INSUFFICIENT_PRIVILEGE,
            "owner: {sql}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn rows_are_visible_only_to_the_transaction_acting_for_their_user() {
    let (stack, app) = start_ready(&[]).await;
    for u in ["jake_peralta", "gina_linetti"] {
        crate::common::register(&app, u).await;
        login(&app, u).await;
    }
    let mut admin = stack.admin().await;
    let jake = user_id(&mut admin, "jake_peralta").await;
    let gina = user_id(&mut admin, "gina_linetti").await;
    let mut conn = runtime_connection(&stack).await;
    let visible = "select (select count(*) from users) + (select count(*) from refresh_families) \
                   + (select count(*) from refresh_tokens) + (select count(*) from audit_log)";

    // Fail-closed: no setting, an empty one, garbage, a bare UUID, another
    // transaction's value (left session-level on this pooled connection).
    assert_eq!(count(&mut conn, visible).await, 0, "no setting");
    let stale = format!("{jake}@1796127934988912");
    for value in ["", "not-a-uuid", &jake.to_string(), &stale] {
        sqlx::query("select set_config('app.user_id', $1, false)")
            .bind(value)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            count(&mut conn, visible).await,
            0,
            "app.user_id = {value:?}"
        );
    }
    // A previous borrower acted for Jake and left it session-level: the
    // next transaction on this connection sees nothing of Jake's.
    let mut tx = conn.begin().await.unwrap();
    precinct::db::act_for(&mut tx, jake).await.unwrap();
    sqlx::query("select set_config('app.user_id', current_setting('app.user_id'), false)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        count(&mut conn, visible).await,
        0,
        "leaked from the last borrower"
    );

    // Acting for Jake: Jake's rows, never Gina's.
    let mut tx = conn.begin().await.unwrap();
    precinct::db::act_for(&mut tx, jake).await.unwrap();
    let users: Vec<String> = sqlx::query_scalar("select username from users")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(users, ["jake_peralta"]);
    let foreign: i64 =
        sqlx::query_scalar("select count(*) from refresh_families where user_id = $1")
            .bind(gina)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(foreign, 0);
    let own: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(own >= 2, "Jake's own audit rows (register, login): {own}");
    let revoked = sqlx::query("update refresh_families set revoked_at = now() where user_id = $1")
        .bind(gina)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        revoked.rows_affected(),
        0,
        "Gina's sessions are out of reach"
    );
    let e = sqlx::query("insert into refresh_families (id, user_id) values ($1, $2)")
        .bind(Uuid::now_v7())
        .bind(gina)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().unwrap().code().unwrap(),
        INSUFFICIENT_PRIVILEGE,
        "a session for someone else: {e}"
    );
    tx.rollback().await.unwrap();

    // The pre-authentication paths see one row each, by their key.
    let found: Vec<String> =
        sqlx::query_scalar("select username from login_lookup('GINA_linetti')")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(found, ["gina_linetti"]);
    assert_eq!(
        count(&mut conn, visible).await,
        0,
        "and the setting ended with them"
    );
    app.stop().await;
}

/// The failed-refresh row: cheap to cause, never rate-limited, always
/// audited.
async fn bad_refresh(client: &reqwest::Client, base: &str) {
    let r = client
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": Uuid::new_v4().to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn verify_env(stack: &Stack) -> Vec<(String, String)> {
    env_with(stack, &[("APP_ENV", "development"), ("RUST_LOG", "warn")])
}

/// `precinct audit verify` on the stack: exit code and stdout.
async fn audit_verify(stack: &Stack) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_precinct"))
        .args(["audit", "verify"])
        .env_clear()
        .envs(verify_env(stack))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "verify ran (exit {code}): {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

async fn kv_checkpoint(stack: &Stack) -> Option<Value> {
    let r = stack
        .bao_root(
            reqwest::Method::GET,
            "secret/data/audit/checkpoint",
            json!({}),
        )
        .await;
    (r.status() == 200).then_some(())?;
    Some(r.json::<Value>().await.unwrap()["data"]["data"].clone())
}

#[tokio::test]
async fn concurrent_writers_on_two_replicas_never_fork_the_chain() {
    let stack = Stack::start(Lifetimes::default()).await;
    let replicas = Replicas::start(
        &stack,
        2,
        &[
            ("AUDIT_CHECKPOINT_INTERVAL", "1s"),
            ("AUDIT_CHECKPOINT_ROWS", "50"),
        ],
    )
    .await;
    let client = crate::common::http();
    let started = std::time::Instant::now();
    // Beside them, the internal API's path: batches appended by
    // audit_append on runtime connections, 4 at a time.
    let mut batchers = vec![];
    for _ in 0..4 {
        let mut conn = runtime_connection(&stack).await;
        batchers.push(tokio::spawn(async move {
            for _ in 0..25 {
                let n = 20;
                sqlx::query(
                    "select audit_append(array_fill(now(), array[$1]), array_fill('internal_introspect'::text, array[$1]), \
                     array_fill('inactive'::text, array[$1]), array_fill(null::uuid, array[$1]), \
                     array_fill('127.0.0.1'::inet, array[$1]), array_fill('bench'::text, array[$1]), \
                     array_fill(null::text, array[$1]), array_fill('{\"caller\": \"spiffe://demo.local/x\"}'::jsonb, array[$1]))",
                )
                .bind(n)
                .execute(&mut conn)
                .await
                .unwrap();
            }
        }));
    }
    let writers: Vec<_> = (0..10)
        .map(|w| {
            let (client, base) = (client.clone(), replicas.urls[w % 2].clone());
            tokio::spawn(async move {
                for _ in 0..30 {
                    bad_refresh(&client, &base).await;
                }
            })
        })
        .collect();
    for w in writers.into_iter().chain(batchers) {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();
    let mut admin = stack.admin().await;
    // Refusals' rows are appended in batches, within 20 ms of the call.
    for _ in 0..100 {
        let n = count(
            &mut admin,
            "select count(*) from precinct.audit_log where event = 'refresh'",
        )
        .await;
        if n >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rows, min, max, distinct_prev): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*), min(seq), max(seq), count(distinct prev_hash) from precinct.audit_log",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    // The writers' last row (a checkpoint may already follow it).
    let last_written = count(
        &mut admin,
        "select max(seq) from precinct.audit_log where event <> 'audit_checkpoint'",
    )
    .await;
    let failures: i64 = count(
        &mut admin,
        "select count(*) from precinct.audit_log where event = 'refresh' and outcome = 'failure'",
    )
    .await;
    let batched: i64 = count(
        &mut admin,
        "select count(*) from precinct.audit_log where event = 'internal_introspect'",
    )
    .await;
    println!(
        "300 failed refreshes from 10 writers on 2 replicas and 100 batches of 20 in {elapsed:?}: {rows} rows, seq {min}..={max}"
    );
    assert_eq!(failures, 300, "every refusal has its row");
    assert_eq!(batched, 2000, "every batched row");
    assert_eq!(
        (min, max),
        (0, rows - 1),
        "seq is dense: nothing skipped or doubled"
    );
    assert_eq!(
        distinct_prev, rows,
        "no two rows chain to the same predecessor: no fork"
    );

    // Checkpoints follow (every 50 rows or 1 s), signed by one replica at a time.
    let mut covered = false;
    for _ in 0..100 {
        if kv_checkpoint(&stack)
            .await
            .is_some_and(|cp| cp["covers_seq"].as_i64() >= Some(last_written))
        {
            covered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        covered,
        "no checkpoint covers seq {last_written}: {}",
        replicas.logs()
    );
    let checkpoints: Vec<(i64, i64)> = sqlx::query_as(
        "select seq, (detail->>'covers_seq')::bigint from precinct.audit_log \
         where event = 'audit_checkpoint' order by seq",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let covered: Vec<i64> = checkpoints.iter().map(|c| c.1).collect();
    let mut sorted = covered.clone();
    sorted.dedup();
    assert_eq!(covered, sorted, "no head signed twice: {checkpoints:?}");
    drop(replicas);
    let total = count(&mut admin, "select count(*) from precinct.audit_log").await;
    let signed = count(
        &mut admin,
        "select count(*) from precinct.audit_log where event = 'audit_checkpoint'",
    )
    .await;
    let (code, out) = audit_verify(&stack).await;
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("ok: {total} rows, {signed} checkpoints")),
        "{out}"
    );
}

/// Waits until `n` failed-refresh rows landed (refusals are appended in
/// batches, within 20 ms).
async fn refusal_rows(admin: &mut PgConnection, n: i64) {
    for _ in 0..100 {
        let landed = count(
            admin,
            "select count(*) from precinct.audit_log where event = 'refresh' and outcome = 'failure'",
        )
        .await;
        if landed >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} refusal rows never landed");
}

/// Re-chains every row from `from` on, as a superuser with the triggers
/// off could: a plain hash chain is no proof against them.
fn rechain(from: i64) -> String {
    format!(
        "do $$ declare r record; prev bytea; begin \
           select row_hash into prev from precinct.audit_log where seq = {from} - 1; \
           for r in select * from precinct.audit_log where seq >= {from} order by seq loop \
             prev := precinct.audit_row_hash(prev, r.seq, r.occurred_at, r.event, r.outcome, r.user_id, \
                       r.client_ip, r.user_agent, r.request_id, r.detail); \
             update precinct.audit_log set prev_hash = coalesce((select row_hash from precinct.audit_log where seq = r.seq - 1), prev_hash), \
               row_hash = prev where seq = r.seq; \
           end loop; end $$"
    )
}

#[tokio::test]
async fn audit_verify_names_each_kind_of_tampering() {
    let (stack, app) = start_ready(&[
        ("AUDIT_CHECKPOINT_INTERVAL", "1s"),
        ("AUDIT_CHECKPOINT_ROWS", "1000"),
    ])
    .await;
    let client = crate::common::http();
    let base = app.url("");
    let base = base.trim_end_matches('/');
    let mut admin = stack.admin().await;
    // Five refusals, then until a checkpoint in OpenBao signs them; the
    // head they reached.
    let refusals_signed = async |admin: &mut PgConnection, landed: i64| -> i64 {
        for _ in 0..5 {
            bad_refresh(&client, base).await;
        }
        refusal_rows(admin, landed).await;
        let head = count(admin, WRITTEN_HEAD).await;
        eventually(
            Duration::from_secs(20),
            "a checkpoint of the refusals",
            || {
                let stack = &stack;
                async move {
                    kv_checkpoint(stack)
                        .await
                        .is_some_and(|cp| cp["covers_seq"].as_i64() >= Some(head))
                }
            },
        )
        .await;
        head
    };
    let first_head = refusals_signed(&mut admin, 5).await;
    // The backup an attacker might restore later: the table as it was.
    sqlx::raw_sql("create table public.older as select * from precinct.audit_log")
        .execute(&mut admin)
        .await
        .unwrap();
    refusals_signed(&mut admin, 10).await;
    app.stop().await;

    let (code, intact) = audit_verify(&stack).await;
    println!("intact: {intact}");
    assert_eq!(code, 0, "{intact}");
    assert!(intact.starts_with("ok: "), "{intact}");
    sqlx::raw_sql("create table public.intact as select * from precinct.audit_log")
        .execute(&mut admin)
        .await
        .unwrap();
    let (checkpoint_seq, covers): (i64, i64) = sqlx::query_as(
        "select seq, (detail->>'covers_seq')::bigint from precinct.audit_log \
         where event = 'audit_checkpoint' and (detail->>'covers_seq')::bigint >= $1 \
         order by seq limit 1",
    )
    .bind(first_head)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let last = count(&mut admin, "select max(seq) from precinct.audit_log").await;
    // Another Transit key's signature over the same message.
    let message = format!(
        "precinct-audit-checkpoint-v1\n{covers}\n{}",
        sqlx::query_scalar::<_, String>(
            "select detail->>'head' from precinct.audit_log where seq = $1"
        )
        .bind(checkpoint_seq)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    );
    let other_sig = stack.transit_sign("precinct-access-token", &message).await;

    let middle = covers - 2;
    let cases: Vec<(&str, String, String)> = vec![
        (
            "a row deleted in the middle",
            format!("delete from precinct.audit_log where seq = {middle}"),
            format!(
                "rows deleted: seq {} is followed by seq {}",
                middle - 1,
                middle + 1
            ),
        ),
        (
            "a row's detail edited",
            format!(
                "update precinct.audit_log set detail = '{{\"reason\": \"none\"}}' where seq = {middle}"
            ),
            format!("row seq {middle} was altered"),
        ),
        (
            "a row inserted with a forged hash",
            format!(
                "insert into precinct.audit_log (event, outcome, seq, prev_hash, row_hash) \
                 select 'login', 'success', {}, row_hash, '\\xabab' from precinct.audit_log where seq = {last}",
                last + 1
            ),
            format!(
                "row seq {} was altered, or inserted with a forged hash",
                last + 1
            ),
        ),
        (
            "a row edited and the chain recomputed",
            format!(
                "update precinct.audit_log set outcome = 'success' where seq = {middle}; {}",
                rechain(middle)
            ),
            format!(
                "rows up to seq {covers} were rewritten and re-chained after checkpoint seq {checkpoint_seq}"
            ),
        ),
        (
            "a checkpoint whose signature is from another key",
            format!(
                "update precinct.audit_log set detail = jsonb_set(detail, '{{signature}}', '\"{other_sig}\"') \
                 where seq = {checkpoint_seq}; {}",
                rechain(checkpoint_seq)
            ),
            format!("checkpoint row seq {checkpoint_seq}: its signature does not verify"),
        ),
        (
            "a truncated table",
            "delete from precinct.audit_log".to_string(),
            "the audit log is empty".to_string(),
        ),
        (
            "a table restored from an older backup",
            "delete from precinct.audit_log; \
             insert into precinct.audit_log overriding system value select * from public.older"
                .to_string(),
            "but the checkpoint kept in OpenBao signs seq".to_string(),
        ),
    ];
    for (what, tamper, expected) in &cases {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "set session_replication_role = replica; \
             delete from precinct.audit_log; \
             insert into precinct.audit_log overriding system value select * from public.intact; \
             {tamper}; \
             set session_replication_role = origin;"
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (code, out) = audit_verify(&stack).await;
        println!("{what}: exit {code}: {out}");
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains(expected.as_str()), "{what}: {out}");
    }
    assert!(last > covers, "rows after the first checkpoint existed");
}

#[tokio::test]
async fn a_grant_that_cannot_be_audited_is_refused_and_a_revocation_still_happens() {
    let (stack, app) = start_ready(&[]).await;
    crate::common::register(&app, "terry_jeffords").await;
    let tokens = login(&app, "terry_jeffords").await;
    let mut admin = stack.admin().await;
    // The trail refuses new login and logout rows (as a full disk or a
    // broken trigger would); NOT VALID: existing rows stay as they are.
    sqlx::raw_sql(
        "alter table precinct.audit_log add constraint refuse_some \
         check (event not in ('login', 'logout', 'register')) not valid",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let families_before = count(&mut admin, "select count(*) from precinct.refresh_families").await;
    let r = post_json(
        &app,
        "/api/v1/auth/login",
        json!({"username": "terry_jeffords", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "an unaudited login"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "database_unavailable",
        "the JSON error shape, retryable: {body}"
    );
    assert_eq!(
        count(&mut admin, "select count(*) from precinct.refresh_families").await,
        families_before,
        "nothing of that login was written"
    );
    let r = post_json(
        &app,
        "/api/v1/auth/register",
        json!({"username": "hitchcock", "email": "h@example.test", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "an unaudited account"
    );
    assert_eq!(
        count(
            &mut admin,
            "select count(*) from precinct.users where username = 'hitchcock'"
        )
        .await,
        0
    );
    // Logging out removes access: it happens, audited or not.
    let r = post_json(
        &app,
        "/api/v1/auth/logout",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert!(r.status().is_success(), "logout: {}", r.status());
    assert_eq!(
        count(
            &mut admin,
            "select count(*) from precinct.refresh_families where revoked_at is null"
        )
        .await,
        0,
        "the session ended"
    );
    let metrics = app
        .client
        .get(app.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert!(metrics.status().is_success());
    app.stop().await;
}

#[tokio::test]
async fn security_events_and_rotations_have_their_rows() {
    let (stack, app) = start_ready(&[
        ("AUTH_LOGIN_RATE_PER_USERNAME_IP", "4"),
        ("AUDIT_CHECKPOINT_INTERVAL", "1s"),
    ])
    .await;
    crate::common::register(&app, "charles_boyle").await;
    let conflict = post_json(
        &app,
        "/api/v1/auth/register",
        json!({"username": "Charles_Boyle", "email": "other@example.test", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let tokens = login(&app, "charles_boyle").await;
    let refreshed: Value = post_json(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    // The spent token again: the family is revoked.
    let reuse = post_json(
        &app,
        "/api/v1/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    let second = login(&app, "charles_boyle").await;
    let logout = post_json(
        &app,
        "/api/v1/auth/logout",
        json!({"refresh_token": second["refresh_token"]}),
    )
    .await;
    assert!(logout.status().is_success());
    assert!(refreshed["access_token"].is_string());
    for _ in 0..3 {
        post_json(
            &app,
            "/api/v1/auth/login",
            json!({"username": "charles_boyle", "password": "wrong password, twice over"}),
        )
        .await;
    }
    // A rotation of the database credentials (SIGHUP's path, in-process).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.db
        .as_ref()
        .expect("a database")
        .request_rotation(precinct::db::Trigger::Signal);
    let mut admin = stack.admin().await;
    eventually(
        Duration::from_secs(20),
        "rotation and checkpoint rows",
        || {
            let url = stack.admin_url.clone();
            let db = stack.db_name.clone();
            async move {
                let mut c = PgConnection::connect(&crate::common::stack::with_db(&url, &db))
                    .await
                    .unwrap();
                let n: i64 = sqlx::query_scalar(
                    "select count(distinct event) from precinct.audit_log \
                 where event in ('db_credentials_rotated', 'audit_checkpoint') \
                 and (event <> 'db_credentials_rotated' or outcome = 'success')",
                )
                .fetch_one(&mut c)
                .await
                .unwrap();
                n == 2
            }
        },
    )
    .await;
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select event, outcome, detail->>'reason' from precinct.audit_log order by seq",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    for (event, outcome, reason) in [
        ("audit_genesis", "created", None),
        ("register", "success", None),
        ("register", "conflict", None),
        ("login", "success", None),
        ("refresh", "success", None),
        ("refresh_reuse", "family_revoked", None),
        ("logout", "success", None),
        ("login", "failure", Some("bad_password")),
        ("login", "failure", Some("rate_limited")),
        ("db_credentials_rotated", "initial", None),
        ("db_credentials_rotated", "success", None),
        ("audit_checkpoint", "signed", None),
    ] {
        assert!(
            rows.iter().any(|r| r.0 == event
                && r.1 == outcome
                && (reason.is_none() || r.2.as_deref() == reason)),
            "({event}, {outcome}, {reason:?}) in {rows:?}"
        );
    }
    app.stop().await;
}

/// docs/audit.md lists every event; each is written somewhere in the code
/// (Rust or the migration's functions), and the code writes no other.
#[test]
fn docs_audit_md_lists_exactly_the_events_the_code_writes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/audit.md")).unwrap();
    let events = doc
        .split("\n## ")
        .find(|section| section.starts_with("Events"))
        .expect("docs/audit.md has an Events section");
    let documented: std::collections::BTreeSet<String> = events
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect();
    let mut code = String::new();
    for dir in ["src", "sql/migrations"] {
        for entry in walk(&format!("{root}/{dir}")) {
            code.push_str(&std::fs::read_to_string(entry).unwrap());
        }
    }
    // Event names as the code writes them: the first string argument
    // of an audit call, or the event column of the SQL functions' inserts.
    fn first(args: &str) -> Option<&str> {
        Some(args)
    }
    fn second(args: &str) -> Option<&str> {
        args.split_once(',').map(|(_, rest)| rest)
    }
    let mut written = std::collections::BTreeSet::new();
    for (marker, quote, arg) in [
        ("Entry::new(", '"', first as fn(&str) -> Option<&str>),
        ("internal_call_row(", '"', first),
        ("record(", '"', second),
        ("record_best_effort(", '"', second),
        ("record_system(", '"', second),
        // An `Entry` built field by field.
        ("event: ", '"', first),
        ("VALUES (", '\'', first),
    ] {
        for (i, _) in code.match_indices(marker) {
            let name = arg(&code[i + marker.len()..])
                .and_then(|rest| rest.trim_start().strip_prefix(quote))
                .and_then(|rest| rest.split_once(quote));
            if let Some((name, _)) = name {
                written.insert(name.to_string());
            }
        }
    }
    // Written with a computed name (the limiter's event, the caller's route).
    written.extend(["login".to_string(), "register".to_string()]);
    assert_eq!(documented, written, "docs/audit.md vs the code");
}

fn walk(dir: &str) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(path.to_str().unwrap()));
        } else if path.extension().is_some_and(|e| e == "rs" || e == "sql") {
            out.push(path);
        }
    }
    out
}
