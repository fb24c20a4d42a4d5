//! `precinct dev-agent`: a development SPIFFE Workload API.
//!
//! **For local development and tests only.** It attests nothing: every caller
//! of its socket receives the one configured identity. In a cluster, SPIRE's
//! agent serves the same protocol on the same kind of socket.
//!
//! It behaves like SPIRE's agent where precinct depends on it: the
//! `workload.spiffe.io` security header, X.509-SVIDs streamed and rotated at
//! half their lifetime, JWT-SVIDs with required audiences, JWT bundles that
//! keep the previous key after a rotation, and an OIDC discovery endpoint
//! whose issuer matches the tokens' `iss`.

mod error;
mod jwt;
mod oidc;
pub mod pb;
mod state;
mod workload;
mod x509;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::{TcpListener, UnixListener},
    sync::{RwLock, watch},
    task::JoinSet,
};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

pub use error::DevAgentError;
pub use jwt::JwtSvidClaims;
use state::{AgentState, WorkloadIdentity};
use x509::Authority;
pub use x509::LeafSpec;

#[derive(Debug, Clone)]
pub struct DevAgentConfig {
    pub socket: PathBuf,
    pub trust_domain: String,
    pub spiffe_id: String,
    pub oidc_addr: SocketAddr,
    /// Issuer URL put in `iss` and served by discovery; defaults to
    /// `http://<oidc_addr>` (set it when the agent is reached by another name).
    pub issuer: Option<String>,
    pub x509_ttl: Duration,
    pub jwt_ttl: Duration,
    /// Rotate the JWT signing key this often (the previous key stays published).
    pub jwt_key_rotation: Option<Duration>,
    /// Keep the CA and JWT signing key here across restarts.
    pub state_dir: Option<PathBuf>,
    /// More identities, from the same CA: each served on its own socket
    /// (`--workload ID=SOCKET`), as SPIRE serves each registered workload
    /// its own SVID. Tests and `scripts/dev.sh` use one for a client.
    pub workloads: Vec<(String, PathBuf)>,
    /// DNS SANs of the main identity's SVIDs (SPIRE: an entry's `dnsNames`),
    /// so a client that checks host names (curl) verifies precinct fully.
    pub dns_names: Vec<String>,
}

impl DevAgentConfig {
    pub fn new(
        socket: impl Into<PathBuf>,
        trust_domain: &str,
        spiffe_id: &str,
        oidc_addr: SocketAddr,
    ) -> Self {
        Self {
            socket: socket.into(),
            trust_domain: trust_domain.to_string(),
            spiffe_id: spiffe_id.to_string(),
            oidc_addr,
            issuer: None,
            x509_ttl: Duration::from_secs(3600),
            jwt_ttl: Duration::from_secs(300),
            jwt_key_rotation: None,
            state_dir: None,
            workloads: Vec::new(),
            dns_names: vec!["localhost".to_string()],
        }
    }

    fn validate(&self) -> Result<(), DevAgentError> {
        let ids = std::iter::once(&self.spiffe_id).chain(self.workloads.iter().map(|(id, _)| id));
        for spiffe_id in ids {
            let id = spiffe::SpiffeId::new(spiffe_id)
                .map_err(|e| DevAgentError::Config(format!("SPIFFE ID {spiffe_id:?}: {e}")))?;
            if id.trust_domain_name() != self.trust_domain {
                return Err(DevAgentError::Config(format!(
                    "{spiffe_id} is not in --trust-domain {}",
                    self.trust_domain
                )));
            }
        }
        if self.x509_ttl < Duration::from_secs(2) || self.jwt_ttl < Duration::from_secs(2) {
            return Err(DevAgentError::Config("TTLs must be at least 2s".into()));
        }
        Ok(())
    }
}

/// A running development agent. Dropping it does not stop it: call `shutdown`.
pub struct DevAgent {
    state: Arc<AgentState>,
    /// The first is the main identity (`--spiffe-id` on `--socket`).
    workloads: Vec<Arc<WorkloadIdentity>>,
    oidc_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl DevAgent {
    /// Binds the socket and the OIDC listener and starts serving.
    pub async fn start(config: DevAgentConfig) -> Result<Self, DevAgentError> {
        config.validate()?;
        let state_dir = config.state_dir.as_deref();
        let authority = Authority::load_or_generate(&config.trust_domain, state_dir)?;
        let jwt = jwt::JwtAuthority::load_or_generate(state_dir)?;

        let oidc_listener = TcpListener::bind(config.oidc_addr).await?;
        let oidc_addr = oidc_listener.local_addr()?;
        let issuer = config
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{oidc_addr}"));
        let (jwks, _) = watch::channel(Arc::new(jwt.bundle_jwks().to_string().into_bytes()));
        let cancel = CancellationToken::new();
        let state = Arc::new(AgentState {
            cancel: cancel.clone(),
            trust_domain: config.trust_domain.clone(),
            issuer,
            jwt_ttl: config.jwt_ttl,
            authority,
            jwt: RwLock::new(jwt),
            jwks,
            state_dir: config.state_dir.clone(),
            x509_ttl: config.x509_ttl,
        });
        let mut tasks = JoinSet::new();
        let stop = cancel.clone();
        let router = oidc::router(state.clone());
        tasks.spawn(async move {
            let _ = axum::serve(oidc_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });

        let mut workloads = Vec::new();
        let all = std::iter::once((
            config.spiffe_id.clone(),
            config.socket.clone(),
            config.dns_names.clone(),
        ))
        .chain(
            config
                .workloads
                .iter()
                .map(|(id, s)| (id.clone(), s.clone(), Vec::new())),
        );
        for (spiffe_id, socket, dns_names) in all {
            let unix_listener = bind_socket(&socket)?;
            let first = state
                .authority
                .issue(&spiffe_id, &dns_names, config.x509_ttl)?;
            let workload = Arc::new(WorkloadIdentity {
                spiffe_id,
                dns_names,
                socket,
                x509: watch::channel(Arc::new(first)).0,
            });
            let svc = pb::spiffe_workload_api_server::SpiffeWorkloadApiServer::with_interceptor(
                workload::WorkloadApi {
                    state: state.clone(),
                    workload: workload.clone(),
                },
                workload::require_security_header,
            );
            let stop = cancel.clone();
            tasks.spawn(async move {
                let result = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(
                        UnixListenerStream::new(unix_listener),
                        stop.cancelled_owned(),
                    )
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "dev-agent: Workload API server failed");
                }
            });
            // Like SPIRE: rotate the X.509-SVID at half its lifetime.
            let (stop, s, w) = (cancel.clone(), state.clone(), workload.clone());
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(s.x509_ttl / 2) => {}
                    }
                    if let Err(e) = s.rotate_x509(&w) {
                        tracing::error!(error = %e, "dev-agent: X.509-SVID rotation failed");
                    }
                }
            });
            tracing::info!(
                socket = %workload.socket.display(),
                spiffe_id = %workload.spiffe_id,
                "dev-agent serving an identity"
            );
            workloads.push(workload);
        }

        if let Some(every) = config.jwt_key_rotation {
            let (stop, s) = (cancel.clone(), state.clone());
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = s.rotate_jwt_key().await {
                        tracing::error!(error = %e, "dev-agent: JWT key rotation failed");
                    }
                }
            });
        }

        tracing::info!(
            identities = workloads.len(),
            issuer = %state.issuer,
            "dev-agent serving the SPIFFE Workload API (development only: attests nothing)"
        );
        Ok(Self {
            state,
            workloads,
            oidc_addr,
            cancel,
            tasks,
        })
    }

    /// `unix:///abs/path.sock`, the form `SPIFFE_ENDPOINT_SOCKET` takes:
    /// the main identity's socket.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> &Path {
        &self.workloads[0].socket
    }

    /// The endpoint that hands out `spiffe_id` (one of `workloads`).
    pub fn endpoint_of(&self, spiffe_id: &str) -> Option<String> {
        self.workloads
            .iter()
            .find(|w| w.spiffe_id == spiffe_id)
            .map(|w| format!("unix://{}", w.socket.display()))
    }

    pub fn oidc_addr(&self) -> SocketAddr {
        self.oidc_addr
    }

    /// The issuer URL: `iss` of every JWT-SVID and the OIDC discovery URL.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn spiffe_id(&self) -> &str {
        &self.workloads[0].spiffe_id
    }

    /// The trust bundle (CA certificate, DER).
    pub fn bundle_der(&self) -> Vec<u8> {
        self.state.authority.bundle_der().to_vec()
    }

    /// Serial (hex) of the main X.509-SVID currently served.
    pub fn current_serial(&self) -> String {
        self.workloads[0].x509.borrow().serial_hex.clone()
    }

    /// Serial (hex) of `spiffe_id`'s X.509-SVID currently served.
    pub fn serial_of(&self, spiffe_id: &str) -> Option<String> {
        self.workload(spiffe_id)
            .map(|w| w.x509.borrow().serial_hex.clone())
    }

    fn workload(&self, spiffe_id: &str) -> Option<&Arc<WorkloadIdentity>> {
        self.workloads.iter().find(|w| w.spiffe_id == spiffe_id)
    }

    /// Issues and pushes a fresh main X.509-SVID now.
    pub fn rotate_x509(&self) -> Result<(), DevAgentError> {
        self.state.rotate_x509(&self.workloads[0])
    }

    /// Issues and pushes a fresh X.509-SVID for `spiffe_id` now.
    pub fn rotate_x509_of(&self, spiffe_id: &str) -> Result<(), DevAgentError> {
        let w = self
            .workload(spiffe_id)
            .ok_or_else(|| DevAgentError::Config(format!("no identity {spiffe_id}")))?;
        self.state.rotate_x509(w)
    }

    /// A certificate signed by this agent's CA as `spec` says, and its key
    /// (PEM): what no conforming agent would issue (two URI SANs, none,
    /// already expired, a CA as a leaf). For tests of peers that must
    /// refuse them.
    pub fn issue_for_tests(&self, spec: &LeafSpec) -> Result<(String, String), DevAgentError> {
        self.state.authority.issue_spec(spec)
    }

    /// The CA certificate, PEM (a trust bundle for clients such as curl).
    pub fn bundle_pem(&self) -> String {
        x509::der_to_pem("CERTIFICATE", self.state.authority.bundle_der())
    }

    /// Rotates the JWT signing key now; returns the new `kid`.
    pub async fn rotate_jwt_key(&self) -> Result<String, DevAgentError> {
        self.state.rotate_jwt_key().await
    }

    pub async fn current_jwt_kid(&self) -> String {
        self.state.jwt.read().await.current_kid().to_string()
    }

    /// Stops serving and removes the socket file.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        // Streams never end on their own: bound the wait, then drop them.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for w in &self.workloads {
            let _ = std::fs::remove_file(&w.socket);
        }
    }

    /// Runs until SIGTERM/SIGINT (the `precinct dev-agent` command).
    pub async fn run_until_signal(self) {
        let why = crate::shutdown::requested(CancellationToken::new()).await;
        tracing::info!(reason = why, "dev-agent stopping");
        self.shutdown().await;
    }
}

/// Binds the unix socket, replacing a stale file but never a live agent's.
fn bind_socket(path: &Path) -> Result<UnixListener, DevAgentError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DevAgentError::Config(format!(
                "{} is in use by a running agent",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    // Workloads run as other users; like SPIRE, the socket is world-connectable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}
