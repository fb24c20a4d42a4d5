//! Workload identity from the SPIFFE Workload API (the SPIRE agent socket).
//!
//! Owns the connection: the X.509 context is kept fresh by the `spiffe`
//! crate's `X509Source` (a streaming watch that reconnects by itself); this
//! module adds the startup deadline, the expected-ID check, rotation logs and
//! a `watch` of the current SVID, readiness, and a JWT-SVID cache.

pub mod metrics;

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::{config::IdentityConfig, events::PodEvents, readiness::Check};
use secrecy::SecretString;
use spiffe::{WorkloadApiClient, X509Source, X509SourceBuilder};
use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "SPIFFE Workload API socket {path} does not exist after waiting {waited:?}: is the SPIRE agent running and its socket mounted? (SPIFFE_ENDPOINT_SOCKET)"
    )]
    SocketMissing { path: String, waited: Duration },
    #[error(
        "no X.509-SVID from the SPIFFE Workload API at {endpoint} within {waited:?} (SPIFFE_STARTUP_TIMEOUT): {cause}"
    )]
    StartupTimeout {
        endpoint: String,
        waited: Duration,
        cause: String,
    },
    #[error(
        "workload identity mismatch: the Workload API issued {actual} but EXPECTED_SPIFFE_ID is {expected}; check the workload's registration entry"
    )]
    Mismatch { expected: String, actual: String },
    #[error("cannot read the X.509-SVID: {0}")]
    Svid(String),
    #[error("cannot fetch a JWT-SVID for audience {audience:?} from {endpoint}: {cause}")]
    Jwt {
        audience: Vec<String>,
        endpoint: String,
        cause: String,
    },
}

/// What is known of the current X.509-SVID (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidInfo {
    pub spiffe_id: String,
    /// Certificate serial number, lowercase hex.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// A JWT-SVID ready to present. The token is a secret: never log it.
#[derive(Debug, Clone)]
pub struct JwtSvidToken {
    pub token: SecretString,
    pub spiffe_id: String,
    pub audience: Vec<String>,
    pub expires_at: OffsetDateTime,
}

#[derive(Clone)]
struct CachedJwt {
    svid: JwtSvidToken,
    refresh_at: OffsetDateTime,
}

/// Never hand out a cached token this close to its expiry.
const JWT_MIN_REMAINING: time::Duration = time::Duration::seconds(5);
const JWT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

struct Inner {
    endpoint: String,
    expected_id: Option<String>,
    source: X509Source,
    current: watch::Sender<SvidInfo>,
    jwt_cache: Mutex<HashMap<Vec<String>, CachedJwt>>,
    /// Why the identity cannot be trusted (a rotated SVID for another ID).
    mismatch: std::sync::Mutex<Option<String>>,
    /// The last JWT-SVID fetch that failed with nothing cached to fall back on.
    jwt_error: std::sync::Mutex<Option<String>>,
}

/// The workload's identity. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

impl Identity {
    /// Connects and waits for the first X.509-SVID, retrying with backoff up
    /// to `SPIFFE_STARTUP_TIMEOUT` (in Kubernetes the agent may start after
    /// the pod). Checks the SPIFFE ID against `EXPECTED_SPIFFE_ID`.
    pub async fn connect(config: &IdentityConfig) -> Result<Self, IdentityError> {
        let source = X509SourceBuilder::new()
            .endpoint(&config.endpoint)
            .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(5))
            .initial_sync_timeout(config.startup_timeout)
            .build()
            .await
            .map_err(|e| startup_error(config, e.to_string()))?;
        let info = svid_info(&source)?;
        if let Some(expected) = &config.expected_id
            && expected != &info.spiffe_id
        {
            source.shutdown().await;
            return Err(IdentityError::Mismatch {
                expected: expected.clone(),
                actual: info.spiffe_id,
            });
        }
        tracing::info!(
            spiffe_id = %info.spiffe_id,
            serial = %info.serial,
            not_after = %info.not_after,
            "workload identity obtained"
        );
        let (current, _) = watch::channel(info);
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: config.endpoint.clone(),
                expected_id: config.expected_id.clone(),
                source,
                current,
                jwt_cache: Mutex::new(HashMap::new()),
                mismatch: std::sync::Mutex::new(None),
                jwt_error: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The task that follows rotations and keeps `check` current, until
    /// `cancel` (the caller spawns it).
    ///
    /// What makes the instance unready is what depends on the identity:
    /// nothing serves with the X.509-SVID, so its expiry alone (the agent
    /// down) only degrades the check; the OpenBao token and the database
    /// lease carry the instance, and their own checks turn unready when
    /// their margins run out without a fresh JWT-SVID to log in again. A
    /// rotated SVID for another SPIFFE ID than `EXPECTED_SPIFFE_ID` makes it
    /// unready at once. SVID rotations and identity loss are recorded as Pod
    /// `events`.
    pub fn watch(
        &self,
        check: Check,
        events: PodEvents,
        cancel: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let mut updates = this.inner.source.updated();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut expired_reported = false;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    changed = updates.changed() => {
                        if changed.is_err() {
                            // The source closed; keep judging the SVID we hold.
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                        // Its lines (svid_rotated, identity_mismatch) carry a trace id.
                        let span = crate::trace::root_span("svid update");
                        match span.in_scope(|| this.observe()) {
                            Some(Ok(info)) => events
                                .normal(
                                    "SvidRotated",
                                    "RotateSvid",
                                    format!("{}: serial {}, not after {}", info.spiffe_id, info.serial, info.not_after),
                                )
                                .instrument(span)
                                .await,
                            Some(Err(why)) => events.warning("IdentityMismatch", "WatchSvid", why).instrument(span).await,
                            None => {}
                        }
                    }
                    _ = tick.tick() => {}
                }
                let expired = this.current().not_after <= OffsetDateTime::now_utc();
                if expired && !expired_reported {
                    let span = crate::trace::root_span("svid expiry");
                    span.in_scope(|| tracing::warn!(event = "identity_lost", endpoint = %this.inner.endpoint, "X.509-SVID expired and the Workload API has not delivered a new one; OpenBao token and database lease carry the instance"));
                    events
                        .warning(
                            "IdentityLost",
                            "WatchSvid",
                            format!(
                                "X.509-SVID expired; Workload API at {}",
                                this.inner.endpoint
                            ),
                        )
                        .instrument(span)
                        .await;
                }
                expired_reported = expired;
                this.judge(&check);
            }
            this.inner.source.shutdown().await;
        }
    }

    /// Publishes the source's SVID when it differs from the last one seen;
    /// returns it when it did, or why it was refused (another SPIFFE ID).
    fn observe(&self) -> Option<Result<SvidInfo, String>> {
        let Ok(info) = svid_info(&self.inner.source) else {
            return None;
        };
        if let Some(expected) = &self.inner.expected_id
            && expected != &info.spiffe_id
        {
            let why = IdentityError::Mismatch {
                expected: expected.clone(),
                actual: info.spiffe_id.clone(),
            }
            .to_string();
            let mut mismatch = self.inner.mismatch.lock().expect("mismatch lock");
            if mismatch.as_deref() != Some(why.as_str()) {
                tracing::error!(event = "identity_mismatch", expected = %expected, actual = %info.spiffe_id, "a rotated X.509-SVID carries another SPIFFE ID; not using it");
                *mismatch = Some(why.clone());
                return Some(Err(why));
            }
            return None;
        }
        self.inner.mismatch.lock().expect("mismatch lock").take();
        let previous = self.inner.current.borrow().clone();
        if previous.serial != info.serial {
            tracing::info!(
                event = "svid_rotated",
                spiffe_id = %info.spiffe_id,
                serial = %info.serial,
                not_after = %info.not_after,
                previous_serial = %previous.serial,
                "X.509-SVID rotated"
            );
            self.inner.current.send_replace(info.clone());
            ::metrics::counter!(metrics::SVID_ROTATIONS).increment(1);
            return Some(Ok(info));
        }
        None
    }

    fn judge(&self, check: &Check) {
        if let Some(why) = self.inner.mismatch.lock().expect("mismatch lock").clone() {
            check.set_not_ready(why);
            return;
        }
        let info = self.inner.current.borrow().clone();
        if info.not_after <= OffsetDateTime::now_utc() {
            check.set_degraded(format!(
                "X.509-SVID expired at {} and the Workload API at {} has not delivered a new one",
                info.not_after, self.inner.endpoint
            ));
        } else if let Some(why) = self.inner.jwt_error.lock().expect("jwt lock").clone() {
            check.set_degraded(why);
        } else {
            check.set_ready();
        }
    }

    /// The current X.509-SVID's identity, serial and expiry.
    pub fn current(&self) -> SvidInfo {
        self.inner.current.borrow().clone()
    }

    /// Notified on every rotation (e.g. to hot-reload an mTLS config).
    pub fn subscribe(&self) -> watch::Receiver<SvidInfo> {
        self.inner.current.subscribe()
    }

    /// The current X.509 context (SVID with key, and bundles), for mTLS.
    pub fn x509_source(&self) -> &X509Source {
        &self.inner.source
    }

    /// Whether the Workload API's socket accepts a connection now (for
    /// `/metrics`: the source reconnects on its own and does not say).
    pub async fn workload_api_reachable(&self) -> bool {
        let endpoint = &self.inner.endpoint;
        let connect = async {
            if let Some(path) = endpoint.strip_prefix("unix://") {
                tokio::net::UnixStream::connect(path).await.is_ok()
            } else if let Some(addr) = endpoint.strip_prefix("tcp://") {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            } else {
                false
            }
        };
        tokio::time::timeout(Duration::from_millis(500), connect)
            .await
            .unwrap_or(false)
    }

    /// Seconds until the current X.509-SVID expires (negative once expired).
    pub fn svid_expiry_seconds(&self) -> f64 {
        let remaining = self.current().not_after - OffsetDateTime::now_utc();
        remaining.as_seconds_f64()
    }

    /// A JWT-SVID for `audience`. Cached per audience set and refetched once
    /// less than half of its lifetime remains; when the agent cannot be
    /// reached, a cached token is served while it has time left, and an
    /// expired one never is.
    pub async fn jwt_svid(&self, audience: &[String]) -> Result<JwtSvidToken, IdentityError> {
        let mut key = audience.to_vec();
        key.sort();
        key.dedup();
        let mut cache = self.inner.jwt_cache.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(cached) = cache.get(&key)
            && now < cached.refresh_at
        {
            return Ok(cached.svid.clone());
        }
        let fetched = self
            .fetch_jwt(&key)
            .await
            .and_then(|svid| match &self.inner.expected_id {
                Some(expected) if expected != &svid.spiffe_id => Err(IdentityError::Mismatch {
                    expected: expected.clone(),
                    actual: svid.spiffe_id.clone(),
                }),
                _ => Ok(svid),
            });
        let outcome = if fetched.is_ok() {
            "success"
        } else {
            "failure"
        };
        ::metrics::counter!(metrics::JWT_SVID_FETCHES, "audience" => key.join(" "), "outcome" => outcome)
            .increment(1);
        match fetched {
            Ok(svid) => {
                self.inner.jwt_error.lock().expect("jwt lock").take();
                let lifetime = svid.expires_at - now;
                cache.insert(
                    key,
                    CachedJwt {
                        refresh_at: now + lifetime / 2,
                        svid: svid.clone(),
                    },
                );
                Ok(svid)
            }
            Err(e) => match cache.get(&key) {
                Some(cached) if cached.svid.expires_at - JWT_MIN_REMAINING > now => {
                    tracing::warn!(error = %e, "JWT-SVID refresh failed; serving the cached one");
                    Ok(cached.svid.clone())
                }
                _ => {
                    cache.remove(&key);
                    *self.inner.jwt_error.lock().expect("jwt lock") = Some(e.to_string());
                    Err(e)
                }
            },
        }
    }

    async fn fetch_jwt(&self, audience: &[String]) -> Result<JwtSvidToken, IdentityError> {
        let err = |cause: String| IdentityError::Jwt {
            audience: audience.to_vec(),
            endpoint: self.inner.endpoint.clone(),
            cause,
        };
        let fetch = async {
            let client = WorkloadApiClient::connect_to(&self.inner.endpoint)
                .await
                .map_err(|e| err(e.to_string()))?;
            client
                .fetch_jwt_svid(audience, None)
                .await
                .map_err(|e| err(e.to_string()))
        };
        let svid = tokio::time::timeout(JWT_FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| err(format!("no answer within {JWT_FETCH_TIMEOUT:?}")))??;
        let expires_at = svid.expiry();
        if expires_at <= OffsetDateTime::now_utc() + JWT_MIN_REMAINING {
            return Err(err("the agent returned an already expiring token".into()));
        }
        tracing::debug!(audience = ?audience, expires_at = %expires_at, "JWT-SVID fetched");
        Ok(JwtSvidToken {
            token: SecretString::from(svid.token().to_string()),
            spiffe_id: svid.spiffe_id().to_string(),
            audience: audience.to_vec(),
            expires_at,
        })
    }
}

fn startup_error(config: &IdentityConfig, cause: String) -> IdentityError {
    if let Some(path) = config.endpoint.strip_prefix("unix://")
        && !std::path::Path::new(path).exists()
    {
        return IdentityError::SocketMissing {
            path: path.to_string(),
            waited: config.startup_timeout,
        };
    }
    IdentityError::StartupTimeout {
        endpoint: config.endpoint.clone(),
        waited: config.startup_timeout,
        cause,
    }
}

fn svid_info(source: &X509Source) -> Result<SvidInfo, IdentityError> {
    let svid = source
        .svid()
        .map_err(|e| IdentityError::Svid(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(svid.leaf().as_bytes())
        .map_err(|e| IdentityError::Svid(e.to_string()))?;
    let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| IdentityError::Svid(e.to_string()))?;
    Ok(SvidInfo {
        spiffe_id: svid.spiffe_id().to_string(),
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_after,
    })
}
