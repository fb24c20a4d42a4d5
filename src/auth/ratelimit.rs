//! The login limits, so that guessing is slow and nobody can lock a user
//! out, as keys taken together from the shared limiter (`db::limits`):
//! they hold for the service as a whole, however many replicas serve it.
//!
//! - per client IP (`AUTH_LOGIN_RATE_PER_IP`);
//! - per (client IP, username) pair (`AUTH_LOGIN_RATE_PER_USERNAME_IP`):
//!   an attacker on one address cannot lock the user out of another;
//! - per username (`AUTH_LOGIN_RATE_PER_USERNAME`), a slower backstop
//!   against guessing from many addresses, which spares a pair that logged
//!   in successfully within `KNOWN_GOOD_FOR`: the user's own known-good
//!   client still gets in while the username is under attack, from
//!   whichever replica answers.

use std::net::IpAddr;

use crate::{
    db::limits::Take,
    ratelimit::{Key, Quota, ip_part, key, username_part},
};

pub struct LoginLimits {
    per_ip: Quota,
    per_pair: Quota,
    per_username: Quota,
}

impl LoginLimits {
    pub fn new(per_ip: u32, per_username_ip: u32, per_username: u32) -> Self {
        Self {
            per_ip: Quota::new("login_ip", per_ip),
            per_pair: Quota::new("login_username_ip", per_username_ip),
            per_username: Quota::new("login_username", per_username),
        }
    }

    /// The keys a login attempt takes from, in order.
    pub fn takes(&self, ip: IpAddr, username: &str) -> [Take; 3] {
        let (ip, name) = (ip_part(ip), username_part(username));
        [
            Take {
                quota: self.per_ip,
                key: self.per_ip.key(&[&ip]),
                spare_known_good: false,
            },
            Take {
                quota: self.per_pair,
                key: self.per_pair.key(&[&ip, &name]),
                spare_known_good: false,
            },
            Take {
                quota: self.per_username,
                key: self.per_username.key(&[&name]),
                spare_known_good: true,
            },
        ]
    }
}

/// The known-good key of a (client IP, username) pair.
pub fn known_good(ip: IpAddr, username: &str) -> Key {
    key(
        "login_known_good",
        &[&ip_part(ip), &username_part(username)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    #[test]
    fn a_login_takes_from_its_ip_its_pair_and_its_username_in_that_order() {
        let l = LoginLimits::new(30, 10, 100);
        let [by_ip, by_pair, by_name] = l.takes(ip(7), "Jake");
        assert_eq!(
            [
                by_ip.quota.limiter,
                by_pair.quota.limiter,
                by_name.quota.limiter
            ],
            ["login_ip", "login_username_ip", "login_username"]
        );
        assert!(!by_ip.spare_known_good && !by_pair.spare_known_good);
        assert!(
            by_name.spare_known_good,
            "only the backstop spares known-good clients"
        );
        // Usernames compare case-insensitively; another address is another pair.
        let [_, same_pair, same_name] = l.takes(ip(7), "jake");
        assert_eq!(same_pair.key, by_pair.key);
        assert_eq!(same_name.key, by_name.key);
        let [other_ip, other_pair, name_again] = l.takes(ip(8), "jake");
        assert_ne!(other_ip.key, by_ip.key);
        assert_ne!(other_pair.key, by_pair.key);
        assert_eq!(name_again.key, by_name.key, "one backstop per username");
        assert_eq!(known_good(ip(7), "JAKE"), known_good(ip(7), "jake"));
        assert_ne!(known_good(ip(7), "jake"), known_good(ip(8), "jake"));
    }
}
