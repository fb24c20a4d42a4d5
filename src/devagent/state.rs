//! What the agent's servers share: its authorities and the identities it
//! hands out, one per socket (as SPIRE maps workloads to registration
//! entries; here the socket is the selector).

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{RwLock, watch};
use tokio_util::sync::CancellationToken;

use super::{
    error::DevAgentError,
    jwt::JwtAuthority,
    x509::{Authority, X509Material},
};

pub(crate) struct AgentState {
    pub(crate) trust_domain: String,
    pub(crate) issuer: String,
    pub(crate) jwt_ttl: Duration,
    pub(crate) authority: Authority,
    pub(crate) jwt: RwLock<JwtAuthority>,
    /// The JWT bundle (JWKS JSON bytes) pushed to FetchJWTBundles streams.
    pub(crate) jwks: watch::Sender<Arc<Vec<u8>>>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) x509_ttl: Duration,
    pub(crate) cancel: CancellationToken,
}

/// One identity the agent hands out, on its own socket.
pub(crate) struct WorkloadIdentity {
    pub(crate) spiffe_id: String,
    pub(crate) dns_names: Vec<String>,
    pub(crate) socket: PathBuf,
    pub(crate) x509: watch::Sender<Arc<X509Material>>,
}

impl AgentState {
    pub(crate) async fn rotate_jwt_key(&self) -> Result<String, DevAgentError> {
        let mut jwt = self.jwt.write().await;
        let kid = jwt.rotate(self.state_dir.as_deref())?;
        self.jwks
            .send_replace(Arc::new(jwt.bundle_jwks().to_string().into_bytes()));
        tracing::info!(kid, "dev-agent: JWT signing key rotated");
        Ok(kid)
    }

    /// Issues and pushes a fresh X.509-SVID for `workload`.
    pub(crate) fn rotate_x509(&self, workload: &WorkloadIdentity) -> Result<(), DevAgentError> {
        let material =
            self.authority
                .issue(&workload.spiffe_id, &workload.dns_names, self.x509_ttl)?;
        tracing::info!(
            spiffe_id = %workload.spiffe_id,
            serial = %material.serial_hex,
            not_after = %material.not_after,
            "dev-agent: X.509-SVID issued"
        );
        workload.x509.send_replace(Arc::new(material));
        Ok(())
    }
}
