//! Background tasks: shutdown and failure bounds.

use std::time::Duration;

use super::{
    bao::BaoConfig,
    db::DbConfig,
    vars::{ConfigError, Vars},
};

/// Background tasks: how long shutdown waits for them, and how long a failed
/// one leaves the process up before it exits non-zero.
#[derive(Debug, Clone)]
pub struct TasksConfig {
    /// Defaults above the pool's drain plus two OpenBao calls (revoke the
    /// lease, then the token), so a shutdown never leaves a role behind.
    pub shutdown_timeout: Duration,
    pub failure_grace: Duration,
}

pub(super) fn parse(
    v: &mut Vars<'_>,
    db: &DbConfig,
    bao: &BaoConfig,
) -> Result<TasksConfig, ConfigError> {
    let retire_bound = db.drain_timeout + bao.request_timeout * 2 + Duration::from_secs(5);
    Ok(TasksConfig {
        shutdown_timeout: v.duration_or(
            "SHUTDOWN_TASKS_TIMEOUT",
            &humantime::format_duration(retire_bound).to_string(),
        )?,
        failure_grace: v.duration_or("TASK_FAILURE_GRACE", "10s")?,
    })
}
