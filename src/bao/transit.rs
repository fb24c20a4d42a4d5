//! Transit, for the keys precinct signs with (access tokens, audit
//! checkpoints): every version's P-256 public key, and ES256 signatures in
//! JWS form (r || s, base64url), which `jsonwebtoken` verifies.

use std::collections::BTreeMap;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::DecodingKey;
use vaultrs::{
    api::transit::{
        HashAlgorithm, MarshalingAlgorithm, requests::SignDataRequest, responses::ReadKeyData,
    },
    client::VaultClient,
};

use super::{BaoError, traced};

/// One version's public key: the point (base64url x, y), the key that
/// verifies its ES256 signatures, and when Transit created it (RFC 3339, as
/// Transit reports it).
#[derive(Clone)]
pub struct P256Version {
    pub x: String,
    pub y: String,
    pub decoding: DecodingKey,
    pub creation_time: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TransitError {
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("transit key {0} is not an ecdsa-p256 key")]
    NotP256(String),
    #[error("unexpected transit signature format")]
    SignatureFormat,
}

/// Every version of `key` on `mount` (those Transit still lists).
pub async fn public_keys(
    vault: &VaultClient,
    mount: &str,
    key: &str,
) -> Result<BTreeMap<u64, P256Version>, TransitError> {
    let read = vaultrs::transit::key::read(vault, mount, key)
        .await
        .map_err(|e| BaoError::from_client("transit key read", e))?;
    let ReadKeyData::Asymmetric(entries) = read.keys else {
        return Err(TransitError::NotP256(key.to_string()));
    };
    let mut keys = BTreeMap::new();
    for (version, entry) in &entries {
        let Ok(version) = version.parse::<u64>() else {
            continue;
        };
        let not_p256 = || TransitError::NotP256(key.to_string());
        let (x, y) = ec_point_from_spki_pem(&entry.public_key).ok_or_else(not_p256)?;
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|_| not_p256())?;
        keys.insert(
            version,
            P256Version {
                x,
                y,
                decoding,
                creation_time: entry.creation_time.clone(),
            },
        );
    }
    Ok(keys)
}

/// Signs `message` (SHA-256, ES256) with `version`, or the newest version
/// when `None`: the version that signed, and the base64url r || s.
pub async fn sign(
    vault: &VaultClient,
    mount: &str,
    key: &str,
    version: Option<u64>,
    message: &[u8],
) -> Result<(u64, String), TransitError> {
    let mut builder = SignDataRequest::builder();
    builder
        .mount(mount)
        .name(key)
        .input(STANDARD.encode(message))
        .hash_algorithm(HashAlgorithm::Sha2_256)
        .marshaling_algorithm(MarshalingAlgorithm::Jws);
    if let Some(version) = version {
        builder.key_version(version);
    }
    let endpoint = builder
        .build()
        .map_err(|e| BaoError::Setup(e.to_string()))?;
    let signed = traced::data(vault, "transit sign", endpoint)
        .await
        .map_err(|e| BaoError::from_client("transit sign", e))?;
    parse_signature(&signed.signature).ok_or(TransitError::SignatureFormat)
}

/// "vault:v<N>:<base64url r||s>" → (N, signature).
pub fn parse_signature(s: &str) -> Option<(u64, String)> {
    let rest = s.strip_prefix("vault:v")?;
    let (version, sig) = rest.split_once(':')?;
    Some((version.parse().ok()?, sig.to_string()))
}

/// x and y (base64url) of a P-256 SubjectPublicKeyInfo PEM, parsed as DER:
/// the algorithm must be id-ecPublicKey on prime256v1 and the key an
/// uncompressed point (0x04 || x || y).
pub fn ec_point_from_spki_pem(pem: &str) -> Option<(String, String)> {
    use x509_parser::{
        oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY},
        prelude::FromDer,
        x509::SubjectPublicKeyInfo,
    };
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).ok()?;
    let (rest, spki) = SubjectPublicKeyInfo::from_der(&der).ok()?;
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    if !rest.is_empty()
        || spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY
        || curve != OID_EC_P256
    {
        return None;
    }
    let point: &[u8] = &spki.subject_public_key.data;
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some((
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..]),
    ))
}

/// A throwaway P-256 key pair for tests (as Transit's PEM would carry
/// the public half), and a second private key standing for "another key".
#[cfg(test)]
pub mod test_keys {
    pub const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg86CgpDoBq1bSQt98
AbrhmRpwJ2Jtg+Ckj2tyqy4d4KuhRANCAAS9D8WKmELUlWlq8gExv53uy6gMAXO5
4T9tDGyTBu5aLjt78RbFd5Ly8FsM77sEpASBRDl7wYJrKEvU1HxyFLEO
-----END PRIVATE KEY-----";
    pub const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvQ/FiphC1JVpavIBMb+d7suoDAFz
ueE/bQxskwbuWi47e/EWxXeS8vBbDO+7BKQEgUQ5e8GCayhL1NR8chSxDg==
-----END PUBLIC KEY-----";
    pub const OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCDsR9VtyqmnoAN7b
FREgsRym2gnQ+KVjXBW7HrY0sLqhRANCAAT7jSDmNr4/tz03IFMy3jwpIT+AFiXr
wjIh9AT7JoQp7MjCIKHIVUY81HU3spkesWmqKEopPbkj272iwylF+r16
-----END PRIVATE KEY-----";

    /// The test pair's public point (base64url x, y).
    pub fn point() -> (String, String) {
        super::ec_point_from_spki_pem(PUBLIC).expect("a P-256 key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_p256_point_is_read_from_a_public_key() {
        let (x, y) = ec_point_from_spki_pem(test_keys::PUBLIC).expect("a P-256 key");
        assert_eq!((x.len(), y.len()), (43, 43));
        // A P-384 key (openssl ecparam -name secp384r1) is refused, as is garbage.
        let p384 = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEZZV9/YA2zr9UkdUcjamC18lcIRw+cF9/
YAcC0q1U+VNfEGby6ScV7eQ/lgrFnU7V83iBSVsCaduUBxOKd05xoFPL6x+ARQrR
evLfpCCibXdTjbMXUKIfuMkBBaIYXK7/
-----END PUBLIC KEY-----";
        assert_eq!(ec_point_from_spki_pem(p384), None);
        assert_eq!(ec_point_from_spki_pem("not a key"), None);
    }

    #[test]
    fn transit_signatures_name_their_version() {
        assert_eq!(
            parse_signature("vault:v3:abc_-"),
            Some((3, "abc_-".to_string()))
        );
        for bad in ["", "vault:v:abc", "vault:vx:abc", "v3:abc", "vault:v3"] {
            assert_eq!(parse_signature(bad), None, "{bad:?}");
        }
    }
}
