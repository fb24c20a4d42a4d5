//! The command line: `precinct` serves; subcommands run tools of the same binary.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "precinct", version, about = "SPIFFE-aware zero-trust backend")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default). Configured by environment variables; see docs/configuration.md.
    Serve,
}
