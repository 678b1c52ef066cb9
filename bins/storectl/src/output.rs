//! What `storectl` prints: tables for people, the API's JSON with
//! `--json` (a stale read's `meta` included), problems as one line.

use std::io::Write;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use gateway_api::StaleMeta;
use serde_json::{Value, json};
use store_client::{ClientError, Read};
use store_domain::{SecretsResponse, Store, StoreHistory, StorePage};

/// A plain table with `header`.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(header);
    table
}

fn print_json(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

/// A page of stores.
pub fn page(out: &mut impl Write, page: &Read<StorePage>, json: bool) -> std::io::Result<()> {
    if json {
        let mut value = serde_json::to_value(&page.value).unwrap_or_default();
        if let (Some(meta), Some(object)) = (&page.stale, value.as_object_mut()) {
            object.insert("meta".into(), json!(meta));
        }
        return print_json(out, &value);
    }
    let mut rows = table(&["ID", "NAME", "STATUS", "VERSION", "UPDATED"]);
    for store in &page.value.stores {
        rows.add_row(vec![
            store.id.to_string(),
            store.name.clone(),
            store.status.as_str().to_owned(),
            store.version.to_string(),
            store.updated_at.to_string(),
        ]);
    }
    writeln!(out, "{rows}")?;
    if let Some(cursor) = &page.value.next_cursor {
        writeln!(out, "more: --cursor {cursor}")?;
    }
    stale_note(out, page.stale.as_ref())
}

/// One store.
pub fn store(
    out: &mut impl Write,
    store: &Store,
    stale: Option<&StaleMeta>,
    json: bool,
) -> std::io::Result<()> {
    if json {
        let mut value = json!({ "store": store });
        if let Some(meta) = stale {
            value["meta"] = json!(meta);
        }
        return print_json(out, &value);
    }
    let mut rows = table(&["FIELD", "VALUE"]);
    rows.add_row(vec!["id".to_owned(), store.id.to_string()]);
    rows.add_row(vec!["name".to_owned(), store.name.clone()]);
    rows.add_row(vec!["status".to_owned(), store.status.as_str().to_owned()]);
    rows.add_row(vec!["version".to_owned(), store.version.to_string()]);
    rows.add_row(vec![
        "config".to_owned(),
        Value::Object(store.config.clone()).to_string(),
    ]);
    rows.add_row(vec!["secret keys".to_owned(), store.secret_keys.join(", ")]);
    rows.add_row(vec!["created".to_owned(), store.created_at.to_string()]);
    rows.add_row(vec!["updated".to_owned(), store.updated_at.to_string()]);
    writeln!(out, "{rows}")?;
    stale_note(out, stale)
}

/// A page of history.
pub fn history(out: &mut impl Write, history: &StoreHistory, json: bool) -> std::io::Result<()> {
    if json {
        return print_json(out, &serde_json::to_value(history).unwrap_or_default());
    }
    let mut rows = table(&["VERSION", "WHEN", "KIND", "ACTOR", "CHANGES"]);
    for event in &history.events {
        let changes: Vec<&str> = event.changes.iter().map(|c| c.field.as_str()).collect();
        rows.add_row(vec![
            event.version.to_string(),
            event.occurred_at.to_string(),
            event.kind.as_str().to_owned(),
            event
                .actor
                .as_ref()
                .map_or_else(|| "-".to_owned(), |a| a.as_str().to_owned()),
            changes.join(", "),
        ]);
    }
    writeln!(out, "{rows}")?;
    if let Some(cursor) = &history.next_cursor {
        writeln!(out, "more: --cursor {cursor}")?;
    }
    Ok(())
}

/// A store's secrets.
pub fn secrets(out: &mut impl Write, secrets: &SecretsResponse, json: bool) -> std::io::Result<()> {
    if json {
        return print_json(out, &serde_json::to_value(secrets).unwrap_or_default());
    }
    let mut rows = table(&["KEY", "VALUE"]);
    for (key, value) in secrets.secrets.iter() {
        rows.add_row(vec![key.to_owned(), value.to_owned()]);
    }
    writeln!(out, "{rows}")
}

fn stale_note(out: &mut impl Write, stale: Option<&StaleMeta>) -> std::io::Result<()> {
    if let Some(meta) = stale {
        writeln!(
            out,
            "stale: the gateway's copy of {} ({}); the service is asked again after {}",
            meta.data_timestamp,
            meta.stale_reason.as_str(),
            meta.next_retry
        )?;
    }
    Ok(())
}

/// A refusal as one line: status, code, message, request id.
pub fn problem_line(error: &ClientError) -> String {
    match error {
        ClientError::Problem {
            status, problem, ..
        } => {
            let mut line = format!("{status} {}: {}", problem.error, problem.message);
            if let Some(errors) = &problem.errors {
                for field in errors {
                    line.push_str(&format!("\n  {}: {}", field.field, field.message));
                }
            }
            if !problem.request_id.is_empty() {
                line.push_str(&format!(" (request {})", problem.request_id));
            }
            line
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use store_domain::{ErrorCode, Problem};

    use super::*;

    #[test]
    fn a_problem_is_one_line_with_its_request_id() {
        let error = ClientError::Problem {
            status: 409,
            problem: Box::new(Problem::new(ErrorCode::ConcurrencyError, "req-7")),
            retry_after: None,
        };
        let line = problem_line(&error);
        assert!(line.starts_with("409 CONCURRENCY_ERROR: "), "{line}");
        assert!(line.ends_with("(request req-7)"), "{line}");
    }
}
