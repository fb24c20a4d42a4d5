//! How precinct reaches OpenBao.

use std::time::Duration;

use super::{
    env::AppEnv,
    identity::IdentityConfig,
    vars::{ConfigError, Vars},
};

/// How precinct reaches OpenBao.
#[derive(Debug, Clone)]
pub struct BaoConfig {
    pub addr: url::Url,
    pub cacert: Option<std::path::PathBuf>,
    pub jwt_mount: String,
    pub jwt_role: String,
    pub jwt_audience: Vec<String>,
    pub db_mount: String,
    pub db_role: String,
    pub db_migrate_role: String,
    pub kv_mount: String,
    pub request_timeout: Duration,
}

pub(super) fn parse(
    v: &mut Vars<'_>,
    env: AppEnv,
    allow_insecure: bool,
    identity: Option<&IdentityConfig>,
) -> Result<BaoConfig, ConfigError> {
    // BAO_ADDR wins; VAULT_ADDR is accepted for tools that only know Vault.
    let bao_addr = v.get("BAO_ADDR");
    let vault_addr = v.get("VAULT_ADDR");
    let (var, raw) = match (bao_addr, vault_addr) {
        (Some(a), _) => ("BAO_ADDR", a),
        (None, Some(a)) => ("VAULT_ADDR", a),
        (None, None) => ("BAO_ADDR", "http://127.0.0.1:8200".to_string()),
    };
    let addr: url::Url = raw
        .parse()
        .map_err(|e| ConfigError::new(var, format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(addr.scheme(), "http" | "https") {
        return Err(ConfigError::new(var, "must be an http:// or https:// URL"));
    }
    if addr.scheme() == "http" && env.is_production() && !allow_insecure {
        return Err(ConfigError::new(
            var,
            "plain http is refused in production; use https (with BAO_CACERT) or set ALLOW_INSECURE=true",
        ));
    }
    let cacert = v.get("BAO_CACERT").map(std::path::PathBuf::from);
    if let Some(path) = &cacert
        && !path.is_file()
    {
        return Err(ConfigError::new(
            "BAO_CACERT",
            format!("{} is not a readable file", path.display()),
        ));
    }
    Ok(BaoConfig {
        addr,
        cacert,
        jwt_mount: v.string_or("BAO_JWT_MOUNT", "jwt"),
        jwt_role: v.string_or("BAO_JWT_ROLE", "backend-role"),
        jwt_audience: identity
            .map(|i| i.jwt_audience.clone())
            .unwrap_or_else(|| vec!["openbao".into()]),
        db_mount: v.string_or("BAO_DB_MOUNT", "database"),
        db_role: v.string_or("BAO_DB_ROLE", "precinct-runtime"),
        db_migrate_role: v.string_or("BAO_DB_MIGRATE_ROLE", "precinct-migrate"),
        kv_mount: v.string_or("BAO_KV_MOUNT", "secret"),
        request_timeout: v.duration_or("BAO_REQUEST_TIMEOUT", "10s")?,
    })
}
