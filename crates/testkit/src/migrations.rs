//! The workspace's SQL migrations (`migrations/` at the top), applied with
//! refinery. One place applies them for tests and for `cargo xtask up`.

use crate::{Error, Result};

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Applies every pending migration in `migrations/` to the database
/// `client` is connected to, each in its own transaction. Returns the
/// versions applied by this call (empty when the schema was current).
pub async fn apply(client: &mut tokio_postgres::Client) -> Result<Vec<i32>> {
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| Error::Migration(Box::new(e)))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect())
}
