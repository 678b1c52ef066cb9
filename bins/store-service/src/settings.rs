//! The service's configuration: one typed struct read from environment
//! variables (or flags), `--help` listing every one.

use std::{net::IpAddr, time::Duration};

/// A configuration value that must never be printed (a password, a token,
/// a URL holding a password): `service_kit`'s.
pub use service_kit::Secret;

/// Everything the service reads at start. Each field is a flag and an
/// environment variable; secrets are [`Secret`]s and their environment
/// values are never shown by `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Port of the HTTP listener (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Address of the HTTP listener.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// OpenBao/Vault address.
    #[arg(long, env = "BAO_ADDR")]
    pub bao_addr: Option<String>,

    /// Vault address, when `BAO_ADDR` is unset.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,

    /// AppRole role id.
    #[arg(long, env = "BAO_ROLE_ID")]
    pub bao_role_id: Option<String>,

    /// AppRole secret id.
    #[arg(long, env = "BAO_SECRET_ID", hide_env_values = true)]
    pub bao_secret_id: Option<Secret>,

    /// Kubernetes auth role (used when no AppRole is configured): the pod's
    /// service-account token logs in.
    #[arg(long, env = "BAO_K8S_ROLE")]
    pub bao_k8s_role: Option<String>,

    /// Mount of the Kubernetes auth method.
    #[arg(long, env = "BAO_K8S_MOUNT", default_value = "kubernetes")]
    pub bao_k8s_mount: String,

    /// The service-account token file (re-read at every login: the kubelet
    /// rotates it).
    #[arg(
        long,
        env = "BAO_K8S_JWT_PATH",
        default_value = vault_client::KUBERNETES_JWT_PATH
    )]
    pub bao_k8s_jwt_path: std::path::PathBuf,

    /// A Vault token, used when neither an AppRole nor a Kubernetes role is
    /// configured. (TLS to Vault: `BAO_CACERT`, `BAO_CAPATH`,
    /// `BAO_CLIENT_CERT`, `BAO_CLIENT_KEY`, `BAO_TLS_SERVER_NAME` and
    /// `BAO_NAMESPACE`, or their `VAULT_` forms, are read as vault-client
    /// reads them.)
    #[arg(long, env = "BAO_TOKEN", hide_env_values = true)]
    pub bao_token: Option<Secret>,

    /// The primary database node, `host:port` (which node is primary is
    /// probed: this is only the first node tried).
    #[arg(long, env = "DB_PRIMARY")]
    pub db_primary: Option<String>,

    /// The replicas, comma-separated `host:port` list.
    #[arg(long, env = "DB_REPLICAS", value_delimiter = ',')]
    pub db_replicas: Vec<String>,

    /// The database name.
    #[arg(long, env = "DB_NAME", default_value = "stores")]
    pub db_name: String,

    /// Fallback connection URL (libpq form, multi-host allowed), used when
    /// Vault is unreachable at start; reported as degraded on `/ready`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// Role of the database secrets engine that issues credentials.
    #[arg(long, env = "VAULT_DB_ROLE", default_value = "store-service")]
    pub vault_db_role: String,

    /// Mount of the database secrets engine.
    #[arg(long, env = "VAULT_DB_MOUNT", default_value = "database")]
    pub vault_db_mount: String,

    /// Mount of the Transit engine that encrypts store secrets.
    #[arg(long, env = "TRANSIT_MOUNT", default_value = "transit")]
    pub transit_mount: String,

    /// Transit key that encrypts store secrets.
    #[arg(long, env = "TRANSIT_KEY", default_value = "store-secrets")]
    pub transit_key: String,

    /// Key of the `Idempotency-Key` request fingerprints (HMAC-SHA-256),
    /// shared by every instance. Unset: derived from the Transit key
    /// (`transit/hmac`, key version 1) when Vault is in use, else a
    /// per-process key (reported as degraded on `/ready`).
    #[arg(long, env = "IDEMPOTENCY_HMAC_KEY", hide_env_values = true)]
    pub idempotency_hmac_key: Option<Secret>,

    /// How long to retry Vault at start before falling back to
    /// `DATABASE_URL`, in seconds.
    #[arg(long, env = "VAULT_STARTUP_TIMEOUT_SECS", default_value_t = 30)]
    pub vault_startup_timeout_secs: u64,

    /// Pool size per database node.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: usize,

    /// Per-request timeout, in seconds (504 after it).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 15)]
    pub request_timeout_secs: u64,

    /// Connections served at once; past it a new one gets a 503 and is
    /// closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Seconds a client may take to send a request head, from when the
    /// connection is ready for one: slow and idle (keep-alive) clients are
    /// closed after it. Keep it above the gateway's `upstream_idle_timeout`
    /// (90 s), so that the gateway closes its pooled connections first.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 120)]
    pub header_read_timeout_secs: u64,

    /// Seconds the requests in flight may run after SIGTERM.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,

    /// Log format: `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// OTLP collector base URL (HTTP/protobuf; spans go to `<url>/v1/traces`).
    /// Unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    /// Defaults for every field, as if no variable were set (tests start
    /// from this and fill in what they need).
    pub fn defaults() -> Self {
        Self {
            port: 3000,
            host: IpAddr::from([0, 0, 0, 0]),
            bao_addr: None,
            vault_addr: None,
            bao_role_id: None,
            bao_secret_id: None,
            bao_k8s_role: None,
            bao_k8s_mount: "kubernetes".into(),
            bao_k8s_jwt_path: vault_client::KUBERNETES_JWT_PATH.into(),
            bao_token: None,
            db_primary: None,
            db_replicas: Vec::new(),
            db_name: "stores".into(),
            database_url: None,
            vault_db_role: "store-service".into(),
            vault_db_mount: "database".into(),
            transit_mount: "transit".into(),
            transit_key: "store-secrets".into(),
            idempotency_hmac_key: None,
            vault_startup_timeout_secs: 30,
            db_max_connections: 16,
            request_timeout_secs: 15,
            max_connections: 4096,
            header_read_timeout_secs: 120,
            drain_timeout_secs: 20,
            log_format: "json".into(),
            otlp_endpoint: None,
        }
    }

    /// The Vault address, `BAO_ADDR` first.
    pub fn vault_address(&self) -> Option<&str> {
        self.bao_addr
            .as_deref()
            .or(self.vault_addr.as_deref())
            .filter(|a| !a.is_empty())
    }

    /// The Vault start-up retry budget.
    pub fn vault_startup_timeout(&self) -> Duration {
        Duration::from_secs(self.vault_startup_timeout_secs)
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// The server's connection limits.
    pub fn limits(&self) -> service_kit::Limits {
        service_kit::Limits {
            max_connections: self.max_connections.max(1),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            ..service_kit::Limits::default()
        }
    }
}

/// The command line: the service by default, or `migrate`.
#[derive(Debug, clap::Parser)]
#[command(name = "store-service", version, about)]
pub struct Cli {
    /// The service's settings.
    #[command(flatten)]
    pub settings: Settings,

    /// What to run (default: the service).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Applies the database migrations with an owner credential, then exits.
    Migrate {
        /// A connection URL of the schema owner (not the runtime user).
        #[arg(long, env = "MIGRATION_DATABASE_URL", hide_env_values = true)]
        database_url: Secret,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let mut settings = Settings::defaults();
        settings.bao_secret_id = Some(Secret::new("hunter2"));
        settings.database_url = Some(Secret::new("postgres://u:hunter2@h/db"));
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn help_lists_every_variable() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for var in [
            "PORT",
            "BAO_ADDR",
            "BAO_ROLE_ID",
            "BAO_SECRET_ID",
            "BAO_TOKEN",
            "DB_PRIMARY",
            "DB_REPLICAS",
            "DB_NAME",
            "DATABASE_URL",
            "VAULT_DB_ROLE",
            "VAULT_DB_MOUNT",
            "TRANSIT_MOUNT",
            "TRANSIT_KEY",
            "VAULT_ADDR",
            "VAULT_STARTUP_TIMEOUT_SECS",
            "DB_MAX_CONNECTIONS",
            "REQUEST_TIMEOUT_SECS",
            "LOG_FORMAT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "HOST",
        ] {
            assert!(
                help.contains(&format!("[env: {var}")),
                "{var} missing from --help"
            );
        }
        let mut cli = Cli::command();
        let migrate = cli
            .find_subcommand_mut("migrate")
            .expect("a migrate subcommand")
            .render_long_help()
            .to_string();
        assert!(migrate.contains("[env: MIGRATION_DATABASE_URL"));
    }
}
