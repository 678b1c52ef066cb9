//! The embedded backend: one redb file, for one instance.
//!
//! - **Durable**: every change is one transaction committed with
//!   `Durability::Immediate` (fsync before the commit returns).
//! - **Order**: the pending table maps a sequence number to a write; only
//!   the oldest unfinished write of a resource is ever due.
//! - **Bounds**: entries and payload bytes are counted in the same
//!   transaction as the insert; per-subject counts are rebuilt at open.
//! - **Purge**: finished records are indexed by completion time.
//!
//! Synchronous (redb is); [`crate::WriteQueue`] calls it on the blocking
//! pool.

use std::{collections::HashSet, marker::PhantomData, path::Path, time::SystemTime};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use uuid::Uuid;

use crate::{
    Change, Data, NewWrite, QueueError, QueueLimits, QueueStats, Record, Sealer, WriteMeta,
    WriteState, millis,
    seal::{FORMAT_POSTCARD, encode},
};

/// Every record by id.
const RECORDS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("records");
/// The unfinished writes in arrival order: sequence number → id.
const PENDING: TableDefinition<'_, u64, u128> = TableDefinition::new("pending");
/// The finished writes by completion time (ms) and id, for the purge.
const FINISHED: TableDefinition<'_, (u64, u128), ()> = TableDefinition::new("finished");
/// Counters: the bytes of unfinished payloads.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// [`META`]'s key for the payload bytes of unfinished writes.
const PENDING_BYTES: &str = "pending_bytes";
/// Unfinished writes per subject (recounted at every open).
const SUBJECTS: TableDefinition<'_, &str, u64> = TableDefinition::new("subjects");
/// Unfinished writes per resource (recounted at every open).
const RESOURCES: TableDefinition<'_, &str, u64> = TableDefinition::new("resources");

macro_rules! storage_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for QueueError {
            fn from(error: $error) -> Self {
                Self::Storage(error.to_string())
            }
        }
    )*};
}
storage_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The redb queue.
pub(crate) struct RedbQueue<M, O> {
    db: Database,
    limits: QueueLimits,
    sealer: Sealer,
    types: PhantomData<fn() -> (M, O)>,
}

impl<M: WriteMeta, O: Data + Clone> RedbQueue<M, O> {
    /// Opens (or creates) the file at `path`. Writes that were being
    /// replayed when the last process stopped are queued again; each
    /// subject's unfinished writes are counted anew.
    pub(crate) fn open(
        path: &Path,
        limits: QueueLimits,
        sealer: Sealer,
    ) -> Result<Self, QueueError> {
        let db = Database::create(path)?;
        let queue = Self {
            db,
            limits,
            sealer,
            types: PhantomData,
        };
        let txn = queue.db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let pending = txn.open_table(PENDING)?;
            txn.open_table(FINISHED)?;
            txn.open_table(META)?;
            txn.delete_table(SUBJECTS)?;
            txn.delete_table(RESOURCES)?;
            let mut subjects = txn.open_table(SUBJECTS)?;
            let mut resources = txn.open_table(RESOURCES)?;
            let ids: Vec<u128> = pending
                .iter()?
                .map(|entry| entry.map(|(_, id)| id.value()))
                .collect::<Result<_, _>>()?;
            for id in ids {
                let Some(bytes) = records.get(id)?.map(|b| b.value().to_vec()) else {
                    continue;
                };
                let mut write: Record<M, O> = decode(id, &bytes)?;
                count(&mut subjects, &write.subject, 1)?;
                count(&mut resources, write.meta.resource(), 1)?;
                if write.state == WriteState::Replaying {
                    write.state = WriteState::Queued;
                    records.insert(id, encode(write.id, &write)?.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(queue)
    }

    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Stores `write`, whose payload is `sealed` (`size` bytes encoded).
    pub(crate) fn enqueue<P>(
        &self,
        write: NewWrite<M, P>,
        sealed: Vec<u8>,
        size: u64,
        now: SystemTime,
    ) -> Result<Record<M, O>, QueueError> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut records = txn.open_table(RECORDS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut meta = txn.open_table(META)?;
            let mut subjects = txn.open_table(SUBJECTS)?;
            let mut resources = txn.open_table(RESOURCES)?;
            let id = write.id.as_u128();
            if records.get(id)?.is_some() {
                return Err(QueueError::Duplicate(write.id));
            }
            let theirs = subjects
                .get(write.subject.as_str())?
                .map_or(0, |n| n.value());
            if theirs >= self.limits.max_per_subject {
                return Err(QueueError::SubjectFull { entries: theirs });
            }
            let entries = pending.len()?;
            let bytes = meta.get(PENDING_BYTES)?.map_or(0, |b| b.value());
            if entries >= self.limits.max_entries || bytes + size > self.limits.max_bytes {
                return Err(QueueError::Full { entries, bytes });
            }
            count(&mut subjects, &write.subject, 1)?;
            count(&mut resources, write.meta.resource(), 1)?;
            let seq = pending.last()?.map_or(0, |(seq, _)| seq.value() + 1);
            let record = Record::accepted(write, seq, now, sealed, size);
            records.insert(id, encode(record.id, &record)?.as_slice())?;
            pending.insert(seq, id)?;
            meta.insert(PENDING_BYTES, bytes + size)?;
            record
        };
        // `Durability::Immediate` (redb's default): on disk when this returns.
        txn.commit()?;
        Ok(record)
    }

    pub(crate) fn get(&self, id: Uuid) -> Result<Option<Record<M, O>>, QueueError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        records
            .get(id.as_u128())?
            .map(|bytes| decode(id.as_u128(), bytes.value()))
            .transpose()
    }

    /// For each resource its oldest unfinished write, if queued and due.
    pub(crate) fn due(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Record<M, O>>, QueueError> {
        let now = millis(now);
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let pending = txn.open_table(PENDING)?;
        let mut seen = HashSet::new();
        let mut due = Vec::new();
        for entry in pending.iter()? {
            let (_, id) = entry?;
            let id = id.value();
            let Some(bytes) = records.get(id)? else {
                continue;
            };
            let write: Record<M, O> = decode(id, bytes.value())?;
            if !seen.insert(write.resource().to_owned()) {
                continue;
            }
            if write.state == WriteState::Queued && write.next_attempt_at_ms <= now {
                due.push(write);
                if due.len() == limit {
                    break;
                }
            }
        }
        Ok(due)
    }

    pub(crate) fn next_due_ms(&self) -> Result<Option<u64>, QueueError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let pending = txn.open_table(PENDING)?;
        let mut next: Option<u64> = None;
        for entry in pending.iter()? {
            let (_, id) = entry?;
            if let Some(bytes) = records.get(id.value())? {
                let write: Record<M, O> = decode(id.value(), bytes.value())?;
                if write.state == WriteState::Queued {
                    next = Some(next.map_or(write.next_attempt_at_ms, |n| {
                        n.min(write.next_attempt_at_ms)
                    }));
                }
            }
        }
        Ok(next)
    }

    /// Changes the record of `id`, in one transaction.
    pub(crate) fn update(&self, id: Uuid, change: Change<O>) -> Result<Record<M, O>, QueueError> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut records = txn.open_table(RECORDS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut finished = txn.open_table(FINISHED)?;
            let mut meta = txn.open_table(META)?;
            let mut subjects = txn.open_table(SUBJECTS)?;
            let mut resources = txn.open_table(RESOURCES)?;
            let key = id.as_u128();
            let bytes = records
                .get(key)?
                .map(|b| b.value().to_vec())
                .ok_or(QueueError::NotFound(id))?;
            let mut write: Record<M, O> = decode(key, &bytes)?;
            let size = write.payload_len;
            if write.apply(change) {
                pending.remove(write.seq)?;
                finished.insert((write.finished_at_ms.unwrap_or(0), key), ())?;
                let total = meta.get(PENDING_BYTES)?.map_or(0, |b| b.value());
                meta.insert(PENDING_BYTES, total.saturating_sub(size))?;
                count(&mut subjects, &write.subject, -1)?;
                count(&mut resources, write.meta.resource(), -1)?;
            }
            records.insert(key, encode(write.id, &write)?.as_slice())?;
            write
        };
        txn.commit()?;
        Ok(record)
    }

    pub(crate) fn pending(&self, resource: &str) -> Result<u64, QueueError> {
        let txn = self.db.begin_read()?;
        let resources = txn.open_table(RESOURCES)?;
        Ok(resources.get(resource)?.map_or(0, |n| n.value()))
    }

    pub(crate) fn stats(&self) -> Result<QueueStats, QueueError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let pending = txn.open_table(PENDING)?;
        let meta = txn.open_table(META)?;
        let oldest = match pending.first()? {
            Some((_, id)) => records
                .get(id.value())?
                .map(|b| decode::<M, O>(id.value(), b.value()))
                .transpose()?
                .map(|w| w.accepted_at_ms),
            None => None,
        };
        Ok(QueueStats {
            depth: pending.len()?,
            bytes: meta.get(PENDING_BYTES)?.map_or(0, |b| b.value()),
            oldest_accepted_ms: oldest,
        })
    }

    /// Deletes finished records older than the retention.
    pub(crate) fn purge(&self, now: SystemTime) -> Result<usize, QueueError> {
        let retention = u64::try_from(self.limits.retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = millis(now).saturating_sub(retention);
        let txn = self.db.begin_write()?;
        let purged = {
            let mut records = txn.open_table(RECORDS)?;
            let mut finished = txn.open_table(FINISHED)?;
            let old: Vec<(u64, u128)> = finished
                .range(..(cutoff, 0))?
                .map(|entry| entry.map(|(key, _)| key.value()))
                .collect::<Result<_, _>>()?;
            for key in &old {
                finished.remove(*key)?;
                records.remove(key.1)?;
            }
            old.len()
        };
        txn.commit()?;
        Ok(purged)
    }
}

/// Decodes a stored record: the current `postcard` format, or the JSON of
/// gateways before it (whose write fields sat beside the queue's own).
fn decode<M: WriteMeta, O: Data>(id: u128, bytes: &[u8]) -> Result<Record<M, O>, QueueError> {
    let id = Uuid::from_u128(id);
    match bytes.split_first() {
        Some((&FORMAT_POSTCARD, rest)) => {
            postcard::from_bytes(rest).map_err(|e| QueueError::corrupt(id, e))
        }
        Some((b'{', _)) => decode_flat_json(bytes).map_err(|e| QueueError::corrupt(id, e)),
        _ => Err(QueueError::corrupt(id, "unknown record format")),
    }
}

/// The queue's own fields of a record; every other field of a flat JSON
/// record belongs to the write's meta.
const OWN_FIELDS: [&str; 11] = [
    "id",
    "seq",
    "state",
    "attempts",
    "acceptedAtMs",
    "nextAttemptAtMs",
    "lastError",
    "outcome",
    "finishedAtMs",
    "sealed",
    "payloadLen",
];

fn decode_flat_json<M: WriteMeta, O: Data>(
    bytes: &[u8],
) -> Result<Record<M, O>, serde_json::Error> {
    let serde_json::Value::Object(flat) = serde_json::from_slice(bytes)? else {
        return serde_json::from_slice(bytes);
    };
    let mut record = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    for (name, value) in flat {
        match name.as_str() {
            "principal" | "subject" => {
                record.insert("subject".into(), value);
            }
            own if OWN_FIELDS.contains(&own) => {
                record.insert(name, value);
            }
            _ => {
                meta.insert(name, value);
            }
        }
    }
    record.insert("meta".into(), serde_json::Value::Object(meta));
    serde_json::from_value(serde_json::Value::Object(record))
}

/// Adds `delta` to the unfinished writes of `key` (a subject or a
/// resource) in `counts`.
fn count(
    counts: &mut redb::Table<'_, &str, u64>,
    key: &str,
    delta: i64,
) -> Result<u64, QueueError> {
    let now = counts.get(key)?.map_or(0, |n| n.value());
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        counts.remove(key)?;
    } else {
        counts.insert(key, next)?;
    }
    Ok(next)
}
