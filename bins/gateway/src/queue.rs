//! The gateway's durable write queue: the [`write_queue`] crate with the
//! gateway's types. A write (POST or PUT) accepted while its upstream is
//! down is stored **before** the client gets its 202 and replayed by
//! [`crate::replay`]; every queued write carries an `Idempotency-Key`, so a
//! second attempt is answered from the upstream's idempotency record,
//! never applied twice.
//!
//! - [`WriteTarget`] (plain, kept for `GET /api/requests/{id}`): the route,
//!   method, path and key. Its resource is the path without the query: a
//!   PUT never overtakes an earlier PUT of the same store.
//! - [`Payload`] (sealed at rest, erased once finished): the kept headers
//!   and the body, which may carry store secrets.
//! - [`Outcome`]: the upstream's final answer.
//!
//! The field order of [`WriteTarget`] is the storage layout of the records
//! written before the queue was a crate: they decode unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};
pub use write_queue::{
    JetStreamConfig, NewWrite, QueueError, QueueLimits, QueueStats, Sealer, WriteMeta, WriteState,
    millis,
};

/// The gateway's queue.
pub type WriteQueue = write_queue::WriteQueue<WriteTarget, Payload, Outcome>;

/// A queued write as stored.
pub type QueuedWrite = write_queue::Record<WriteTarget, Outcome>;

/// Where a queued write goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteTarget {
    /// The route it goes to (its upstream and breaker).
    pub route: String,
    /// `POST` or `PUT`.
    pub method: String,
    /// The path and query to send.
    pub path_and_query: String,
    /// The `Idempotency-Key` it is sent with.
    pub idempotency_key: String,
}

impl WriteMeta for WriteTarget {
    fn resource(&self) -> &str {
        ordered_resource(&self.method, &self.path_and_query, &self.idempotency_key)
    }
}

/// The path of `path_and_query`, without the query.
fn resource_of(path_and_query: &str) -> &str {
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path)
}

/// The resource whose writes are applied in the order they were accepted:
/// the path (without the query) of a change to an existing resource (PUT,
/// PATCH); for a POST, which makes a new resource each time, its
/// `Idempotency-Key`. Independent creates are then never queued behind one
/// another (they were: after an outage every create to `/api/stores`
/// waited for the replay of all earlier ones, one per pass, and new
/// creates kept the queue from draining; found by the chaos run), while a
/// create's own retries stay behind it. A key that happens to equal a path
/// only orders more writes than needed, never fewer. Computed from the
/// record's fields, so the record format is unchanged.
pub fn ordered_resource<'a>(
    method: &str,
    path_and_query: &'a str,
    idempotency_key: &'a str,
) -> &'a str {
    if method.eq_ignore_ascii_case("POST") {
        idempotency_key
    } else {
        resource_of(path_and_query)
    }
}

/// What a write sends: kept sealed at rest, erased once finished.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The headers to send (never `Authorization`).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Payload")
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The upstream's final answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Its status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use redb::TableDefinition;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn creates_are_ordered_by_key_and_changes_by_path() {
        let target = |method: &str, path: &str, key: &str| WriteTarget {
            route: "stores".into(),
            method: method.into(),
            path_and_query: path.into(),
            idempotency_key: key.into(),
        };
        // Two creates on one collection: two resources (neither waits for
        // the other); the same create retried: one.
        let (a, b) = (
            target("POST", "/api/stores", "k-1"),
            target("POST", "/api/stores?x=1", "k-2"),
        );
        assert_ne!(a.resource(), b.resource());
        assert_eq!(
            a.resource(),
            target("POST", "/api/stores", "k-1").resource()
        );
        // Changes to one store: one resource, whatever the key or query.
        let (c, d) = (
            target("PUT", "/api/stores/s-1", "k-3"),
            target("PUT", "/api/stores/s-1?y", "k-4"),
        );
        assert_eq!(c.resource(), "/api/stores/s-1");
        assert_eq!(c.resource(), d.resource());
        assert_eq!(ordered_resource("post", "/api/stores", "k-1"), "k-1");
    }

    /// A record exactly as the gateway stored it before the queue was a
    /// crate (flat fields, `postcard` after a format byte).
    #[derive(Clone, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct EarlierRecord {
        id: Uuid,
        principal: String,
        route: String,
        method: String,
        path_and_query: String,
        idempotency_key: String,
        seq: u64,
        state: WriteState,
        attempts: u32,
        accepted_at_ms: u64,
        next_attempt_at_ms: u64,
        last_error: Option<String>,
        outcome: Option<Outcome>,
        finished_at_ms: Option<u64>,
        #[serde(with = "serde_bytes_raw")]
        sealed: Vec<u8>,
        payload_len: u64,
    }

    mod serde_bytes_raw {
        pub(super) fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(b)
        }
    }

    #[tokio::test]
    async fn records_of_the_earlier_gateway_are_read_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.redb");
        let now = millis(SystemTime::now());
        let finished = EarlierRecord {
            id: Uuid::now_v7(),
            principal: "alice".into(),
            route: "stores".into(),
            method: "POST".into(),
            path_and_query: "/api/stores".into(),
            idempotency_key: "k-1".into(),
            seq: 0,
            state: WriteState::Completed,
            attempts: 1,
            accepted_at_ms: now,
            next_attempt_at_ms: now,
            last_error: None,
            outcome: Some(Outcome {
                status: 201,
                content_type: Some("application/json".into()),
                body: b"{}".to_vec(),
            }),
            finished_at_ms: Some(now),
            sealed: Vec::new(),
            payload_len: 0,
        };
        let pending = EarlierRecord {
            id: Uuid::now_v7(),
            seq: 1,
            state: WriteState::Replaying,
            outcome: None,
            finished_at_ms: None,
            path_and_query: "/api/stores/s-1?x=1".into(),
            method: "PUT".into(),
            // Not openable with the key below: the record is still read.
            sealed: vec![0; 40],
            payload_len: 12,
            ..finished.clone()
        };
        let json_id = Uuid::now_v7();
        {
            let records: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("records");
            let queue: TableDefinition<'_, u64, u128> = TableDefinition::new("pending");
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(records).unwrap();
                for record in [&finished, &pending] {
                    let bytes = postcard::to_extend(record, vec![1]).unwrap();
                    table.insert(record.id.as_u128(), bytes.as_slice()).unwrap();
                }
                // And one as the JSON of gateways before postcard.
                let mut json = serde_json::to_value(&finished).unwrap();
                json["id"] = serde_json::json!(json_id);
                json["sealed"] = serde_json::json!("");
                let bytes = serde_json::to_vec(&json).unwrap();
                table.insert(json_id.as_u128(), bytes.as_slice()).unwrap();
                txn.open_table(queue)
                    .unwrap()
                    .insert(1, pending.id.as_u128())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let queue = WriteQueue::open_redb(
            &path,
            QueueLimits::default(),
            Sealer::new(&[7; 32]).unwrap(),
        )
        .await
        .unwrap();
        let done = queue.get(finished.id).await.unwrap().unwrap();
        assert_eq!(done.subject, "alice");
        assert_eq!(done.state, WriteState::Completed);
        assert_eq!(done.meta.idempotency_key, "k-1");
        assert_eq!(done.outcome.unwrap().status, 201);
        let from_json = queue.get(json_id).await.unwrap().unwrap();
        assert_eq!(from_json.subject, "alice");
        assert_eq!(from_json.meta.path_and_query, "/api/stores");
        assert_eq!(from_json.outcome.unwrap().status, 201);
        // The write being sent when the earlier gateway stopped is due.
        let due = queue.due(SystemTime::now(), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, pending.id);
        assert_eq!(due[0].state, WriteState::Queued);
        assert_eq!(due[0].resource(), "/api/stores/s-1");
        assert_eq!(due[0].meta.method, "PUT");
        assert_eq!(queue.stats().await.unwrap().depth, 1);
    }
}
