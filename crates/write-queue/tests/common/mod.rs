//! The behaviour every backend shares, written once: each backend's test
//! file calls these with a way to open its queue.

#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use write_queue::{
    NewWrite, QueueError, QueueLimits, Record, Sealer, WriteMeta, WriteQueue, WriteState,
};

/// Where a test write goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub path: String,
}

impl WriteMeta for Target {
    fn resource(&self) -> &str {
        &self.path
    }
}

/// What a test write sends (it may hold a secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body(pub String);

/// The test queue.
pub type Queue = WriteQueue<Target, Body, u16>;

pub fn key() -> Sealer {
    Sealer::new(&[7; 32]).unwrap()
}

pub fn other_key() -> Sealer {
    Sealer::new(&[8; 32]).unwrap()
}

pub fn write(subject: &str, path: &str, body: &str) -> NewWrite<Target, Body> {
    NewWrite {
        id: Uuid::now_v7(),
        subject: subject.into(),
        meta: Target { path: path.into() },
        payload: Body(body.into()),
    }
}

pub fn ids(records: &[Record<Target, u16>]) -> Vec<Uuid> {
    records.iter().map(|r| r.id).collect()
}

/// Opens the queue under test (the same storage each time) with these
/// limits and key.
pub trait Open {
    fn open(&self, limits: QueueLimits, sealer: Sealer) -> impl Future<Output = Queue>;
}

/// Order per resource, back-off, payloads sealed and erased, outcomes
/// kept, statistics.
pub async fn ordered_sealed_and_erased(backend: &impl Open) {
    let queue = backend.open(QueueLimits::default(), key()).await;
    let now = SystemTime::now();
    let a = queue
        .enqueue(write("alice", "/s/1", "hunter2-a"), now)
        .await
        .unwrap();
    let b = queue
        .enqueue(write("alice", "/s/1", "b"), now)
        .await
        .unwrap();
    let c = queue.enqueue(write("bob", "/s/2", "c"), now).await.unwrap();
    assert!(a.seq < b.seq && b.seq < c.seq, "{a:?} {b:?} {c:?}");
    assert_eq!(a.state, WriteState::Queued);

    // Only the oldest write of a resource is due.
    assert_eq!(ids(&queue.due(now, 10).await.unwrap()), [a.id, c.id]);
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.depth, 3);
    assert!(stats.bytes > 0);
    assert_eq!(stats.oldest_accepted_ms, Some(write_queue::millis(now)));
    // Each resource's unfinished writes (a new write queues behind them).
    assert_eq!(queue.pending("/s/1").await.unwrap(), 2);
    assert_eq!(queue.pending("/s/2").await.unwrap(), 1);
    assert_eq!(queue.pending("/s/3").await.unwrap(), 0);

    // Being sent: not due again, and its resource waits.
    let sending = queue.start(a.id).await.unwrap();
    assert_eq!(
        (sending.state, sending.attempts),
        (WriteState::Replaying, 1)
    );
    assert_eq!(queue.payload(&sending).unwrap(), Body("hunter2-a".into()));
    assert_eq!(ids(&queue.due(now, 10).await.unwrap()), [c.id]);

    // A failed attempt backs off.
    queue
        .retry(a.id, now + Duration::from_secs(5), "upstream answered 503")
        .await
        .unwrap();
    assert_eq!(ids(&queue.due(now, 10).await.unwrap()), [c.id]);
    let later = now + Duration::from_secs(5);
    assert_eq!(ids(&queue.due(later, 10).await.unwrap()), [a.id, c.id]);
    let retried = queue.get(a.id).await.unwrap().unwrap();
    assert_eq!(retried.last_error.as_deref(), Some("upstream answered 503"));

    // Completed: the outcome is kept, the payload erased, the next write
    // of the resource due.
    queue.start(a.id).await.unwrap();
    let done = queue.complete(a.id, 201, later).await.unwrap();
    assert_eq!(
        (done.state, done.outcome, done.attempts),
        (WriteState::Completed, Some(201), 2)
    );
    assert_eq!(done.last_error, None);
    assert!(matches!(
        queue.payload(&done),
        Err(QueueError::Corrupt { .. })
    ));
    assert_eq!(queue.get(a.id).await.unwrap().unwrap().outcome, Some(201));
    assert_eq!(ids(&queue.due(later, 10).await.unwrap()), [b.id, c.id]);
    assert_eq!(ids(&queue.due(later, 1).await.unwrap()), [b.id]);
    assert_eq!(queue.pending("/s/1").await.unwrap(), 1, "b is left");

    // Failed: kept with its reason.
    let failed = queue
        .fail(c.id, "too old to replay safely", later)
        .await
        .unwrap();
    assert_eq!(failed.state, WriteState::Failed);
    assert_eq!(queue.pending("/s/2").await.unwrap(), 0);
    assert_eq!(queue.stats().await.unwrap().depth, 1);
    assert_eq!(
        queue
            .get(c.id)
            .await
            .unwrap()
            .unwrap()
            .last_error
            .as_deref(),
        Some("too old to replay safely")
    );
    assert!(queue.get(Uuid::now_v7()).await.unwrap().is_none());

    // Another key cannot open the payloads.
    drop(queue);
    let other = backend.open(QueueLimits::default(), other_key()).await;
    let b = other.get(b.id).await.unwrap().unwrap();
    assert!(matches!(other.payload(&b), Err(QueueError::Corrupt { .. })));
}

/// Entries, bytes and per-subject bounds refuse writes without dropping
/// any; finishing a write makes room.
pub async fn bounded(backend: &impl Open) {
    let limits = QueueLimits {
        max_entries: 3,
        max_bytes: 400,
        max_per_subject: 2,
        ..QueueLimits::default()
    };
    let queue = backend.open(limits, key()).await;
    let now = SystemTime::now();
    let first = queue
        .enqueue(write("alice", "/a/1", "1"), now)
        .await
        .unwrap();
    queue
        .enqueue(write("alice", "/a/2", "2"), now)
        .await
        .unwrap();
    let refused = queue
        .enqueue(write("alice", "/a/3", "3"), now)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, QueueError::SubjectFull { entries: 2 }),
        "{refused:?}"
    );
    assert!(refused.is_retryable() && !refused.is_unavailable());
    queue.enqueue(write("bob", "/b/1", "1"), now).await.unwrap();
    let full = queue
        .enqueue(write("carol", "/c/1", "1"), now)
        .await
        .unwrap_err();
    assert!(matches!(full, QueueError::Full { .. }), "{full:?}");
    let huge = queue
        .enqueue(write("carol", "/c/1", &"x".repeat(500)), now)
        .await
        .unwrap_err();
    assert!(matches!(huge, QueueError::TooLarge { .. }), "{huge:?}");
    assert!(!huge.is_retryable());
    assert_eq!(queue.stats().await.unwrap().depth, 3, "nothing was dropped");

    // Finishing a write makes room for its subject and the queue.
    queue.fail(first.id, "given up", now).await.unwrap();
    queue
        .enqueue(write("alice", "/a/3", "3"), now)
        .await
        .unwrap();

    // The same id twice is refused.
    let mut again = write("dave", "/d/1", "1");
    again.id = first.id;
    let duplicate = queue.enqueue(again, now).await.unwrap_err();
    assert!(
        matches!(duplicate, QueueError::Duplicate(id) if id == first.id),
        "{duplicate:?}"
    );
}

/// The byte bound counts payload bytes.
pub async fn byte_bound(backend: &impl Open) {
    let limits = QueueLimits {
        max_entries: 100,
        max_bytes: 200,
        ..QueueLimits::default()
    };
    let queue = backend.open(limits, key()).await;
    let now = SystemTime::now();
    let first = queue
        .enqueue(write("alice", "/a", &"x".repeat(150)), now)
        .await
        .unwrap();
    let full = queue
        .enqueue(write("alice", "/b", &"x".repeat(150)), now)
        .await
        .unwrap_err();
    assert!(matches!(full, QueueError::Full { .. }), "{full:?}");
    queue.start(first.id).await.unwrap();
    queue.complete(first.id, 200, now).await.unwrap();
    queue
        .enqueue(write("alice", "/b", &"x".repeat(150)), now)
        .await
        .unwrap();
}
