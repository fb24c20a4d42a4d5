//! The development agent's JWT authority: ES256 signing keys with `kid`,
//! rotation that keeps the previous key published, JWKS for the Workload API
//! bundle and the OIDC discovery `/keys` endpoint.

use std::{path::Path, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::DevAgentError;

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    x: String,
    y: String,
    pem: String,
}

/// Current key plus the previous one (still published so tokens it signed
/// verify until they expire).
pub struct JwtAuthority {
    current: SigningKey,
    previous: Option<SigningKey>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JwtSvidClaims {
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
}

impl SigningKey {
    fn generate() -> Result<Self, DevAgentError> {
        let key = KeyPair::generate().map_err(crypto)?;
        Self::from_pem(&key.serialize_pem(), None)
    }

    fn from_pem(pem: &str, kid: Option<String>) -> Result<Self, DevAgentError> {
        let key = KeyPair::from_pem(pem).map_err(crypto)?;
        // Uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
        let raw = key.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err(DevAgentError::Crypto("expected a P-256 key".into()));
        }
        let x = URL_SAFE_NO_PAD.encode(&raw[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&raw[33..65]);
        let kid = kid.unwrap_or_else(|| {
            let r: [u8; 16] = rand::random();
            URL_SAFE_NO_PAD.encode(r)
        });
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).map_err(crypto)?,
            decoding: DecodingKey::from_ec_components(&x, &y).map_err(crypto)?,
            kid,
            x,
            y,
            pem: pem.to_string(),
        })
    }

    fn jwk(&self, usage: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y, "kid": self.kid, "alg": "ES256", "use": usage})
    }
}

impl JwtAuthority {
    pub fn load_or_generate(state_dir: Option<&Path>) -> Result<Self, DevAgentError> {
        let path = state_dir.map(|d| d.join("jwt-signing-key.json"));
        if let Some(path) = path.as_ref().filter(|p| p.exists()) {
            let saved: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
            let (Some(kid), Some(pem)) = (saved["kid"].as_str(), saved["pem"].as_str()) else {
                return Err(DevAgentError::Crypto(format!(
                    "{} is malformed",
                    path.display()
                )));
            };
            return Ok(Self {
                current: SigningKey::from_pem(pem, Some(kid.to_string()))?,
                previous: None,
            });
        }
        let authority = Self {
            current: SigningKey::generate()?,
            previous: None,
        };
        authority.save(state_dir)?;
        Ok(authority)
    }

    fn save(&self, state_dir: Option<&Path>) -> Result<(), DevAgentError> {
        if let Some(dir) = state_dir {
            std::fs::create_dir_all(dir)?;
            let saved = json!({"kid": self.current.kid, "pem": self.current.pem});
            super::x509::write_private(&dir.join("jwt-signing-key.json"), &saved.to_string())?;
        }
        Ok(())
    }

    /// New current key; the old current becomes the previous (still published).
    pub fn rotate(&mut self, state_dir: Option<&Path>) -> Result<String, DevAgentError> {
        let next = SigningKey::generate()?;
        self.previous = Some(std::mem::replace(&mut self.current, next));
        self.save(state_dir)?;
        Ok(self.current.kid.clone())
    }

    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// JWKS for the Workload API's JWT bundle (`use: jwt-svid`, as SPIRE).
    pub fn bundle_jwks(&self) -> Value {
        self.jwks("jwt-svid")
    }

    /// JWKS for the OIDC discovery `/keys` endpoint (`use: sig`).
    pub fn oidc_jwks(&self) -> Value {
        self.jwks("sig")
    }

    fn jwks(&self, usage: &str) -> Value {
        let keys: Vec<Value> = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(|k| k.jwk(usage))
            .collect();
        json!({ "keys": keys })
    }

    pub fn sign(
        &self,
        spiffe_id: &str,
        audience: &[String],
        issuer: &str,
        ttl: Duration,
    ) -> Result<String, DevAgentError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = JwtSvidClaims {
            sub: spiffe_id.to_string(),
            aud: audience.to_vec(),
            iat: now,
            exp: now + ttl.as_secs() as i64,
            iss: issuer.to_string(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.current.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.current.encoding).map_err(crypto)
    }

    /// Verifies signature (current or previous key), expiry and audience, as
    /// the Workload API's ValidateJWTSVID does. Returns the raw claims.
    pub fn validate(&self, token: &str, audience: &str) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("token has no kid")?;
        let key = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| k.kid == kid)
            .ok_or_else(|| format!("key {kid:?} not found in the trust bundle"))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

fn crypto(e: impl std::fmt::Display) -> DevAgentError {
    DevAgentError::Crypto(e.to_string())
}
