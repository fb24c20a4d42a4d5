use anyhow::Context;
use clap::Parser;
use precinct::{
    Application, Config,
    cli::{AuditCommand, Cli, Command},
    telemetry, tls,
};

// glibc's malloc showed as ~8% of CPU under load (per-request allocations
// across worker threads); mimalloc's thread-local heaps cost a fraction.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tls::install_crypto_provider();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        #[cfg(feature = "dev-agent")]
        Command::DevAgent(args) => dev_agent(args).await,
        Command::Migrate => migrate().await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify().await,
        Command::InternalCheck(args) => precinct::internal_check::run(args).await,
        Command::BootstrapFiles { dir } => {
            for path in precinct::bootstrap::write_files(&dir)
                .with_context(|| format!("writing bootstrap files into {}", dir.display()))?
            {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

#[cfg(feature = "dev-agent")]
async fn dev_agent(args: precinct::cli::DevAgentArgs) -> anyhow::Result<()> {
    telemetry::init(&precinct::config::LogConfig {
        format: precinct::config::LogFormat::Pretty,
        filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        access: precinct::config::AccessLog::Off,
        otlp: None,
    });
    let agent = precinct::devagent::DevAgent::start(args.into()).await?;
    agent.run_until_signal().await;
    Ok(())
}

fn load_config() -> Config {
    match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            // One line naming the variable, then a non-zero exit.
            eprintln!("precinct: {e}");
            std::process::exit(2);
        }
    }
}

async fn migrate() -> anyhow::Result<()> {
    let config = load_config();
    telemetry::init(&config.log);
    let Some(precinct::config::Backends { identity, bao, db }) = &config.backends else {
        anyhow::bail!("SPIFFE_ENDPOINT_SOCKET is required to run migrations");
    };
    let identity = precinct::identity::Identity::connect(identity).await?;
    let client = precinct::bao::BaoClient::login(bao, &identity).await?;
    let result = precinct::db::migrate(&client, db).await;
    let _ = client.revoke_self().await;
    result?;
    Ok(())
}

/// Exit 0: intact; 1: tampered (the first problem printed); 2: not checked.
async fn audit_verify() -> anyhow::Result<()> {
    let config = load_config();
    telemetry::init(&config.log);
    let Some(precinct::config::Backends { identity, bao, db }) = &config.backends else {
        anyhow::bail!("SPIFFE_ENDPOINT_SOCKET is required to verify the audit log");
    };
    let identity = precinct::identity::Identity::connect(identity).await?;
    let client = precinct::bao::BaoClient::login(bao, &identity).await?;
    let result =
        precinct::audit::verify::verify(&client, db, &config.auth.transit_mount, &config.audit)
            .await;
    let _ = client.revoke_self().await;
    match result {
        Ok(Ok(report)) => {
            println!("{report}");
            Ok(())
        }
        Ok(Err(problem)) => {
            println!("audit log NOT intact: {problem}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("precinct: could not verify the audit log: {e}");
            std::process::exit(2);
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = load_config();
    telemetry::init(&config.log);
    let app = Application::build(config).await.context("startup failed")?;
    let result = app.run_until_stopped().await.context("server failed");
    // The spans of the last requests and of the shutdown itself.
    tokio::task::spawn_blocking(telemetry::shutdown).await?;
    result
}
