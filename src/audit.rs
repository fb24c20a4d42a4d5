//! Audit log rows: who did what, from where, with which outcome. Never a
//! password, token or secret: `detail` holds categories only.

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

/// Writes one row, on a pool or inside a transaction (`&mut *tx`: the row
/// commits, or not, with the change it describes). Audit failures are
/// logged, never fail the request.
pub async fn record<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event: &str,
    outcome: &str,
    user_id: Option<Uuid>,
    meta: &RequestMeta,
    detail: Value,
) {
    let result = sqlx::query(
        "insert into audit_log (event, outcome, user_id, client_ip, user_agent, request_id, detail) \
         values ($1, $2, $3, $4::inet, $5, $6, $7)",
    )
    .bind(event)
    .bind(outcome)
    .bind(user_id)
    .bind(meta.client_ip.to_string())
    .bind(meta.user_agent.as_deref().map(|ua| truncate(ua, 512)))
    .bind(meta.request_id.as_deref())
    .bind(detail)
    .execute(executor)
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, event, outcome, "could not write audit log row");
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
