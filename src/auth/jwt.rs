//! Access tokens: ES256 JWTs signed by OpenBao Transit (the private key never
//! leaves OpenBao), verified locally against Transit's public keys.
//!
//! `kid` is `<key>-v<version>`. The public keys belong to one task
//! ([`super::keys`]): verification reads them with an atomic load and never
//! waits on OpenBao, so tokens already issued keep verifying through an
//! OpenBao outage. A verified token's claims are cached (keyed by a SHA-256
//! of the whole token, bounded in size, never served at or after `exp`), so
//! a client's repeated token costs a hash, not an ECDSA verification.

use std::{sync::Arc, time::Duration};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use vaultrs::api::transit::{HashAlgorithm, MarshalingAlgorithm, requests::SignDataRequest};

use super::keys::{KeySet, SigningKeys};
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

/// Verified claims by SHA-256 of the token, with the key version that
/// verified them (dropped if that version disappears from Transit).
type VerifiedCache = quick_cache::sync::Cache<[u8; 32], (Arc<AccessClaims>, u64)>;

#[derive(Clone)]
pub struct TokenService {
    session: Arc<tokio::sync::OnceCell<Session>>,
    mount: String,
    key: String,
    kid_prefix: String,
    issuer: String,
    audience: String,
    ttl: Duration,
    leeway: u64,
    keys: Arc<SigningKeys>,
    verified: Option<Arc<VerifiedCache>>,
    validation: Arc<Validation>,
}

impl TokenService {
    /// `cache_size` verified tokens are remembered (0: none).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: Arc<tokio::sync::OnceCell<Session>>,
        keys: Arc<SigningKeys>,
        mount: String,
        key: String,
        issuer: String,
        audience: String,
        ttl: Duration,
        cache_size: usize,
    ) -> Self {
        let leeway = 5;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = leeway;
        Self {
            session,
            kid_prefix: format!("{key}-v"),
            mount,
            key,
            issuer,
            audience,
            ttl,
            leeway,
            keys,
            verified: (cache_size > 0).then(|| Arc::new(VerifiedCache::new(cache_size))),
            validation: Arc::new(validation),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    fn kid(&self, version: u64) -> String {
        format!("{}{version}", self.kid_prefix)
    }

    fn session(&self) -> Result<&Session, TokenError> {
        self.session
            .get()
            .ok_or_else(|| TokenError::Keys("OpenBao session not established yet".into()))
    }

    /// Called by the key owner when it publishes a new set: tokens verified
    /// by a version that is gone (a compromised key trimmed from Transit)
    /// must not be served from the cache.
    pub fn on_keys_changed(&self, old: &KeySet, new: &KeySet) {
        if old.latest != 0 && new.latest != old.latest {
            tracing::info!(event = "signing_key_rotated", key = %self.key, version = new.latest, "access-token signing key rotated");
        }
        let removed = old.keys.keys().any(|v| !new.keys.contains_key(v));
        if removed && let Some(cache) = &self.verified {
            cache.clear();
            tracing::warn!(event = "signing_key_removed", key = %self.key, "a signing key version was removed: verified-token cache cleared");
        }
    }

    /// Issues an access token for `user`, signed by Transit.
    pub async fn issue(&self, user_id: Uuid, username: &str) -> Result<String, TokenError> {
        let version = self.keys.current().latest;
        if version == 0 {
            return Err(TokenError::Keys("signing keys not fetched yet".into()));
        }
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
        let endpoint = SignDataRequest::builder()
            .mount(&self.mount)
            .name(&self.key)
            .input(STANDARD.encode(&signing_input))
            .key_version(version)
            .hash_algorithm(HashAlgorithm::Sha2_256)
            .marshaling_algorithm(MarshalingAlgorithm::Jws)
            .build()
            .map_err(|e| TokenError::Keys(e.to_string()))?;
        let signed = crate::bao::traced::data(client.vault(), "transit sign", endpoint)
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
    /// No I/O: an unknown `kid` asks the key owner for a refresh and is
    /// refused now.
    pub fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(cache) = &self.verified
            && let Some((claims, version)) = cache.get(&digest)
        {
            // The same bound as a fresh verification (jsonwebtoken refuses
            // exp < now - leeway): never past exp+leeway,
            // and never by a key version that is gone.
            if claims.exp + self.leeway as i64 >= now
                && self.keys.current().keys.contains_key(&version)
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
            .strip_prefix(&self.kid_prefix)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| TokenError::Invalid("unknown kid".into()))?;
        let keys = self.keys.current();
        let Some(key) = keys.keys.get(&version) else {
            // Perhaps a version newer than ours (another replica saw a
            // rotation first): the owner fetches, at most once per interval.
            if version > keys.latest {
                self.keys.request_refresh();
            }
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

    /// The public keys as a JWKS document (the last fetched set).
    pub fn jwks(&self) -> Result<Value, TokenError> {
        let set = self.keys.current();
        if set.keys.is_empty() {
            return Err(TokenError::Keys("signing keys not fetched yet".into()));
        }
        let keys: Vec<Value> = set
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::auth::keys::{KeySet, PublicKey, ec_point_from_spki_pem};

    // A throwaway P-256 key for these tests only.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg86CgpDoBq1bSQt98
AbrhmRpwJ2Jtg+Ckj2tyqy4d4KuhRANCAAS9D8WKmELUlWlq8gExv53uy6gMAXO5
4T9tDGyTBu5aLjt78RbFd5Ly8FsM77sEpASBRDl7wYJrKEvU1HxyFLEO
-----END PRIVATE KEY-----";
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvQ/FiphC1JVpavIBMb+d7suoDAFz
ueE/bQxskwbuWi47e/EWxXeS8vBbDO+7BKQEgUQ5e8GCayhL1NR8chSxDg==
-----END PUBLIC KEY-----";

    fn key_set(versions: &[u64]) -> KeySet {
        let (x, y) = ec_point_from_spki_pem(PUBLIC).unwrap();
        let mut keys = BTreeMap::new();
        for v in versions {
            let decoding = jsonwebtoken::DecodingKey::from_ec_components(&x, &y).unwrap();
            keys.insert(
                *v,
                PublicKey {
                    x: x.clone(),
                    y: y.clone(),
                    decoding,
                },
            );
        }
        KeySet {
            latest: versions.iter().max().copied().unwrap_or(0),
            keys,
        }
    }

    fn service() -> TokenService {
        let keys = Arc::new(SigningKeys::default());
        keys.publish(key_set(&[1]));
        TokenService::new(
            Arc::new(tokio::sync::OnceCell::new()),
            keys,
            "transit".into(),
            "k".into(),
            "precinct".into(),
            "precinct-api".into(),
            Duration::from_secs(900),
            100,
        )
    }

    fn token(exp_in: i64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = AccessClaims {
            iss: "precinct".into(),
            aud: "precinct-api".into(),
            sub: Uuid::nil(),
            username: "jake".into(),
            iat: now,
            exp: now + exp_in,
            jti: Uuid::nil(),
        };
        let header = Header {
            kid: Some("k-v1".into()),
            ..Header::new(Algorithm::ES256)
        };
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_cached_token_is_never_served_past_its_expiry() {
        let tokens = service();
        // Expired 4 s ago: still inside the 5 s leeway, so it verifies (and is cached).
        let t = token(-4);
        assert!(tokens.verify(&t).is_ok());
        assert!(tokens.verify(&t).is_ok(), "served from the cache");
        std::thread::sleep(Duration::from_millis(2100));
        assert!(matches!(tokens.verify(&t), Err(TokenError::Expired)));
    }

    #[test]
    fn a_key_version_that_disappears_takes_its_cached_tokens_with_it() {
        let tokens = service();
        let t = token(600);
        assert!(tokens.verify(&t).is_ok());
        let old = tokens.keys().current().latest;
        let new = key_set(&[2]);
        tokens.on_keys_changed(&key_set(&[old]), &new);
        tokens.keys().publish(new);
        assert!(matches!(tokens.verify(&t), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn a_tampered_copy_of_a_cached_token_is_verified_and_refused() {
        let tokens = service();
        let t = token(600);
        assert!(tokens.verify(&t).is_ok());
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"precinct","aud":"precinct-api","sub":"00000000-0000-0000-0000-000000000000","username":"admin","iat":1,"exp":4000000000,"jti":"00000000-0000-0000-0000-000000000000"}"#);
        parts[1] = &forged;
        assert!(matches!(
            tokens.verify(&parts.join(".")),
            Err(TokenError::Invalid(_))
        ));
        // A stripped signature, too.
        let stripped = format!("{}.{}.", parts[0], t.split('.').nth(1).unwrap());
        assert!(tokens.verify(&stripped).is_err());
    }

    #[test]
    fn an_unknown_newer_kid_asks_the_owner_for_keys_and_is_refused_now() {
        let tokens = service();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k-v7".into());
        let claims = json!({"iss":"precinct","aud":"precinct-api","sub":Uuid::nil(),"username":"x","iat":1,"exp":4000000000i64,"jti":Uuid::nil()});
        let t = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(matches!(tokens.verify(&t), Err(TokenError::Invalid(_))));
    }
}
