//! The SQL: every statement of the store API, parameterised, on
//! `tokio_postgres` clients or transactions.

use serde_json::{Map, Value};
use store_domain::{ApplyError, Cursor, EventKind, Store, StoreEvent, StoreQuery, ValidUpdate};
use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

/// The columns every store query returns, in [`store_of`]'s order.
const COLUMNS: &str = "id, name, status, config, version, created_at, updated_at, secrets";

/// A database error, or a row that does not decode (a bug or a schema drift).
pub type SqlResult<T> = Result<T, tokio_postgres::Error>;

/// The store of a row, and its sealed secrets.
fn store_of(row: &Row) -> SqlResult<(Store, Map<String, Value>)> {
    let status: String = row.try_get(2)?;
    let config: Value = row.try_get(3)?;
    let secrets: Value = row.try_get(7)?;
    let secrets = match secrets {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let store = Store {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        // The CHECK constraint admits only the three statuses.
        status: status.parse().unwrap_or(store_domain::StoreStatus::INITIAL),
        config: match config {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        version: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        secret_keys: secrets.keys().cloned().collect(),
    };
    Ok((store, secrets))
}

/// One store by id.
pub async fn find(
    db: &impl GenericClient,
    id: Uuid,
) -> SqlResult<Option<(Store, Map<String, Value>)>> {
    let sql = format!("SELECT {COLUMNS} FROM stores WHERE id = $1");
    db.query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(store_of)
        .transpose()
}

/// The SQL of one page, with or without a cursor and a status filter.
/// Parameters, in order: the status (with a filter), the cursor's
/// `created_at` and `id` (with a cursor), the row count. Each variant is a
/// range scan of the `(created_at, id)` or `(status, created_at, id)` index
/// under a `LIMIT`, whatever the table size (the tests check the plan).
pub fn list_sql(cursor: bool, status: bool) -> String {
    match (cursor, status) {
        (false, false) => format!("SELECT {COLUMNS} FROM stores ORDER BY created_at, id LIMIT $1"),
        (false, true) => format!(
            "SELECT {COLUMNS} FROM stores WHERE status = $1 ORDER BY created_at, id LIMIT $2"
        ),
        (true, false) => format!(
            "SELECT {COLUMNS} FROM stores WHERE (created_at, id) > ($1, $2) \
             ORDER BY created_at, id LIMIT $3"
        ),
        // The row comparison spans the whole `(status, created_at, id)`
        // index, so the page is one range of it: a rare status never makes
        // the scan walk (and filter) the rows of the others.
        (true, true) => format!(
            "SELECT {COLUMNS} FROM stores WHERE status = $1 \
             AND (status, created_at, id) > ($1, $2, $3) ORDER BY created_at, id LIMIT $4"
        ),
    }
}

/// One page: `limit.fetch()` rows after the cursor, in (created_at, id)
/// order ([`list_sql`]).
pub async fn list(db: &impl GenericClient, query: &StoreQuery) -> SqlResult<Vec<Store>> {
    let fetch = query.limit.fetch();
    let status = query.status.map(|s| s.as_str());
    let after = query.cursor.map(|c: Cursor| (c.created_at(), c.id()));
    let sql = list_sql(after.is_some(), status.is_some());
    let rows = match (after, status) {
        (None, None) => db.query(&sql, &[&fetch]).await?,
        (None, Some(status)) => db.query(&sql, &[&status, &fetch]).await?,
        (Some((at, id)), None) => db.query(&sql, &[&at, &id, &fetch]).await?,
        (Some((at, id)), Some(status)) => db.query(&sql, &[&status, &at, &id, &fetch]).await?,
    };
    rows.iter().map(|r| store_of(r).map(|(s, _)| s)).collect()
}

/// Inserts a new store and its `CREATED` event (call inside a transaction).
pub async fn insert(
    db: &impl GenericClient,
    store: &Store,
    sealed: &Map<String, Value>,
    event: &StoreEvent,
) -> SqlResult<()> {
    let config = Value::Object(store.config.clone());
    let secrets = Value::Object(sealed.clone());
    db.execute(
        "INSERT INTO stores (id, name, status, config, version, created_at, updated_at, secrets) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &store.id,
            &store.name,
            &store.status.as_str(),
            &config,
            &store.version,
            &store.created_at,
            &store.updated_at,
            &secrets,
        ],
    )
    .await?;
    insert_event(db, event).await
}

/// What an update came to.
#[derive(Debug)]
pub enum UpdateOutcome {
    /// Written, with its event.
    Updated(Store),
    /// No such store.
    NotFound,
    /// Refused by the domain (stale version, invalid transition).
    Refused(ApplyError),
}

/// Applies `update` to store `id`: reads it, applies the domain rules, then
/// writes it in one conditional statement (`WHERE id = $1 AND version =
/// $2`) with its `UPDATED` event (call inside a transaction).
pub async fn update(
    db: &impl GenericClient,
    id: Uuid,
    update: &ValidUpdate,
    sealed: Option<&Map<String, Value>>,
    now: OffsetDateTime,
    request_id: &str,
) -> SqlResult<UpdateOutcome> {
    let Some((before, _)) = find(db, id).await? else {
        return Ok(UpdateOutcome::NotFound);
    };
    let after = match before.apply(update, now) {
        Ok(after) => after,
        Err(refused) => return Ok(UpdateOutcome::Refused(refused)),
    };
    let config = Value::Object(after.config.clone());
    let secrets = sealed.map(|s| Value::Object(s.clone()));
    let written = db
        .execute(
            "UPDATE stores SET name = $3, status = $4, config = $5, version = $6, updated_at = $7, \
             secrets = COALESCE($8, secrets) WHERE id = $1 AND version = $2",
            &[
                &id,
                &before.version,
                &after.name,
                &after.status.as_str(),
                &config,
                &after.version,
                &after.updated_at,
                &secrets,
            ],
        )
        .await?;
    if written == 0 {
        // Another request won the race since the read: report what is there now.
        let current: Option<i32> = db
            .query_opt("SELECT version FROM stores WHERE id = $1", &[&id])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        return Ok(match current {
            None => UpdateOutcome::NotFound,
            Some(current) => UpdateOutcome::Refused(ApplyError::VersionMismatch {
                expected: before.version,
                current,
            }),
        });
    }
    let event = StoreEvent::updated(&before, &after, sealed.is_some(), request_id);
    insert_event(db, &event).await?;
    Ok(UpdateOutcome::Updated(after))
}

async fn insert_event(db: &impl GenericClient, event: &StoreEvent) -> SqlResult<()> {
    let changes = serde_json::to_value(&event.changes).unwrap_or(Value::Array(Vec::new()));
    db.execute(
        "INSERT INTO store_events (store_id, version, occurred_at, kind, changes, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &event.store_id,
            &event.version,
            &event.occurred_at,
            &event.kind.as_str(),
            &changes,
            &event.request_id,
        ],
    )
    .await
    .map(drop)
}

/// The audit trail of store `id`, oldest first (empty: no such store).
pub async fn history(db: &impl GenericClient, id: Uuid) -> SqlResult<Vec<StoreEvent>> {
    let rows = db
        .query(
            "SELECT version, occurred_at, kind, changes, request_id FROM store_events \
             WHERE store_id = $1 ORDER BY version",
            &[&id],
        )
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.try_get(2)?;
        let changes: Value = row.try_get(3)?;
        events.push(StoreEvent {
            store_id: id,
            version: row.try_get(0)?,
            occurred_at: row.try_get(1)?,
            kind: if kind == EventKind::Created.as_str() {
                EventKind::Created
            } else {
                EventKind::Updated
            },
            changes: serde_json::from_value(changes).unwrap_or_default(),
            request_id: row.try_get(4)?,
        });
    }
    Ok(events)
}
