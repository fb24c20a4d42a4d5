//! The integration suite: one binary, so the dependency graph is linked once.
//!
//! Run it with cargo-nextest (`scripts/test.sh` does): every test gets a
//! process of its own, which the tests that install the global log
//! subscriber, send signals to the process or count process-wide metrics
//! rely on. `.config/nextest.toml` runs the disruptive ones (a PostgreSQL
//! restart, the whole dev.sh stack) and the timing comparisons alone.

mod common;

mod abuse_limits;
mod auth;
mod auth_resilience;
mod binary;
mod bootstrap;
mod cluster_scripts;
mod configuration_docs;
mod data_layer;
mod dev_script;
mod github;
mod harness_cleanup;
mod hostile_input;
mod http_surface;
mod identity;
mod independent_client;
mod internal;
mod kube_events;
mod login_timing;
mod metrics;
mod observability;
mod openbao_restart;
mod postgres_restart;
mod replicas;
mod rotation;
mod rotation_engine;
mod schemathesis;
mod sighup;
mod tls;
mod tls_openbao;
