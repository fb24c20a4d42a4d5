//! Access tokens: ES256 JWTs signed by OpenBao Transit (the private key never
//! leaves OpenBao), verified locally against Transit's public keys.
//!
//! `kid` is `<key>-v<version>`; `sid` names the session (the refresh
//! family). The public keys belong to one task ([`super::keys`]):
//! verification reads them with an atomic load and never waits on OpenBao,
//! except for a `kid` a little newer than any it knows, which waits for one
//! single-flight refresh (bounded). A verified token's claims are cached
//! (keyed by a SHA-256 of the whole token, bounded in size, never served at
//! or after `exp`), so a client's repeated token costs a hash, not an ECDSA
//! verification; whether its session ended is checked on every use.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    keys::{KeySet, SigningKeys},
    sessions::EndedSessions,
};
use crate::bao::SessionWatch;

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
    /// The session: the refresh family this login started.
    pub sid: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid: {0}")]
    Invalid(String),
    /// Its session ended (logout, reuse detected, revoked).
    #[error("session ended")]
    SessionEnded,
    #[error("signing keys unavailable: {0}")]
    Keys(String),
}

/// Verified claims by SHA-256 of the token, with the key version that
/// verified them (dropped if that version stops verifying).
type VerifiedCache = quick_cache::sync::Cache<[u8; 32], (Arc<AccessClaims>, u64)>;

/// A `kid` at most this much newer than the newest known version may be a
/// rotation this replica has not fetched yet; anything further is forged.
const PLAUSIBLE_VERSIONS_AHEAD: u64 = 16;

/// Where tokens are signed and what they say.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub mount: String,
    pub key: String,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
    /// Verified tokens remembered (0: none).
    pub cache_size: usize,
    /// How long a plausible unknown `kid` waits for the keys' refresh.
    pub unknown_kid_wait: Duration,
}

/// Seconds of `exp` leeway (clock skew between replicas and clients).
pub const LEEWAY_SECONDS: u64 = 5;

#[derive(Clone)]
pub struct TokenService {
    session: SessionWatch,
    settings: Arc<TokenSettings>,
    kid_prefix: Arc<str>,
    keys: Arc<SigningKeys>,
    ended: Arc<EndedSessions>,
    verified: Option<Arc<VerifiedCache>>,
    validation: Arc<Validation>,
}

impl TokenService {
    pub fn new(
        session: SessionWatch,
        keys: Arc<SigningKeys>,
        ended: Arc<EndedSessions>,
        settings: TokenSettings,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        Self {
            session,
            kid_prefix: format!("{}-v", settings.key).into(),
            verified: (settings.cache_size > 0)
                .then(|| Arc::new(VerifiedCache::new(settings.cache_size))),
            settings: Arc::new(settings),
            keys,
            ended,
            validation: Arc::new(validation),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.settings.ttl
    }

    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    pub fn ended_sessions(&self) -> &Arc<EndedSessions> {
        &self.ended
    }

    fn kid(&self, version: u64) -> String {
        format!("{}{version}", self.kid_prefix)
    }

    /// Called by the key owner when it publishes a new set: tokens verified
    /// by a version that no longer verifies (retired by the schedule, or
    /// trimmed from Transit) must not be served from the cache.
    pub fn on_keys_changed(&self, old: &KeySet, new: &KeySet) {
        let key = &self.settings.key;
        if old.signing() != 0 && new.signing() != old.signing() {
            tracing::info!(event = "signing_key_rotated", %key, version = new.signing(), "access tokens are now signed with a new key version");
        }
        if new.newest() > old.newest() && old.newest() != 0 {
            tracing::info!(event = "signing_key_published", %key, version = new.newest(), "a new signing key version is published; it signs once pre-published");
        }
        let accepted = |set: &KeySet| {
            set.plan
                .as_ref()
                .map(|p| p.accepted.clone())
                .unwrap_or_default()
        };
        let now = accepted(new);
        let removed = accepted(old).iter().any(|v| !now.contains(v));
        if removed && let Some(cache) = &self.verified {
            cache.clear();
            tracing::warn!(event = "signing_key_removed", %key, "a signing key version stopped verifying: verified-token cache cleared");
        }
    }

    /// Issues an access token for `user` in session `sid`, signed by Transit
    /// with the version the schedule names.
    pub async fn issue(
        &self,
        user_id: Uuid,
        username: &str,
        sid: Uuid,
    ) -> Result<String, TokenError> {
        let version = self.keys.current().signing();
        if version == 0 {
            return Err(TokenError::Keys("signing keys not fetched yet".into()));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: user_id,
            username: username.to_string(),
            iat: now,
            exp: now + self.settings.ttl.as_secs() as i64,
            jti: Uuid::new_v4(),
            sid,
        };
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid(version)});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"))
        );
        let client = self
            .session
            .client()
            .ok_or_else(|| TokenError::Keys("OpenBao session not established yet".into()))?;
        let (_, signature) = crate::bao::transit::sign(
            client.vault(),
            &self.settings.mount,
            &self.settings.key,
            Some(version),
            signing_input.as_bytes(),
        )
        .await
        .map_err(|e| TokenError::Keys(e.to_string()))?;
        Ok(format!("{signing_input}.{signature}"))
    }

    /// Verifies signature (ES256 only), `iss`, `aud`, `exp` (5 s leeway) and
    /// that the session has not ended. No I/O, except for a `kid` slightly
    /// newer than the newest known: it waits for one refresh of the keys.
    pub async fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let claims = self.verify_signature(token).await?;
        if self.ended.is_ended(&claims.sid) {
            return Err(TokenError::SessionEnded);
        }
        Ok(claims)
    }

    async fn verify_signature(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(cache) = &self.verified
            && let Some((claims, version)) = cache.get(&digest)
        {
            // The same bound as a fresh verification (jsonwebtoken refuses
            // exp < now - leeway): never past exp+leeway, and never by a
            // key version that stopped verifying.
            if claims.exp + LEEWAY_SECONDS as i64 >= now
                && self.keys.current().verifying(version).is_some()
            {
                return Ok(claims);
            }
            cache.remove(&digest);
        }
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
            .strip_prefix(&*self.kid_prefix)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| TokenError::Invalid("unknown kid".into()))?;
        let mut keys = self.keys.current_full();
        if keys.plan.is_none() {
            // Not one key yet (just started): a valid token cannot be
            // told from a forged one. Retry shortly, not 401.
            return Err(TokenError::Keys("signing keys not fetched yet".into()));
        }
        let newest = keys.newest();
        if keys.verifying(version).is_none()
            && version > newest
            && version <= newest + PLAUSIBLE_VERSIONS_AHEAD
        {
            // Perhaps a version another replica fetched first.
            keys = self.keys.refreshed(self.settings.unknown_kid_wait).await;
        }
        let Some(key) = keys.verifying(version) else {
            return Err(TokenError::Invalid("unknown kid".into()));
        };
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map(|d| Arc::new(d.claims))
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        if let Some(cache) = &self.verified {
            cache.insert(digest, (claims.clone(), version));
        }
        Ok(claims)
    }

    /// The public keys that verify, as a JWKS document (newest first).
    pub fn jwks(&self) -> Result<Value, TokenError> {
        let set = self.keys.current();
        let Some(plan) = set.plan.as_ref() else {
            return Err(TokenError::Keys("signing keys not fetched yet".into()));
        };
        let keys: Vec<Value> = plan
            .accepted
            .iter()
            .rev()
            .filter_map(|v| set.keys.get(v).map(|k| (v, k)))
            .map(|(v, k)| {
                json!({"kty": "EC", "crv": "P-256", "x": k.x, "y": k.y, "kid": self.kid(*v), "alg": "ES256", "use": "sig"})
            })
            .collect();
        Ok(json!({ "keys": keys }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jsonwebtoken::{EncodingKey, Header};
    use time::OffsetDateTime;

    use super::*;
    use crate::auth::keys::{KeySet, PublicKey, Rules, schedule};
    use crate::bao::transit::test_keys::{self, PRIVATE};

    /// Versions created long ago (each verifies; the newest signs).
    fn key_set(versions: &[u64]) -> KeySet {
        let (x, y) = test_keys::point();
        let long_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let mut keys = BTreeMap::new();
        for v in versions {
            let decoding = jsonwebtoken::DecodingKey::from_ec_components(&x, &y).unwrap();
            keys.insert(
                *v,
                PublicKey {
                    x: x.clone(),
                    y: y.clone(),
                    decoding,
                    created: long_ago,
                },
            );
        }
        let rules = Rules {
            prepublish: Duration::from_secs(1),
            retire_after: Duration::from_secs(36_000),
        };
        let listed: Vec<(u64, OffsetDateTime)> =
            keys.iter().map(|(v, k)| (*v, k.created)).collect();
        KeySet {
            plan: schedule::plan(&listed, &rules, OffsetDateTime::now_utc()),
            keys,
            fetched_at: Some(std::time::Instant::now()),
        }
    }

    fn service() -> TokenService {
        let keys = Arc::new(SigningKeys::default());
        keys.publish(key_set(&[1]));
        TokenService::new(
            crate::bao::session_channel().1,
            keys,
            Arc::new(EndedSessions::new(Duration::from_secs(900))),
            TokenSettings {
                mount: "transit".into(),
                key: "k".into(),
                issuer: "precinct".into(),
                audience: "precinct-api".into(),
                ttl: Duration::from_secs(900),
                cache_size: 100,
                unknown_kid_wait: Duration::from_millis(50),
            },
        )
    }

    fn token_with(kid: &str, exp_in: i64, sid: Uuid) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = AccessClaims {
            iss: "precinct".into(),
            aud: "precinct-api".into(),
            sub: Uuid::nil(),
            username: "jake".into(),
            iat: now,
            exp: now + exp_in,
            jti: Uuid::nil(),
            sid,
        };
        let header = Header {
            kid: Some(kid.into()),
            ..Header::new(Algorithm::ES256)
        };
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn token(exp_in: i64) -> String {
        token_with("k-v1", exp_in, Uuid::nil())
    }

    #[tokio::test]
    async fn a_cached_token_is_never_served_past_its_expiry() {
        let tokens = service();
        // Expired 4 s ago: still inside the 5 s leeway, so it verifies (and is cached).
        let t = token(-4);
        assert!(tokens.verify(&t).await.is_ok());
        assert!(tokens.verify(&t).await.is_ok(), "served from the cache");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(matches!(tokens.verify(&t).await, Err(TokenError::Expired)));
    }

    #[tokio::test]
    async fn a_key_version_that_stops_verifying_takes_its_cached_tokens_with_it() {
        let tokens = service();
        let t = token(600);
        assert!(tokens.verify(&t).await.is_ok());
        let new = key_set(&[2]);
        tokens.on_keys_changed(&key_set(&[1]), &new);
        tokens.keys().publish(new);
        assert!(matches!(
            tokens.verify(&t).await,
            Err(TokenError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_tampered_copy_of_a_cached_token_is_verified_and_refused() {
        let tokens = service();
        let t = token(600);
        assert!(tokens.verify(&t).await.is_ok());
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"precinct","aud":"precinct-api","sub":"00000000-0000-0000-0000-000000000000","username":"admin","iat":1,"exp":4000000000,"jti":"00000000-0000-0000-0000-000000000000","sid":"00000000-0000-0000-0000-000000000000"}"#);
        parts[1] = &forged;
        assert!(matches!(
            tokens.verify(&parts.join(".")).await,
            Err(TokenError::Invalid(_))
        ));
        // A stripped signature, too.
        let stripped = format!("{}.{}.", parts[0], t.split('.').nth(1).unwrap());
        assert!(tokens.verify(&stripped).await.is_err());
    }

    #[tokio::test]
    async fn a_plausible_newer_kid_waits_for_one_refresh_a_far_one_is_refused_at_once() {
        let tokens = service();
        // v2: one rotation ahead. Nobody fetches in this test, so it waits
        // the bound (and asked for a refresh), then is refused.
        let started = std::time::Instant::now();
        let near = token_with("k-v2", 600, Uuid::nil());
        assert!(matches!(
            tokens.verify(&near).await,
            Err(TokenError::Invalid(_))
        ));
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "waited for the refresh"
        );
        let started = std::time::Instant::now();
        let far = token_with("k-v9999", 600, Uuid::nil());
        assert!(matches!(
            tokens.verify(&far).await,
            Err(TokenError::Invalid(_))
        ));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "no wait for a forged kid"
        );
    }

    #[tokio::test]
    async fn a_token_of_an_ended_session_is_refused_even_from_the_cache() {
        let tokens = service();
        let sid = Uuid::now_v7();
        let t = token_with("k-v1", 600, sid);
        assert!(tokens.verify(&t).await.is_ok());
        tokens.ended_sessions().end(sid, OffsetDateTime::now_utc());
        assert!(matches!(
            tokens.verify(&t).await,
            Err(TokenError::SessionEnded)
        ));
        let other = token_with("k-v1", 600, Uuid::now_v7());
        assert!(tokens.verify(&other).await.is_ok(), "other sessions go on");
    }

    #[tokio::test]
    async fn before_the_first_keys_a_token_is_unverifiable_not_invalid() {
        let keys = Arc::new(SigningKeys::default());
        let tokens = TokenService::new(
            crate::bao::session_channel().1,
            keys,
            Arc::new(EndedSessions::new(Duration::from_secs(900))),
            TokenSettings {
                mount: "transit".into(),
                key: "k".into(),
                issuer: "precinct".into(),
                audience: "precinct-api".into(),
                ttl: Duration::from_secs(900),
                cache_size: 100,
                unknown_kid_wait: Duration::from_millis(50),
            },
        );
        assert!(matches!(
            tokens.verify(&token(600)).await,
            Err(TokenError::Keys(_))
        ));
        assert!(tokens.jwks().is_err());
    }

    #[tokio::test]
    async fn a_token_without_a_session_is_invalid() {
        let tokens = service();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss":"precinct","aud":"precinct-api","sub":Uuid::nil(),"username":"x","iat":now,"exp":now + 600,"jti":Uuid::nil()});
        let header = Header {
            kid: Some("k-v1".into()),
            ..Header::new(Algorithm::ES256)
        };
        let t = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            tokens.verify(&t).await,
            Err(TokenError::Invalid(_))
        ));
    }
}
