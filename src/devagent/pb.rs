//! Generated Workload API types, server and client.
#![allow(clippy::all, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/_.rs"));
