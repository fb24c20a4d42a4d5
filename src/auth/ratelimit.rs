//! Rate limits: token buckets keyed by client IP, username or user id.
//! In memory, per replica: N replicas allow N times the rate (documented).

use std::{hash::Hash, net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

/// One keyed token bucket: `n` per minute per key, bursts of up to `n`.
pub struct Limiter<K: Hash + Eq + Clone> {
    buckets: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn per_minute(n: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(n.max(1)).expect("non-zero"));
        Self {
            buckets: RateLimiter::keyed(quota),
        }
    }

    /// `Err(retry_after)` when `key`'s bucket is empty.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let result = self.buckets.check_key(key).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        });
        // Forget idle keys now and then so memory stays bounded.
        if self.buckets.len() > 10_000 {
            self.buckets.retain_recent();
        }
        result
    }
}

/// Login: a bucket per client IP and one per username.
pub struct LoginLimiter {
    by_ip: Limiter<IpAddr>,
    by_username: Limiter<String>,
}

impl LoginLimiter {
    pub fn new(per_ip_per_minute: u32, per_username_per_minute: u32) -> Self {
        Self {
            by_ip: Limiter::per_minute(per_ip_per_minute),
            by_username: Limiter::per_minute(per_username_per_minute),
        }
    }

    /// `Err(retry_after)` when either bucket is empty.
    pub fn check(&self, ip: IpAddr, username: &str) -> Result<(), Duration> {
        self.by_ip.check(&ip)?;
        self.by_username.check(&username.to_lowercase())
    }
}
