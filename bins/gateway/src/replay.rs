//! Replays the queued writes ([`crate::queue`]) when their upstream lets
//! calls through again: in arrival order per resource (the resources of a
//! pass are sent together, each its oldest write), with back-off on
//! 5xx, connection errors, timeouts and `409 IDEMPOTENCY_KEY_IN_USE` (the
//! first attempt still running upstream). Any other answer (2xx, and 4xx
//! such as a 409 version conflict) completes the write with that answer.
//!
//! Every replay carries the write's `Idempotency-Key` and the subject that
//! sent it ([`store_domain::ACTOR_HEADER`]), so a replay whose first
//! attempt reached the upstream (a timeout after sending, a crash before
//! the outcome was recorded) is answered from that subject's idempotency
//! record instead of being applied twice, and the change is recorded as
//! that subject's.
//!
//! The loop also purges finished records past `queue_retention`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    body::Body,
    http::{HeaderName, HeaderValue, Method, Request, Uri, header},
};
use breaker::{ExponentialBackoff, Outcome as BreakerOutcome};
use http_body_util::{BodyExt as _, Limited};
use store_domain::{ErrorCode, Problem};

use crate::{
    queue::{Outcome, QueueError, QueuedWrite, WriteQueue},
    state::Gateway,
};

/// How many due writes one pass takes.
const BATCH: usize = 32;
/// The longest a pass waits for new work (so an opened breaker's half-open
/// probe time is noticed without a wake-up).
const IDLE: Duration = Duration::from_secs(1);
/// The largest upstream answer kept as a write's outcome.
const MAX_OUTCOME_BYTES: usize = 1024 * 1024;

/// The replay back-off: 0.5 s doubling to 30 s, with ±25 % jitter. The
/// workspace's back-off takes its jitter off the top, so it is written as
/// 0.625 s (0.5 s + 25 %) doubling to 37.5 s (30 s + 25 %), minus up to
/// 40 % (1.25 − 40 % of 1.25 = 0.75).
const REPLAY_BACKOFF: ExponentialBackoff =
    ExponentialBackoff::new(Duration::from_millis(625), Duration::from_millis(37_500)).jitter(0.4);

/// The back-off after `attempts` failed attempts (from 1): 0.5 s doubling to
/// 30 s, with ±25 % jitter.
pub fn backoff(attempts: u32) -> Duration {
    REPLAY_BACKOFF.delay(attempts.saturating_sub(1))
}

/// How often finished records past their retention are purged: a quarter
/// of the retention, between 100 ms and a minute.
fn purge_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// The replay loop, until `shutdown` resolves.
pub async fn run(gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    let Some(degraded) = gateway.degraded.as_ref() else {
        return;
    };
    let (queue, wake) = (degraded.queue.clone(), Arc::clone(&degraded.wake));
    tokio::pin!(shutdown);
    let purge_every = purge_interval(queue.limits().retention);
    let mut next_purge = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_purge {
            match queue.purge(SystemTime::now()).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "finished queued writes purged"),
                Err(error) => tracing::error!(%error, "purging the write queue failed"),
            }
            next_purge = tokio::time::Instant::now() + purge_every;
        }
        let mut handed_out = 0;
        match queue.due(SystemTime::now(), BATCH).await {
            Ok(due) => {
                handed_out = due.len();
                let mut due = due.into_iter();
                // The first alone: while the breaker is half-open it is the
                // probe, and writes sent beside it would be refused and put
                // off until the breaker's next window.
                if let Some(first) = due.next() {
                    replay(&gateway, &queue, first).await;
                }
                // The rest together: each is its resource's next write, so
                // every resource keeps its order.
                let mut sending = tokio::task::JoinSet::new();
                for write in due {
                    let (gateway, queue) = (Arc::clone(&gateway), queue.clone());
                    sending.spawn(async move { replay(&gateway, &queue, write).await });
                }
                while sending.join_next().await.is_some() {}
            }
            Err(error) => tracing::error!(%error, "reading the write queue failed"),
        }
        crate::metrics::queue_gauges(&queue).await;
        if handed_out > 0 {
            // More may be due at once (the shared queue's next_due_ms only
            // says "within a second"): the next pass starts now, unless
            // the gateway is stopping.
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::task::yield_now() => continue,
            }
        }
        let wait = match queue.next_due_ms().await {
            Ok(Some(at)) => {
                let now = crate::queue::millis(SystemTime::now());
                Duration::from_millis(at.saturating_sub(now)).min(IDLE)
            }
            _ => IDLE,
        }
        .min(next_purge.saturating_duration_since(tokio::time::Instant::now()));
        tokio::select! {
            () = &mut shutdown => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One attempt at `write`.
async fn replay(gateway: &Gateway, queue: &WriteQueue, write: QueuedWrite) {
    let id = write.id;
    let now = SystemTime::now();
    let age = now.duration_since(write.accepted_at()).unwrap_or_default();
    if age > queue.limits().max_age {
        let reason = "expired: older than the upstream's idempotency retention, not replayed";
        finish(id, "expired", queue.fail(id, reason, now)).await;
        return;
    }
    let Some(route) = gateway.routes.by_name(&write.meta.route) else {
        let reason = "the route is no longer configured";
        finish(id, "failed", queue.fail(id, reason, now)).await;
        return;
    };
    let permit = match route.breaker.try_acquire_owned() {
        Ok(permit) => permit,
        Err(rejected) => {
            // Not an attempt: the breaker says when to come back.
            let at = now + rejected.retry_after().unwrap_or(IDLE);
            let _ = queue.retry(id, at, "circuit open").await;
            return;
        }
    };
    let started = match queue.start(id).await {
        Ok(started) => started,
        Err(error) => {
            permit.record(BreakerOutcome::Ignore);
            tracing::error!(%error, request_id = %id, "marking a queued write as replaying failed");
            return;
        }
    };
    let payload = match queue.payload(&started) {
        Ok(payload) => payload,
        Err(error) => {
            permit.record(BreakerOutcome::Ignore);
            let reason = format!("the queued payload cannot be read: {error}");
            finish(id, "failed", queue.fail(id, reason, SystemTime::now())).await;
            return;
        }
    };
    let request = match build(&route, &started, payload) {
        Some(request) => request,
        None => {
            permit.record(BreakerOutcome::Ignore);
            let reason = "the queued request cannot be rebuilt";
            finish(id, "failed", queue.fail(id, reason, SystemTime::now())).await;
            return;
        }
    };
    let answer = tokio::time::timeout(route.timeout, gateway.client.request(request)).await;
    let retry_at = SystemTime::now() + backoff(started.attempts);
    match answer {
        Ok(Ok(response)) if response.status().is_server_error() => {
            permit.record(BreakerOutcome::Failure);
            let error = format!("upstream answered {}", response.status());
            finish(id, "retried", queue.retry(id, retry_at, error)).await;
        }
        Ok(Ok(response)) => {
            permit.record(BreakerOutcome::Success);
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = match Limited::new(response.into_body(), MAX_OUTCOME_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes().to_vec(),
                // The write was applied; only its answer is lost.
                Err(_) => Vec::new(),
            };
            if status == 409 && still_running(&body) {
                // The first attempt (sent before a timeout or a crash) is
                // still running upstream: ask again later for its answer.
                let error = "the upstream is still running the first attempt".to_owned();
                finish(id, "retried", queue.retry(id, retry_at, error)).await;
                return;
            }
            let outcome = Outcome {
                status,
                content_type,
                body,
            };
            finish(
                id,
                "completed",
                queue.complete(id, outcome, SystemTime::now()),
            )
            .await;
        }
        Ok(Err(error)) => {
            permit.record(BreakerOutcome::Failure);
            let error = format!("upstream unreachable: {error}");
            finish(id, "retried", queue.retry(id, retry_at, error)).await;
        }
        Err(_) => {
            permit.record(BreakerOutcome::Timeout);
            let error = format!("upstream timed out after {:?}", route.timeout);
            finish(id, "retried", queue.retry(id, retry_at, error)).await;
        }
    }
}

/// Whether a 409 says the key's first request is still running
/// ([`ErrorCode::IdempotencyKeyInUse`]), not a conflict of the write
/// itself: the store API's problem body, its code compared as a typed
/// value.
fn still_running(body: &[u8]) -> bool {
    serde_json::from_slice::<Problem>(body)
        .ok()
        .and_then(|problem| problem.code())
        == Some(ErrorCode::IdempotencyKeyInUse)
}

/// Records an attempt's end (`change`) and counts it by `outcome`.
async fn finish(
    id: uuid::Uuid,
    outcome: &'static str,
    change: impl Future<Output = Result<QueuedWrite, QueueError>>,
) {
    metrics::counter!("gateway_replays_total", "outcome" => outcome).increment(1);
    if let Err(error) = change.await {
        tracing::error!(%error, request_id = %id, "recording a replay's outcome failed");
    }
}

/// The upstream request of `write`.
fn build(
    route: &crate::routes::Route,
    write: &QueuedWrite,
    payload: crate::queue::Payload,
) -> Option<Request<Body>> {
    let uri: Uri = format!(
        "{}://{}{}{}",
        route.scheme, route.authority, route.base_path, write.meta.path_and_query
    )
    .parse()
    .ok()?;
    let method = Method::from_bytes(write.meta.method.as_bytes()).ok()?;
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in &payload.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        request = request.header(name, value);
    }
    if let Ok(actor) = store_domain::Actor::new(&write.subject) {
        request = request.header(store_domain::ACTOR_HEADER, actor.to_header_value());
    }
    request = request
        .header("idempotency-key", &write.meta.idempotency_key)
        .header("x-request-id", write.id.to_string())
        .header(header::CONTENT_LENGTH, payload.body.len());
    request.body(Body::from(payload.body)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_use_is_told_by_its_typed_code() {
        let body = |code| serde_json::to_vec(&Problem::new(code, "req-1")).unwrap();
        assert!(still_running(&body(ErrorCode::IdempotencyKeyInUse)));
        assert!(!still_running(&body(ErrorCode::ConcurrencyError)));
        assert!(!still_running(b"IDEMPOTENCY_KEY_IN_USE"));
        assert!(!still_running(br#"{"message":"IDEMPOTENCY_KEY_IN_USE"}"#));
    }

    /// The bounds of the back-off after `attempts`: 0.5 s doubling to 30 s,
    /// ±25 %.
    fn bounds(attempts: u32) -> (Duration, Duration) {
        let exponent = attempts.saturating_sub(1).min(16);
        let middle = (Duration::from_millis(500) * 2u32.pow(exponent)).min(Duration::from_secs(30));
        (middle.mul_f64(0.75), middle.mul_f64(1.25))
    }

    #[test]
    fn replays_back_off_from_half_a_second_to_thirty_with_a_quarter_of_jitter() {
        for attempts in [0, 1, 2, 3, 6, 7, 8, 20, u32::MAX] {
            let (low, high) = bounds(attempts);
            let n = attempts.saturating_sub(1);
            assert_eq!(REPLAY_BACKOFF.delay_with(n, 0.0), high, "{attempts}");
            assert_eq!(REPLAY_BACKOFF.delay_with(n, 1.0), low, "{attempts}");
            for _ in 0..50 {
                let drawn = backoff(attempts);
                assert!(low <= drawn && drawn <= high, "{attempts}: {drawn:?}");
            }
        }
        assert_eq!(bounds(1).0, Duration::from_millis(375));
        assert_eq!(bounds(9).1, Duration::from_millis(37_500));
    }
}
