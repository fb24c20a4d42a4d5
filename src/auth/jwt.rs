//! Access tokens: ES256 JWTs signed by OpenBao Transit (the private key never
//! leaves OpenBao), verified locally against Transit's public keys.
//!
//! `kid` is `<key>-v<version>`. Public keys are cached and refetched on an
//! unknown `kid` (at most once per second) and every
//! `AUTH_SIGNING_KEY_REFRESH` (new tokens then use the newest version), so a rotation
//! (`transit/keys/<key>/rotate`) needs no restart, and tokens signed by
//! earlier versions keep verifying until they expire.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::RwLock;
use uuid::Uuid;
use vaultrs::api::transit::{
    HashAlgorithm, MarshalingAlgorithm, requests::SignDataRequest, responses::ReadKeyData,
};

use crate::bao::{BaoError, Session};

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    pub username: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid: {0}")]
    Invalid(String),
    #[error("signing keys unavailable: {0}")]
    Keys(String),
}

struct PublicKey {
    x: String,
    y: String,
    decoding: DecodingKey,
}

struct KeyCache {
    keys: BTreeMap<u64, PublicKey>,
    latest: u64,
    fetched: Option<Instant>,
}

#[derive(Clone)]
pub struct TokenService {
    session: Arc<tokio::sync::OnceCell<Session>>,
    mount: String,
    key: String,
    issuer: String,
    audience: String,
    ttl: Duration,
    leeway: u64,
    refresh_every: Duration,
    cache: Arc<RwLock<KeyCache>>,
}

const MIN_REFETCH: Duration = Duration::from_secs(1);

impl TokenService {
    pub fn new(
        session: Arc<tokio::sync::OnceCell<Session>>,
        mount: String,
        key: String,
        issuer: String,
        audience: String,
        ttl: Duration,
        refresh_every: Duration,
    ) -> Self {
        Self {
            refresh_every,
            session,
            mount,
            key,
            issuer,
            audience,
            ttl,
            leeway: 5,
            cache: Arc::new(RwLock::new(KeyCache {
                keys: BTreeMap::new(),
                latest: 0,
                fetched: None,
            })),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn kid(&self, version: u64) -> String {
        format!("{}-v{version}", self.key)
    }

    fn session(&self) -> Result<&Session, TokenError> {
        self.session
            .get()
            .ok_or_else(|| TokenError::Keys("OpenBao session not established yet".into()))
    }

    /// Fetches every version's public key from Transit.
    async fn refresh_keys(&self) -> Result<(), TokenError> {
        let client = self.session()?.client();
        let key = vaultrs::transit::key::read(client.vault(), &self.mount, &self.key)
            .await
            .map_err(|e| {
                TokenError::Keys(BaoError::from_client("transit key read", e).to_string())
            })?;
        let ReadKeyData::Asymmetric(entries) = key.keys else {
            return Err(TokenError::Keys(format!(
                "transit key {} is not asymmetric",
                self.key
            )));
        };
        let mut keys = BTreeMap::new();
        for (version, entry) in entries {
            let Ok(version) = version.parse::<u64>() else {
                continue;
            };
            let (x, y) = ec_point_from_spki_pem(&entry.public_key).ok_or_else(|| {
                TokenError::Keys(format!("transit key {} is not P-256", self.key))
            })?;
            let decoding = DecodingKey::from_ec_components(&x, &y)
                .map_err(|e| TokenError::Keys(e.to_string()))?;
            keys.insert(version, PublicKey { x, y, decoding });
        }
        let latest = keys.keys().max().copied().unwrap_or(0);
        let mut cache = self.cache.write().await;
        if latest != cache.latest && cache.latest != 0 {
            tracing::info!(key = %self.key, version = latest, "access-token signing key rotated");
        }
        *cache = KeyCache {
            keys,
            latest,
            fetched: Some(Instant::now()),
        };
        Ok(())
    }

    async fn ensure_fresh(&self) -> Result<(), TokenError> {
        let stale = self
            .cache
            .read()
            .await
            .fetched
            .is_none_or(|at| at.elapsed() > self.refresh_every);
        if stale {
            self.refresh_keys().await?;
        }
        Ok(())
    }

    /// Issues an access token for `user`, signed by Transit.
    pub async fn issue(&self, user_id: Uuid, username: &str) -> Result<String, TokenError> {
        self.ensure_fresh().await?;
        let version = self.cache.read().await.latest;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id,
            username: username.to_string(),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::new_v4(),
        };
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid(version)});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"))
        );
        let client = self.session()?.client();
        let mut opts = SignDataRequest::builder();
        opts.key_version(version)
            .hash_algorithm(HashAlgorithm::Sha2_256)
            .marshaling_algorithm(MarshalingAlgorithm::Jws);
        let signed = vaultrs::transit::data::sign(
            client.vault(),
            &self.mount,
            &self.key,
            &STANDARD.encode(&signing_input),
            Some(&mut opts),
        )
        .await
        .map_err(|e| TokenError::Keys(BaoError::from_client("transit sign", e).to_string()))?;
        // "vault:v<N>:<base64url r||s>"
        let signature = signed
            .signature
            .rsplit(':')
            .next()
            .ok_or_else(|| TokenError::Keys("unexpected transit signature format".into()))?;
        Ok(format!("{signing_input}.{signature}"))
    }

    /// Verifies signature (ES256 only), `iss`, `aud`, `exp` (5 s leeway).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let version = kid
            .strip_prefix(&format!("{}-v", self.key))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| TokenError::Invalid("unknown kid".into()))?;
        self.ensure_fresh().await?;
        if !self.cache.read().await.keys.contains_key(&version) {
            let recently = self
                .cache
                .read()
                .await
                .fetched
                .is_some_and(|at| at.elapsed() < MIN_REFETCH);
            if !recently {
                self.refresh_keys().await?;
            }
        }
        let cache = self.cache.read().await;
        let key = cache
            .keys
            .get(&version)
            .ok_or_else(|| TokenError::Invalid("unknown kid".into()))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = self.leeway;
        jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }

    /// The public keys as a JWKS document.
    pub async fn jwks(&self) -> Result<Value, TokenError> {
        self.ensure_fresh().await?;
        let cache = self.cache.read().await;
        let keys: Vec<Value> = cache
            .keys
            .iter()
            .rev()
            .map(|(v, k)| {
                json!({"kty": "EC", "crv": "P-256", "x": k.x, "y": k.y, "kid": self.kid(*v), "alg": "ES256", "use": "sig"})
            })
            .collect();
        Ok(json!({ "keys": keys }))
    }
}

/// x and y (base64url) of a P-256 SubjectPublicKeyInfo PEM: its last 65
/// bytes are the uncompressed point 0x04 || x || y.
fn ec_point_from_spki_pem(pem: &str) -> Option<(String, String)> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).ok()?;
    if der.len() != 91 || der[der.len() - 65] != 4 {
        return None;
    }
    let point = &der[der.len() - 64..];
    Some((
        URL_SAFE_NO_PAD.encode(&point[..32]),
        URL_SAFE_NO_PAD.encode(&point[32..]),
    ))
}
