//! `precinct_openbao_*`: the session token's upkeep and failed calls.

use crate::metrics::{Family, Kind, Metric};

pub const RENEWALS: &str = "precinct_openbao_renewals_total";
pub const RELOGINS: &str = "precinct_openbao_relogins_total";
pub const ERRORS: &str = "precinct_openbao_errors_total";
pub const TOKEN_EXPIRY: &str = "precinct_openbao_token_expiry_seconds";

pub const FAMILY: Family = Family {
    metrics: &[
        Metric {
            name: RENEWALS,
            kind: Kind::Counter,
            help: "Renewals of the OpenBao session token by outcome",
        },
        Metric {
            name: RELOGINS,
            kind: Kind::Counter,
            help: "Fresh OpenBao logins replacing the session token, by outcome",
        },
        Metric {
            name: ERRORS,
            kind: Kind::Counter,
            help: "Failed OpenBao calls by operation and kind",
        },
        Metric {
            name: TOKEN_EXPIRY,
            kind: Kind::Gauge,
            help: "Seconds until the OpenBao session token expires",
        },
    ],
    buckets: &[],
    zero,
};

fn zero() {
    for outcome in ["success", "failure"] {
        metrics::counter!(RENEWALS, "outcome" => outcome).increment(0);
        metrics::counter!(RELOGINS, "outcome" => outcome).increment(0);
    }
}
