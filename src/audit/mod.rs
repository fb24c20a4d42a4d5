//! The audit trail (docs/audit.md): who did what, from where, with which
//! outcome. Never a password, token or secret: `detail` holds categories.
//!
//! Rows are appended by the runtime role, which can do nothing else to
//! them; PostgreSQL numbers and hash-chains each row as it lands
//! (sql/migrations/20261201000002_assume_breach.sql, [`chain`]), and
//! [`checkpoint`] signs the chain's head with a Transit key precinct alone
//! holds. [`verify`] walks it all (`precinct audit verify`).

pub mod batch;
pub mod chain;
pub mod checkpoint;
pub mod metrics;
pub mod rotations;
pub mod verify;

use std::net::IpAddr;

use serde_json::Value;
use uuid::Uuid;

/// Where a request came from.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub client_ip: IpAddr,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// The longest user agent a row keeps.
pub const USER_AGENT_MAX: usize = 512;

/// Writes one row, on a pool or inside a transaction (`&mut *tx`: the row
/// commits, or not, with the change it describes). The caller decides
/// what a failure means (docs/audit.md, "When the trail cannot be
/// written"): a change that grants access fails with it, a refusal or a
/// revocation proceeds. Either way it is logged and counted here.
pub async fn record<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event: &str,
    outcome: &str,
    user_id: Option<Uuid>,
    meta: &RequestMeta,
    detail: Value,
) -> Result<(), sqlx::Error> {
    insert(executor, event, outcome, user_id, Some(meta), detail).await
}

/// A row about the service itself (a credential rotation): no request.
pub async fn record_system<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event: &str,
    outcome: &str,
    detail: Value,
) -> Result<(), sqlx::Error> {
    insert(executor, event, outcome, None, None, detail).await
}

/// [`record`] for refusals and revocations: a failure to audit is logged
/// and counted, and the answer stands.
pub async fn record_best_effort<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event: &str,
    outcome: &str,
    user_id: Option<Uuid>,
    meta: &RequestMeta,
    detail: Value,
) {
    let _ = record(executor, event, outcome, user_id, meta, detail).await;
}

async fn insert<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event: &str,
    outcome: &str,
    user_id: Option<Uuid>,
    meta: Option<&RequestMeta>,
    detail: Value,
) -> Result<(), sqlx::Error> {
    let result = sqlx::query(
        "insert into audit_log (event, outcome, user_id, client_ip, user_agent, request_id, detail) \
         values ($1, $2, $3, $4::inet, $5, $6, $7)",
    )
    .bind(event)
    .bind(outcome)
    .bind(user_id)
    .bind(meta.map(|m| m.client_ip.to_string()))
    .bind(
        meta.and_then(|m| m.user_agent.as_deref())
            .map(|ua| truncate(ua, USER_AGENT_MAX)),
    )
    .bind(meta.and_then(|m| m.request_id.as_deref()))
    .bind(detail)
    .execute(executor)
    .await;
    if let Err(e) = &result {
        ::metrics::counter!(metrics::WRITE_FAILURES).increment(1);
        tracing::error!(error = %e, event, outcome, "could not write audit log row");
    }
    result.map(|_| ())
}

pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
