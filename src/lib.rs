//! precinct: a SPIFFE-aware zero-trust backend.
//!
//! Startup flows one way: Workload API → JWT-SVID → OpenBao → dynamic
//! PostgreSQL credentials → rotating pool → HTTP routes. Each module owns one
//! external dependency and the background task that keeps it fresh.

pub mod app;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod bao;
pub mod bootstrap;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod db;
#[cfg(feature = "dev-agent")]
pub mod devagent;
pub mod drain;
pub mod events;
pub mod github;
pub mod http;
pub mod identity;
pub mod internal_check;
pub mod metrics;
pub mod ratelimit;
pub mod readiness;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use app::Application;
pub use config::Config;
