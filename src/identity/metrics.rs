//! `precinct_identity_*`: the X.509-SVID's life and rotations, JWT-SVID
//! fetches, and whether the Workload API answers.

use crate::metrics::{Family, Kind, Metric};

pub const SVID_ROTATIONS: &str = "precinct_identity_svid_rotations_total";
pub const JWT_SVID_FETCHES: &str = "precinct_identity_jwt_svid_fetches_total";
pub const SVID_EXPIRY: &str = "precinct_identity_svid_expiry_seconds";
pub const WORKLOAD_API_CONNECTED: &str = "precinct_identity_workload_api_connected";

pub const FAMILY: Family = Family {
    metrics: &[
        Metric {
            name: SVID_ROTATIONS,
            kind: Kind::Counter,
            help: "X.509-SVIDs received from the Workload API after the first",
        },
        Metric {
            name: JWT_SVID_FETCHES,
            kind: Kind::Counter,
            help: "JWT-SVID fetches from the Workload API by audience and outcome",
        },
        Metric {
            name: SVID_EXPIRY,
            kind: Kind::Gauge,
            help: "Seconds until the X.509-SVID expires",
        },
        Metric {
            name: WORKLOAD_API_CONNECTED,
            kind: Kind::Gauge,
            help: "1 when the Workload API socket accepts a connection",
        },
    ],
    buckets: &[],
    zero,
};

fn zero() {
    metrics::counter!(SVID_ROTATIONS).increment(0);
}
