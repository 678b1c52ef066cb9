//! The shared backend on a real NATS JetStream cluster: the shared
//! behaviour, several instances sharing one queue (leases), a lost node
//! and a frozen cluster.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use testkit::NatsCluster;
use uuid::Uuid;
use write_queue::{JetStreamConfig, QueueError, QueueLimits, Sealer, WriteState};

/// One queue (a unique prefix, so tests never share a stream or bucket)
/// on a cluster.
struct Shared {
    cluster: NatsCluster,
    prefix: String,
}

impl Shared {
    async fn new(nodes: usize) -> Self {
        let cluster = NatsCluster::builder().nodes(nodes).start().await.unwrap();
        Self {
            cluster,
            prefix: format!("t{}", &Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    fn config(&self, instance: &str) -> JetStreamConfig {
        let mut config = JetStreamConfig::new(self.cluster.urls());
        config.replicas = self.cluster.len().min(3);
        config.prefix = self.prefix.clone();
        config.instance = instance.into();
        config
    }

    async fn instance(&self, instance: &str) -> Queue {
        Queue::open_jetstream(self.config(instance), QueueLimits::default(), key())
            .await
            .unwrap()
    }
}

impl Open for Shared {
    async fn open(&self, limits: QueueLimits, sealer: Sealer) -> Queue {
        Queue::open_jetstream(self.config("only"), limits, sealer)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn ordered_sealed_and_erased() {
    common::ordered_sealed_and_erased(&Shared::new(1).await).await;
}

#[tokio::test]
async fn bounded() {
    common::bounded(&Shared::new(1).await).await;
}

#[tokio::test]
async fn byte_bound() {
    common::byte_bound(&Shared::new(1).await).await;
}

#[tokio::test]
async fn config_debug_hides_the_token() {
    let mut config = JetStreamConfig::new(["nats://127.0.0.1:4222"]);
    config.token = Some("s3cret-token".into());
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert_eq!(
        (config.replicas, config.prefix.as_str(), config.lease),
        (3, "gateway", Duration::from_secs(30))
    );
}

#[tokio::test]
async fn two_instances_share_the_queue_and_lease_resources() {
    let shared = Shared::new(1).await;
    let a = shared.instance("a").await;
    let b = shared.instance("b").await;
    assert_eq!(a.backend_name(), "jetstream");
    let now = SystemTime::now();
    let first = a.enqueue(write("alice", "/s/1", "one"), now).await.unwrap();
    let second = b.enqueue(write("alice", "/s/1", "two"), now).await.unwrap();
    assert!(first.seq < second.seq);
    let seen = b.get(first.id).await.unwrap().unwrap();
    assert_eq!((seen.id, seen.state), (first.id, WriteState::Queued));

    // A takes the resource; B does not get it while A holds it.
    let due = a.due(now, 10).await.unwrap();
    assert_eq!(ids(&due), [first.id]);
    assert_eq!(a.payload(&due[0]).unwrap(), Body("one".into()));
    assert!(b.due(now, 10).await.unwrap().is_empty());
    a.start(first.id).await.unwrap();
    assert!(b.due(now, 10).await.unwrap().is_empty());
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.depth, 2);
    // The payload bytes, fleet-wide (the stream's bytes less each
    // message's fixed overhead).
    assert_eq!(stats.bytes, first.payload_len() + second.payload_len());

    // Once A completed it, B gets the next write of the resource.
    a.complete(first.id, 201, now).await.unwrap();
    assert_eq!(b.get(first.id).await.unwrap().unwrap().outcome, Some(201));
    let due = b.due(now, 10).await.unwrap();
    assert_eq!(ids(&due), [second.id]);
    assert_eq!(b.payload(&due[0]).unwrap(), Body("two".into()));
    assert!(a.due(now, 10).await.unwrap().is_empty());
    assert!(a.next_due_ms().await.unwrap().is_some());
    b.start(second.id).await.unwrap();
    b.complete(second.id, 200, now).await.unwrap();
    assert_eq!(a.next_due_ms().await.unwrap(), None);
    assert_eq!(a.stats().await.unwrap().depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_both_open_the_queue() {
    // A fleet's pods start at once: their creations of the stream and
    // buckets race on a fresh cluster.
    let shared = Shared::new(3).await;
    let open = |name: &'static str| {
        Queue::open_jetstream(shared.config(name), QueueLimits::default(), key())
    };
    let (a, b, c) = tokio::join!(open("a"), open("b"), open("c"));
    let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let w = a
        .enqueue(write("alice", "/s/1", "x"), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(b.get(w.id).await.unwrap().unwrap().id, w.id);
}

#[tokio::test]
async fn a_dead_instances_resource_is_due_elsewhere_after_the_lease() {
    let shared = Shared::new(1).await;
    let mut config = shared.config("dies");
    config.lease = Duration::from_secs(2);
    let dies = Queue::open_jetstream(config, QueueLimits::default(), key())
        .await
        .unwrap();
    let mut config = shared.config("lives");
    config.lease = Duration::from_secs(2);
    let lives = Queue::open_jetstream(config, QueueLimits::default(), key())
        .await
        .unwrap();
    let now = SystemTime::now();
    let w = dies
        .enqueue(write("alice", "/s/1", "secret"), now)
        .await
        .unwrap();
    assert_eq!(ids(&dies.due(now, 10).await.unwrap()), [w.id]);
    dies.start(w.id).await.unwrap();
    drop(dies);

    // Poll until the lease expired (no timing asserted).
    let deadline = Instant::now() + Duration::from_secs(60);
    let due = loop {
        let due = lives.due(SystemTime::now(), 10).await.unwrap();
        if !due.is_empty() {
            break due;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ids(&due), [w.id]);
    assert_eq!(lives.payload(&due[0]).unwrap(), Body("secret".into()));
    let sending = lives.start(w.id).await.unwrap();
    assert_eq!(sending.attempts, 2);
    lives.complete(w.id, 200, SystemTime::now()).await.unwrap();
}

/// The index of the node leading the queue's stream.
async fn stream_leader(shared: &Shared) -> usize {
    let name = format!("{}_WRITES", shared.prefix.to_uppercase());
    let within = Duration::from_secs(60);
    testkit::eventually("the stream to have a leader", within, || {
        shared.cluster.stream_leader(&name)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_lost_node_refuses_nothing_and_loses_nothing() {
    let shared = Shared::new(3).await;
    let queue = shared.instance("a").await;
    let now = SystemTime::now();
    // Before: the stream's leader is lost, and with it every call that
    // needs a leader until another is elected; the calls wait it out
    // within publish_timeout instead of being refused.
    queue
        .enqueue(write("alice", "/s/0", "x"), now)
        .await
        .unwrap();
    let leader = stream_leader(&shared).await;
    shared.cluster.kill(leader).await.unwrap();
    let started = Instant::now();
    let mut accepted = vec![];
    for i in 0..3 {
        let w = queue.enqueue(write("alice", &format!("/s/{i}"), "x"), now);
        accepted.push(w.await.expect("refused while a node is down").id);
    }
    eprintln!(
        "first writes after the leader was lost: {:?}",
        started.elapsed()
    );
    // During: a writer keeps writing while another node goes.
    let writer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut ids = vec![];
            for i in 3..13 {
                let w = write("alice", &format!("/s/{i}"), "x");
                ids.push(queue.enqueue(w, now).await.expect("refused").id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    shared.cluster.restart(leader).await.unwrap();
    let leader = stream_leader(&shared).await;
    shared.cluster.kill(leader).await.unwrap();
    accepted.extend(writer.await.unwrap());
    // Nothing lost: every write is due once, in order, and finishes.
    let mut seen = vec![];
    while seen.len() < accepted.len() + 1 {
        let due = queue.due(SystemTime::now(), 100).await.unwrap();
        assert!(
            !due.is_empty(),
            "writes lost: {} of {}",
            seen.len(),
            accepted.len() + 1
        );
        for w in &due {
            assert_eq!(queue.payload(w).unwrap(), Body("x".into()));
            queue.start(w.id).await.unwrap();
            queue.complete(w.id, 200, now).await.unwrap();
            seen.push(w.id);
        }
    }
    for id in &accepted {
        assert!(seen.contains(id), "{id} lost");
        let record = queue.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, WriteState::Completed);
    }
    assert_eq!(queue.stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn a_frozen_cluster_refuses_writes_as_unavailable() {
    let shared = Shared::new(3).await;
    let mut config = shared.config("a");
    config.publish_timeout = Duration::from_secs(2);
    let queue = Queue::open_jetstream(config, QueueLimits::default(), key())
        .await
        .unwrap();
    shared.cluster.freeze_all().await.unwrap();
    let refused = queue
        .enqueue(write("alice", "/s/1", "x"), SystemTime::now())
        .await;
    shared.cluster.thaw_all().await.unwrap();
    let error = refused.unwrap_err();
    assert!(
        matches!(error, QueueError::Unavailable(_)) && error.is_unavailable(),
        "{error:?}"
    );
}

#[tokio::test]
async fn reopening_with_other_limits_updates_the_stream_and_buckets() {
    let shared = Shared::new(1).await;
    let queue = shared.open(QueueLimits::default(), key()).await;
    let now = SystemTime::now();
    queue.enqueue(write("alice", "/a", "1"), now).await.unwrap();
    drop(queue);
    let limits = QueueLimits {
        max_entries: 1,
        retention: Duration::from_secs(3600),
        ..QueueLimits::default()
    };
    let queue = shared.open(limits, key()).await;
    let full = queue
        .enqueue(write("bob", "/b", "2"), now)
        .await
        .unwrap_err();
    assert!(
        matches!(full, QueueError::Full { entries: 1, .. }),
        "{full:?}"
    );
}

/// The queue's stream and its status and lease buckets are read from
/// their leader, not by direct gets that a lagging follower may answer (a
/// status read from another gateway right after the write's 202 was a 404
/// in the chaos run; a follower still holding a completed write's message
/// held its resource's next write back). A stream made by an earlier
/// version, direct gets allowed, is changed; reopening keeps it so.
#[tokio::test]
async fn reads_go_to_the_leader_not_to_direct_gets() {
    let shared = Shared::new(3).await;
    let client = async_nats::connect(shared.cluster.url(0)).await.unwrap();
    let context = async_nats::jetstream::new(client);
    let writes = format!("{}_WRITES", shared.prefix.to_uppercase());
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: writes.clone(),
            subjects: vec![format!("{}.writes.>", shared.prefix)],
            num_replicas: 3,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let queue = shared.instance("a").await;
        let names = [
            writes.clone(),
            format!("KV_{}-status", shared.prefix),
            format!("KV_{}-leases", shared.prefix),
        ];
        for name in names {
            let mut stream = context.get_stream(&name).await.unwrap();
            let info = stream.info().await.unwrap();
            assert!(!info.config.allow_direct, "{name} allows direct gets");
        }
        drop(queue);
    }
}

/// A write whose status says finished while its message is still in the
/// stream (its deletion failed, or a follower had not applied it) holds
/// nothing back: its resource's next write is due, and the message goes.
#[tokio::test]
async fn a_finished_write_left_in_the_stream_holds_nothing_back() {
    let shared = Shared::new(1).await;
    let queue = shared.instance("a").await;
    let client = async_nats::connect(shared.cluster.url(0)).await.unwrap();
    let context = async_nats::jetstream::new(client);
    let stream = context
        .get_stream(format!("{}_WRITES", shared.prefix.to_uppercase()))
        .await
        .unwrap();
    let now = SystemTime::now();
    let first = queue
        .enqueue(write("alice", "/s/1", "one"), now)
        .await
        .unwrap();
    let message = stream
        .get_first_raw_message_by_subject(format!("{}.writes.>", shared.prefix), 1)
        .await
        .unwrap();
    queue.start(first.id).await.unwrap();
    queue.complete(first.id, 200, now).await.unwrap();
    // The finished write's message, back where its deletion would have
    // left it: before the resource's next write.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{}.left", first.id).as_str());
    let left = context
        .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let next = queue
        .enqueue(write("alice", "/s/1", "two"), now)
        .await
        .unwrap();
    assert!(left < next.seq);
    let due = queue.due(SystemTime::now(), 10).await.unwrap();
    assert_eq!(ids(&due), [next.id]);
    assert_eq!(queue.payload(&due[0]).unwrap(), Body("two".into()));
    let first_left = stream
        .get_first_raw_message_by_subject(format!("{}.writes.>", shared.prefix), 1)
        .await
        .unwrap();
    assert_eq!(first_left.sequence, next.seq, "the left message stays");
}
