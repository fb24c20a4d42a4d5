//! `precinct_github_*`: calls to GitHub, ETag hits, its rate limit.

use crate::metrics::{Family, Kind, Metric};

pub const CALLS: &str = "precinct_github_upstream_requests_total";
pub const ETAG_HITS: &str = "precinct_github_etag_hits_total";
pub const RATE_REMAINING: &str = "precinct_github_rate_limit_remaining";

pub const FAMILY: Family = Family {
    metrics: &[
        Metric {
            name: CALLS,
            kind: Kind::Counter,
            help: "Calls to the GitHub API by status (or timeout, network)",
        },
        Metric {
            name: ETAG_HITS,
            kind: Kind::Counter,
            help: "GitHub answers served from the ETag cache (304)",
        },
        Metric {
            name: RATE_REMAINING,
            kind: Kind::Gauge,
            help: "GitHub's x-ratelimit-remaining on its last answer",
        },
    ],
    buckets: &[],
    zero,
};

fn zero() {
    metrics::counter!(ETAG_HITS).increment(0);
}
