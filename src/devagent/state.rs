//! What the agent's servers share: the identity it hands out, its
//! authorities and the material they issued.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{RwLock, watch};
use tokio_util::sync::CancellationToken;

use super::{
    error::DevAgentError,
    jwt::JwtAuthority,
    x509::{Authority, X509Material},
};

pub(crate) struct AgentState {
    pub(crate) spiffe_id: String,
    pub(crate) trust_domain: String,
    pub(crate) issuer: String,
    pub(crate) jwt_ttl: Duration,
    pub(crate) authority: Authority,
    pub(crate) x509: watch::Sender<Arc<X509Material>>,
    pub(crate) jwt: RwLock<JwtAuthority>,
    /// The JWT bundle (JWKS JSON bytes) pushed to FetchJWTBundles streams.
    pub(crate) jwks: watch::Sender<Arc<Vec<u8>>>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) x509_ttl: Duration,
    pub(crate) cancel: CancellationToken,
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

    pub(crate) fn rotate_x509(&self) -> Result<(), DevAgentError> {
        let material = self.authority.issue(&self.spiffe_id, self.x509_ttl)?;
        tracing::info!(
            spiffe_id = %self.spiffe_id,
            serial = %material.serial_hex,
            not_after = %material.not_after,
            "dev-agent: X.509-SVID issued"
        );
        self.x509.send_replace(Arc::new(material));
        Ok(())
    }
}
