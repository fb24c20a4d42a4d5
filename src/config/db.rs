//! Database connection and credential rotation.

use std::time::Duration;

use super::{
    env::AppEnv,
    vars::{ConfigError, Vars},
};

/// Database connection and credential rotation.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub sslmode: String,
    /// CA bundle that verifies PostgreSQL's certificate (a private CA);
    /// the system's web PKI roots otherwise.
    pub sslrootcert: Option<std::path::PathBuf>,
    pub pool_max: u32,
    pub pool_min: u32,
    pub acquire_timeout: Duration,
    pub rotation_interval: Duration,
    pub drain_timeout: Duration,
    /// No two rotations start closer than this (SIGHUP storms, short TTLs).
    pub rotation_min_spacing: Duration,
    pub lease_safety_margin: Duration,
    pub health_interval: Duration,
    pub migrate_on_start: bool,
}

pub(super) fn parse(v: &mut Vars<'_>, env: AppEnv) -> Result<DbConfig, ConfigError> {
    // Production verifies the server's certificate and name by default.
    let sslmode = v.string_or(
        "DB_SSLMODE",
        if env.is_production() {
            "verify-full"
        } else {
            "prefer"
        },
    );
    let sslrootcert = v.get("DB_SSLROOTCERT").map(std::path::PathBuf::from);
    if let Some(path) = &sslrootcert
        && !path.is_file()
    {
        return Err(ConfigError::new(
            "DB_SSLROOTCERT",
            format!(
                "{} is not a readable file (a PEM CA bundle)",
                path.display()
            ),
        ));
    }
    if ![
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ]
    .contains(&sslmode.as_str())
    {
        return Err(ConfigError::new(
            "DB_SSLMODE",
            format!(
                "{sslmode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ),
        ));
    }
    let c = DbConfig {
        host: v.string_or("DB_HOST", "127.0.0.1"),
        port: v.parse_or("DB_PORT", 5432)?,
        name: v.string_or("DB_NAME", "precinct"),
        sslmode,
        sslrootcert,
        pool_max: v.parse_or("DB_POOL_MAX", 10)?,
        pool_min: v.parse_or("DB_POOL_MIN", 1)?,
        acquire_timeout: v.duration_or("DB_ACQUIRE_TIMEOUT", "5s")?,
        rotation_interval: v.duration_or("DB_ROTATION_INTERVAL", "50m")?,
        drain_timeout: v.duration_or("DB_DRAIN_TIMEOUT", "30s")?,
        rotation_min_spacing: v.duration_or("DB_ROTATION_MIN_SPACING", "10s")?,
        lease_safety_margin: v.duration_or("DB_LEASE_SAFETY_MARGIN", "5m")?,
        health_interval: v.duration_or("DB_HEALTH_INTERVAL", "5s")?,
        migrate_on_start: v.bool_or("DB_MIGRATE_ON_START", true)?,
    };
    if c.pool_max == 0 || c.pool_min > c.pool_max {
        return Err(ConfigError::new(
            "DB_POOL_MAX",
            "must be at least 1 and at least DB_POOL_MIN",
        ));
    }
    if c.drain_timeout >= c.rotation_interval {
        return Err(ConfigError::new(
            "DB_DRAIN_TIMEOUT",
            "must be shorter than DB_ROTATION_INTERVAL (an old pool drains while the new one serves)",
        ));
    }
    if c.health_interval.is_zero() {
        return Err(ConfigError::new(
            "DB_HEALTH_INTERVAL",
            "must be greater than 0",
        ));
    }
    Ok(c)
}
