//! The durable queue of writes accepted while their upstream is down.
//!
//! A write (POST or PUT) that cannot reach its upstream is stored here,
//! committed to disk (redb, `Durability::Immediate`: fsync before the
//! commit returns) **before** the client gets its 202, then replayed by
//! [`crate::replay`] when the upstream's breaker lets calls through. Every
//! queued write carries an `Idempotency-Key` (the client's, else the
//! request id), so a replay that reached the upstream before a crash is
//! answered from the upstream's idempotency record, never applied twice.
//!
//! - **Order**: writes are replayed in arrival order per resource (the
//!   request path): only the oldest unfinished write of a resource is ever
//!   due, so a PUT never overtakes an earlier PUT of the same store.
//! - **Bounds**: at most [`QueueLimits::max_entries`] unfinished writes and
//!   [`QueueLimits::max_bytes`] of their payloads; past either,
//!   [`QueueError::Full`] (the caller answers 503, nothing is dropped). One
//!   subject has at most [`QueueLimits::max_per_subject`] unfinished
//!   writes ([`QueueError::SubjectFull`], 429), so that one client cannot
//!   take every slot.
//! - **At rest**: headers and body (which may carry store secrets) are
//!   sealed with AES-256-GCM under the queue key ([`Sealer`]), and erased
//!   once the write is finished; the record keeps its outcome (status and
//!   response body) for `GET /api/requests/{id}` until
//!   [`QueueLimits::retention`] has passed.
//! - **Age**: a write still unfinished after [`QueueLimits::max_age`] is
//!   failed instead of replayed: past the upstream's idempotency retention
//!   (24 h in store-service) a replay could apply a second time.
//! - **Crashes**: a write that was being replayed when the process died is
//!   due again at the next start (its key makes that safe).
//! - **Purge**: [`WriteQueue::purge`] deletes finished records past their
//!   retention; the replay loop calls it while the gateway runs.
//! - **Format**: records and payloads are stored as a format byte and
//!   their `postcard` encoding (bytes as bytes); records written by
//!   earlier gateways as JSON are still read.
//!
//! The API is synchronous (redb is); the gateway calls it from
//! `spawn_blocking`.

use std::{
    fmt,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every record by request id: its JSON.
const RECORDS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("records");
/// The unfinished writes in arrival order: sequence number → request id.
const PENDING: TableDefinition<'_, u64, u128> = TableDefinition::new("pending");
/// The finished writes by completion time (ms) and id, for the purge.
const FINISHED: TableDefinition<'_, (u64, u128), ()> = TableDefinition::new("finished");
/// Counters: the bytes of unfinished payloads.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// [`META`]'s key for the payload bytes of unfinished writes.
const PENDING_BYTES: &str = "pending_bytes";
/// Unfinished writes per subject (recounted at every open).
const SUBJECTS: TableDefinition<'_, &str, u64> = TableDefinition::new("subjects");
/// The first byte of a record or payload in the current format: `postcard`.
const FORMAT_POSTCARD: u8 = 1;

/// How big the queue may grow and how long records live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Unfinished writes at most.
    pub max_entries: u64,
    /// Bytes of unfinished payloads (headers and bodies) at most.
    pub max_bytes: u64,
    /// Unfinished writes of one subject at most.
    pub max_per_subject: u64,
    /// An unfinished write older than this is failed, not replayed.
    pub max_age: Duration,
    /// How long a finished write's outcome stays readable.
    pub retention: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_per_subject: 1_000,
            max_age: Duration::from_secs(23 * 3600),
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where a queued write stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteState {
    /// Waiting for its upstream (or for its back-off).
    Queued,
    /// Being sent now.
    Replaying,
    /// Answered by the upstream (any status but a retryable failure).
    Completed,
    /// Given up (too old to replay safely).
    Failed,
}

impl WriteState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Replaying => "replaying",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
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

impl Payload {
    fn len(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        (headers + self.body.len()) as u64
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

/// A write to queue.
#[derive(Clone, Debug)]
pub struct NewWrite {
    /// The request id: the record's id and `Location`.
    pub id: Uuid,
    /// Who sent it (`sub`): the only principal that may read its status.
    pub principal: String,
    /// The route it goes to (its upstream and breaker).
    pub route: String,
    /// `POST` or `PUT`.
    pub method: String,
    /// The path and query to send.
    pub path_and_query: String,
    /// The `Idempotency-Key` it is sent with.
    pub idempotency_key: String,
    /// What it sends.
    pub payload: Payload,
}

/// A queued write as stored (the payload sealed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedWrite {
    /// The request id.
    pub id: Uuid,
    /// Who sent it.
    pub principal: String,
    /// The route.
    pub route: String,
    /// `POST` or `PUT`.
    pub method: String,
    /// The path and query.
    pub path_and_query: String,
    /// The `Idempotency-Key`.
    pub idempotency_key: String,
    /// Its place in arrival order.
    pub seq: u64,
    /// Where it stands.
    pub state: WriteState,
    /// Replay attempts so far.
    pub attempts: u32,
    /// When it was accepted (ms since the epoch).
    pub accepted_at_ms: u64,
    /// When it may be sent next (ms since the epoch).
    pub next_attempt_at_ms: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The upstream's answer, once completed.
    pub outcome: Option<Outcome>,
    /// When it finished (ms since the epoch).
    pub finished_at_ms: Option<u64>,
    /// The sealed payload (nonce ‖ ciphertext); empty once finished.
    #[serde(with = "serde_bytes_b64")]
    sealed: Vec<u8>,
    /// The payload's size (for the byte bound).
    payload_len: u64,
}

impl QueuedWrite {
    /// The resource whose writes are ordered: the path without the query.
    pub fn resource(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(path, _)| path)
    }

    /// When it was accepted.
    pub fn accepted_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.accepted_at_ms)
    }
}

/// The sealed bytes: raw bytes in `postcard`, base64 in the JSON records
/// of earlier gateways.
mod serde_bytes_b64 {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            STANDARD.decode(text).map_err(de::Error::custom)
        } else {
            d.deserialize_byte_buf(Bytes)
        }
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue is at one of its bounds: refuse the write (503).
    #[error("the write queue is full ({entries} writes, {bytes} bytes)")]
    Full {
        /// Unfinished writes.
        entries: u64,
        /// Their payload bytes.
        bytes: u64,
    },
    /// The subject already has as many unfinished writes as one subject
    /// may: refuse the write (429).
    #[error("the subject has {entries} unfinished queued writes, its bound")]
    SubjectFull {
        /// The subject's unfinished writes.
        entries: u64,
    },
    /// The write is larger than the whole byte bound.
    #[error("the write is larger than the queue ({size} bytes)")]
    TooLarge {
        /// Its payload size.
        size: u64,
    },
    /// The id is already queued.
    #[error("request {0} is already queued")]
    Duplicate(Uuid),
    /// The storage failed (disk full, I/O error, corruption).
    #[error("queue storage: {0}")]
    Storage(String),
    /// A record could not be decoded or its payload opened.
    #[error("queue record {id}: {reason}")]
    Corrupt {
        /// The record.
        id: Uuid,
        /// What was wrong.
        reason: String,
    },
}

impl QueueError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Full { .. } | Self::SubjectFull { .. } | Self::Storage(_)
        )
    }
}

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

/// Seals payloads with AES-256-GCM under the queue key.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<LessSafeKey>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([REDACTED])")
    }
}

impl Sealer {
    /// A sealer with `key` (32 bytes), or `None` if it is not 32 bytes.
    pub fn new(key: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(Self {
            key: std::sync::Arc::new(LessSafeKey::new(key)),
        })
    }

    fn seal(&self, id: Uuid, payload: &Payload) -> Result<Vec<u8>, QueueError> {
        let mut nonce = [0_u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| QueueError::Storage("no randomness for a nonce".into()))?;
        let mut data = vec![FORMAT_POSTCARD];
        data = postcard::to_extend(payload, data).map_err(|e| QueueError::Corrupt {
            id,
            reason: e.to_string(),
        })?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut data,
            )
            .map_err(|_| QueueError::Corrupt {
                id,
                reason: "sealing failed".into(),
            })?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    fn open(&self, id: Uuid, sealed: &[u8]) -> Result<Payload, QueueError> {
        let corrupt = |reason: &str| QueueError::Corrupt {
            id,
            reason: reason.into(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(corrupt("sealed payload too short"));
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("bad nonce"))?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut data)
            .map_err(|_| corrupt("the payload does not open with this queue key"))?;
        match plain.split_first() {
            Some((&FORMAT_POSTCARD, rest)) => {
                postcard::from_bytes(rest).map_err(|e| corrupt(&e.to_string()))
            }
            // An earlier gateway's JSON.
            Some((b'{', _)) => serde_json::from_slice(plain).map_err(|e| corrupt(&e.to_string())),
            _ => Err(corrupt("unknown payload format")),
        }
    }
}

/// How many writes are unfinished, their bytes, and the oldest's age.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Unfinished writes.
    pub depth: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// When the oldest unfinished write was accepted, if any.
    pub oldest_accepted_ms: Option<u64>,
}

/// The queue. Cheap to share behind an `Arc`; every method is blocking.
pub struct WriteQueue {
    db: Database,
    limits: QueueLimits,
    sealer: Sealer,
}

impl fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteQueue")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the epoch of `time`.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn decode(id: u128, bytes: &[u8]) -> Result<QueuedWrite, QueueError> {
    let corrupt = |reason: String| QueueError::Corrupt {
        id: Uuid::from_u128(id),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_POSTCARD, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string()))
        }
        // An earlier gateway's JSON record.
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string())),
        _ => Err(corrupt("unknown record format".into())),
    }
}

fn encode(write: &QueuedWrite) -> Result<Vec<u8>, QueueError> {
    postcard::to_extend(write, vec![FORMAT_POSTCARD]).map_err(|e| QueueError::Corrupt {
        id: write.id,
        reason: e.to_string(),
    })
}

/// Adds `delta` to the unfinished writes of `subject`.
fn count_subject(
    subjects: &mut redb::Table<'_, &str, u64>,
    subject: &str,
    delta: i64,
) -> Result<u64, QueueError> {
    let now = subjects.get(subject)?.map_or(0, |n| n.value());
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        subjects.remove(subject)?;
    } else {
        subjects.insert(subject, next)?;
    }
    Ok(next)
}

impl WriteQueue {
    /// Opens (or creates) the queue file at `path`. Writes that were being
    /// replayed when the last process stopped are queued again; each
    /// subject's unfinished writes are counted anew.
    pub fn open(path: &Path, limits: QueueLimits, sealer: Sealer) -> Result<Self, QueueError> {
        let db = Database::create(path)?;
        let queue = Self { db, limits, sealer };
        let txn = queue.db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let pending = txn.open_table(PENDING)?;
            txn.open_table(FINISHED)?;
            txn.open_table(META)?;
            txn.delete_table(SUBJECTS)?;
            let mut subjects = txn.open_table(SUBJECTS)?;
            let ids: Vec<u128> = pending
                .iter()?
                .map(|entry| entry.map(|(_, id)| id.value()))
                .collect::<Result<_, _>>()?;
            for id in ids {
                let Some(bytes) = records.get(id)?.map(|b| b.value().to_vec()) else {
                    continue;
                };
                let mut write = decode(id, &bytes)?;
                count_subject(&mut subjects, &write.principal, 1)?;
                if write.state == WriteState::Replaying {
                    write.state = WriteState::Queued;
                    records.insert(id, encode(&write)?.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(queue)
    }

    /// The limits.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Stores `write`, durably, unless the queue is full. Returns the
    /// stored record.
    pub fn enqueue(&self, write: NewWrite, now: SystemTime) -> Result<QueuedWrite, QueueError> {
        let size = write.payload.len();
        if size > self.limits.max_bytes {
            return Err(QueueError::TooLarge { size });
        }
        let sealed = self.sealer.seal(write.id, &write.payload)?;
        let txn = self.db.begin_write()?;
        let record = {
            let mut records = txn.open_table(RECORDS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut meta = txn.open_table(META)?;
            let mut subjects = txn.open_table(SUBJECTS)?;
            let id = write.id.as_u128();
            if records.get(id)?.is_some() {
                return Err(QueueError::Duplicate(write.id));
            }
            let theirs = subjects
                .get(write.principal.as_str())?
                .map_or(0, |n| n.value());
            if theirs >= self.limits.max_per_subject {
                return Err(QueueError::SubjectFull { entries: theirs });
            }
            let entries = pending.len()?;
            let bytes = meta.get(PENDING_BYTES)?.map_or(0, |b| b.value());
            if entries >= self.limits.max_entries || bytes + size > self.limits.max_bytes {
                return Err(QueueError::Full { entries, bytes });
            }
            count_subject(&mut subjects, &write.principal, 1)?;
            let seq = pending.last()?.map_or(0, |(seq, _)| seq.value() + 1);
            let at = millis(now);
            let record = QueuedWrite {
                id: write.id,
                principal: write.principal,
                route: write.route,
                method: write.method,
                path_and_query: write.path_and_query,
                idempotency_key: write.idempotency_key,
                seq,
                state: WriteState::Queued,
                attempts: 0,
                accepted_at_ms: at,
                next_attempt_at_ms: at,
                last_error: None,
                outcome: None,
                finished_at_ms: None,
                sealed,
                payload_len: size,
            };
            records.insert(id, encode(&record)?.as_slice())?;
            pending.insert(seq, id)?;
            meta.insert(PENDING_BYTES, bytes + size)?;
            record
        };
        // `Durability::Immediate` (redb's default): on disk when this returns.
        txn.commit()?;
        Ok(record)
    }

    /// The record of `id`, if it is known (finished ones until their
    /// retention has passed).
    pub fn get(&self, id: Uuid) -> Result<Option<QueuedWrite>, QueueError> {
        let txn = self.db.begin_read().map_err(QueueError::from)?;
        let records = txn.open_table(RECORDS)?;
        records
            .get(id.as_u128())?
            .map(|bytes| decode(id.as_u128(), bytes.value()))
            .transpose()
    }

    /// The payload of `write`, opened.
    pub fn payload(&self, write: &QueuedWrite) -> Result<Payload, QueueError> {
        self.sealer.open(write.id, &write.sealed)
    }

    /// The writes to send now: for each resource, its oldest unfinished
    /// write, if it is queued (not being sent) and its back-off is over;
    /// at most `limit`, oldest first.
    pub fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<QueuedWrite>, QueueError> {
        let now = millis(now);
        let txn = self.db.begin_read().map_err(QueueError::from)?;
        let records = txn.open_table(RECORDS)?;
        let pending = txn.open_table(PENDING)?;
        let mut seen = std::collections::HashSet::new();
        let mut due = Vec::new();
        for entry in pending.iter()? {
            let (_, id) = entry?;
            let id = id.value();
            let Some(bytes) = records.get(id)? else {
                continue;
            };
            let write = decode(id, bytes.value())?;
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

    /// The earliest time a queued write becomes due, if any is waiting.
    pub fn next_due_ms(&self) -> Result<Option<u64>, QueueError> {
        let txn = self.db.begin_read().map_err(QueueError::from)?;
        let records = txn.open_table(RECORDS)?;
        let pending = txn.open_table(PENDING)?;
        let mut next: Option<u64> = None;
        for entry in pending.iter()? {
            let (_, id) = entry?;
            if let Some(bytes) = records.get(id.value())? {
                let write = decode(id.value(), bytes.value())?;
                if write.state == WriteState::Queued {
                    next = Some(next.map_or(write.next_attempt_at_ms, |n| {
                        n.min(write.next_attempt_at_ms)
                    }));
                }
            }
        }
        Ok(next)
    }

    /// Changes the record of `id` with `change`, in one transaction;
    /// returns the record as changed.
    fn update(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut QueuedWrite),
    ) -> Result<QueuedWrite, QueueError> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut records = txn.open_table(RECORDS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut finished = txn.open_table(FINISHED)?;
            let mut meta = txn.open_table(META)?;
            let mut subjects = txn.open_table(SUBJECTS)?;
            let key = id.as_u128();
            let bytes = records
                .get(key)?
                .map(|b| b.value().to_vec())
                .ok_or_else(|| QueueError::Corrupt {
                    id,
                    reason: "no such record".into(),
                })?;
            let mut write = decode(key, &bytes)?;
            let was_finished = write.state.is_finished();
            change(&mut write);
            if write.state.is_finished() && !was_finished {
                pending.remove(write.seq)?;
                finished.insert((write.finished_at_ms.unwrap_or(0), key), ())?;
                let total = meta.get(PENDING_BYTES)?.map_or(0, |b| b.value());
                meta.insert(PENDING_BYTES, total.saturating_sub(write.payload_len))?;
                count_subject(&mut subjects, &write.principal, -1)?;
                // The payload (which may hold secrets) is erased.
                write.sealed = Vec::new();
            }
            records.insert(key, encode(&write)?.as_slice())?;
            write
        };
        txn.commit()?;
        Ok(record)
    }

    /// Marks `id` as being sent (one more attempt).
    pub fn start(&self, id: Uuid) -> Result<QueuedWrite, QueueError> {
        self.update(id, |w| {
            w.state = WriteState::Replaying;
            w.attempts += 1;
        })
    }

    /// Finishes `id` with the upstream's answer.
    pub fn complete(
        &self,
        id: Uuid,
        outcome: Outcome,
        now: SystemTime,
    ) -> Result<QueuedWrite, QueueError> {
        self.update(id, |w| {
            w.state = WriteState::Completed;
            w.outcome = Some(outcome);
            w.last_error = None;
            w.finished_at_ms = Some(millis(now));
        })
    }

    /// Queues `id` again, due at `at`, after a failed attempt.
    pub fn retry(&self, id: Uuid, at: SystemTime, error: &str) -> Result<QueuedWrite, QueueError> {
        self.update(id, |w| {
            w.state = WriteState::Queued;
            w.next_attempt_at_ms = millis(at);
            w.last_error = Some(error.to_owned());
        })
    }

    /// Gives `id` up.
    pub fn fail(&self, id: Uuid, error: &str, now: SystemTime) -> Result<QueuedWrite, QueueError> {
        self.update(id, |w| {
            w.state = WriteState::Failed;
            w.last_error = Some(error.to_owned());
            w.finished_at_ms = Some(millis(now));
        })
    }

    /// Unfinished writes, their bytes and the oldest's time.
    pub fn stats(&self) -> Result<QueueStats, QueueError> {
        let txn = self.db.begin_read().map_err(QueueError::from)?;
        let records = txn.open_table(RECORDS)?;
        let pending = txn.open_table(PENDING)?;
        let meta = txn.open_table(META)?;
        let oldest = match pending.first()? {
            Some((_, id)) => records
                .get(id.value())?
                .map(|b| decode(id.value(), b.value()))
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

    /// Deletes finished records older than the retention; returns how many.
    pub fn purge(&self, now: SystemTime) -> Result<usize, QueueError> {
        let cutoff = millis(now)
            .saturating_sub(u64::try_from(self.limits.retention.as_millis()).unwrap_or(u64::MAX));
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use uuid::Uuid;

    use super::*;

    fn key() -> Sealer {
        Sealer::new(&[7; 32]).unwrap()
    }

    fn write(path: &str, body: &str) -> NewWrite {
        NewWrite {
            id: Uuid::now_v7(),
            principal: "alice".into(),
            route: "stores".into(),
            method: "PUT".into(),
            path_and_query: path.into(),
            idempotency_key: "k".into(),
            payload: Payload {
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: body.as_bytes().to_vec(),
            },
        }
    }

    fn limits() -> QueueLimits {
        QueueLimits {
            max_entries: 3,
            max_bytes: 4096,
            ..QueueLimits::default()
        }
    }

    #[test]
    fn durable_ordered_bounded_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.redb");
        let now = SystemTime::now();
        let queue = WriteQueue::open(&path, limits(), key()).unwrap();
        let a = queue
            .enqueue(write("/api/stores/1", "{\"secret\":\"hunter2-a\"}"), now)
            .unwrap();
        let b = queue
            .enqueue(write("/api/stores/1?x=1", "{\"n\":\"b\"}"), now)
            .unwrap();
        let c = queue
            .enqueue(write("/api/stores/2", "{\"n\":\"c\"}"), now)
            .unwrap();
        assert!(matches!(
            queue.enqueue(write("/api/stores/3", "{}"), now),
            Err(QueueError::Full { entries: 3, .. })
        ));
        let ids = |v: Vec<QueuedWrite>| v.into_iter().map(|w| w.id).collect::<Vec<_>>();
        assert_eq!(ids(queue.due(now, 10).unwrap()), vec![a.id, c.id]);
        let stats = queue.stats().unwrap();
        assert_eq!(stats.depth, 3);
        assert_eq!(stats.oldest_accepted_ms, Some(millis(now)));

        // Durable: a new process sees the same queue; a write being sent when
        // it died is due again.
        queue.start(a.id).unwrap();
        assert_eq!(ids(queue.due(now, 10).unwrap()), vec![c.id]);
        drop(queue);
        let queue = WriteQueue::open(&path, limits(), key()).unwrap();
        let again = queue.get(a.id).unwrap().unwrap();
        assert_eq!(again.state, WriteState::Queued);
        assert_eq!(again.attempts, 1);
        assert_eq!(
            queue.payload(&again).unwrap().body,
            b"{\"secret\":\"hunter2-a\"}".to_vec()
        );
        assert_eq!(ids(queue.due(now, 10).unwrap()), vec![a.id, c.id]);

        // Back-off: not due before its time.
        queue
            .retry(c.id, now + Duration::from_secs(5), "connection refused")
            .unwrap();
        assert_eq!(ids(queue.due(now, 10).unwrap()), vec![a.id]);
        assert_eq!(
            ids(queue.due(now + Duration::from_secs(5), 10).unwrap()),
            vec![a.id, c.id]
        );
        assert_eq!(queue.next_due_ms().unwrap(), Some(millis(now)));

        // Finished: the next write of the resource is due, the payload erased,
        // the outcome kept, room made.
        let done = queue
            .complete(
                a.id,
                Outcome {
                    status: 200,
                    content_type: None,
                    body: b"{}".to_vec(),
                },
                now,
            )
            .unwrap();
        assert_eq!(done.state, WriteState::Completed);
        assert!(queue.payload(&done).is_err(), "the payload is erased");
        assert_eq!(ids(queue.due(now, 10).unwrap()), vec![b.id]);
        queue.enqueue(write("/api/stores/3", "{}"), now).unwrap();
        assert_eq!(queue.stats().unwrap().depth, 3);

        // At rest, the bodies are sealed: the file holds no plaintext.
        drop(queue);
        let raw = std::fs::read(&path).unwrap();
        let found = raw.windows(b"hunter2".len()).any(|w| w == b"hunter2");
        assert!(!found, "a body is in the file in plaintext");
        let raw_b = raw
            .windows(b"\"n\":\"b\"".len())
            .any(|w| w == b"\"n\":\"b\"");
        assert!(!raw_b);

        // Another key cannot open the payloads.
        let other = WriteQueue::open(&path, limits(), Sealer::new(&[8; 32]).unwrap()).unwrap();
        let b = other.get(b.id).unwrap().unwrap();
        assert!(matches!(other.payload(&b), Err(QueueError::Corrupt { .. })));

        // Purge after the retention only.
        assert_eq!(other.purge(now).unwrap(), 0);
        assert!(other.get(a.id).unwrap().is_some());
        assert_eq!(
            other.purge(now + Duration::from_secs(25 * 3600)).unwrap(),
            1
        );
        assert!(other.get(a.id).unwrap().is_none());
    }

    #[test]
    fn one_subject_cannot_take_every_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let limits = QueueLimits {
            max_entries: 100,
            max_per_subject: 2,
            ..QueueLimits::default()
        };
        let now = SystemTime::now();
        let queue = WriteQueue::open(&path, limits, key()).unwrap();
        let first = queue.enqueue(write("/a/1", "{}"), now).unwrap();
        queue.enqueue(write("/a/2", "{}"), now).unwrap();
        assert!(matches!(
            queue.enqueue(write("/a/3", "{}"), now),
            Err(QueueError::SubjectFull { entries: 2 })
        ));
        let mut bob = write("/b/1", "{}");
        bob.principal = "bob".into();
        queue.enqueue(bob, now).unwrap();
        // Counted again at the next start.
        drop(queue);
        let queue = WriteQueue::open(&path, limits, key()).unwrap();
        assert!(matches!(
            queue.enqueue(write("/a/3", "{}"), now),
            Err(QueueError::SubjectFull { .. })
        ));
        // A finished write makes room for its subject.
        queue.fail(first.id, "given up", now).unwrap();
        queue.enqueue(write("/a/3", "{}"), now).unwrap();
    }

    #[test]
    fn bytes_are_stored_as_bytes_and_json_records_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let queue = WriteQueue::open(&dir.path().join("q"), QueueLimits::default(), key()).unwrap();
        let now = SystemTime::now();
        let body: String = (0..64 * 1024)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let record = queue.enqueue(write("/big", &body), now).unwrap();
        let stored_len = |queue: &WriteQueue, id: Uuid| {
            let txn = queue.db.begin_read().unwrap();
            let records = txn.open_table(RECORDS).unwrap();
            records.get(id.as_u128()).unwrap().unwrap().value().len()
        };
        // The sealed payload is its size plus a little, not JSON numbers.
        let size = stored_len(&queue, record.id);
        assert!(
            size < body.len() + 1024,
            "{size} bytes stored for {} of body",
            body.len()
        );
        let done = queue
            .complete(
                record.id,
                Outcome {
                    status: 201,
                    content_type: Some("application/json".into()),
                    body: body.as_bytes().to_vec(),
                },
                now,
            )
            .unwrap();
        let size = stored_len(&queue, record.id);
        assert!(
            size < body.len() + 1024,
            "{size} bytes stored for the outcome"
        );
        // A record as an earlier gateway wrote it (JSON) still decodes.
        let json = serde_json::to_vec(&done).unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(decode(done.id.as_u128(), &json).unwrap(), done);
        assert_eq!(
            decode(done.id.as_u128(), &encode(&done).unwrap()).unwrap(),
            done
        );
        assert!(matches!(
            decode(done.id.as_u128(), b"\x07junk"),
            Err(QueueError::Corrupt { .. })
        ));
    }

    #[test]
    fn byte_bound_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let queue = WriteQueue::open(
            &dir.path().join("q"),
            QueueLimits {
                max_entries: 100,
                max_bytes: 200,
                ..QueueLimits::default()
            },
            key(),
        )
        .unwrap();
        let now = SystemTime::now();
        let big = "x".repeat(150);
        let first = queue.enqueue(write("/a", &big), now).unwrap();
        assert!(matches!(
            queue.enqueue(write("/b", &big), now),
            Err(QueueError::Full { .. })
        ));
        assert!(matches!(
            queue.enqueue(write("/b", &"y".repeat(300)), now),
            Err(QueueError::TooLarge { .. })
        ));
        let failed = queue
            .fail(first.id, "too old to replay safely", now)
            .unwrap();
        assert_eq!(failed.state, WriteState::Failed);
        assert_eq!(
            queue.stats().unwrap(),
            QueueStats {
                depth: 0,
                bytes: 0,
                oldest_accepted_ms: None
            }
        );
        queue.enqueue(write("/b", &big), now).unwrap();
        assert!(
            !format!(
                "{:?}",
                queue.payload(&queue.get(first.id).unwrap().unwrap()).err()
            )
            .contains("xxx")
        );
        let big_queue_id = queue.get(first.id).unwrap().unwrap().id;
        let mut again = write("/c", "{}");
        again.id = big_queue_id;
        assert!(matches!(
            queue.enqueue(again, now),
            Err(QueueError::Duplicate(_))
        ));
    }
}
