//! `precinct_auth_*`: logins, refresh reuse, the signing keys, the login
//! floor. (Rate-limit refusals belong to `crate::ratelimit`.)

use crate::metrics::{Family, Kind, Metric};

pub const LOGINS: &str = "precinct_auth_logins_total";
pub const REFRESH_REUSE: &str = "precinct_auth_refresh_reuse_detected_total";
pub const KEY_REFRESHES: &str = "precinct_auth_signing_key_refreshes_total";
pub const LOGIN_FLOOR_EXCEEDED: &str = "precinct_auth_login_floor_exceeded_total";
pub const SIGNING_KEY_AGE: &str = "precinct_auth_signing_key_age_seconds";

pub const FAMILY: Family = Family {
    metrics: &[
        Metric {
            name: LOGINS,
            kind: Kind::Counter,
            help: "Password logins by outcome",
        },
        Metric {
            name: LOGIN_FLOOR_EXCEEDED,
            kind: Kind::Counter,
            help: "Password checks that outlasted AUTH_LOGIN_MIN_DURATION (their timing tells schemes apart)",
        },
        Metric {
            name: REFRESH_REUSE,
            kind: Kind::Counter,
            help: "Refresh tokens presented twice (their family was revoked)",
        },
        Metric {
            name: KEY_REFRESHES,
            kind: Kind::Counter,
            help: "Fetches of the access-token signing keys by outcome",
        },
        Metric {
            name: SIGNING_KEY_AGE,
            kind: Kind::Gauge,
            help: "Age of the newest access-token signing key version",
        },
    ],
    buckets: &[],
    zero,
};

fn zero() {
    for outcome in ["success", "invalid_credentials", "rate_limited", "error"] {
        metrics::counter!(LOGINS, "outcome" => outcome).increment(0);
    }
    for outcome in ["success", "failure"] {
        metrics::counter!(KEY_REFRESHES, "outcome" => outcome).increment(0);
    }
    metrics::counter!(REFRESH_REUSE).increment(0);
    metrics::counter!(LOGIN_FLOOR_EXCEEDED).increment(0);
}
