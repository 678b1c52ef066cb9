//! The `gateway` binary. See the crate docs for the configuration
//! (`gateway --help` lists every variable).

use clap::Parser;
use gateway::{Application, Cli};
use service_kit::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gateway::startup::rustls_provider();
    let cli = Cli::parse();
    let _telemetry = telemetry::init(
        "gateway",
        &cli.settings.log_format,
        cli.settings.otlp_endpoint.as_deref(),
    );
    let app = match Application::build(cli.settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "gateway failed to start");
            return Err(error);
        }
    };
    app.run_until_stopped().await?;
    Ok(())
}
