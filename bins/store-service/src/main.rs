//! The `store-service` binary: `store-service` serves the API,
//! `store-service migrate` applies the migrations. See the crate docs for
//! configuration (`store-service --help` lists every variable).

use clap::Parser;
use service_kit::telemetry;
use store_service::{Application, Cli, Command, migrate};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every reqwest client needs a rustls provider (see vault-client).
    vault_client::install_crypto_provider();
    let cli = Cli::parse();
    let _telemetry = telemetry::init(
        "store-service",
        &cli.settings.log_format,
        cli.settings.otlp_endpoint.as_deref(),
    );
    match cli.command {
        Some(Command::Migrate { database_url }) => {
            let applied = migrate::run(database_url.expose()).await?;
            tracing::info!(?applied, "migrations applied");
        }
        None => {
            Application::build(cli.settings)
                .await?
                .run_until_stopped()
                .await?
        }
    }
    Ok(())
}
