//! Credential rotations in the trail: each new database credential
//! generation this replica swaps to is a row (`db_credentials_rotated`),
//! written on the new generation's pool.

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// Records every swap until `cancel` (the caller spawns it).
pub async fn run(db: Db, cancel: CancellationToken) {
    let mut swaps = db.swaps();
    let mut previous = *swaps.borrow_and_update();
    let replica = std::env::var("HOSTNAME").unwrap_or_default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = swaps.changed() => if changed.is_err() {
                cancel.cancelled().await;
                return;
            },
        }
        let generation = *swaps.borrow_and_update();
        let role = db.generation().map(|g| g.username).unwrap_or_default();
        let Ok(pool) = db.pool().await else { continue };
        let outcome = if previous == 0 { "initial" } else { "success" };
        // A refusal to rotate is not an option: the row is best effort.
        let _ = super::record_system(
            &*pool,
            "db_credentials_rotated",
            outcome,
            json!({"generation": generation, "previous": previous, "role": role, "replica": replica}),
        )
        .await;
        previous = generation;
    }
}
