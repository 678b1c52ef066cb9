//! The shared backend: NATS JetStream, for a fleet of instances.
//!
//! - **Durable**: a write is accepted once JetStream acknowledged its
//!   message, which it does after the stream's RAFT commit on a quorum of
//!   the `replicas`.
//! - **Order**: one stream; its sequence is the order of acceptance across
//!   every instance. Each unfinished write is one message on
//!   `{prefix}.writes.<resource>.<subject>` (both tokens: 32 hex digits of
//!   SHA-256), so the oldest message of a resource is its next write.
//! - **Status**: the KV bucket `{prefix}-status` holds each record without
//!   its payload; its `max_age` is the retention.
//! - **Leases**: the KV bucket `{prefix}-leases` says which instance sends
//!   a resource's writes; its `max_age` is the lease, so a dead instance's
//!   resources are due elsewhere once it expired.
//! - **Messages**: a message's body is the write's sealed payload only,
//!   its `Nats-Msg-Id` header the write's id; the record itself is the
//!   status entry. Every message thus stores a fixed number of bytes beside
//!   the payload's encoded size (`MESSAGE_OVERHEAD` plus the subject), so
//!   the payload bytes of the fleet are the stream's bytes less that
//!   overhead per message: the byte bound is exact.
//! - **Bounds**: checked before publishing (entries, payload bytes, the
//!   subject's messages); the stream's `max_msgs` and `max_bytes` (the byte
//!   bound plus the fixed overhead of `max_entries` messages, `discard:
//!   new`) refuse what concurrent instances would add beyond them.

use std::{
    collections::HashSet, fmt, future::Future, marker::PhantomData, time::Duration,
    time::SystemTime,
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        context::PublishErrorKind,
        kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
        stream::{self, DiscardPolicy, RawMessageErrorKind, StorageType},
    },
};
use futures_util::TryStreamExt as _;
use ring::digest::{SHA256, digest};
use uuid::Uuid;

use crate::{
    Change, Data, NewWrite, QueueError, QueueLimits, QueueStats, Record, Sealer, WriteMeta,
    WriteState, millis,
    seal::{FORMAT_POSTCARD, encode},
};

/// Where the shared queue is and how this instance uses it.
#[derive(Clone)]
#[non_exhaustive]
pub struct JetStreamConfig {
    /// The NATS servers (`nats://host:4222`).
    pub urls: Vec<String>,
    /// Copies of the stream and buckets (1, 3 or 5); a write is accepted
    /// once a majority has it.
    pub replicas: usize,
    /// The prefix of the stream (upper case), bucket and subject names.
    pub prefix: String,
    /// How long a call may take, retries included, before it is refused
    /// as [`QueueError::Unavailable`]: a write's acknowledgement, and any
    /// other request. A stream whose leader's node was lost elects another
    /// (measured: 6 to 9 s on nats-server 2.15); calls refused or
    /// unanswered meanwhile are tried again within this time, so it should
    /// be longer than an election.
    pub publish_timeout: Duration,
    /// The token to authenticate with, if any (never printed).
    pub token: Option<String>,
    /// How long an instance holds a resource it replays without renewing
    /// it (every `start` renews it).
    pub lease: Duration,
    /// This instance's name, unique in the fleet (the lease holder).
    pub instance: String,
}

impl JetStreamConfig {
    /// The defaults for `urls`: 3 replicas, prefix `gateway`, 15 s to
    /// publish, 30 s leases, a random instance name.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            replicas: 3,
            prefix: "gateway".into(),
            publish_timeout: Duration::from_secs(15),
            token: None,
            lease: Duration::from_secs(30),
            instance: Uuid::new_v4().simple().to_string(),
        }
    }
}

impl fmt::Debug for JetStreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamConfig")
            .field("urls", &self.urls)
            .field("replicas", &self.replicas)
            .field("prefix", &self.prefix)
            .field("publish_timeout", &self.publish_timeout)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("lease", &self.lease)
            .field("instance", &self.instance)
            .finish()
    }
}

/// The header carrying a write's id (JetStream deduplicates on it).
const MSG_ID: &str = "Nats-Msg-Id";

/// The bytes JetStream stores per message beside the payload's encoded
/// size: its file-store record (22 bytes, 4 for the header length, an
/// 8-byte hash), the subject,
/// the header block (`NATS/1.0\r\nNats-Msg-Id: <32 hex>\r\n\r\n`, 59 bytes)
/// and the sealing (12-byte nonce, format byte, 16-byte tag). The subject
/// is added per queue (its length is fixed for a prefix). A write
/// published again after a withdrawn attempt carries a longer message id
/// (`<id>.<attempt>`): its 33 more bytes count as payload, which errs on
/// the side of refusing.
const MESSAGE_OVERHEAD: u64 = 22 + 4 + 8 + 59 + 12 + 1 + 16;

/// The JetStream queue.
pub(crate) struct JetStreamQueue<M, O> {
    context: jetstream::Context,
    stream: stream::Stream,
    status: kv::Store,
    leases: kv::Store,
    prefix: String,
    instance: String,
    limits: QueueLimits,
    sealer: Sealer,
    /// Stored bytes per message beside the payload.
    overhead: u64,
    publish_timeout: Duration,
    /// How long one attempt of a call may take.
    attempt_timeout: Duration,
    types: PhantomData<fn() -> (M, O)>,
}

/// One attempt's share of `publish_timeout`: a quarter, between 250 ms and
/// 2 s.
fn attempt_timeout(publish_timeout: Duration) -> Duration {
    (publish_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(2))
}

/// Runs `op` until it answers anything but [`QueueError::Unavailable`] or
/// `deadline` has passed, each attempt within `attempt`, pausing 50 ms
/// doubling to 500 ms between attempts.
async fn retrying<T, F: Future<Output = Result<T, QueueError>>>(
    deadline: tokio::time::Instant,
    attempt: Duration,
    what: &str,
    mut op: impl FnMut() -> F,
) -> Result<T, QueueError> {
    let mut pause = FIRST_PAUSE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let error = match tokio::time::timeout(left.min(attempt), op()).await {
            Ok(Err(QueueError::Unavailable(error))) => QueueError::Unavailable(error),
            Ok(answer) => return answer,
            Err(_) => unavailable(what, "no answer in time"),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(error);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

tokio::task_local! {
    /// The deadline every call of one enqueue shares.
    static DEADLINE: tokio::time::Instant;
}

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_millis(500);

fn unavailable(what: &str, error: impl fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("{what}: {error}"))
}

/// 32 hex digits of the SHA-256 of `text`: a subject token.
fn token(text: &str) -> String {
    let hash = digest(&SHA256, text.as_bytes());
    hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl<M: WriteMeta, O: Data + Clone> JetStreamQueue<M, O> {
    /// Connects, and creates (or updates) the stream and buckets.
    pub(crate) async fn open(
        config: JetStreamConfig,
        limits: QueueLimits,
        sealer: Sealer,
    ) -> Result<Self, QueueError> {
        let attempt = attempt_timeout(config.publish_timeout);
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(config.publish_timeout)
            .request_timeout(Some(attempt));
        if let Some(token) = config.token.clone() {
            options = options.token(token);
        }
        let client = async_nats::connect_with_options(config.urls.clone(), options)
            .await
            .map_err(|e| unavailable("connect", e))?;
        let context = jetstream::ContextBuilder::new()
            .timeout(attempt)
            .build(client);
        let prefix = config.prefix.clone();
        let subject_len = format!("{prefix}.writes.").len() as u64 + 32 + 1 + 32;
        let overhead = MESSAGE_OVERHEAD + subject_len;
        let stream_config = stream::Config {
            name: format!("{}_WRITES", prefix.to_uppercase()),
            subjects: vec![format!("{prefix}.writes.>")],
            storage: StorageType::File,
            num_replicas: config.replicas,
            discard: DiscardPolicy::New,
            max_messages: i64::try_from(limits.max_entries).unwrap_or(i64::MAX),
            // The payload bound plus every message's own overhead: the
            // server-side backstop of the check in `enqueue`.
            max_bytes: i64::try_from(
                limits
                    .max_bytes
                    .saturating_add(limits.max_entries.saturating_mul(overhead)),
            )
            .unwrap_or(i64::MAX),
            max_message_size: i32::try_from(limits.max_bytes.saturating_add(overhead))
                .unwrap_or(i32::MAX),
            // Read from the leader only, as the buckets are (below): a
            // follower's direct get may still hold a write that was
            // completed and deleted, which then held its resource's next
            // write back (`due` passed over it; the lost-node test).
            allow_direct: false,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        // Instances of a fleet start together: their creations race (the
        // loser is refused, then finds what the winner made) on a cluster
        // that may still be electing its leaders. Each step is retried
        // within the queue's patience, as every later call is.
        let deadline = tokio::time::Instant::now() + config.publish_timeout;
        let stream = retrying(deadline, attempt, "create the stream", || async {
            let mut stream = context
                .get_or_create_stream(stream_config.clone())
                .await
                .map_err(|e| unavailable("create the stream", e))?;
            let current = stream
                .info()
                .await
                .map_err(|e| unavailable("stream info", e))?
                .config
                .clone();
            if current.max_messages != stream_config.max_messages
                || current.max_bytes != stream_config.max_bytes
                || current.max_message_size != stream_config.max_message_size
                || current.num_replicas != stream_config.num_replicas
                || current.allow_direct
            {
                context
                    .update_stream(stream_config.clone())
                    .await
                    .map_err(|e| unavailable("update the stream", e))?;
            }
            Ok(stream)
        })
        .await?;
        // A bucket keeps one value per key, on file, as replicated as the
        // stream; its `max_age` expires the keys.
        let bucket = |name: &str, max_age| kv::Config {
            bucket: format!("{prefix}-{name}"),
            history: 1,
            max_age,
            num_replicas: config.replicas,
            storage: StorageType::File,
            ..Default::default()
        };
        // Reads of a bucket go to its stream's leader, never to a direct
        // get: a direct get may be answered by a follower that has not
        // applied the latest write yet, so a status read from another
        // gateway right after its 202 could be a 404 (seen in the chaos
        // run). Created or updated (which turns direct gets on), then
        // direct gets turned off, then opened again (the store reads the
        // way its stream's configuration says).
        let create = |what: &'static str, config: kv::Config| {
            let context = &context;
            retrying(deadline, attempt, what, move || {
                let config = config.clone();
                async move {
                    let bucket = config.bucket.clone();
                    context
                        .create_or_update_key_value(config)
                        .await
                        .map_err(|e| unavailable(what, e))?;
                    let mut stream = context
                        .get_stream(format!("KV_{bucket}"))
                        .await
                        .map_err(|e| unavailable(what, e))?;
                    let mut stream_config = stream
                        .info()
                        .await
                        .map_err(|e| unavailable(what, e))?
                        .config
                        .clone();
                    if stream_config.allow_direct {
                        stream_config.allow_direct = false;
                        context
                            .update_stream(stream_config)
                            .await
                            .map_err(|e| unavailable(what, e))?;
                    }
                    context
                        .get_key_value(bucket)
                        .await
                        .map_err(|e| unavailable(what, e))
                }
            })
        };
        let status = create(
            "create the status bucket",
            bucket("status", limits.retention),
        )
        .await?;
        let leases = create("create the lease bucket", bucket("leases", config.lease)).await?;
        Ok(Self {
            context,
            stream,
            status,
            leases,
            prefix,
            instance: config.instance,
            limits,
            sealer,
            overhead,
            publish_timeout: config.publish_timeout,
            attempt_timeout: attempt,
            types: PhantomData,
        })
    }

    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Runs `op` until it answers anything but [`QueueError::Unavailable`],
    /// each attempt within `attempt_timeout`, all within
    /// `publish_timeout`, pausing 50 ms doubling to 500 ms between
    /// attempts. Every call made through it is safe to repeat: reads,
    /// publishes (deduplicated on the write's id), and changes that check
    /// what an earlier unanswered attempt did.
    ///
    /// Within an [`enqueue`](Self::enqueue), every call shares the
    /// enqueue's one deadline ([`DEADLINE`]), so a write is answered within
    /// `publish_timeout` however many calls it takes.
    async fn patiently<T, F: Future<Output = Result<T, QueueError>>>(
        &self,
        what: &str,
        op: impl FnMut() -> F,
    ) -> Result<T, QueueError> {
        let deadline = DEADLINE
            .try_with(|deadline| *deadline)
            .unwrap_or_else(|_| tokio::time::Instant::now() + self.publish_timeout);
        retrying(deadline, self.attempt_timeout, what, op).await
    }

    fn subject(&self, resource: &str, subject: &str) -> String {
        format!(
            "{}.writes.{}.{}",
            self.prefix,
            token(resource),
            token(subject)
        )
    }

    /// The status entry of `id` (not a deleted one) and its revision.
    async fn status_entry(&self, id: Uuid) -> Result<Option<(Record<M, O>, u64)>, QueueError> {
        let key = id.simple().to_string();
        let entry = self
            .patiently("read a status", || async {
                self.status
                    .entry(key.as_str())
                    .await
                    .map_err(|e| unavailable("read a status", e))
            })
            .await?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                Ok(Some((decode(id, &entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Unfinished writes and their payload bytes, fleet-wide.
    async fn depth(&self) -> Result<(u64, u64, u64), QueueError> {
        let info = self
            .patiently("stream info", || async {
                self.stream
                    .get_info()
                    .await
                    .map_err(|e| unavailable("stream info", e))
            })
            .await?;
        let state = info.state;
        let payload = state
            .bytes
            .saturating_sub(state.messages.saturating_mul(self.overhead));
        Ok((state.messages, payload, state.first_sequence))
    }

    /// Stores `write`, whose payload is `sealed` (`size` bytes encoded),
    /// within `publish_timeout`.
    pub(crate) async fn enqueue<P>(
        &self,
        write: NewWrite<M, P>,
        sealed: Vec<u8>,
        size: u64,
        now: SystemTime,
    ) -> Result<Record<M, O>, QueueError> {
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        DEADLINE
            .scope(deadline, self.enqueue_within(write, sealed, size, now))
            .await
    }

    async fn enqueue_within<P>(
        &self,
        write: NewWrite<M, P>,
        sealed: Vec<u8>,
        size: u64,
        now: SystemTime,
    ) -> Result<Record<M, O>, QueueError> {
        let id = write.id;
        if self.status_entry(id).await?.is_some() {
            return Err(QueueError::Duplicate(id));
        }
        // Racy between instances: each may add one beyond the bound.
        let theirs = self
            .count(&format!(
                "{}.writes.*.{}",
                self.prefix,
                token(&write.subject)
            ))
            .await?;
        if theirs >= self.limits.max_per_subject {
            return Err(QueueError::SubjectFull { entries: theirs });
        }
        let (entries, bytes, _) = self.depth().await?;
        if entries >= self.limits.max_entries || bytes + size > self.limits.max_bytes {
            return Err(QueueError::Full { entries, bytes });
        }
        let subject = self.subject(write.meta.resource(), &write.subject);
        let full = (entries, bytes);
        let mut sealed = sealed;
        let mut ack = self
            .publish(&subject, id.simple().to_string(), &sealed, size, full)
            .await?;
        if ack.duplicate {
            // The id was published within the deduplication window: by an
            // earlier attempt whose answer was lost (its message is there,
            // its status not: adopt it), by one withdrawn since (publish
            // anew under another message id), or by a write already
            // accepted.
            if self.status_entry(id).await?.is_some() {
                return Err(QueueError::Duplicate(id));
            }
            let kept = self.sealed_at(ack.sequence).await?;
            if kept.is_empty() {
                let msg_id = format!("{}.{}", id.simple(), Uuid::new_v4().simple());
                ack = self.publish(&subject, msg_id, &sealed, size, full).await?;
            } else {
                sealed = kept;
            }
        }
        let record = Record::accepted(write, ack.sequence, now, sealed, size);
        let key = id.simple().to_string();
        let value = encode(id, &without_payload(&record))?;
        let created = self
            .patiently("store a status", || async {
                match self.status.create(key.as_str(), value.clone().into()).await {
                    Ok(_) => Ok(()),
                    // Ours, if an earlier attempt was stored unanswered.
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                        match self.status.entry(key.as_str()).await {
                            Ok(Some(entry)) if entry.value.as_ref() == value.as_slice() => Ok(()),
                            Ok(_) => Err(QueueError::Duplicate(id)),
                            Err(e) => Err(unavailable("read a status", e)),
                        }
                    }
                    Err(e) => Err(unavailable("store a status", e)),
                }
            })
            .await;
        if let Err(error) = created {
            if let Err(e) = self.stream.delete_message(ack.sequence).await {
                tracing::warn!(%id, error = %e, "could not withdraw a write whose status failed");
            }
            return Err(error);
        }
        Ok(record)
    }

    /// Publishes one write's message and awaits its acknowledgement.
    async fn publish(
        &self,
        subject: &str,
        msg_id: String,
        sealed: &[u8],
        size: u64,
        (entries, bytes): (u64, u64),
    ) -> Result<jetstream::publish::PublishAck, QueueError> {
        // Repeated with the same message id, an attempt that was stored
        // unanswered is acknowledged as a duplicate of it.
        self.patiently("publish", || async {
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID, msg_id.as_str());
            let published = async {
                self.context
                    .publish_with_headers(subject.to_owned(), headers, sealed.to_vec().into())
                    .await?
                    .await
            };
            published.await.map_err(|error| match error.kind() {
                PublishErrorKind::MaxPayloadExceeded => QueueError::TooLarge { size },
                PublishErrorKind::Other if is_full(&error) => QueueError::Full { entries, bytes },
                _ => unavailable("publish", error),
            })
        })
        .await
    }

    /// Messages on the subjects matching `filter`.
    async fn count(&self, filter: &str) -> Result<u64, QueueError> {
        Ok(self.subjects(filter).await?.iter().map(|(_, n)| n).sum())
    }

    /// The subjects matching `filter` that hold messages, with how many.
    async fn subjects(&self, filter: &str) -> Result<Vec<(String, u64)>, QueueError> {
        self.patiently("list subjects", || async {
            let mut subjects = self
                .stream
                .info_with_subjects(filter)
                .await
                .map_err(|e| unavailable("list subjects", e))?;
            let mut all = Vec::new();
            while let Some((subject, n)) = subjects
                .try_next()
                .await
                .map_err(|e| unavailable("list subjects", e))?
            {
                all.push((subject, n as u64));
            }
            Ok(all)
        })
        .await
    }

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<Record<M, O>>, QueueError> {
        Ok(self.status_entry(id).await?.map(|(record, _)| record))
    }

    /// The first message on `filter` from the sequence `from` (the
    /// stream's first without it).
    async fn message(
        &self,
        filter: &str,
        from: Option<u64>,
    ) -> Result<Option<Message>, QueueError> {
        self.patiently("read a write", || self.message_once(filter, from))
            .await
    }

    async fn message_once(
        &self,
        filter: &str,
        from: Option<u64>,
    ) -> Result<Option<Message>, QueueError> {
        let mut get = self.stream.raw_message_builder().next_by_subject(filter);
        if let Some(from) = from {
            get = get.sequence(from);
        }
        match get.send().await {
            Ok(message) => {
                let id = message
                    .headers
                    .get(MSG_ID)
                    .and_then(|v| write_id(v.as_str()))
                    .ok_or_else(|| unavailable("a message", "without a write id"))?;
                Ok(Some(Message {
                    seq: message.sequence,
                    subject: message.subject.to_string(),
                    id,
                    sealed: message.payload.to_vec(),
                    stored_at: SystemTime::from(message.time),
                }))
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable("read a write", e)),
        }
    }

    /// The sealed payload of the message at `seq` (empty: none there).
    async fn sealed_at(&self, seq: u64) -> Result<Vec<u8>, QueueError> {
        self.patiently("read a write", || async {
            match self.stream.get_raw_message(seq).await {
                Ok(message) => Ok(message.payload.to_vec()),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(Vec::new()),
                Err(e) => Err(unavailable("read a write", e)),
            }
        })
        .await
    }

    /// The holder of `res`'s lease, if any.
    async fn lease_holder(&self, res: &str) -> Result<Option<String>, QueueError> {
        let entry = self
            .patiently("read a lease", || async {
                self.leases
                    .entry(res)
                    .await
                    .map_err(|e| unavailable("read a lease", e))
            })
            .await?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Takes `res`'s lease (or finds this instance holds it).
    async fn acquire(&self, res: &str) -> Result<bool, QueueError> {
        // Repeatable: an attempt taken unanswered is found held by us.
        let taken = self
            .patiently("take a lease", || async {
                match self
                    .leases
                    .create(res, self.instance.clone().into_bytes().into())
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(unavailable("take a lease", e)),
                }
            })
            .await?;
        Ok(taken || self.lease_holder(res).await?.as_deref() == Some(self.instance.as_str()))
    }

    /// Reads the stream in sequence order (the order of acceptance), one
    /// message at a time from the first: the first message of each
    /// resource is its next write. Stops once `limit` writes are taken, so
    /// a pass costs about two calls per write it hands out, plus one per
    /// message it passes over (later writes of resources already seen,
    /// writes backing off or held by another instance).
    pub(crate) async fn due(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Record<M, O>>, QueueError> {
        let now = millis(now);
        let head = format!("{}.writes.", self.prefix);
        let every = format!("{head}>");
        let mut seen = HashSet::new();
        let mut due = Vec::new();
        let mut from = None;
        while due.len() < limit {
            let Some(Message {
                seq,
                subject,
                id,
                sealed,
                stored_at,
            }) = self.message(&every, from).await?
            else {
                break;
            };
            from = Some(seq + 1);
            let Some(res) = subject
                .strip_prefix(&head)
                .and_then(|t| t.split('.').next())
            else {
                continue;
            };
            if seen.contains(res) {
                // Not its resource's oldest write.
                continue;
            }
            let Some((mut record, _)) = self.status_entry(id).await? else {
                // Just published, its status not stored yet: the enqueue
                // is still at work (for at most publish_timeout), and the
                // write holds its resource's later ones. Older, it gave up
                // and could not withdraw it: withdraw it now, or it would
                // hold them for ever.
                let age = SystemTime::now()
                    .duration_since(stored_at)
                    .unwrap_or_default();
                if age > self.publish_timeout * 2 {
                    tracing::warn!(%id, "withdrawing a write whose status was never stored");
                    let _ = self.stream.delete_message(seq).await;
                } else {
                    seen.insert(res.to_owned());
                }
                continue;
            };
            if record.state.is_finished() {
                // Finished, but its message was not deleted: do it now. It
                // holds nothing back: its resource's next write may be due.
                let _ = self.stream.delete_message(seq).await;
                continue;
            }
            seen.insert(res.to_owned());
            if record.next_attempt_at_ms > now {
                continue;
            }
            if record.state == WriteState::Replaying {
                // Being sent, unless its holder died (the lease expired).
                if self.lease_holder(res).await?.is_some() {
                    continue;
                }
                record.state = WriteState::Queued;
            }
            record.sealed = sealed;
            if self.acquire(res).await? {
                due.push(record);
            }
        }
        Ok(due)
    }

    pub(crate) async fn next_due_ms(&self) -> Result<Option<u64>, QueueError> {
        let (entries, _, _) = self.depth().await?;
        // Other instances enqueue without waking this one: poll each second.
        Ok((entries > 0).then(|| millis(SystemTime::now()) + 1000))
    }

    pub(crate) async fn update(
        &self,
        id: Uuid,
        change: Change<O>,
    ) -> Result<Record<M, O>, QueueError> {
        let (mut record, revision) = self
            .status_entry(id)
            .await?
            .ok_or(QueueError::NotFound(id))?;
        let starting = matches!(change, Change::Start);
        let retrying = matches!(change, Change::Retry { .. });
        let finished = record.apply(change);
        let key = id.simple().to_string();
        let value = encode(id, &without_payload(&record))?;
        self.patiently("store a status", || async {
            match self
                .status
                .update(key.as_str(), value.clone().into(), revision)
                .await
            {
                Ok(_) => Ok(()),
                // Changed since it was read: by an earlier attempt of ours
                // stored unanswered (the value is ours), or by another
                // instance.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    match self.status.entry(key.as_str()).await {
                        Ok(Some(entry)) if entry.value.as_ref() == value.as_slice() => Ok(()),
                        Ok(_) => Err(QueueError::Busy),
                        Err(e) => Err(unavailable("read a status", e)),
                    }
                }
                Err(e) => Err(unavailable("store a status", e)),
            }
        })
        .await?;
        let res = token(record.resource());
        if finished && let Err(e) = self.stream.delete_message(record.seq).await {
            tracing::warn!(%id, error = %e, "could not delete a finished write's message");
        }
        if finished || retrying {
            self.patiently("release a lease", || async {
                self.leases
                    .delete(&res)
                    .await
                    .map_err(|e| unavailable("release a lease", e))
            })
            .await?;
        }
        if starting {
            self.patiently("renew a lease", || async {
                self.leases
                    .put(&res, self.instance.clone().into_bytes().into())
                    .await
                    .map(|_| ())
                    .map_err(|e| unavailable("renew a lease", e))
            })
            .await?;
        }
        if !record.state.is_finished() {
            record.sealed = self.sealed_at(record.seq).await?;
        }
        Ok(record)
    }

    pub(crate) async fn pending(&self, resource: &str) -> Result<u64, QueueError> {
        self.count(&format!("{}.writes.{}.*", self.prefix, token(resource)))
            .await
    }

    pub(crate) async fn stats(&self) -> Result<QueueStats, QueueError> {
        let (depth, bytes, first) = self.depth().await?;
        let mut oldest = None;
        if depth > 0
            && let Ok(message) = self.stream.get_raw_message(first).await
        {
            let id = message
                .headers
                .get(MSG_ID)
                .and_then(|v| write_id(v.as_str()));
            if let Some(id) = id {
                oldest = self.get(id).await?.map(|r| r.accepted_at_ms);
            }
        }
        Ok(QueueStats {
            depth,
            bytes,
            oldest_accepted_ms: oldest,
        })
    }
}

/// A write's message.
struct Message {
    seq: u64,
    subject: String,
    id: Uuid,
    sealed: Vec<u8>,
    stored_at: SystemTime,
}

/// The write id in a message id (`<id>` or `<id>.<attempt>`).
fn write_id(msg_id: &str) -> Option<Uuid> {
    Uuid::try_parse(msg_id.split('.').next()?).ok()
}

/// Whether a publish was refused because the stream is at a bound.
fn is_full(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code().0 == 10077)
}

fn without_payload<M: Clone, O: Clone>(record: &Record<M, O>) -> Record<M, O> {
    let mut copy = record.clone();
    copy.sealed = Vec::new();
    copy
}

fn decode<M: WriteMeta, O: Data>(id: Uuid, bytes: &[u8]) -> Result<Record<M, O>, QueueError> {
    match bytes.split_first() {
        Some((&FORMAT_POSTCARD, rest)) => {
            postcard::from_bytes(rest).map_err(|e| QueueError::corrupt(id, e))
        }
        _ => Err(QueueError::corrupt(id, "unknown record format")),
    }
}
