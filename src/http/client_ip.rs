//! The client's address. Behind a reverse proxy or ingress the TCP peer is
//! the proxy, so every user would share one rate-limit bucket and the audit
//! log would name the proxy. `X-Forwarded-For` is believed only from peers in
//! `TRUSTED_PROXIES`: walking it from the right (the hop nearest to us), the
//! first address that is not a trusted proxy is the client. Anyone can write
//! the header, so an untrusted peer's header is ignored.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client IP of a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Every X-Forwarded-For line, in order, as one list of hops.
    let hops: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|s| s.parse::<IpAddr>())
        .collect::<Result<_, _>>()
        // A malformed list cannot be trusted in part: use the proxy itself.
        .unwrap_or_default();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        // Every hop is a trusted proxy: the leftmost is the origin.
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_ip_follows_only_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        // (case, peer, X-Forwarded-For lines, expected)
        let cases: &[(&str, &str, &[&str], &str)] = &[
            ("no proxy, no header", "203.0.113.7", &[], "203.0.113.7"),
            (
                "an untrusted peer's header is ignored",
                "203.0.113.7",
                &["198.51.100.1"],
                "203.0.113.7",
            ),
            (
                "trusted peer without a header: the peer",
                "10.1.2.3",
                &[],
                "10.1.2.3",
            ),
            (
                "one trusted proxy",
                "10.1.2.3",
                &["198.51.100.1"],
                "198.51.100.1",
            ),
            (
                "a client-supplied spoof left of the real client is skipped",
                "10.1.2.3",
                &["1.2.3.4, 198.51.100.1"],
                "198.51.100.1",
            ),
            (
                "two trusted hops",
                "10.1.2.3",
                &["198.51.100.1, 10.9.9.9"],
                "198.51.100.1",
            ),
            (
                "several header lines form one list",
                "10.1.2.3",
                &["1.2.3.4", "198.51.100.1, 10.9.9.9"],
                "198.51.100.1",
            ),
            (
                "every hop trusted: the leftmost",
                "10.1.2.3",
                &["10.5.5.5, 10.9.9.9"],
                "10.5.5.5",
            ),
            (
                "a malformed list: the proxy itself",
                "10.1.2.3",
                &["198.51.100.1, not-an-ip"],
                "10.1.2.3",
            ),
            ("IPv6 hops", "fd00::1", &["2001:db8::5"], "2001:db8::5"),
        ];
        for (case, peer, lines, expected) in cases {
            let mut headers = HeaderMap::new();
            for line in *lines {
                headers.append(&X_FORWARDED_FOR, line.parse().unwrap());
            }
            assert_eq!(
                client_ip(ip(peer), &headers, &trusted),
                ip(expected),
                "{case}"
            );
        }
    }

    #[test]
    fn without_trusted_proxies_the_header_never_counts() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, "198.51.100.1".parse().unwrap());
        assert_eq!(client_ip(ip("127.0.0.1"), &headers, &[]), ip("127.0.0.1"));
    }
}
