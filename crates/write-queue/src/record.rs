//! What the queue stores: the record of each write, its state, the limits
//! and the statistics. Shared by both backends.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// What a write carries in plain text, kept after it finished (for its
/// status): say where it goes, never what it sends. The queue orders the
/// writes of one [`resource`](WriteMeta::resource).
pub trait WriteMeta:
    Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static
{
    /// The resource whose writes are applied in the order they were
    /// accepted (a store's path, an account id, …).
    fn resource(&self) -> &str;
}

/// The bounds a payload and an outcome need (blanket-implemented).
pub trait Data: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Data for T {}

/// How big the queue may grow and how long records live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Unfinished writes at most.
    pub max_entries: u64,
    /// Bytes of unfinished payloads (their encoded size) at most.
    pub max_bytes: u64,
    /// Unfinished writes of one subject at most.
    pub max_per_subject: u64,
    /// An unfinished write older than this is to be failed, not replayed.
    pub max_age: Duration,
    /// How long a finished write's record stays readable.
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
    /// Waiting (for its turn, or for its back-off).
    Queued,
    /// Being sent now.
    Replaying,
    /// Applied: its outcome is recorded.
    Completed,
    /// Given up: its reason is in [`Record::last_error`].
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

    /// Completed or failed.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// A write to queue.
#[derive(Clone, Debug)]
pub struct NewWrite<M, P> {
    /// Its id (the caller's request id).
    pub id: Uuid,
    /// Who sent it: the only one its status is for, and the unit of
    /// [`QueueLimits::max_per_subject`].
    pub subject: String,
    /// Where it goes, in plain text.
    pub meta: M,
    /// What it sends: sealed at rest, erased once finished.
    pub payload: P,
}

/// A queued write as stored (its payload sealed).
///
/// The field order is the storage layout (`postcard`): records written by
/// the gateway before this crate existed decode unchanged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record<M, O> {
    /// The write's id.
    pub id: Uuid,
    /// Who sent it.
    pub subject: String,
    /// Where it goes.
    pub meta: M,
    /// Its place in the order of acceptance (the backend's sequence).
    pub seq: u64,
    /// Where it stands.
    pub state: WriteState,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was accepted (ms since the epoch).
    pub accepted_at_ms: u64,
    /// When it may be sent next (ms since the epoch).
    pub next_attempt_at_ms: u64,
    /// Why the last attempt failed, or why it was given up.
    pub last_error: Option<String>,
    /// The answer, once completed.
    pub outcome: Option<O>,
    /// When it finished (ms since the epoch).
    pub finished_at_ms: Option<u64>,
    /// The sealed payload (nonce ‖ ciphertext); empty once finished.
    #[serde(with = "crate::seal::sealed_bytes")]
    pub(crate) sealed: Vec<u8>,
    /// The payload's encoded size (for the byte bound).
    pub(crate) payload_len: u64,
}

impl<M: fmt::Debug, O> fmt::Debug for Record<M, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("meta", &self.meta)
            .field("seq", &self.seq)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("accepted_at_ms", &self.accepted_at_ms)
            .field("next_attempt_at_ms", &self.next_attempt_at_ms)
            .field("last_error", &self.last_error)
            .field("has_outcome", &self.outcome.is_some())
            .field("payload_len", &self.payload_len)
            .finish_non_exhaustive()
    }
}

impl<M: WriteMeta, O> Record<M, O> {
    /// The resource whose writes are ordered.
    pub fn resource(&self) -> &str {
        self.meta.resource()
    }
}

impl<M, O> Record<M, O> {
    /// When it was accepted.
    pub fn accepted_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.accepted_at_ms)
    }

    /// The payload's encoded size in bytes (kept after the payload is erased).
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// A new record for `write`, accepted at `now`.
    pub(crate) fn accepted<P>(
        write: NewWrite<M, P>,
        seq: u64,
        now: SystemTime,
        sealed: Vec<u8>,
        payload_len: u64,
    ) -> Self {
        let at = millis(now);
        Self {
            id: write.id,
            subject: write.subject,
            meta: write.meta,
            seq,
            state: WriteState::Queued,
            attempts: 0,
            accepted_at_ms: at,
            next_attempt_at_ms: at,
            last_error: None,
            outcome: None,
            finished_at_ms: None,
            sealed,
            payload_len,
        }
    }

    /// Applies `change`; when it finishes the write, erases the payload.
    /// Returns whether the write became finished.
    pub(crate) fn apply(&mut self, change: Change<O>) -> bool {
        let was_finished = self.state.is_finished();
        match change {
            Change::Start => {
                self.state = WriteState::Replaying;
                self.attempts = self.attempts.saturating_add(1);
            }
            Change::Complete { outcome, now } => {
                self.state = WriteState::Completed;
                self.outcome = Some(outcome);
                self.last_error = None;
                self.finished_at_ms = Some(millis(now));
            }
            Change::Retry { at, error } => {
                self.state = WriteState::Queued;
                self.next_attempt_at_ms = millis(at);
                self.last_error = Some(error);
            }
            Change::Fail { error, now } => {
                self.state = WriteState::Failed;
                self.last_error = Some(error);
                self.finished_at_ms = Some(millis(now));
            }
        }
        let finished = self.state.is_finished() && !was_finished;
        if finished {
            // The payload (which may hold secrets) is erased.
            self.sealed = Vec::new();
        }
        finished
    }
}

/// One change of a record (the same in every backend).
#[derive(Debug)]
pub(crate) enum Change<O> {
    /// Being sent (one more attempt).
    Start,
    /// Answered.
    Complete { outcome: O, now: SystemTime },
    /// Queued again, due at `at`.
    Retry { at: SystemTime, error: String },
    /// Given up.
    Fail { error: String, now: SystemTime },
}

/// How many writes are unfinished, their bytes, and the oldest's time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Unfinished writes.
    pub depth: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// When the oldest unfinished write was accepted, if any.
    pub oldest_accepted_ms: Option<u64>,
}

/// Milliseconds since the epoch of `time` (0 before it).
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
