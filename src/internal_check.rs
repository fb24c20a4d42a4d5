//! `precinct internal-check`: a client workload of the internal API, as a
//! demo and a smoke check (the k8s/dev Job runs it with its own SVID). It
//! logs in as a user on the public API, then introspects that access token
//! over mutual TLS with the X.509-SVID its own Workload API hands it,
//! verifying that the server is precinct (its SPIFFE ID). Prints the
//! introspection and exits 0 when the token is active.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct InternalCheckArgs {
    /// The internal API (mutual TLS), e.g. https://backend.99-apps.svc:8443.
    #[arg(long, env = "INTERNAL_URL")]
    pub internal_url: String,
    /// The public API, to log in (the token to introspect).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: String,
    /// precinct's SPIFFE ID: the server certificate must carry it.
    #[arg(long, env = "SERVER_SPIFFE_ID")]
    pub server_spiffe_id: String,
    #[arg(long, env = "CHECK_USERNAME", default_value = "jake")]
    pub username: String,
    #[arg(long, env = "CHECK_PASSWORD", default_value = "jake99")]
    pub password: String,
    /// This workload's Workload API (its own identity).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    pub spiffe_endpoint_socket: String,
}

pub async fn run(args: InternalCheckArgs) -> anyhow::Result<()> {
    let source = spiffe::X509SourceBuilder::new()
        .endpoint(&args.spiffe_endpoint_socket)
        .initial_sync_timeout(Duration::from_secs(30))
        .build()
        .await
        .context("no X.509-SVID from this workload's Workload API")?;
    let me = source
        .svid()
        .context("the Workload API gave no X.509-SVID")?
        .spiffe_id()
        .to_string();
    let tls = spiffe_rustls::mtls_client(source)
        .authorize(spiffe_rustls::authorizer::exact([args
            .server_spiffe_id
            .as_str()])?)
        .build()?;
    let internal = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()?;
    let public = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let login: Value = public
        .post(format!("{}/api/v1/auth/login", args.public_url))
        .json(&serde_json::json!({"username": args.username, "password": args.password}))
        .send()
        .await
        .context("logging in on the public API")?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .context("no access_token in the login answer")?;
    let answer = internal
        .post(format!("{}/internal/v1/introspect", args.internal_url))
        .form(&[("token", token)])
        .send()
        .await
        .context("calling the internal API over mutual TLS")?;
    let status = answer.status();
    let body: Value = answer.json().await?;
    println!(
        "{}",
        serde_json::json!({"client": me, "status": status.as_u16(), "introspection": body})
    );
    if body["active"] != Value::Bool(true) {
        bail!("the token is not active ({status})");
    }
    Ok(())
}
