//! The clients: an open-loop mix of writes and reads through the gateways,
//! every answer recorded in the [`Ledger`].
//!
//! Requests leave at a fixed rate whatever the answers (open loop: a slow
//! platform gets more concurrent requests, not fewer). A client reaches
//! the gateways as through a Kubernetes Service: each request goes to the
//! next gateway, and a refused connection (a gateway that died and is not
//! yet out of the endpoints) is tried on the following one. A write whose
//! outcome the client cannot know (a 5xx, a cut connection, a 409 while
//! its first attempt still runs) is retried with the same `Idempotency-Key`
//! and the same `If-Match`, after `Retry-After`, as a careful client does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How often an unknown write outcome is retried with its key.
const ATTEMPTS: usize = 4;
/// The longest `Retry-After` a client honours before retrying.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3);
/// How long a client follows a queued write (`/api/requests/{id}`).
const FOLLOW: Duration = Duration::from_secs(180);
/// Requests in flight beyond which the generator sheds its next ticks.
const MAX_IN_FLIGHT: usize = 4096;

/// What a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum OpKind {
    Create,
    Update,
    Status,
    Replay,
    Get,
    List,
    History,
    Secrets,
    Follow,
}

impl OpKind {
    pub(crate) fn is_write(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Status | Self::Replay
        )
    }
}

/// How a request ended, as the client saw it.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// An HTTP answer.
    Status {
        status: u16,
        /// `Retry-After` in seconds, when sent (1 when not a number).
        retry_after: Option<u64>,
        /// The problem's `error` code, if the body was one.
        error: Option<String>,
    },
    /// No HTTP answer (refused, reset, timed out).
    Transport,
}

impl Answer {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Transport => None,
        }
    }
}

/// One request and its answer.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) kind: OpKind,
    /// Sent, since the run started.
    pub(crate) sent: Duration,
    pub(crate) latency: Duration,
    pub(crate) gateway: usize,
    pub(crate) answer: Answer,
}

/// How a write was acknowledged.
#[derive(Clone, Debug)]
pub(crate) enum Ack {
    /// 200/201 at once: the store and its version after the write.
    Done { store: String, version: i64 },
    /// 202: the gateway queued it; its request id, and what it became.
    Queued {
        request: String,
        outcome: QueuedOutcome,
    },
}

/// What a queued write became.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum QueuedOutcome {
    /// Applied upstream: the status and the store and version it made.
    Completed {
        status: u16,
        store: String,
        version: i64,
    },
    /// A terminal failure, its reason visible at the status resource.
    Failed { reason: String },
    /// Never finished within [`FOLLOW`].
    Unfinished { last: String },
}

/// One write the clients made (every attempt with one key).
#[derive(Clone, Debug)]
pub(crate) struct Write {
    /// The marker in the write's `config.op`: finds its effect in the
    /// database.
    pub(crate) op: String,
    pub(crate) kind: OpKind,
    /// The store it changed (`None` for a create until acknowledged).
    pub(crate) store: Option<String>,
    /// The secrets a create sent.
    pub(crate) secrets: Option<Value>,
    /// Every acknowledgement it got (a retried key may get several; all
    /// must name the same effect).
    pub(crate) acks: Vec<Ack>,
}

/// Everything the clients saw.
#[derive(Default)]
pub(crate) struct Ledger {
    pub(crate) samples: Vec<Sample>,
    pub(crate) writes: Vec<Write>,
    /// Ticks dropped because [`MAX_IN_FLIGHT`] requests were in flight.
    pub(crate) shed: usize,
    /// Secrets read back different from those written.
    pub(crate) secrets_mismatch: Vec<String>,
    /// From a 202 until the client saw its write finished.
    pub(crate) queued_for: Vec<Duration>,
}

/// A store the clients own, with what they know of it.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    version: i64,
    status: String,
    busy: bool,
    secrets: Option<Value>,
}

/// The shared state of the clients.
pub(crate) struct Clients {
    http: reqwest::Client,
    gateways: Vec<String>,
    /// One token per client (each its own subject).
    tokens: Vec<String>,
    started: Instant,
    next_gateway: AtomicUsize,
    next_op: AtomicUsize,
    seed: u64,
    stores: Mutex<Vec<Known>>,
    /// Create bodies by op, for replays of the same key.
    /// Create bodies by op, with the client that sent them (a key
    /// belongs to its subject: a replay comes from the same client).
    creates: Mutex<Vec<(String, Value, usize)>>,
    pub(crate) ledger: Mutex<Ledger>,
}

impl Clients {
    pub(crate) fn new(
        gateways: Vec<String>,
        tokens: Vec<String>,
        seed: u64,
        started: Instant,
    ) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            // A queued write may wait out a NATS leader election
            // (publish_timeout 15 s) after the route's 2 s.
            .timeout(Duration::from_secs(25))
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Clients {
            http,
            gateways,
            tokens,
            started,
            next_gateway: AtomicUsize::new(0),
            next_op: AtomicUsize::new(0),
            seed,
            stores: Mutex::new(Vec::new()),
            creates: Mutex::new(Vec::new()),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    /// Sends `method path` (with `headers` and a JSON `body`) through the
    /// gateways, recording the answer; returns it with the JSON body.
    async fn send(
        &self,
        token: &str,
        kind: OpKind,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> (Answer, Value) {
        let sent = Instant::now();
        let first = self.next_gateway.fetch_add(1, Ordering::Relaxed);
        let mut last = (first % self.gateways.len(), Answer::Transport, Value::Null);
        for i in 0..self.gateways.len() {
            let gateway = (first + i) % self.gateways.len();
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.gateways[gateway]))
                .bearer_auth(token);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().ok().and_then(|v| v.parse().ok()).unwrap_or(1));
                    let json: Value = response.json().await.unwrap_or_default();
                    let error = json["error"].as_str().map(str::to_owned);
                    last = (
                        gateway,
                        Answer::Status {
                            status,
                            retry_after,
                            error,
                        },
                        json,
                    );
                    break;
                }
                // Not sent: the next endpoint, as a Service would.
                Err(e) if e.is_connect() => {
                    last = (gateway, Answer::Transport, Value::Null);
                }
                Err(_) => {
                    last = (gateway, Answer::Transport, Value::Null);
                    break;
                }
            }
        }
        let (gateway, answer, json) = last;
        self.ledger.lock().expect("ledger").samples.push(Sample {
            kind,
            sent: sent.duration_since(self.started),
            latency: sent.elapsed(),
            gateway,
            answer: answer.clone(),
        });
        (answer, json)
    }

    /// A write with its key, retried while its outcome is unknown.
    async fn write(
        &self,
        token: &str,
        kind: OpKind,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &Value,
    ) -> (Answer, Value) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (answer, json) = self
                .send(token, kind, method.clone(), path, headers, Some(body))
                .await;
            let unknown = match &answer {
                Answer::Status {
                    status,
                    retry_after,
                    ..
                } => (*status >= 500 || *status == 409 || *status == 429)
                    .then(|| retry_after.map(Duration::from_secs)),
                Answer::Transport => Some(None),
            };
            match unknown {
                Some(wait) if attempt < ATTEMPTS => {
                    let wait = wait
                        .unwrap_or(Duration::from_millis(500))
                        .min(MAX_RETRY_AFTER);
                    tokio::time::sleep(wait).await;
                }
                _ => return (answer, json),
            }
        }
    }

    /// Follows queued write `request` until it is finished.
    async fn follow(&self, token: &str, request: &str) -> QueuedOutcome {
        let deadline = Instant::now() + FOLLOW;
        let path = format!("/api/requests/{request}");
        let mut last = String::from("never answered");
        let mut pause = Duration::from_millis(250);
        let accepted = Instant::now();
        while Instant::now() < deadline {
            let (answer, record) = self
                .send(token, OpKind::Follow, Method::GET, &path, &[], None)
                .await;
            if answer.status() == Some(200) {
                let finished = matches!(record["status"].as_str(), Some("completed" | "failed"));
                if finished {
                    self.ledger
                        .lock()
                        .expect("ledger")
                        .queued_for
                        .push(accepted.elapsed());
                }
                match record["status"].as_str() {
                    Some("completed") => {
                        let status = record["response"]["status"].as_u64().unwrap_or(0) as u16;
                        let store = &record["response"]["body"]["store"];
                        return QueuedOutcome::Completed {
                            status,
                            store: store["id"].as_str().unwrap_or_default().to_owned(),
                            version: store["version"].as_i64().unwrap_or(0),
                        };
                    }
                    Some("failed") => {
                        return QueuedOutcome::Failed {
                            reason: format!(
                                "{} {}",
                                record["response"]["status"], record["lastError"]
                            ),
                        };
                    }
                    _ => last = record["status"].to_string(),
                }
            } else {
                last = format!("{answer:?}");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        QueuedOutcome::Unfinished { last }
    }

    fn op_id(&self, prefix: &str) -> String {
        let n = self.next_op.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{n}")
    }

    /// Takes a store no other client is changing (for a write) or any
    /// store (for a read).
    fn pick(&self, rng: &mut fastrand::Rng, for_write: bool) -> Option<Known> {
        let mut stores = self.stores.lock().expect("stores");
        let candidates: Vec<usize> = (0..stores.len())
            .filter(|&i| !for_write || (!stores[i].busy && stores[i].status != "DECOMMISSIONED"))
            .collect();
        let &i = candidates.get(rng.usize(..candidates.len().max(1)))?;
        if for_write {
            stores[i].busy = true;
        }
        Some(stores[i].clone())
    }

    fn release(&self, id: &str, version: Option<i64>, status: Option<&str>) {
        let mut stores = self.stores.lock().expect("stores");
        if let Some(known) = stores.iter_mut().find(|s| s.id == id) {
            known.busy = false;
            if let Some(version) = version {
                known.version = known.version.max(version);
            }
            if let Some(status) = status {
                known.status = status.to_owned();
            }
        }
    }

    fn record(&self, write: Write) {
        self.ledger.lock().expect("ledger").writes.push(write);
    }

    /// `POST /api/stores` with a fresh key (a third with secrets).
    async fn create(&self, rng: &mut fastrand::Rng, client: usize) {
        let op = self.op_id("c");
        let secrets =
            (rng.u8(..3) == 0).then(|| json!({ "API_TOKEN": format!("s-{:016x}", rng.u64(..)) }));
        let mut body = json!({ "name": format!("Chaos {op}"), "config": { "op": op } });
        if let Some(secrets) = &secrets {
            body["secrets"] = secrets.clone();
        }
        self.creates
            .lock()
            .expect("creates")
            .push((op.clone(), body.clone(), client));
        self.send_create(client, op, body, secrets, OpKind::Create)
            .await;
    }

    /// The same create again, with its key: the first answer, never a
    /// second store.
    async fn replay(&self, rng: &mut fastrand::Rng) {
        let picked = {
            let creates = self.creates.lock().expect("creates");
            (!creates.is_empty()).then(|| creates[rng.usize(..creates.len())].clone())
        };
        if let Some((op, body, client)) = picked {
            let secrets = body.get("secrets").cloned();
            self.send_create(client, op, body, secrets, OpKind::Replay)
                .await;
        }
    }

    async fn send_create(
        &self,
        client: usize,
        op: String,
        body: Value,
        secrets: Option<Value>,
        kind: OpKind,
    ) {
        let token = self.tokens[client].as_str();
        let headers = [("idempotency-key", self.key(&op))];
        let (answer, json) = self
            .write(token, kind, Method::POST, "/api/stores", &headers, &body)
            .await;
        let ack = match answer.status() {
            Some(200 | 201) => Some(Ack::Done {
                store: json["store"]["id"].as_str().unwrap_or_default().to_owned(),
                version: json["store"]["version"].as_i64().unwrap_or(0),
            }),
            Some(202) => {
                let request = json["requestId"].as_str().unwrap_or_default().to_owned();
                let outcome = self.follow(token, &request).await;
                Some(Ack::Queued { request, outcome })
            }
            _ => None,
        };
        let store = ack.as_ref().and_then(|ack| match ack {
            Ack::Done { store, .. } => Some(store.clone()),
            Ack::Queued {
                outcome: QueuedOutcome::Completed { store, .. },
                ..
            } => Some(store.clone()),
            Ack::Queued { .. } => None,
        });
        if let Some(id) = &store
            && kind == OpKind::Create
        {
            self.stores.lock().expect("stores").push(Known {
                id: id.clone(),
                version: 1,
                status: "PROVISIONING".into(),
                busy: false,
                secrets: secrets.clone(),
            });
        }
        self.record(Write {
            op,
            kind,
            store,
            secrets,
            acks: ack.into_iter().collect(),
        });
    }

    /// `PUT /api/stores/{id}` with `If-Match`: a config change, or a
    /// status transition (`status`).
    async fn update(&self, rng: &mut fastrand::Rng, client: usize, status: bool) {
        let token = self.tokens[client].as_str();
        let Some(known) = self.pick(rng, true) else {
            return;
        };
        let op = self.op_id("u");
        let mut body = json!({ "config": { "op": op } });
        let kind = if status {
            let next = match (known.status.as_str(), rng.u8(..4)) {
                ("PROVISIONING", 0) | ("ACTIVE", _) => "DECOMMISSIONED",
                _ => "ACTIVE",
            };
            body["status"] = json!(next);
            OpKind::Status
        } else {
            OpKind::Update
        };
        let path = format!("/api/stores/{}", known.id);
        let headers = [
            ("idempotency-key", self.key(&op)),
            ("if-match", format!("\"{}\"", known.version)),
        ];
        let (answer, json) = self
            .write(token, kind, Method::PUT, &path, &headers, &body)
            .await;
        let mut version = None;
        let mut now = None;
        let ack = match answer.status() {
            Some(200 | 201) => {
                version = json["store"]["version"].as_i64();
                now = json["store"]["status"].as_str().map(str::to_owned);
                Some(Ack::Done {
                    store: known.id.clone(),
                    version: version.unwrap_or(0),
                })
            }
            Some(202) => {
                let request = json["requestId"].as_str().unwrap_or_default().to_owned();
                let outcome = self.follow(token, &request).await;
                if let QueuedOutcome::Completed { version: v, .. } = &outcome {
                    version = Some(*v);
                    now = body["status"].as_str().map(str::to_owned);
                }
                Some(Ack::Queued { request, outcome })
            }
            Some(412) => {
                version = json["currentVersion"].as_i64();
                None
            }
            _ => None,
        };
        if version.is_none() && !matches!(answer.status(), Some(412 | 422 | 400)) {
            // Outcome unknown: learn the store's version from a fresh read.
            let (answer, json) = self
                .send(token, OpKind::Get, Method::GET, &path, &[], None)
                .await;
            if answer.status() == Some(200) && json.get("meta").is_none() {
                version = json["store"]["version"].as_i64();
                now = json["store"]["status"].as_str().map(str::to_owned);
            }
        }
        self.release(&known.id, version, now.as_deref());
        self.record(Write {
            op,
            kind,
            store: Some(known.id),
            secrets: None,
            acks: ack.into_iter().collect(),
        });
    }

    async fn read(&self, rng: &mut fastrand::Rng, client: usize, kind: OpKind) {
        let token = self.tokens[client].as_str();
        let known = self.pick(rng, false);
        let path = match (kind, &known) {
            (OpKind::List, _) => "/api/stores?limit=20".to_owned(),
            (OpKind::History, Some(k)) => format!("/api/stores/{}/history", k.id),
            (OpKind::Secrets, Some(k)) => format!("/api/stores/{}/secrets", k.id),
            (_, Some(k)) => format!("/api/stores/{}", k.id),
            (_, None) => return,
        };
        let (answer, json) = self.send(token, kind, Method::GET, &path, &[], None).await;
        if kind == OpKind::Secrets
            && answer.status() == Some(200)
            && let Some(known) = known
        {
            let expected = known.secrets.unwrap_or_else(|| json!({}));
            if json["secrets"] != expected {
                self.ledger
                    .lock()
                    .expect("ledger")
                    .secrets_mismatch
                    .push(format!(
                        "{}: wrote {expected}, read {}",
                        known.id, json["secrets"]
                    ));
            }
        }
    }

    fn key(&self, op: &str) -> String {
        format!("chaos-{}-{op}", self.seed)
    }

    /// One request of the mix, chosen by `rng`.
    async fn one(&self, mut rng: fastrand::Rng) {
        let have_stores = !self.stores.lock().expect("stores").is_empty();
        let client = rng.usize(..self.tokens.len());
        match (rng.u8(..100), have_stores) {
            (0..25, _) | (_, false) => self.create(&mut rng, client).await,
            (25..45, _) => self.update(&mut rng, client, false).await,
            (45..53, _) => self.update(&mut rng, client, true).await,
            (53..60, _) => self.replay(&mut rng).await,
            (60..75, _) => self.read(&mut rng, client, OpKind::Get).await,
            (75..85, _) => self.read(&mut rng, client, OpKind::List).await,
            (85..93, _) => self.read(&mut rng, client, OpKind::History).await,
            _ => self.read(&mut rng, client, OpKind::Secrets).await,
        }
    }
}

/// Drives the mix at `rate` requests per second until `until`, then waits
/// for every request (and every queued write it follows) to finish.
pub(crate) async fn drive(clients: Arc<Clients>, rate: u32, until: Instant) {
    let mut rng = fastrand::Rng::with_seed(clients.seed);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut running = JoinSet::new();
    while Instant::now() < until {
        ticks.tick().await;
        while running.try_join_next().is_some() {}
        if running.len() >= MAX_IN_FLIGHT {
            clients.ledger.lock().expect("ledger").shed += 1;
            continue;
        }
        let op_rng = rng.fork();
        let clients = Arc::clone(&clients);
        running.spawn(async move { clients.one(op_rng).await });
    }
    while running.join_next().await.is_some() {}
}

/// The secrets each acknowledged store was created with, for the audit.
pub(crate) fn written_secrets(ledger: &Ledger) -> HashMap<String, Value> {
    ledger
        .writes
        .iter()
        .filter(|w| w.kind == OpKind::Create)
        .filter_map(|w| Some((w.store.clone()?, w.secrets.clone()?)))
        .collect()
}
