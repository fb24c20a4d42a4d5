//! Where the workload identity comes from.

use std::time::Duration;

use super::{
    env::AppEnv,
    vars::{ConfigError, Vars},
};

/// Where the workload identity comes from.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `unix:///path/to/agent.sock` (or `tcp://host:port`).
    pub endpoint: String,
    pub expected_id: Option<String>,
    pub startup_timeout: Duration,
    /// Audience of the JWT-SVID presented to OpenBao.
    pub jwt_audience: Vec<String>,
}

pub(super) fn parse(v: &mut Vars<'_>, env: AppEnv) -> Result<Option<IdentityConfig>, ConfigError> {
    let endpoint = v.get("SPIFFE_ENDPOINT_SOCKET");
    let expected_id = v.get("EXPECTED_SPIFFE_ID");
    let startup_timeout = v.duration_or("SPIFFE_STARTUP_TIMEOUT", "30s")?;
    let audience_raw = v.string_or("JWT_SVID_AUDIENCE", "openbao");
    let Some(endpoint) = endpoint else {
        if env.is_production() {
            return Err(ConfigError::new(
                "SPIFFE_ENDPOINT_SOCKET",
                "is required in production (e.g. unix:///run/spire/sockets/agent.sock)",
            ));
        }
        return Ok(None);
    };
    let endpoint = match endpoint.strip_prefix('/') {
        // Accept a bare absolute path, as some SPIRE setups document it.
        Some(_) => format!("unix://{endpoint}"),
        None => endpoint,
    };
    if !(endpoint.starts_with("unix://") || endpoint.starts_with("tcp://")) {
        return Err(ConfigError::new(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("{endpoint:?} is not a unix:///path or tcp://host:port address"),
        ));
    }
    if let Some(id) = &expected_id {
        spiffe::SpiffeId::new(id)
            .map_err(|e| ConfigError::new("EXPECTED_SPIFFE_ID", format!("{id:?}: {e}")))?;
    }
    let jwt_audience: Vec<String> = audience_raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if jwt_audience.is_empty() {
        return Err(ConfigError::new(
            "JWT_SVID_AUDIENCE",
            "must name at least one audience",
        ));
    }
    Ok(Some(IdentityConfig {
        endpoint,
        expected_id,
        startup_timeout,
        jwt_audience,
    }))
}
