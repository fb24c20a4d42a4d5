//! `precinct_db_*`: the credential generations, their rotation, renewal and
//! drain, the pool, and statements retried after their connection died.

use crate::metrics::{Family, Kind, Metric};

use super::{Renewal, Trigger};

pub const ROTATIONS: &str = "precinct_db_rotations_total";
pub const ROTATION_SECONDS: &str = "precinct_db_rotation_duration_seconds";
pub const DRAIN_SECONDS: &str = "precinct_db_drain_duration_seconds";
pub const ACQUIRE_SECONDS: &str = "precinct_db_pool_acquire_seconds";
pub const GENERATION: &str = "precinct_db_generation";
pub const LAST_ROTATION: &str = "precinct_db_last_rotation_success_timestamp_seconds";
pub const CONNECTION_RETRIES: &str = "precinct_db_connection_retries_total";
pub const RENEWALS: &str = "precinct_db_renewals_total";
pub const LEASE_EXPIRY: &str = "precinct_db_lease_expiry_seconds";
pub const TOKEN_EXPIRY: &str = "precinct_db_token_expiry_seconds";
pub const POOL_CONNECTIONS: &str = "precinct_db_pool_connections";
pub const POOL_IDLE: &str = "precinct_db_pool_idle_connections";

/// A pooled connection's wait: sub-millisecond to the acquire timeout.
const ACQUIRE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub const FAMILY: Family = Family {
    metrics: &[
        Metric {
            name: ROTATIONS,
            kind: Kind::Counter,
            help: "Credential rotations by trigger and outcome",
        },
        Metric {
            name: CONNECTION_RETRIES,
            kind: Kind::Counter,
            help: "Operations run again after their connection died",
        },
        Metric {
            name: RENEWALS,
            kind: Kind::Counter,
            help: "Database token and lease renewals by what and outcome",
        },
        Metric {
            name: ROTATION_SECONDS,
            kind: Kind::Histogram,
            help: "Login + credentials + proven pool, per rotation",
        },
        Metric {
            name: DRAIN_SECONDS,
            kind: Kind::Histogram,
            help: "Time a retired generation took to drain",
        },
        Metric {
            name: ACQUIRE_SECONDS,
            kind: Kind::Histogram,
            help: "Wait for a pooled connection, sampled by the health check every DB_HEALTH_INTERVAL",
        },
        Metric {
            name: GENERATION,
            kind: Kind::Gauge,
            help: "The serving credential generation",
        },
        Metric {
            name: LAST_ROTATION,
            kind: Kind::Gauge,
            help: "Unix time of the last successful rotation",
        },
        Metric {
            name: LEASE_EXPIRY,
            kind: Kind::Gauge,
            help: "Seconds until the database lease expires",
        },
        Metric {
            name: TOKEN_EXPIRY,
            kind: Kind::Gauge,
            help: "Seconds until the token owning the lease expires",
        },
        Metric {
            name: POOL_CONNECTIONS,
            kind: Kind::Gauge,
            help: "Open connections of the serving pool",
        },
        Metric {
            name: POOL_IDLE,
            kind: Kind::Gauge,
            help: "Idle connections of the serving pool",
        },
    ],
    buckets: &[(ACQUIRE_SECONDS, ACQUIRE_BUCKETS)],
    zero,
};

fn zero() {
    for trigger in Trigger::ALL {
        for outcome in ["success", "failure"] {
            metrics::counter!(ROTATIONS, "trigger" => trigger.as_str(), "outcome" => outcome)
                .increment(0);
        }
    }
    for outcome in ["success", "failure"] {
        for what in [Renewal::Token, Renewal::Lease] {
            metrics::counter!(RENEWALS, "what" => what.as_str(), "outcome" => outcome).increment(0);
        }
    }
    metrics::counter!(CONNECTION_RETRIES).increment(0);
}
