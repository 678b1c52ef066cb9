//! The SQL: every statement of the store API, parameterised, on
//! `tokio_postgres` clients or transactions.

use db_failover::deadpool_postgres::{self, ClientWrapper, StatementCache};
use serde_json::{Map, Value};
use store_domain::{
    Actor, ApplyError, Cursor, EventKind, HistoryQuery, Store, StoreEvent, StoreQuery, StoreStatus,
    ValidUpdate,
};
use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Row, Statement, types::ToSql};
use uuid::Uuid;

/// The columns every store query returns, in [`store_of`]'s order.
const COLUMNS: &str = "id, name, status, config, version, created_at, updated_at, secrets";

/// A database error, or a row that does not decode (a bug or a schema drift).
pub type SqlResult<T> = Result<T, tokio_postgres::Error>;

/// A pooled connection or a transaction on one, with the connection's
/// statement cache: each statement is prepared once per connection, so a
/// query is one round trip (bind and execute) instead of two (prepare,
/// then bind and execute).
pub struct Db<'a, C> {
    /// The connection or transaction.
    client: &'a C,
    /// The connection's prepared statements.
    cache: &'a StatementCache,
}

impl<C> Clone for Db<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Db<'_, C> {}

impl<'a> Db<'a, tokio_postgres::Client> {
    /// Statements on a pooled connection, outside any transaction.
    pub fn connection(client: &'a ClientWrapper) -> Self {
        Self {
            client,
            cache: &client.statement_cache,
        }
    }
}

impl<'a, 't> Db<'a, tokio_postgres::Transaction<'t>> {
    /// Statements in `transaction`.
    pub fn transaction(transaction: &'a deadpool_postgres::Transaction<'t>) -> Self {
        Self {
            client: transaction,
            cache: &transaction.statement_cache,
        }
    }
}

impl<C: GenericClient + Sync> Db<'_, C> {
    async fn prepared(&self, sql: &str) -> SqlResult<Statement> {
        self.cache.prepare(self.client.client(), sql).await
    }

    /// Like `query`, with the statement prepared once per connection.
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> SqlResult<Vec<Row>> {
        let statement = self.prepared(sql).await?;
        self.client.query(&statement, params).await
    }

    /// Like `query_opt`, with the statement prepared once per connection.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> SqlResult<Option<Row>> {
        let statement = self.prepared(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    /// Like `execute`, with the statement prepared once per connection.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> SqlResult<u64> {
        let statement = self.prepared(sql).await?;
        self.client.execute(&statement, params).await
    }
}

/// How many [`COLUMNS`] there are.
const COLUMN_COUNT: usize = 8;

/// The store of a row, and its sealed secrets.
fn store_of(row: &Row) -> SqlResult<(Store, Map<String, Value>)> {
    store_of_at(row, 0)
}

/// The store of the [`COLUMNS`] that start at column `at` of a row.
fn store_of_at(row: &Row, at: usize) -> SqlResult<(Store, Map<String, Value>)> {
    let status: String = row.try_get(at + 2)?;
    let config: Value = row.try_get(at + 3)?;
    let secrets: Value = row.try_get(at + 7)?;
    let secrets = match secrets {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let store = Store {
        id: row.try_get(at)?,
        name: row.try_get(at + 1)?,
        // The CHECK constraint admits only the three statuses.
        status: status.parse().unwrap_or(store_domain::StoreStatus::INITIAL),
        config: match config {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        version: row.try_get(at + 4)?,
        created_at: row.try_get(at + 5)?,
        updated_at: row.try_get(at + 6)?,
        secret_keys: secrets.keys().cloned().collect(),
    };
    Ok((store, secrets))
}

/// One store by id.
pub async fn find(
    db: Db<'_, impl GenericClient + Sync>,
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
pub async fn list(
    db: Db<'_, impl GenericClient + Sync>,
    query: &StoreQuery,
) -> SqlResult<Vec<Store>> {
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
    db: Db<'_, impl GenericClient + Sync>,
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

/// The [`COLUMNS`] of `alias`, for a statement that names two rows.
fn columns_of(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies `update` to store `id` in ONE conditional statement, then
/// writes its `UPDATED` event, by `actor` (`None`: anonymous), in the same
/// transaction (call inside one).
///
/// `UPDATE stores ... WHERE id = $1 AND version = $2 AND status = ANY($8)
/// RETURNING ...`: the version check, the lifecycle check (the statuses
/// the requested one may be reached from) and the write are one atomic
/// step, so two updates of the same version can never both pass. The row
/// as it was comes from a self-join on the same id and version: a row at
/// that version is the one being replaced (versions only grow). Only when
/// nothing was written is the row read again, to say why (no such store, a
/// stale version, or a refused transition).
pub async fn update(
    db: Db<'_, impl GenericClient + Sync>,
    id: Uuid,
    update: &ValidUpdate,
    sealed: Option<&Map<String, Value>>,
    now: OffsetDateTime,
    request_id: &str,
    actor: Option<&Actor>,
) -> SqlResult<UpdateOutcome> {
    let Some(expected) = update.expected_version() else {
        return Ok(UpdateOutcome::Refused(ApplyError::VersionRequired));
    };
    // The statuses the update may start from: any, unless it asks for one.
    let from: Vec<&str> = StoreStatus::ALL
        .iter()
        .filter(|s| update.status().is_none_or(|next| s.can_transition_to(next)))
        .map(|s| s.as_str())
        .collect();
    let config = update.config().map(|c| Value::Object(c.clone()));
    let secrets = sealed.map(|s| Value::Object(s.clone()));
    let sql = format!(
        "UPDATE stores AS s SET name = COALESCE($3, s.name), status = COALESCE($4, s.status), \
         config = COALESCE($5, s.config), secrets = COALESCE($6, s.secrets), \
         version = s.version + 1, updated_at = $7 \
         FROM stores AS before \
         WHERE s.id = $1 AND s.version = $2 AND s.status = ANY($8) \
         AND before.id = s.id AND before.version = $2 \
         RETURNING {}, {}",
        columns_of("s"),
        columns_of("before"),
    );
    let row = db
        .query_opt(
            &sql,
            &[
                &id,
                &expected,
                &update.name(),
                &update.status().map(StoreStatus::as_str),
                &config,
                &secrets,
                &now,
                &from,
            ],
        )
        .await?;
    let Some(row) = row else {
        return why_not_updated(db, id, update, expected).await;
    };
    let (after, _) = store_of_at(&row, 0)?;
    let (before, _) = store_of_at(&row, COLUMN_COUNT)?;
    let event = StoreEvent::updated(
        &before,
        &after,
        sealed.is_some(),
        request_id,
        actor.cloned(),
    );
    insert_event(db, &event).await?;
    Ok(UpdateOutcome::Updated(after))
}

/// Why [`update`] wrote nothing: the store as it is now says.
async fn why_not_updated(
    db: Db<'_, impl GenericClient + Sync>,
    id: Uuid,
    update: &ValidUpdate,
    expected: i32,
) -> SqlResult<UpdateOutcome> {
    let Some((current, _)) = find(db, id).await? else {
        return Ok(UpdateOutcome::NotFound);
    };
    if current.version != expected {
        return Ok(UpdateOutcome::Refused(ApplyError::VersionMismatch {
            expected,
            current: current.version,
        }));
    }
    // Still at the expected version (every change bumps it), so the same
    // status: the lifecycle refused the transition, and the domain names
    // it. (The domain accepting it cannot happen; it is answered as a
    // conflict, which sends the client to read the store again.)
    Ok(UpdateOutcome::Refused(
        match current.apply(update, OffsetDateTime::now_utc()) {
            Err(refused) => refused,
            Ok(_) => ApplyError::VersionMismatch {
                expected,
                current: current.version,
            },
        },
    ))
}

/// Writes `event`, with its actor (NULL: anonymous).
async fn insert_event(db: Db<'_, impl GenericClient + Sync>, event: &StoreEvent) -> SqlResult<()> {
    let changes = serde_json::to_value(&event.changes).unwrap_or(Value::Array(Vec::new()));
    db.execute(
        "INSERT INTO store_events \
         (store_id, version, occurred_at, kind, changes, request_id, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &event.store_id,
            &event.version,
            &event.occurred_at,
            &event.kind.as_str(),
            &changes,
            &event.request_id,
            &event.actor.as_ref().map(Actor::as_str),
        ],
    )
    .await
    .map(drop)
}

/// One page of store `id`'s audit trail, oldest first, with one event
/// more than the limit when another page follows (`None`: no such store).
pub async fn history(
    db: Db<'_, impl GenericClient + Sync>,
    id: Uuid,
    query: &HistoryQuery,
) -> SqlResult<Option<Vec<StoreEvent>>> {
    let rows = db
        .query(
            "SELECT version, occurred_at, kind, changes, request_id, actor FROM store_events \
             WHERE store_id = $1 AND version > $2 ORDER BY version LIMIT $3",
            &[&id, &query.after(), &query.limit.fetch()],
        )
        .await?;
    if rows.is_empty() {
        // No event after the cursor: an empty last page of a store that
        // exists, or no store at all.
        let exists = query.cursor.is_some()
            && db
                .query_opt(
                    "SELECT 1 FROM store_events WHERE store_id = $1 LIMIT 1",
                    &[&id],
                )
                .await?
                .is_some();
        return Ok(exists.then(Vec::new));
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.try_get(2)?;
        let changes: Value = row.try_get(3)?;
        let actor: Option<String> = row.try_get(5)?;
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
            actor: actor.as_deref().and_then(actor_of),
        });
    }
    Ok(Some(events))
}

/// The actor of a stored event. Only [`Actor`]s are written, so one that
/// does not parse back is a schema drift: it is logged and shown as
/// anonymous, as other unreadable event members are shown as defaults.
fn actor_of(stored: &str) -> Option<Actor> {
    match Actor::new(stored) {
        Ok(actor) => Some(actor),
        Err(error) => {
            tracing::error!(%error, "a stored event's actor does not parse");
            None
        }
    }
}
