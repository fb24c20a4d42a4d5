//! `precinct_audit_*`: rows that could not be written, checkpoints.

use crate::metrics::{Family, Kind, Metric};

pub const WRITE_FAILURES: &str = "precinct_audit_write_failures_total";
pub const CHECKPOINTS: &str = "precinct_audit_checkpoints_total";

pub const FAMILY: Family = Family {
    metrics: &[
        Metric {
            name: WRITE_FAILURES,
            kind: Kind::Counter,
            help: "Audit rows that could not be written (docs/audit.md: what the request did then)",
        },
        Metric {
            name: CHECKPOINTS,
            kind: Kind::Counter,
            help: "Signed checkpoints of the audit chain by outcome",
        },
    ],
    buckets: &[],
    zero,
};

fn zero() {
    metrics::counter!(WRITE_FAILURES).increment(0);
    for outcome in ["signed", "failed"] {
        metrics::counter!(CHECKPOINTS, "outcome" => outcome).increment(0);
    }
}
