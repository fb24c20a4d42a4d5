//! Rate limits: token buckets keyed by client IP, username or user id.
//! In memory, per replica: N replicas allow N times the rate (documented).

use std::{hash::Hash, net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

/// One keyed token bucket: `n` per minute per key, bursts of up to `n`.
pub struct Limiter<K: Hash + Eq + Clone> {
    buckets: DefaultKeyedRateLimiter<K>,
    /// The `limiter` label of `precinct_auth_rate_limited_total`.
    name: &'static str,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn per_minute(name: &'static str, n: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(n.max(1)).expect("non-zero"));
        Self {
            buckets: RateLimiter::keyed(quota),
            name,
        }
    }

    /// `Err(retry_after)` when `key`'s bucket is empty.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let result = self.buckets.check_key(key).map_err(|not_until| {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limiter" => self.name).increment(1);
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        });
        // Forget idle keys now and then so memory stays bounded.
        if self.buckets.len() > 10_000 {
            self.buckets.retain_recent();
        }
        result
    }
}

/// How long a successful login makes its (client IP, username) pair a
/// known-good client.
pub const KNOWN_GOOD_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Login limits, so that guessing is slow and nobody can lock a user out:
///
/// - per client IP (`AUTH_LOGIN_RATE_PER_IP`);
/// - per (client IP, username) pair (`AUTH_LOGIN_RATE_PER_USERNAME_IP`):
///   an attacker on one address cannot lock the user out of another;
/// - per username (`AUTH_LOGIN_RATE_PER_USERNAME`), a slower backstop
///   against guessing from many addresses, which does not apply to a pair
///   that logged in successfully within [`KNOWN_GOOD_FOR`]: the user's own
///   known-good client still gets in while the username is under attack.
pub struct LoginLimiter {
    by_ip: Limiter<IpAddr>,
    by_pair: Limiter<(IpAddr, String)>,
    by_username: Limiter<String>,
    known_good: quick_cache::sync::Cache<(IpAddr, String), std::time::Instant>,
}

impl LoginLimiter {
    pub fn new(per_ip: u32, per_username_ip: u32, per_username: u32) -> Self {
        Self {
            by_ip: Limiter::per_minute("login_ip", per_ip),
            by_pair: Limiter::per_minute("login_username_ip", per_username_ip),
            by_username: Limiter::per_minute("login_username", per_username),
            known_good: quick_cache::sync::Cache::new(100_000),
        }
    }

    /// `Err(retry_after)` when a bucket that applies is empty.
    pub fn check(&self, ip: IpAddr, username: &str) -> Result<(), Duration> {
        let username = username.to_lowercase();
        self.by_ip.check(&ip)?;
        let pair = (ip, username);
        self.by_pair.check(&pair)?;
        let known_good = self
            .known_good
            .get(&pair)
            .is_some_and(|at| at.elapsed() < KNOWN_GOOD_FOR);
        if known_good {
            return Ok(());
        }
        self.by_username.check(&pair.1)
    }

    /// Records a successful login: the pair is a known-good client.
    pub fn succeeded(&self, ip: IpAddr, username: &str) {
        self.known_good
            .insert((ip, username.to_lowercase()), std::time::Instant::now());
    }
}

#[cfg(test)]
mod login_tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    #[test]
    fn an_attacker_on_one_address_cannot_lock_the_user_out_of_another() {
        let l = LoginLimiter::new(1000, 3, 100);
        for _ in 0..3 {
            assert!(l.check(ip(66), "Jake").is_ok());
        }
        assert!(
            l.check(ip(66), "jake").is_err(),
            "the attacker's pair is limited"
        );
        assert!(l.check(ip(7), "jake").is_ok(), "the user's address is not");
    }

    #[test]
    fn the_username_backstop_spares_known_good_clients() {
        let l = LoginLimiter::new(1000, 5, 4);
        assert!(l.check(ip(7), "jake").is_ok());
        l.succeeded(ip(7), "Jake");
        // Guesses from many addresses empty the username's bucket...
        for attacker in 100..110 {
            let _ = l.check(ip(attacker), "jake");
        }
        assert!(
            l.check(ip(200), "jake").is_err(),
            "a new address meets the backstop"
        );
        // ...but the user's known-good client still gets in.
        assert!(l.check(ip(7), "jake").is_ok());
    }

    #[test]
    fn the_per_ip_limit_applies_to_every_username() {
        let l = LoginLimiter::new(2, 100, 100);
        assert!(l.check(ip(9), "a").is_ok());
        assert!(l.check(ip(9), "b").is_ok());
        assert!(l.check(ip(9), "c").is_err());
    }
}
