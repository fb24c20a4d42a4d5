//! OpenBao: JWT login with a JWT-SVID, token upkeep, database credentials
//! with leases, lease renew/revoke, KV v2.
//!
//! [`BaoClient`] is one logged-in token. The `db` module owns one per
//! credential generation (a token's leases die with it, see
//! docs/rotation.md); [`Session`] keeps a long-lived one for KV and Transit.

mod endpoints;
pub mod metrics;
mod session;
pub mod traced;
pub mod transit;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use vaultrs::api::kv2::requests::{
    DeleteSecretMetadataRequest, ReadSecretRequest, SetSecretRequest,
};
use vaultrs::{
    client::{Client, VaultClient, VaultClientSettingsBuilder},
    error::ClientError,
};

pub use session::{
    Session, SessionClient, SessionPublisher, SessionWatch, channel as session_channel,
};

use crate::{config::BaoConfig, identity::Identity};

#[derive(Debug, thiserror::Error)]
pub enum BaoError {
    #[error(
        "OpenBao refused JWT login to role {role:?} on mount {mount:?} for {spiffe_id}: {message}"
    )]
    LoginDenied {
        role: String,
        mount: String,
        spiffe_id: String,
        message: String,
    },
    #[error("OpenBao {operation}: {message}")]
    Api {
        operation: &'static str,
        status: u16,
        message: String,
    },
    #[error("OpenBao unreachable during {operation}: {message}")]
    Unreachable {
        operation: &'static str,
        message: String,
    },
    #[error("no JWT-SVID to log in with: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("OpenBao client setup: {0}")]
    Setup(String),
}

impl BaoError {
    pub(crate) fn from_client(operation: &'static str, e: ClientError) -> Self {
        let kind = match &e {
            ClientError::APIError { code: 403, .. } => "denied",
            ClientError::APIError { code: 404, .. } => "not_found",
            ClientError::APIError { code: 503, .. } => "unavailable",
            ClientError::APIError { code, .. } if *code >= 500 => "server",
            ClientError::APIError { .. } => "refused",
            _ => "unreachable",
        };
        ::metrics::counter!(metrics::ERRORS, "operation" => operation, "kind" => kind).increment(1);
        match e {
            ClientError::APIError { code, errors } => BaoError::Api {
                operation,
                status: code,
                message: if errors.is_empty() {
                    format!("status {code}")
                } else {
                    errors.join("; ")
                },
            },
            other => BaoError::Unreachable {
                operation,
                message: error_chain(&other),
            },
        }
    }

    /// 403/400 on a renewal: the token or lease cannot be extended.
    pub fn is_refusal(&self) -> bool {
        matches!(self, BaoError::Api { status, .. } if (400..500).contains(status))
    }
}

/// An error and its causes, `a: b: c`: vaultrs's own message ("An error
/// occurred with the request") hides what failed (a refused connection, a
/// certificate no CA vouches for).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Dynamic database credentials and the lease that owns them.
#[derive(Debug)]
pub struct DbCredentials {
    pub username: String,
    pub password: SecretString,
    pub lease_id: String,
    pub lease_duration: Duration,
    pub renewable: bool,
}

/// One logged-in OpenBao token.
pub struct BaoClient {
    client: VaultClient,
    config: BaoConfig,
    /// When the token expires unless renewed (as of login).
    pub token_expires_at: OffsetDateTime,
    /// The TTL granted at login (0: no expiry).
    pub token_ttl: Duration,
    /// When the login answered: `token_ttl` runs from here (monotonic).
    pub logged_in: std::time::Instant,
    pub renewable: bool,
}

impl BaoClient {
    /// Every setting comes from `BaoConfig`: vaultrs's builder would fill
    /// any field left unset from `VAULT_ADDR`, `VAULT_TOKEN`,
    /// `VAULT_SKIP_VERIFY`, `VAULT_CACERT`/`VAULT_CAPATH` and
    /// `VAULT_CLIENT_*` behind the configuration's back (`VAULT_SKIP_VERIFY`
    /// would turn TLS verification off), so none is left unset.
    fn unauthenticated(config: &BaoConfig) -> Result<VaultClient, BaoError> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(config.addr.as_str())
            .token("")
            .verify(true)
            .ca_certs(
                config
                    .cacert
                    .iter()
                    .map(|ca| ca.display().to_string())
                    .collect(),
            )
            .identity(None)
            .namespace(None)
            .version(1)
            .wrapping(false)
            .timeout(Some(config.request_timeout));
        let settings = settings
            .build()
            .map_err(|e| BaoError::Setup(e.to_string()))?;
        VaultClient::new(settings).map_err(|e| BaoError::Setup(e.to_string()))
    }

    /// Logs in with JWT auth, presenting a fresh JWT-SVID.
    pub async fn login(config: &BaoConfig, identity: &Identity) -> Result<Self, BaoError> {
        let svid = identity.jwt_svid(&config.jwt_audience).await?;
        let mut client = Self::unauthenticated(config)?;
        let auth = vaultrs::auth::oidc::login(
            &client,
            &config.jwt_mount,
            svid.token.expose_secret(),
            Some(config.jwt_role.clone()),
        )
        .await
        .map_err(|e| match BaoError::from_client("login", e) {
            BaoError::Api {
                status: 400 | 403,
                message,
                ..
            } => BaoError::LoginDenied {
                role: config.jwt_role.clone(),
                mount: config.jwt_mount.clone(),
                spiffe_id: svid.spiffe_id.clone(),
                message,
            },
            other => other,
        })?;
        client.set_token(&auth.client_token);
        let ttl = Duration::from_secs(auth.lease_duration);
        tracing::debug!(ttl = ?ttl, renewable = auth.renewable, "logged in to OpenBao");
        Ok(Self {
            client,
            config: config.clone(),
            token_expires_at: OffsetDateTime::now_utc() + ttl,
            token_ttl: ttl,
            logged_in: std::time::Instant::now(),
            renewable: auth.renewable,
        })
    }

    pub fn config(&self) -> &BaoConfig {
        &self.config
    }

    /// Renews the token by its login TTL and returns the TTL granted. OpenBao
    /// caps it at the max TTL: less than asked means the end is near. The
    /// caller tracks the new expiry.
    pub async fn renew_self(&self) -> Result<Duration, BaoError> {
        let increment = format!("{}s", self.token_ttl.as_secs().max(1));
        let auth = vaultrs::token::renew_self(&self.client, Some(&increment))
            .await
            .map_err(|e| BaoError::from_client("token renewal", e))?;
        Ok(Duration::from_secs(auth.lease_duration))
    }

    /// Revokes this token and, with it, every lease it created.
    pub async fn revoke_self(&self) -> Result<(), BaoError> {
        vaultrs::api::exec_with_empty(&self.client, endpoints::TokenRevokeSelfRequest {})
            .await
            .map_err(|e| BaoError::from_client("token revocation", e))
    }

    /// New dynamic database credentials for `role`, with their lease.
    pub async fn db_credentials(&self, role: &str) -> Result<DbCredentials, BaoError> {
        let response = vaultrs::api::exec_with_no_result(
            &self.client,
            endpoints::DbCredsRequest {
                mount: self.config.db_mount.clone(),
                role: role.to_string(),
            },
        )
        .await
        .map_err(|e| BaoError::from_client("database credentials", e))?;
        Ok(DbCredentials {
            username: response.data.username,
            password: response.data.password,
            lease_id: response.lease_id,
            lease_duration: Duration::from_secs(response.lease_duration),
            renewable: response.renewable,
        })
    }

    pub async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, BaoError> {
        let response = vaultrs::api::exec_with_no_result(
            &self.client,
            endpoints::LeaseRenewRequest {
                lease_id: lease_id.to_string(),
                increment: increment.as_secs(),
            },
        )
        .await
        .map_err(|e| BaoError::from_client("lease renewal", e))?;
        Ok(Duration::from_secs(response.lease_duration))
    }

    /// Revokes a lease: OpenBao runs the role's revocation statements
    /// (terminate its sessions, drop the role).
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), BaoError> {
        vaultrs::api::exec_with_empty(
            &self.client,
            endpoints::LeaseRevokeRequest {
                lease_id: lease_id.to_string(),
            },
        )
        .await
        .map_err(|e| BaoError::from_client("lease revocation", e))
    }

    /// Reads a KV v2 secret; `Ok(None)` when absent or deleted.
    pub async fn kv_read<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, BaoError> {
        let endpoint = ReadSecretRequest::builder()
            .mount(&self.config.kv_mount)
            .path(path)
            .build()
            .map_err(|e| BaoError::Setup(e.to_string()))?;
        match traced::data(&self.client, "KV read", endpoint).await {
            Ok(secret) => {
                serde_json::from_value(secret.data)
                    .map(Some)
                    .map_err(|e| BaoError::Api {
                        operation: "KV read",
                        status: 200,
                        message: format!("unexpected secret shape: {e}"),
                    })
            }
            // Absent is an answer, not an error (nor an error metric).
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(BaoError::from_client("KV read", e)),
        }
    }

    pub async fn kv_write<T: serde::Serialize>(
        &self,
        path: &str,
        value: &T,
    ) -> Result<(), BaoError> {
        let data = serde_json::to_value(value).map_err(|e| BaoError::Setup(e.to_string()))?;
        let endpoint = SetSecretRequest::builder()
            .mount(&self.config.kv_mount)
            .path(path)
            .data(data)
            .build()
            .map_err(|e| BaoError::Setup(e.to_string()))?;
        traced::data(&self.client, "KV write", endpoint)
            .await
            .map(|_| ())
            .map_err(|e| BaoError::from_client("KV write", e))
    }

    /// Deletes every version and the metadata: nothing of the secret remains.
    pub async fn kv_delete(&self, path: &str) -> Result<(), BaoError> {
        let endpoint = DeleteSecretMetadataRequest::builder()
            .mount(&self.config.kv_mount)
            .path(path)
            .build()
            .map_err(|e| BaoError::Setup(e.to_string()))?;
        match traced::empty(&self.client, "KV delete", endpoint).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(BaoError::from_client("KV delete", e)),
        }
    }

    /// The underlying vaultrs client, for endpoints vaultrs covers (Transit).
    pub fn vault(&self) -> &VaultClient {
        &self.client
    }
}
