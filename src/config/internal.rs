//! The internal API: mutual TLS with the workload's X.509-SVID, callers
//! authorized by SPIFFE ID.

use std::{net::SocketAddr, time::Duration};

use super::vars::{ConfigError, Vars};

/// One entry of `INTERNAL_ALLOWED_SPIFFE_IDS`: an exact SPIFFE ID, or a
/// path prefix (ending in `/`) that allows every ID below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedId {
    /// As configured: also the bounded label of the internal API's metrics.
    pub entry: String,
    pub trust_domain: String,
    pub prefix: bool,
}

impl AllowedId {
    /// Whether `id` (a parsed SPIFFE ID) is this entry, or below it on a
    /// `/` boundary: `spiffe://td/ns/apps/` allows `spiffe://td/ns/apps/sa/x`,
    /// never `spiffe://td/ns/apps-evil/x` nor `spiffe://td/ns/apps`.
    pub fn allows(&self, id: &str) -> bool {
        if self.prefix {
            id.len() > self.entry.len() && id.starts_with(&self.entry)
        } else {
            id == self.entry
        }
    }
}

/// The first entry of `allowed` that allows `id`.
pub fn authorize<'a>(allowed: &'a [AllowedId], id: &str) -> Option<&'a AllowedId> {
    allowed.iter().find(|a| a.allows(id))
}

#[derive(Debug, Clone)]
pub struct InternalConfig {
    pub addr: SocketAddr,
    pub allowed: Vec<AllowedId>,
    /// A handshake that takes longer is dropped (a stalled or slow client).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; more wait for a place.
    pub max_handshakes: usize,
    /// Calls per minute per caller (per allowlist entry it matched).
    pub rate_per_caller_per_minute: u32,
}

/// `None` when `INTERNAL_ADDR` is unset: no internal listener.
pub(super) fn parse(v: &mut Vars<'_>) -> Result<Option<InternalConfig>, ConfigError> {
    let addr = v.get("INTERNAL_ADDR");
    let allowed_raw = v.string_or("INTERNAL_ALLOWED_SPIFFE_IDS", "");
    let handshake_timeout = v.duration_or("INTERNAL_HANDSHAKE_TIMEOUT", "5s")?;
    let max_handshakes = v.parse_or("INTERNAL_MAX_HANDSHAKES", 256usize)?;
    let rate = v.parse_or("INTERNAL_RATE_PER_CALLER", 6000u32)?;
    let Some(addr) = addr else {
        return Ok(None);
    };
    let addr: SocketAddr = addr.parse().map_err(|e| {
        ConfigError::new(
            "INTERNAL_ADDR",
            format!("cannot parse {addr:?} as host:port: {e}"),
        )
    })?;
    let allowed = parse_allowed(&allowed_raw)
        .map_err(|m| ConfigError::new("INTERNAL_ALLOWED_SPIFFE_IDS", m))?;
    if allowed.is_empty() {
        return Err(ConfigError::new(
            "INTERNAL_ALLOWED_SPIFFE_IDS",
            "is required when INTERNAL_ADDR is set: list the SPIFFE IDs (or path prefixes ending in /) allowed to call the internal API; nothing is allowed by default",
        ));
    }
    if handshake_timeout.is_zero() {
        return Err(ConfigError::new(
            "INTERNAL_HANDSHAKE_TIMEOUT",
            "must be greater than 0",
        ));
    }
    if max_handshakes == 0 || rate == 0 {
        return Err(ConfigError::new(
            if max_handshakes == 0 {
                "INTERNAL_MAX_HANDSHAKES"
            } else {
                "INTERNAL_RATE_PER_CALLER"
            },
            "must be at least 1",
        ));
    }
    Ok(Some(InternalConfig {
        addr,
        allowed,
        handshake_timeout,
        max_handshakes,
        rate_per_caller_per_minute: rate,
    }))
}

/// `spiffe://td/ns/x/sa/y, spiffe://td/ns/apps/` → entries. Each must be a
/// valid SPIFFE ID (a prefix: one once its trailing `/` is removed, or a
/// bare `spiffe://td/` for a whole trust domain).
pub fn parse_allowed(raw: &str) -> Result<Vec<AllowedId>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let prefix = entry.ends_with('/');
            let id = entry.strip_suffix('/').unwrap_or(entry);
            let rest = id.strip_prefix("spiffe://").ok_or_else(|| {
                format!("{entry:?} is not a SPIFFE ID (spiffe://trust-domain/path)")
            })?;
            // The spec allows only lower-case trust domains; a certificate
            // never carries `Demo.Local`, so such an entry would silently
            // allow nothing.
            let td_part = rest.split('/').next().unwrap_or_default();
            if td_part.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(format!(
                    "{entry:?}: a trust domain is lower case (spiffe://{})",
                    td_part.to_ascii_lowercase()
                ));
            }
            let trust_domain = if prefix && !rest.contains('/') {
                // `spiffe://td/`: every ID of that trust domain.
                spiffe::TrustDomain::new(rest)
                    .map(|td| td.to_string())
                    .map_err(|e| format!("{entry:?}: {e}"))?
            } else {
                spiffe::SpiffeId::new(id)
                    .map(|parsed| parsed.trust_domain_name().to_string())
                    .map_err(|e| format!("{entry:?} is not a SPIFFE ID: {e}"))?
            };
            Ok(AllowedId {
                entry: entry.to_string(),
                trust_domain,
                prefix,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_slash_boundaries_and_exact_ids_exactly() {
        let allowed =
            parse_allowed("spiffe://demo.local/ns/apps/, spiffe://demo.local/ns/ops/sa/auditor")
                .unwrap();
        // (case, caller, allowed by)
        let cases: &[(&str, &str, Option<usize>)] = &[
            (
                "below the prefix",
                "spiffe://demo.local/ns/apps/sa/x",
                Some(0),
            ),
            (
                "deeper below it",
                "spiffe://demo.local/ns/apps/sa/x/y",
                Some(0),
            ),
            (
                "a sibling sharing the characters",
                "spiffe://demo.local/ns/apps-evil/sa/x",
                None,
            ),
            (
                "the prefix's own parent path",
                "spiffe://demo.local/ns/apps",
                None,
            ),
            (
                "another trust domain, same path",
                "spiffe://evil.local/ns/apps/sa/x",
                None,
            ),
            (
                "the exact ID",
                "spiffe://demo.local/ns/ops/sa/auditor",
                Some(1),
            ),
            (
                "below an exact ID",
                "spiffe://demo.local/ns/ops/sa/auditor/x",
                None,
            ),
            (
                "a longer name",
                "spiffe://demo.local/ns/ops/sa/auditor2",
                None,
            ),
        ];
        for (case, caller, expected) in cases {
            let got =
                authorize(&allowed, caller).map(|a| allowed.iter().position(|b| b == a).unwrap());
            assert_eq!(got, *expected, "{case}");
        }
        assert_eq!(allowed[0].trust_domain, "demo.local");
        assert!(allowed[0].prefix && !allowed[1].prefix);
    }

    #[test]
    fn entries_that_are_not_spiffe_ids_are_refused() {
        for bad in [
            "demo.local/ns/apps",
            "https://demo.local/ns/apps",
            "spiffe://Demo.Local/ns/apps",
            "spiffe://demo.local/ns/../admin",
            "spiffe://demo.local//ns",
            "spiffe://",
        ] {
            assert!(parse_allowed(bad).is_err(), "{bad}");
        }
        let whole = parse_allowed("spiffe://partner.example/").unwrap();
        assert_eq!(whole[0].trust_domain, "partner.example");
        assert!(whole[0].allows("spiffe://partner.example/anything"));
    }
}
