#![doc = include_str!("../README.md")]

mod error;
mod jetstream;
mod record;
mod redb;
mod seal;

use std::{fmt, marker::PhantomData, path::Path, sync::Arc, time::SystemTime};

use serde::Serialize;
use uuid::Uuid;

pub use error::QueueError;
pub use jetstream::JetStreamConfig;
pub use record::{Data, NewWrite, QueueLimits, QueueStats, Record, WriteMeta, WriteState, millis};
pub use seal::Sealer;

use record::Change;

/// The durable queue of accepted writes: `M` says where a write goes (plain
/// text, kept for its status), `P` is what it sends (sealed at rest, erased
/// once finished), `O` is its outcome. Cheap to clone.
///
/// Every method is async; the embedded backend runs on tokio's blocking
/// pool.
pub struct WriteQueue<M, P, O> {
    backend: Backend<M, O>,
    limits: QueueLimits,
    types: PhantomData<fn() -> P>,
}

enum Backend<M, O> {
    Redb(Arc<redb::RedbQueue<M, O>>),
    JetStream(Arc<jetstream::JetStreamQueue<M, O>>),
}

impl<M, O> Clone for Backend<M, O> {
    fn clone(&self) -> Self {
        match self {
            Self::Redb(queue) => Self::Redb(Arc::clone(queue)),
            Self::JetStream(queue) => Self::JetStream(Arc::clone(queue)),
        }
    }
}

impl<M, P, O> Clone for WriteQueue<M, P, O> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            limits: self.limits,
            types: PhantomData,
        }
    }
}

impl<M, P, O> fmt::Debug for WriteQueue<M, P, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteQueue")
            .field("backend", &self.backend_name())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<M, P, O> WriteQueue<M, P, O> {
    /// `"redb"` or `"jetstream"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Redb(_) => "redb",
            Backend::JetStream(_) => "jetstream",
        }
    }

    /// The limits.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }
}

impl<M, P, O> WriteQueue<M, P, O>
where
    M: WriteMeta,
    P: Data,
    O: Data + Clone,
{
    /// Opens (or creates) an embedded queue in the redb file at `path`.
    /// Writes that were being sent when the last process stopped are due
    /// again.
    pub async fn open_redb(
        path: impl AsRef<Path>,
        limits: QueueLimits,
        sealer: Sealer,
    ) -> Result<Self, QueueError> {
        let path = path.as_ref().to_owned();
        let queue = blocking_task(move || redb::RedbQueue::open(&path, limits, sealer)).await?;
        Ok(Self {
            backend: Backend::Redb(Arc::new(queue)),
            limits,
            types: PhantomData,
        })
    }

    /// Opens the queue shared by every instance on the NATS JetStream
    /// cluster at `config.urls`, creating (or updating) its stream and
    /// buckets.
    pub async fn open_jetstream(
        config: JetStreamConfig,
        limits: QueueLimits,
        sealer: Sealer,
    ) -> Result<Self, QueueError> {
        let queue = jetstream::JetStreamQueue::open(config, limits, sealer).await?;
        Ok(Self {
            backend: Backend::JetStream(Arc::new(queue)),
            limits,
            types: PhantomData,
        })
    }

    /// Stores `write` durably, unless a bound refuses it; accepted at
    /// `now`. Returns its record.
    pub async fn enqueue(
        &self,
        write: NewWrite<M, P>,
        now: SystemTime,
    ) -> Result<Record<M, O>, QueueError>
    where
        P: Serialize,
    {
        // Sealed and measured once, the same for every backend.
        let (sealed, size) = self.sealer().seal(write.id, &write.payload)?;
        if size > self.limits.max_bytes {
            return Err(QueueError::TooLarge { size });
        }
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                blocking_task(move || queue.enqueue(write, sealed, size, now)).await
            }
            Backend::JetStream(queue) => queue.enqueue(write, sealed, size, now).await,
        }
    }

    fn sealer(&self) -> &Sealer {
        match &self.backend {
            Backend::Redb(queue) => queue.sealer(),
            Backend::JetStream(queue) => queue.sealer(),
        }
    }

    /// The record of `id`, if known (finished ones until their retention
    /// has passed).
    pub async fn get(&self, id: Uuid) -> Result<Option<Record<M, O>>, QueueError> {
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                blocking_task(move || queue.get(id)).await
            }
            Backend::JetStream(queue) => queue.get(id).await,
        }
    }

    /// The payload of `record`, opened.
    pub fn payload(&self, record: &Record<M, O>) -> Result<P, QueueError> {
        self.sealer().open(record.id, &record.sealed)
    }

    /// The writes to send now: for each resource its oldest unfinished
    /// write, if it is queued and its back-off is over; at most `limit`,
    /// oldest first. With a shared backend, only resources this instance
    /// holds (until the write is completed, retried or failed).
    pub async fn due(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Record<M, O>>, QueueError> {
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                blocking_task(move || queue.due(now, limit)).await
            }
            Backend::JetStream(queue) => queue.due(now, limit).await,
        }
    }

    /// The earliest time (ms since the epoch) a queued write becomes due,
    /// if any is waiting.
    pub async fn next_due_ms(&self) -> Result<Option<u64>, QueueError> {
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                blocking_task(move || queue.next_due_ms()).await
            }
            Backend::JetStream(queue) => queue.next_due_ms().await,
        }
    }

    /// Marks `id` as being sent (one more attempt).
    pub async fn start(&self, id: Uuid) -> Result<Record<M, O>, QueueError> {
        self.change(id, Change::Start).await
    }

    /// Finishes `id` with its `outcome`; its payload is erased.
    pub async fn complete(
        &self,
        id: Uuid,
        outcome: O,
        now: SystemTime,
    ) -> Result<Record<M, O>, QueueError> {
        self.change(id, Change::Complete { outcome, now }).await
    }

    /// Queues `id` again, due at `at`, after a failed attempt.
    pub async fn retry(
        &self,
        id: Uuid,
        at: SystemTime,
        error: impl Into<String>,
    ) -> Result<Record<M, O>, QueueError> {
        let error = error.into();
        self.change(id, Change::Retry { at, error }).await
    }

    /// Gives `id` up with `error`; its payload is erased.
    pub async fn fail(
        &self,
        id: Uuid,
        error: impl Into<String>,
        now: SystemTime,
    ) -> Result<Record<M, O>, QueueError> {
        let error = error.into();
        self.change(id, Change::Fail { error, now }).await
    }

    async fn change(&self, id: Uuid, change: Change<O>) -> Result<Record<M, O>, QueueError> {
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                blocking_task(move || queue.update(id, change)).await
            }
            Backend::JetStream(queue) => queue.update(id, change).await,
        }
    }

    /// The unfinished writes of `resource` (fleet-wide with a shared
    /// backend): a new write to it must queue behind them to keep their
    /// order.
    pub async fn pending(&self, resource: &str) -> Result<u64, QueueError> {
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                let resource = resource.to_owned();
                blocking_task(move || queue.pending(&resource)).await
            }
            Backend::JetStream(queue) => queue.pending(resource).await,
        }
    }

    /// Unfinished writes, their bytes and the oldest's time.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                blocking_task(move || queue.stats()).await
            }
            Backend::JetStream(queue) => queue.stats().await,
        }
    }

    /// Deletes finished records older than the retention; returns how
    /// many.
    pub async fn purge(&self, now: SystemTime) -> Result<usize, QueueError> {
        match &self.backend {
            Backend::Redb(queue) => {
                let queue = Arc::clone(queue);
                blocking_task(move || queue.purge(now)).await
            }
            // The status bucket's max_age is the retention: NATS purges.
            Backend::JetStream(_) => Ok(0),
        }
    }
}

/// Runs `work` on tokio's blocking pool.
async fn blocking_task<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| QueueError::Storage(format!("queue task: {e}")))?
}
