//! Rate-limit keys and quotas, shared by every limiter (login,
//! registration, GitHub configuration). The state lives in PostgreSQL
//! (`db::limits`), so the limits hold for the service as a whole however
//! many replicas serve it.
//!
//! A key is a SHA-256 of the limiter's name and the key's parts, each
//! length-prefixed: 32 bytes whatever a client sends (a 64 KB username
//! costs the same as a short one), no address or name in clear in the
//! table, and no two limiters or part splits that collide.

use std::{net::IpAddr, time::Duration};

use sha2::{Digest, Sha256};

/// `precinct_auth_rate_limited_total{limiter}`: refusals by any limiter.
pub const RATE_LIMITED: &str = "precinct_auth_rate_limited_total";

/// Every limiter's name (the metric's label set, exported at 0).
pub const LIMITERS: [&str; 6] = [
    "login_ip",
    "login_username_ip",
    "login_username",
    "register_ip",
    "github_configure_user",
    "internal_caller",
];

pub const FAMILY: crate::metrics::Family = crate::metrics::Family {
    metrics: &[crate::metrics::Metric {
        name: RATE_LIMITED,
        kind: crate::metrics::Kind::Counter,
        help: "Requests refused by a rate limiter, by limiter",
    }],
    buckets: &[],
    zero: || {
        for limiter in LIMITERS {
            metrics::counter!(RATE_LIMITED, "limiter" => limiter).increment(0);
        }
    },
};

/// A limiter's key, as stored.
pub type Key = [u8; 32];

/// `per_minute` per key, in bursts of up to `per_minute` (a token bucket
/// refilled continuously, as GCRA computes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The `limiter` label of `precinct_auth_rate_limited_total`.
    pub limiter: &'static str,
    pub per_minute: u32,
}

impl Quota {
    pub const fn new(limiter: &'static str, per_minute: u32) -> Self {
        Self {
            limiter,
            per_minute,
        }
    }

    /// Time between two tokens.
    pub fn emission(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }

    pub fn burst(&self) -> u32 {
        self.per_minute.max(1)
    }

    /// The key of `parts` under this limiter.
    pub fn key(&self, parts: &[&[u8]]) -> Key {
        key(self.limiter, parts)
    }
}

/// SHA-256 over the name and each part, length-prefixed.
pub fn key(name: &str, parts: &[&[u8]]) -> Key {
    let mut h = Sha256::new();
    for part in std::iter::once(name.as_bytes()).chain(parts.iter().copied()) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// An address as a key part: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the
/// IPv4 address, so one client cannot count as two.
pub fn ip_part(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A username as a key part: case-insensitive, as logins are.
pub fn username_part(username: &str) -> Vec<u8> {
    username.to_lowercase().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_and_never_collide_across_limiters_or_splits() {
        let q = Quota::new("login_username_ip", 10);
        let a = q.key(&[b"ab", b"c"]);
        assert_ne!(a, q.key(&[b"a", b"bc"]), "part boundaries count");
        assert_ne!(a, Quota::new("register_ip", 10).key(&[b"ab", b"c"]));
        let huge = "x".repeat(64 * 1024);
        assert_eq!(q.key(&[huge.as_bytes()]).len(), 32);
        assert_eq!(
            q.key(&[&username_part("Jake")]),
            q.key(&[&username_part("jake")])
        );
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(ip_part(mapped), ip_part(v4));
    }

    #[test]
    fn a_quota_emits_evenly_over_the_minute() {
        let q = Quota::new("login_ip", 30);
        assert_eq!(q.emission(), Duration::from_secs(2));
        assert_eq!(q.burst(), 30);
        assert_eq!(Quota::new("x", 0).burst(), 1, "never zero");
    }
}
