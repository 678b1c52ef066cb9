//! Why a queue operation failed.

use uuid::Uuid;

/// Why a queue operation failed. [`QueueError::is_retryable`] says whether
/// the same call may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue is at one of its bounds: the write is refused, nothing is
    /// dropped.
    #[error("the write queue is full ({entries} writes, {bytes} bytes)")]
    Full {
        /// Unfinished writes (as far as the backend tells).
        entries: u64,
        /// Their payload bytes (as far as the backend tells).
        bytes: u64,
    },
    /// The subject already has as many unfinished writes as one subject
    /// may.
    #[error("the subject has {entries} unfinished queued writes, its bound")]
    SubjectFull {
        /// The subject's unfinished writes.
        entries: u64,
    },
    /// The write is larger than the whole byte bound (never retryable).
    #[error("the write is larger than the queue ({size} bytes)")]
    TooLarge {
        /// Its encoded payload size.
        size: u64,
    },
    /// The id is already queued.
    #[error("write {0} is already queued")]
    Duplicate(Uuid),
    /// The local storage failed (disk full, I/O error).
    #[error("queue storage: {0}")]
    Storage(String),
    /// The shared queue could not be reached, or did not confirm that a
    /// write is durable in time: the write is not accepted.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Another instance holds the write's resource (it is replaying it).
    #[error("the resource is being replayed elsewhere")]
    Busy,
    /// No record with this id (never queued, or purged).
    #[error("no queued write {0}")]
    NotFound(Uuid),
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
            Self::Full { .. }
                | Self::SubjectFull { .. }
                | Self::Storage(_)
                | Self::Unavailable(_)
                | Self::Busy
        )
    }

    /// Whether the write was refused because the queue cannot make it
    /// durable now (as opposed to a bound or the write itself).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Storage(_) | Self::Unavailable(_))
    }

    pub(crate) fn corrupt(id: Uuid, reason: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            id,
            reason: reason.to_string(),
        }
    }
}
