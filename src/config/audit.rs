//! The audit trail's checkpoints (docs/audit.md).

use std::time::Duration;

use super::vars::{ConfigError, Vars};

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The Transit key (ecdsa-p256) that signs the chain head; precinct's
    /// own, apart from the access-token key.
    pub signing_key: String,
    /// Sign once this many rows follow the last checkpoint …
    pub checkpoint_rows: u64,
    /// … or once the last checkpoint is this old and rows followed it.
    pub checkpoint_interval: Duration,
    /// KV v2 path (under the KV mount) of the latest checkpoint's copy.
    pub kv_path: String,
}

pub(super) fn parse(v: &mut Vars<'_>) -> Result<AuditConfig, ConfigError> {
    let signing_key = v.string_or("AUDIT_SIGNING_KEY", "precinct-audit");
    let checkpoint_rows: u64 = v.parse_or("AUDIT_CHECKPOINT_ROWS", 1000)?;
    if checkpoint_rows == 0 {
        return Err(ConfigError::new(
            "AUDIT_CHECKPOINT_ROWS",
            "must be at least 1",
        ));
    }
    let checkpoint_interval = v.duration_or("AUDIT_CHECKPOINT_INTERVAL", "60s")?;
    if checkpoint_interval < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "AUDIT_CHECKPOINT_INTERVAL",
            "must be at least 1s (each checkpoint is a Transit signature)",
        ));
    }
    Ok(AuditConfig {
        signing_key,
        checkpoint_rows,
        checkpoint_interval,
        kv_path: v.string_or("AUDIT_CHECKPOINT_KV_PATH", "audit/checkpoint"),
    })
}
