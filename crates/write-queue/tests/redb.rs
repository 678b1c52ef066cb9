//! The embedded backend: the shared behaviour, durability across a
//! reopen, sealing in the file, purge, and the gateway's earlier records.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use common::*;
use write_queue::{QueueLimits, Sealer, WriteState};

struct File {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl File {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            path: dir.path().join("queue.redb"),
            _dir: dir,
        }
    }
}

impl Open for File {
    async fn open(&self, limits: QueueLimits, sealer: Sealer) -> Queue {
        Queue::open_redb(&self.path, limits, sealer).await.unwrap()
    }
}

#[tokio::test]
async fn ordered_sealed_and_erased() {
    common::ordered_sealed_and_erased(&File::new()).await;
}

#[tokio::test]
async fn bounded() {
    common::bounded(&File::new()).await;
}

#[tokio::test]
async fn byte_bound() {
    common::byte_bound(&File::new()).await;
}

#[tokio::test]
async fn durable_across_a_restart_and_sealed_in_the_file() {
    let file = File::new();
    let queue = file.open(QueueLimits::default(), key()).await;
    let now = SystemTime::now();
    let a = queue
        .enqueue(write("alice", "/s/1", "hunter2-secret"), now)
        .await
        .unwrap();
    let c = queue
        .enqueue(write("alice", "/s/2", "c"), now)
        .await
        .unwrap();
    queue.start(a.id).await.unwrap();
    assert_eq!(ids(&queue.due(now, 10).await.unwrap()), [c.id]);
    assert_eq!(
        queue.next_due_ms().await.unwrap(),
        Some(write_queue::millis(now))
    );
    drop(queue);

    // A write being sent when the process died is due again.
    let queue = file.open(QueueLimits::default(), key()).await;
    let again = queue.get(a.id).await.unwrap().unwrap();
    assert_eq!((again.state, again.attempts), (WriteState::Queued, 1));
    // Each resource's unfinished writes are counted anew.
    assert_eq!(queue.pending("/s/1").await.unwrap(), 1);
    assert_eq!(queue.pending("/s/2").await.unwrap(), 1);
    assert_eq!(ids(&queue.due(now, 10).await.unwrap()), [a.id, c.id]);
    assert_eq!(
        queue.payload(&again).unwrap(),
        Body("hunter2-secret".into())
    );
    drop(queue);

    let raw = std::fs::read(&file.path).unwrap();
    assert!(
        !raw.windows(7).any(|w| w == b"hunter2"),
        "a payload is in the file in plaintext"
    );
}

#[tokio::test]
async fn finished_records_are_purged_after_the_retention_only() {
    let file = File::new();
    let queue = file.open(QueueLimits::default(), key()).await;
    let now = SystemTime::now();
    let a = queue
        .enqueue(write("alice", "/s/1", "a"), now)
        .await
        .unwrap();
    queue.complete(a.id, 200, now).await.unwrap();
    assert_eq!(queue.purge(now).await.unwrap(), 0);
    assert!(queue.get(a.id).await.unwrap().is_some());
    assert_eq!(
        queue
            .purge(now + Duration::from_secs(25 * 3600))
            .await
            .unwrap(),
        1
    );
    assert!(queue.get(a.id).await.unwrap().is_none());
}

#[tokio::test]
async fn debug_output_shows_neither_payload_nor_key() {
    let file = File::new();
    let limits = QueueLimits {
        max_entries: 5,
        ..QueueLimits::default()
    };
    let queue = file.open(limits, key()).await;
    let shared = queue.clone();
    assert_eq!((shared.backend_name(), shared.limits()), ("redb", limits));
    let now = SystemTime::now();
    let record = shared
        .enqueue(write("alice", "/s/1", "hunter2-secret"), now)
        .await
        .unwrap();
    assert!(record.payload_len() > "hunter2-secret".len() as u64);
    let shown = [
        format!("{queue:?}"),
        format!("{record:?}"),
        format!("{:?}", key()),
    ];
    for text in &shown {
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(shown[0].contains("redb"), "{}", shown[0]);
    assert!(
        shown[1].contains("/s/1") && shown[1].contains("alice"),
        "{}",
        shown[1]
    );
    assert_eq!(shown[2], "Sealer([REDACTED])");
    assert!(
        Sealer::new(&[1; 16]).is_none(),
        "an AES-256 key is 32 bytes"
    );

    let done = queue.fail(record.id, "given up", now).await.unwrap();
    assert_eq!(
        done.payload_len(),
        record.payload_len(),
        "its size is kept for the record"
    );
    let states: Vec<&str> = [
        WriteState::Queued,
        WriteState::Replaying,
        WriteState::Completed,
        WriteState::Failed,
    ]
    .into_iter()
    .map(WriteState::as_str)
    .collect();
    assert_eq!(states, ["queued", "replaying", "completed", "failed"]);
    assert!(done.state.is_finished() && !WriteState::Replaying.is_finished());
}
