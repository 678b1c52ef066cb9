//! The tower layer (feature `tower`), on tokio's paused clock.
#![cfg(feature = "tower")]

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breaker::{
    Breaker, BreakerLayer, BreakerService, CallError, HttpClassifier, Policy, RejectReason, State,
    Window,
};
use tower_layer::Layer;
use tower_service::Service;

const SECOND: Duration = Duration::from_secs(1);

/// An upstream answering with the requested status; 0 means "connection
/// refused", and it takes `delay` to answer.
#[derive(Clone)]
struct Upstream {
    /// How many requests reached it.
    calls: Arc<AtomicUsize>,
    /// How long it takes to answer.
    delay: Duration,
}

impl Upstream {
    fn new(delay: Duration) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            delay,
        }
    }
}

impl Service<u16> for Upstream {
    type Response = u16;
    type Error = &'static str;
    type Future = Pin<Box<dyn Future<Output = Result<u16, &'static str>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, status: u16) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if status == 0 {
                Err("connection refused")
            } else {
                Ok(status)
            }
        })
    }
}

fn breaker() -> Breaker {
    let policy = Policy::builder()
        .window(Window::count(10))
        .minimum_calls(2)
        .open_wait(30 * SECOND)
        .call_timeout(5 * SECOND)
        .build()
        .expect("valid policy");
    Breaker::new("upstream", policy)
}

async fn send<S: Service<u16>>(service: &mut S, status: u16) -> Result<S::Response, S::Error> {
    poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(status).await
}

fn is_rejected<T: std::fmt::Debug, E: std::fmt::Debug>(result: &Result<T, CallError<E>>) -> bool {
    matches!(result, Err(CallError::Rejected(_)))
}

#[tokio::test(start_paused = true)]
async fn reject_mode_fails_fast_without_calling_upstream() {
    let breaker = breaker();
    let upstream = Upstream::new(Duration::ZERO);
    let mut service = BreakerLayer::new(breaker.clone()).layer(upstream.clone());
    for _ in 0..2 {
        let result = send(&mut service, 0).await;
        assert!(matches!(
            result,
            Err(CallError::Inner("connection refused"))
        ));
    }
    assert_eq!(breaker.state(), State::Open);
    let result = send(&mut service, 200).await;
    assert!(is_rejected(&result));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn http_classifier_ignores_client_errors() {
    let breaker = breaker();
    let mut service = BreakerLayer::new(breaker.clone())
        .classifier(HttpClassifier)
        .layer(Upstream::new(Duration::ZERO));
    for _ in 0..5 {
        assert_eq!(send(&mut service, 404).await.ok(), Some(404));
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().totals.ignored, 5);
    for _ in 0..2 {
        assert_eq!(send(&mut service, 503).await.ok(), Some(503));
    }
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn call_timeout_applies_to_the_response() {
    let breaker = breaker();
    let mut service = BreakerLayer::new(breaker.clone()).layer(Upstream::new(3600 * SECOND));
    let result = send(&mut service, 200).await;
    assert!(matches!(result, Err(CallError::Timeout(limit)) if limit == 5 * SECOND));
    assert_eq!(breaker.snapshot().totals.timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn backpressure_holds_poll_ready_until_a_probe_is_allowed() {
    let breaker = breaker();
    let upstream = Upstream::new(Duration::ZERO);
    let mut service: BreakerService<Upstream, _> = BreakerLayer::new(breaker.clone())
        .backpressure(60 * SECOND)
        .layer(upstream.clone());
    for _ in 0..2 {
        let _ = send(&mut service, 0).await;
    }
    assert_eq!(breaker.state(), State::Open);
    {
        let mut ready = pin!(poll_fn(|cx| service.poll_ready(cx)));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(ready.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(29 * SECOND).await;
        assert!(ready.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(SECOND).await;
        assert!(matches!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    }
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(service.call(200).await.ok(), Some(200));
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn backpressure_gives_up_after_max_wait() {
    let breaker = breaker();
    let mut service = BreakerLayer::new(breaker.clone())
        .backpressure(2 * SECOND)
        .layer(Upstream::new(Duration::ZERO));
    for _ in 0..2 {
        let _ = send(&mut service, 0).await;
    }
    let result = send(&mut service, 200).await;
    match result {
        Err(CallError::Rejected(rejected)) => {
            assert_eq!(rejected.reason(), RejectReason::Open);
            assert_eq!(rejected.retry_after(), Some(28 * SECOND));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_at_once_even_with_backpressure() {
    let breaker = breaker();
    breaker.force_open();
    let mut service = BreakerLayer::new(breaker.clone())
        .backpressure(60 * SECOND)
        .layer(Upstream::new(Duration::ZERO));
    let result = send(&mut service, 200).await;
    assert!(is_rejected(&result));
}

#[tokio::test(start_paused = true)]
async fn dropped_response_future_frees_the_probe() {
    let breaker = breaker();
    let mut service = BreakerLayer::new(breaker.clone()).layer(Upstream::new(10 * SECOND));
    breaker.force_open();
    breaker.reset();
    for _ in 0..2 {
        let _ = breaker.call(|| Err::<(), _>(()));
    }
    tokio::time::advance(30 * SECOND).await;
    poll_fn(|cx| service.poll_ready(cx)).await.expect("ready");
    let response = service.call(200);
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(breaker.try_acquire().is_err());
    drop(response);
    assert_eq!(breaker.snapshot().totals.cancelled, 1);
    assert!(breaker.try_acquire().is_ok_and(|permit| permit.is_probe()));
}
