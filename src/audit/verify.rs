//! `precinct audit verify`: the whole trail, checked against the Transit
//! audit key and the checkpoint kept in OpenBao KV. It reads as the owner
//! role (short-lived migrate credentials), in one snapshot, row by row.

use futures::TryStreamExt;

use super::chain::{Checkpoint, Keys, Problem, Report, Row, Verifier};
use crate::{
    bao::{BaoClient, BaoError, transit},
    config::{AuditConfig, DbConfig},
    db::{self, DbError},
};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("reading the audit log: {0}")]
    Read(#[from] sqlx::Error),
    #[error("transit: {0}")]
    Transit(#[from] transit::TransitError),
    #[error("reading the checkpoint copy from OpenBao KV: {0}")]
    Kv(#[from] BaoError),
}

/// The audit key's public keys, every version Transit lists.
pub async fn keys(
    bao: &BaoClient,
    transit_mount: &str,
    name: &str,
) -> Result<Keys, transit::TransitError> {
    let versions = transit::public_keys(bao.vault(), transit_mount, name).await?;
    Ok(Keys {
        name: name.to_string(),
        versions: versions
            .into_iter()
            .map(|(version, v)| (version, v.decoding))
            .collect(),
    })
}

/// The hashed fields exactly as `audit_row_hash` renders them.
const ROWS: &str = "select seq, prev_hash, row_hash, \
    ((extract(epoch from occurred_at) * 1000000)::bigint)::text as occurred_us, event, outcome, \
    user_id::text as user_id, client_ip::text as client_ip, user_agent, request_id, \
    detail::text as detail from audit_log order by seq";

/// `Ok(Err(problem))`: the trail is not intact; `Err`: it could not be
/// checked.
pub async fn verify(
    bao: &BaoClient,
    db_config: &DbConfig,
    transit_mount: &str,
    audit: &AuditConfig,
) -> Result<Result<Report, Problem>, VerifyError> {
    let keys = keys(bao, transit_mount, &audit.signing_key).await?;
    // Read before the table: any row it signs is in the snapshot below.
    let external: Option<Checkpoint> = bao.kv_read(&audit.kv_path).await?;
    let (pool, lease) = db::owner_pool(bao, db_config).await?;
    let result = walk(&pool, &keys, external.as_ref()).await;
    pool.close().await;
    db::release_owner_pool(bao, &lease).await;
    result
}

async fn walk(
    pool: &sqlx::PgPool,
    keys: &Keys,
    external: Option<&Checkpoint>,
) -> Result<Result<Report, Problem>, VerifyError> {
    let mut verifier = Verifier::new(keys);
    let mut rows = sqlx::query_as::<_, RawRow>(ROWS).fetch(pool);
    while let Some(raw) = rows.try_next().await? {
        if let Err(problem) = verifier.push(&raw.into()) {
            return Ok(Err(problem));
        }
    }
    Ok(verifier.finish(external))
}

#[derive(sqlx::FromRow)]
struct RawRow {
    seq: i64,
    prev_hash: Vec<u8>,
    row_hash: Vec<u8>,
    occurred_us: Option<String>,
    event: Option<String>,
    outcome: Option<String>,
    user_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    detail: Option<String>,
}

impl From<RawRow> for Row {
    fn from(r: RawRow) -> Self {
        Row {
            seq: r.seq,
            prev_hash: r.prev_hash,
            row_hash: r.row_hash,
            fields: [
                r.occurred_us,
                r.event,
                r.outcome,
                r.user_id,
                r.client_ip,
                r.user_agent,
                r.request_id,
                r.detail,
            ],
        }
    }
}
