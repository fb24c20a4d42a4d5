//! Migrations, run with a short-lived OpenBao *migrate* role that acts as
//! the stable owner role, so tables outlive every dynamic role.

use secrecy::ExposeSecret;
use sqlx::{Executor, PgPool, migrate::Migrator, postgres::PgPoolOptions};

use super::{DbError, generation::connect_options};
use crate::{bao::BaoClient, config::DbConfig};

/// Embedded from `sql/migrations` at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./sql/migrations");

/// Every migrate connection acts as the stable owner (see sql/bootstrap.sql).
const SET_OWNER_ROLE: &str = "SET ROLE precinct_owner";

/// A one-connection pool acting as the owner role, with short-lived
/// migrate credentials, and their lease (revoke it with [`release`]).
pub async fn owner_pool(bao: &BaoClient, config: &DbConfig) -> Result<(PgPool, String), DbError> {
    let creds = bao.db_credentials(&bao.config().db_migrate_role).await?;
    let options = connect_options(config, &creds.username, creds.password.expose_secret());
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(SET_OWNER_ROLE).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await;
    match pool {
        Ok(pool) => Ok((pool, creds.lease_id)),
        Err(e) => {
            release(bao, &creds.lease_id).await;
            Err(DbError::Unavailable(format!(
                "migrate credentials do not connect: {e}"
            )))
        }
    }
}

/// Revokes migrate credentials (best effort: they expire on their own).
pub async fn release(bao: &BaoClient, lease_id: &str) {
    if let Err(e) = bao.revoke_lease(lease_id).await {
        tracing::warn!(error = %e, "could not revoke the migrate lease; it expires on its own");
    }
}

/// Applies pending migrations. Credentials are revoked afterwards, whatever
/// the outcome.
pub async fn migrate(bao: &BaoClient, config: &DbConfig) -> Result<(), DbError> {
    let (pool, lease_id) = owner_pool(bao, config).await?;
    let result = MIGRATOR.run(&pool).await.map_err(DbError::from);
    pool.close().await;
    release(bao, &lease_id).await;
    if result.is_ok() {
        tracing::info!("database migrations applied");
    }
    result
}
