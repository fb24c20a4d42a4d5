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
use state::AgentState;
use x509::Authority;

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
        }
    }

    fn validate(&self) -> Result<(), DevAgentError> {
        let id = spiffe::SpiffeId::new(&self.spiffe_id)
            .map_err(|e| DevAgentError::Config(format!("--spiffe-id {:?}: {e}", self.spiffe_id)))?;
        if id.trust_domain_name() != self.trust_domain {
            return Err(DevAgentError::Config(format!(
                "--spiffe-id {} is not in --trust-domain {}",
                self.spiffe_id, self.trust_domain
            )));
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
    socket: PathBuf,
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
        let unix_listener = bind_socket(&config.socket)?;

        let first = authority.issue(&config.spiffe_id, config.x509_ttl)?;
        let (x509, _) = watch::channel(Arc::new(first));
        let (jwks, _) = watch::channel(Arc::new(jwt.bundle_jwks().to_string().into_bytes()));
        let cancel = CancellationToken::new();
        let state = Arc::new(AgentState {
            cancel: cancel.clone(),
            spiffe_id: config.spiffe_id.clone(),
            trust_domain: config.trust_domain.clone(),
            issuer,
            jwt_ttl: config.jwt_ttl,
            authority,
            x509,
            jwt: RwLock::new(jwt),
            jwks,
            state_dir: config.state_dir.clone(),
            x509_ttl: config.x509_ttl,
        });

        let mut tasks = JoinSet::new();

        let svc = pb::spiffe_workload_api_server::SpiffeWorkloadApiServer::with_interceptor(
            workload::WorkloadApi {
                state: state.clone(),
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

        let stop = cancel.clone();
        let router = oidc::router(state.clone());
        tasks.spawn(async move {
            let _ = axum::serve(oidc_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });

        // Like SPIRE: rotate the X.509-SVID at half its lifetime.
        let (stop, s) = (cancel.clone(), state.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(s.x509_ttl / 2) => {}
                }
                if let Err(e) = s.rotate_x509() {
                    tracing::error!(error = %e, "dev-agent: X.509-SVID rotation failed");
                }
            }
        });

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
            socket = %config.socket.display(),
            spiffe_id = %config.spiffe_id,
            issuer = %state.issuer,
            "dev-agent serving the SPIFFE Workload API (development only: attests nothing)"
        );
        Ok(Self {
            state,
            socket: config.socket,
            oidc_addr,
            cancel,
            tasks,
        })
    }

    /// `unix:///abs/path.sock`, the form `SPIFFE_ENDPOINT_SOCKET` takes.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn oidc_addr(&self) -> SocketAddr {
        self.oidc_addr
    }

    /// The issuer URL: `iss` of every JWT-SVID and the OIDC discovery URL.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn spiffe_id(&self) -> &str {
        &self.state.spiffe_id
    }

    /// The trust bundle (CA certificate, DER).
    pub fn bundle_der(&self) -> Vec<u8> {
        self.state.authority.bundle_der().to_vec()
    }

    /// Serial (hex) of the X.509-SVID currently served.
    pub fn current_serial(&self) -> String {
        self.state.x509.borrow().serial_hex.clone()
    }

    /// Issues and pushes a fresh X.509-SVID now.
    pub fn rotate_x509(&self) -> Result<(), DevAgentError> {
        self.state.rotate_x509()
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
        let _ = std::fs::remove_file(&self.socket);
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
