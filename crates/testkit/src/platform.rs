//! The store service on a testkit stack, as production runs it: OpenBao set
//! up as `deploy/vault/setup.sh` does (with AppRole in place of Kubernetes
//! auth), the schema applied by `store-service migrate`, and the service's
//! environment (the variables of `deploy/k8s/base/store-service`).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::service::{ServiceCommand, workspace_file};
use crate::{AppRoleCredentials, DatabaseEngine, NodeId, OpenBao, PgCluster, Result};

/// The store service's production policy, from the workspace root.
pub const STORE_SERVICE_POLICY_FILE: &str = "deploy/vault/policies/store-service.hcl";
/// The Transit key that encrypts store secrets.
pub const STORE_TRANSIT_KEY: &str = "store-secrets";

/// Sets OpenBao up for the store service against `pg`: KV v2 at `secret/`
/// with `store-service/database` naming the database, Transit key
/// [`STORE_TRANSIT_KEY`], the database engine as `engine` says, the
/// production policy ([`STORE_SERVICE_POLICY_FILE`]; token self-renewal
/// comes from OpenBao's `default` policy, as in production) under the name
/// `engine.role`, and an AppRole of that name (1 h tokens). Returns the
/// AppRole's credentials.
pub async fn configure_store_service(
    bao: &OpenBao,
    pg: &PgCluster,
    engine: &DatabaseEngine,
) -> Result<AppRoleCredentials> {
    bao.enable_kv2("secret").await?;
    bao.kv_put(
        "secret",
        "store-service/database",
        json!({ "dbname": engine.database }),
    )
    .await?;
    bao.enable_transit("transit").await?;
    bao.create_transit_key("transit", STORE_TRANSIT_KEY).await?;
    bao.configure_database(pg, engine).await?;
    let policy = workspace_file(STORE_SERVICE_POLICY_FILE)?;
    bao.write_policy(&engine.role, &policy).await?;
    bao.enable_approle(
        &engine.role,
        &[engine.role.as_str()],
        Duration::from_secs(3600),
    )
    .await
}

/// `<binary> migrate` (the migrate Job's command): the schema owner (the
/// superuser here) applies `migrations/` to `database` on the primary
/// (created first if missing).
pub async fn migrate_store(binary: &Path, pg: &PgCluster, database: &str) -> Result<()> {
    pg.create_database(database).await?;
    ServiceCommand::new(binary)
        .arg("migrate")
        .env(
            "MIGRATION_DATABASE_URL",
            pg.superuser_url(pg.primary(), database),
        )
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .run()
        .await
        .map(drop)
}

/// The store service `binary` on `127.0.0.1:<port>` against the stack: the
/// AppRole login to `bao`, database credentials from Vault for `engine`,
/// `pg`'s primary and replicas, text logs at `warn`. Callers add what
/// their scenario needs (e.g. `DB_MAX_CONNECTIONS`).
pub fn store_service_command(
    binary: &Path,
    port: u16,
    pg: &PgCluster,
    bao: &OpenBao,
    approle: &AppRoleCredentials,
    engine: &DatabaseEngine,
) -> ServiceCommand {
    let address = |id: NodeId| format!("127.0.0.1:{}", pg.node(id).port());
    let replicas: Vec<String> = pg.replicas().into_iter().map(address).collect();
    ServiceCommand::new(binary)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("BAO_ADDR", bao.addr())
        .env("BAO_ROLE_ID", &approle.role_id)
        .env("BAO_SECRET_ID", &approle.secret_id)
        .env("DB_PRIMARY", address(pg.primary()))
        .env("DB_REPLICAS", replicas.join(","))
        .env("DB_NAME", &engine.database)
        .env("VAULT_DB_ROLE", &engine.role)
        .env("TRANSIT_KEY", STORE_TRANSIT_KEY)
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("VAULT_ADDR")
}
