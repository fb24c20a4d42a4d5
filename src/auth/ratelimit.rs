//! Login rate limits: a token bucket per client IP and one per username.
//! In memory, per replica: N replicas allow N times the rate (documented).

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

pub struct LoginLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_username: DefaultKeyedRateLimiter<String>,
}

impl LoginLimiter {
    pub fn new(per_ip_per_minute: u32, per_username_per_minute: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("non-zero"));
        Self {
            by_ip: RateLimiter::keyed(quota(per_ip_per_minute)),
            by_username: RateLimiter::keyed(quota(per_username_per_minute)),
        }
    }

    /// `Err(retry_after)` when either bucket is empty.
    pub fn check(&self, ip: IpAddr, username: &str) -> Result<(), Duration> {
        let clock = governor::clock::DefaultClock::default();
        if let Err(not_until) = self.by_ip.check_key(&ip) {
            return Err(not_until.wait_time_from(clock.now()));
        }
        if let Err(not_until) = self.by_username.check_key(&username.to_lowercase()) {
            return Err(not_until.wait_time_from(clock.now()));
        }
        // Forget idle keys now and then so memory stays bounded.
        if self.by_ip.len() > 10_000 || self.by_username.len() > 10_000 {
            self.by_ip.retain_recent();
            self.by_username.retain_recent();
        }
        Ok(())
    }
}
