//! What this binary is: version, git commit and date (set by build.rs).

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Full commit hash, or `unknown` when built without git or
/// `PRECINCT_GIT_COMMIT`.
pub const GIT_COMMIT: &str = env!("PRECINCT_GIT_COMMIT");
/// RFC 3339: the commit's date, or `PRECINCT_BUILD_DATE` when given.
pub const BUILD_DATE: &str = env!("PRECINCT_BUILD_DATE");
/// `precinct --version`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PRECINCT_GIT_COMMIT"),
    ", ",
    env!("PRECINCT_BUILD_DATE"),
    ")"
);
