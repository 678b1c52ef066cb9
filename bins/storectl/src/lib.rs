//! `storectl`: the store API through the gateway, from a terminal. See
//! the README (its walkthrough is a test) and `storectl --help`.
//!
//! - [`cli`]: the commands and flags (clap).
//! - [`output`]: tables for people, JSON with `--json`.
//! - [`run`]: one command on [`store_client::StoreClient`]; `main` exits
//!   0, 1 when it failed (the API's problem on stderr), 2 for bad usage.

pub mod cli;
pub mod output;

use std::{collections::BTreeMap, io::Write, time::Duration};

use anyhow::Context as _;
use store_client::{Applied, ClientError, StaticToken, StoreClient, Written};
use store_domain::{CreateStore, HistoryQuery, StoreQuery};

use cli::{Cli, Command};

/// Runs `cli`'s command, printing to `out`.
///
/// # Errors
///
/// The API's refusal ([`ClientError`], in the chain), bad input, or output
/// that cannot be written.
pub async fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let stores = StoreClient::builder(cli.url.clone(), StaticToken::new(cli.token.expose()), http)
        .build()?;
    let json = cli.json;
    match cli.command {
        Command::List {
            status,
            limit,
            cursor,
        } => {
            let query = StoreQuery::from_pairs(
                [
                    ("limit", limit.map(|l| l.to_string())),
                    ("status", status),
                    ("cursor", cursor),
                ]
                .iter()
                .filter_map(|(k, v)| Some((*k, v.as_deref()?))),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let page = stores.list(&query).await?;
            output::page(out, &page, json)?;
        }
        Command::Show { id } => {
            let read = stores.get(id).await?;
            output::store(out, &read.value, read.stale.as_ref(), json)?;
        }
        Command::Create {
            name,
            config,
            secrets,
            key,
            id_only,
        } => {
            let mut create = CreateStore::new(name);
            if let Some(config) = config {
                let config: serde_json::Value =
                    serde_json::from_str(&config).context("--config is not JSON")?;
                let serde_json::Value::Object(config) = config else {
                    anyhow::bail!("--config must be a JSON object");
                };
                create = create.with_config(config);
            }
            for (k, v) in parse_secrets(&secrets)? {
                create = create.with_secret(k, v);
            }
            let written = match key {
                Some(key) => stores.create_with_key(&create, &key).await?,
                None => stores.create(&create).await?,
            };
            let applied = settle(written, json).await?;
            if id_only {
                writeln!(out, "{}", applied.store.id)?;
            } else {
                output::store(out, &applied.store, None, json)?;
            }
        }
        Command::Activate { id } => {
            stores.get(id).await?;
            let applied = settle(stores.activate(id).await?, json).await?;
            output::store(out, &applied.store, None, json)?;
        }
        Command::Decommission { id } => {
            stores.get(id).await?;
            let applied = settle(stores.decommission(id).await?, json).await?;
            output::store(out, &applied.store, None, json)?;
        }
        Command::History { id, limit, cursor } => {
            let query = HistoryQuery::from_pairs(
                [("limit", limit.map(|l| l.to_string())), ("cursor", cursor)]
                    .iter()
                    .filter_map(|(k, v)| Some((*k, v.as_deref()?))),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let history = stores.history(id, &query).await?;
            output::history(out, &history.value, json)?;
        }
        Command::Secrets { id } => {
            let secrets = stores.secrets(id).await?;
            output::secrets(out, &secrets, json)?;
        }
    }
    Ok(())
}

/// The applied write: at once, or once the gateway has sent a queued one
/// (its progress on stderr, unless `--json`).
async fn settle(written: Written, quiet: bool) -> Result<Applied, ClientError> {
    match written {
        Written::Applied(applied) => Ok(applied),
        Written::Queued(pending) => {
            if !quiet {
                eprintln!(
                    "the store service is down: the gateway queued the write as {}; waiting for it to be applied",
                    pending.request_id
                );
            }
            let mut last = None;
            pending
                .wait_with(|status| {
                    if !quiet && last != Some(status.status) {
                        eprintln!("  {:?} (attempts: {})", status.status, status.attempts);
                        last = Some(status.status);
                    }
                })
                .await
        }
    }
}

/// `KEY=VALUE` pairs (`KEY=@FILE`: the file's text, without its last
/// line break).
fn parse_secrets(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| "--secret takes KEY=VALUE or KEY=@FILE".to_owned())?;
            let value = match value.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("--secret {key}: reading {path}"))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
                None => value.to_owned(),
            };
            Ok((key.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_key_value_pairs() {
        let parsed = parse_secrets(&["A=1".into(), "B=x=y".into()]).unwrap();
        assert_eq!(parsed["A"], "1");
        assert_eq!(parsed["B"], "x=y");
        let error = parse_secrets(&["novalue".into()]).unwrap_err();
        assert!(error.to_string().contains("KEY=VALUE"), "{error}");
        let dir = std::env::temp_dir().join(format!("storectl-{}", std::process::id()));
        std::fs::write(&dir, "from-a-file\n").unwrap();
        let parsed = parse_secrets(&[format!("C=@{}", dir.display())]).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(parsed["C"], "from-a-file");
    }
}
