#![doc = include_str!("../README.md")]

mod binaries;
mod error;
mod folder;
mod kubernetes;
pub mod migrations;
mod nats;
mod oidc;
mod openbao;
mod platform;
mod ports;
mod postgres;
mod process;
mod service;
pub mod timeline;

use std::path::Path;

pub use binaries::{
    BAO_INSTALL, NATS_INSTALL, POSTGRES_INSTALL, SCHEMATHESIS_INSTALL, bao_binary, find_in_path,
    nats_server_binary, postgres_bindir, schemathesis_binary,
};
pub use error::{Error, Result};
pub use kubernetes::ServiceAccountTokens;
pub use nats::{MetaCluster, MetaPeer, NATS_CLUSTER_NAME, NatsCluster, NatsClusterBuilder};
pub use oidc::{OidcClient, OidcIssuer, jwt_subject};
pub use openbao::{AppRoleCredentials, DatabaseEngine, OpenBao, OpenBaoBuilder, http_client};
pub use platform::{
    STORE_SERVICE_POLICY_FILE, STORE_TRANSIT_KEY, configure_store_service, migrate_store,
    store_service_command,
};
pub use ports::free_port;
pub use postgres::{
    NodeId, PgCluster, PgClusterBuilder, PgNode, REPLICATION_USER, SUPERUSER, quote_ident,
    quote_literal,
};
pub use process::log_tail;
pub use service::{
    READY_WITHIN, Service, ServiceCommand, build_binary, eventually, workspace_file, workspace_root,
};

use error::IoContext;

/// A random secret (128 bits from the OS generator, hex) for passwords the
/// services make up themselves.
pub fn random_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Writes `text` to `path` with mode 0600 (created or truncated).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .context(|| format!("writing {}", path.display()))?;
    // `mode` applies only to a new file: make an old one private as well.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("chmod 0600 {}", path.display()))
}
