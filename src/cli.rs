//! The command line: `precinct` serves; subcommands run tools of the same binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[cfg(feature = "dev-agent")]
use crate::devagent::DevAgentConfig;

#[derive(Debug, Parser)]
#[command(
    name = "precinct",
    version = crate::build_info::LONG_VERSION,
    about = "SPIFFE-aware zero-trust backend"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default). Configured by environment variables; see docs/configuration.md.
    Serve,
    /// Apply pending database migrations (identity → OpenBao migrate role) and exit.
    Migrate,
    /// The audit trail: `precinct audit verify` checks its hash chain and signed checkpoints.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write the OpenBao configuration script and the database bootstrap this build expects into DIR.
    BootstrapFiles {
        /// Directory to write configure-openbao.sh, bootstrap-db.sh and bootstrap.sql into.
        dir: PathBuf,
    },
    /// A client workload of the internal API: log in on the public API, introspect the token over mutual TLS with this workload's own SVID.
    InternalCheck(crate::internal_check::InternalCheckArgs),
    /// Run the development SPIFFE Workload API (local development and tests only: it attests nothing).
    #[cfg(feature = "dev-agent")]
    DevAgent(DevAgentArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit log's hash chain and checkpoints (identity → OpenBao → the migrate role):
    /// prints "ok: N rows, M checkpoints" and exits 0, or names the first row deleted, altered or
    /// inserted and exits 1 (2: it could not be checked).
    Verify,
}

#[cfg(feature = "dev-agent")]
#[derive(Debug, clap::Args)]
pub struct DevAgentArgs {
    /// Unix socket to serve the Workload API on.
    #[arg(long)]
    pub socket: PathBuf,
    /// Trust domain, e.g. demo.local.
    #[arg(long, default_value = "demo.local")]
    pub trust_domain: String,
    /// The SPIFFE ID every caller receives.
    #[arg(long, default_value = "spiffe://demo.local/ns/99-apps/sa/backend")]
    pub spiffe_id: String,
    /// Address of the OIDC discovery endpoint (/.well-known/openid-configuration, /keys).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub oidc_addr: std::net::SocketAddr,
    /// Issuer URL (defaults to http://<oidc-addr>).
    #[arg(long)]
    pub issuer: Option<String>,
    /// X.509-SVID lifetime; a fresh one is pushed at half of it.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub x509_ttl: std::time::Duration,
    /// JWT-SVID lifetime.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwt_ttl: std::time::Duration,
    /// Rotate the JWT signing key this often (the previous key stays published).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub jwt_key_rotation: Option<std::time::Duration>,
    /// Keep the CA and signing key here across restarts.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Another identity to hand out, from the same CA, on a socket of its
    /// own: `--workload spiffe://demo.local/ns/99-apps/sa/client=/tmp/client.sock`
    /// (repeatable). A client workload then calls precinct's internal API.
    #[arg(long = "workload", value_parser = parse_workload)]
    pub workloads: Vec<(String, PathBuf)>,
    /// A DNS SAN for the main identity's SVIDs, beside its SPIFFE ID (as a
    /// SPIRE entry's dnsNames), so curl --cacert verifies precinct's
    /// internal API by name (repeatable).
    #[arg(long = "dns-name", default_value = "localhost")]
    pub dns_names: Vec<String>,
}

#[cfg(feature = "dev-agent")]
fn parse_workload(raw: &str) -> Result<(String, PathBuf), String> {
    let (id, socket) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?}: expected SPIFFE_ID=SOCKET_PATH"))?;
    Ok((id.to_string(), PathBuf::from(socket)))
}

#[cfg(feature = "dev-agent")]
impl From<DevAgentArgs> for DevAgentConfig {
    fn from(a: DevAgentArgs) -> Self {
        let mut c = DevAgentConfig::new(a.socket, &a.trust_domain, &a.spiffe_id, a.oidc_addr);
        c.issuer = a.issuer;
        c.x509_ttl = a.x509_ttl;
        c.jwt_ttl = a.jwt_ttl;
        c.jwt_key_rotation = a.jwt_key_rotation;
        c.state_dir = a.state_dir;
        c.workloads = a.workloads;
        c.dns_names = a.dns_names;
        c
    }
}
