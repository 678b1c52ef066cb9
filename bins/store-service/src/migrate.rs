//! `store-service migrate`: the workspace's migrations (`migrations/`),
//! applied with refinery by the schema owner. The history table is
//! refinery's `refinery_schema_history`, the same as testkit's.

use anyhow::Context as _;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Applies every pending migration on the database at `url` (an owner's
/// credentials); returns the versions applied by this call.
pub async fn run(url: &str) -> anyhow::Result<Vec<i32>> {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting with MIGRATION_DATABASE_URL")?;
    let driver = tokio::spawn(connection);
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("applying migrations")?;
    drop(client);
    let _ = driver.await;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect())
}
