//! Migrations, run with a short-lived OpenBao *migrate* role that acts as
//! the stable owner role, so tables outlive every dynamic role.

use secrecy::ExposeSecret;
use sqlx::{Executor, migrate::Migrator, postgres::PgPoolOptions};

use super::{DbError, generation::connect_options};
use crate::{bao::BaoClient, config::DbConfig};

/// Embedded from `sql/migrations` at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./sql/migrations");

/// Every migrate connection acts as the stable owner (see sql/bootstrap.sql).
const SET_OWNER_ROLE: &str = "SET ROLE precinct_owner";

/// Applies pending migrations. Credentials are revoked afterwards, whatever
/// the outcome.
pub async fn migrate(bao: &BaoClient, config: &DbConfig) -> Result<(), DbError> {
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
    let result = match pool {
        Ok(pool) => {
            let r = MIGRATOR.run(&pool).await.map_err(DbError::from);
            pool.close().await;
            r
        }
        Err(e) => Err(DbError::Unavailable(format!(
            "migrate credentials do not connect: {e}"
        ))),
    };
    if let Err(e) = bao.revoke_lease(&creds.lease_id).await {
        tracing::warn!(error = %e, "could not revoke the migrate lease; it expires on its own");
    }
    if result.is_ok() {
        tracing::info!("database migrations applied");
    }
    result
}
