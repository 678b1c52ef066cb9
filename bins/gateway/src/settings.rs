//! The command line and environment: where the configuration file is, the
//! listener, upstream URLs for the default routes, the PagerDuty routing
//! key, logs. `gateway --help` lists every variable; secret values are
//! never shown.

use std::{net::IpAddr, path::PathBuf};

/// A value that must never be printed (the PagerDuty routing key, the
/// queue key): `service_kit`'s.
pub use service_kit::Secret;

/// Every environment variable the gateway reads (besides `RUST_LOG`).
pub const ENVIRONMENT: [&str; 10] = [
    "GATEWAY_CONFIG",
    "PORT",
    "HOST",
    "STORE_SERVICE_URL",
    "HARDWARE_SERVICE_URL",
    "PAGERDUTY_ROUTING_KEY",
    "GATEWAY_QUEUE_KEY",
    "GATEWAY_NATS_TOKEN",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// `gateway`: the command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "The platform's front door: reverse proxy, JWT auth that fails closed, rate limits, critical alerts."
)]
pub struct Cli {
    /// Everything the gateway reads at start.
    #[command(flatten)]
    pub settings: Settings,
}

/// Everything the gateway reads at start besides the file. Each field is a
/// flag and an environment variable.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// The configuration file (TOML: routes, auth, rate limits, alerts).
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub config: PathBuf,

    /// Port of the HTTP listener (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address of the HTTP listener.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// The store service's URL (overrides `upstreams.store` of the file).
    #[arg(long, env = "STORE_SERVICE_URL")]
    pub store_service_url: Option<String>,

    /// The hardware service's URL (adds the default `/api/hardware` route).
    #[arg(long, env = "HARDWARE_SERVICE_URL")]
    pub hardware_service_url: Option<String>,

    /// The PagerDuty Events API v2 routing key (overrides
    /// `alerts.routing_key` of the file).
    #[arg(long, env = "PAGERDUTY_ROUTING_KEY", hide_env_values = true)]
    pub pagerduty_routing_key: Option<Secret>,

    /// The write queue's key (base64 of 32 bytes): queued request bodies,
    /// which may carry store secrets, are sealed with it (AES-256-GCM).
    /// Unset: the file `<degraded.queue_path>.key`, created on first start
    /// (redb only: with JetStream every gateway needs the same key).
    #[arg(long, env = "GATEWAY_QUEUE_KEY", hide_env_values = true)]
    pub queue_key: Option<Secret>,

    /// The token the shared write queue's NATS cluster wants, if any
    /// (`degraded.queue_backend = "jetstream"`).
    #[arg(long, env = "GATEWAY_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,

    /// Log format: `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// OTLP/HTTP endpoint for trace export (off when unset).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    /// Settings for `config` with every other value at its default (tests).
    pub fn new(config: impl Into<PathBuf>) -> Self {
        Self {
            config: config.into(),
            port: 8080,
            host: [0, 0, 0, 0].into(),
            store_service_url: None,
            hardware_service_url: None,
            pagerduty_routing_key: None,
            queue_key: None,
            nats_token: None,
            log_format: "json".into(),
            otlp_endpoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn help_lists_every_variable_and_hides_secrets() {
        let help = Cli::command().render_long_help().to_string();
        for var in ENVIRONMENT {
            assert!(help.contains(var), "{var} missing from --help");
        }
        let cli = Cli::parse_from([
            "gateway",
            "--config",
            "g.toml",
            "--pagerduty-routing-key",
            "R0UT1NG",
            "--nats-token",
            "N4TST0KEN",
        ]);
        assert!(!format!("{cli:?}").contains("R0UT1NG"));
        assert!(!format!("{cli:?}").contains("N4TST0KEN"));
    }
}
