//! The development agent's X.509 authority: a self-signed CA for the trust
//! domain and short-lived leaf SVIDs for the workload's SPIFFE ID.

use std::{path::Path, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::error::DevAgentError;

/// Clock skew tolerated by consumers of our certificates.
const BACKDATE: Duration = Duration::from_secs(10);

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
}

/// One issued X.509-SVID, in the Workload API's wire formats.
#[derive(Clone)]
pub struct X509Material {
    /// Leaf certificate, DER (the chain is just the leaf: the CA is the root).
    pub chain_der: Vec<u8>,
    /// PKCS#8 DER private key.
    pub key_der: Vec<u8>,
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

impl Authority {
    /// Loads the CA from `state_dir` when present there, else generates one
    /// (and saves it when a state dir is given).
    pub fn load_or_generate(
        trust_domain: &str,
        state_dir: Option<&Path>,
    ) -> Result<Self, DevAgentError> {
        if let Some(dir) = state_dir {
            let (cert, key) = (dir.join("ca.crt.pem"), dir.join("ca.key.pem"));
            if cert.exists() && key.exists() {
                let key = KeyPair::from_pem(&std::fs::read_to_string(&key)?)
                    .map_err(|e| DevAgentError::Crypto(format!("CA key: {e}")))?;
                let pem = std::fs::read_to_string(&cert)?;
                let ca_der = pem_to_der(&pem)?;
                let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), key)
                    .map_err(|e| DevAgentError::Crypto(format!("CA certificate: {e}")))?;
                return Ok(Self { issuer, ca_der });
            }
        }
        let key = KeyPair::generate().map_err(crypto)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "precinct dev-agent");
        dn.push(DnType::CommonName, format!("{trust_domain} development CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::days(365);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(crypto)?;
        if let Some(dir) = state_dir {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("ca.crt.pem"), cert.pem())?;
            write_private(&dir.join("ca.key.pem"), &key.serialize_pem())?;
        }
        Ok(Self {
            ca_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The trust bundle: the CA certificate, DER.
    pub fn bundle_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Issues a leaf SVID for `spiffe_id` valid for `ttl`, with `dns_names`
    /// beside the URI SAN (as a SPIRE entry's `dnsNames`: what lets a
    /// client that checks host names, curl for one, verify it fully).
    pub fn issue(
        &self,
        spiffe_id: &str,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<X509Material, DevAgentError> {
        let key = KeyPair::generate().map_err(crypto)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "SPIRE");
        params.distinguished_name = dn;
        // Leaf SVIDs must say CA:false explicitly (X.509-SVID spec; the
        // spiffe client rejects leaves without it).
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![uri_san(spiffe_id)?];
        for name in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.as_str().try_into().map_err(crypto)?));
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        let not_after = now + ttl;
        params.not_after = not_after;
        let serial = random_serial();
        let serial_hex = hex(&serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params.signed_by(&key, &self.issuer).map_err(crypto)?;
        Ok(X509Material {
            chain_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            serial_hex,
            not_after: not_after.replace_nanosecond(0).unwrap_or(not_after),
        })
    }
}

/// A certificate as a test needs it, conforming or not.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// URI SANs (none, one SPIFFE ID, or several).
    pub uris: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Marked as a CA (`CA:true`), presented as a leaf.
    pub ca: bool,
}

impl Authority {
    /// Signs a certificate as `spec` says; returns it and its key, PEM.
    pub fn issue_spec(&self, spec: &LeafSpec) -> Result<(String, String), DevAgentError> {
        let key = KeyPair::generate().map_err(crypto)?;
        let mut params = CertificateParams::default();
        params.is_ca = if spec.ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = if spec.ca {
            vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ]
        } else {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyAgreement,
            ]
        };
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = spec
            .uris
            .iter()
            .map(|u| uri_san(u))
            .collect::<Result<_, _>>()?;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer).map_err(crypto)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// DER as a PEM block of `label`.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fn uri_san(uri: &str) -> Result<SanType, DevAgentError> {
    Ok(SanType::URI(uri.try_into().map_err(crypto)?))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn crypto(e: impl std::fmt::Display) -> DevAgentError {
    DevAgentError::Crypto(e.to_string())
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, DevAgentError> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(crypto)
}

/// Writes a private key readable by the owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}
