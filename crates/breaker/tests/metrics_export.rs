//! Export through the `metrics` facade (feature `metrics`), captured by a
//! small in-memory recorder.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use breaker::{Breaker, Policy, Registry, Window};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Last value of every metric, by `name{label=value,...}`.
#[derive(Default, Clone)]
struct Values(
    /// The values, shared with every handle.
    Arc<Mutex<BTreeMap<String, f64>>>,
);

impl Values {
    fn get(&self, key: &str) -> Option<f64> {
        self.0.lock().ok()?.get(key).copied()
    }
}

/// One metric's handle.
struct Handle {
    /// `name{labels}`.
    key: String,
    /// Where the value goes.
    values: Values,
}

impl Handle {
    fn update(&self, f: impl FnOnce(f64) -> f64) {
        if let Ok(mut values) = self.values.0.lock() {
            let entry = values.entry(self.key.clone()).or_insert(0.0);
            *entry = f(*entry);
        }
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.update(|old| old + value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|_| value as f64);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.update(|old| old + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|old| old - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.update(|_| value);
    }
}

/// Hands out [`Handle`]s writing to one [`Values`].
struct TestRecorder(
    /// Where values go.
    Values,
);

impl TestRecorder {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        Arc::new(Handle {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            values: self.0.clone(),
        })
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

#[test]
fn exports_state_transitions_counters_and_rates() {
    let values = Values::default();
    let recorder = TestRecorder(values.clone());
    metrics::with_local_recorder(&recorder, || {
        breaker::describe_metrics();
        let policy = Policy::builder()
            .window(Window::count(10))
            .minimum_calls(4)
            .build()
            .expect("valid policy");
        let registry = Registry::new([("metered", policy)]).expect("valid");
        let breaker: &Breaker = registry.get("metered").expect("configured");
        for result in [Ok(()), Err(()), Err(()), Err(())] {
            let _ = breaker.call(|| result);
        }
        let _ = breaker.call(|| Ok::<_, ()>(()));
        registry.export_metrics();
    });
    assert_eq!(values.get("breaker_state{breaker=metered}"), Some(1.0));
    assert_eq!(
        values.get("breaker_transitions_total{breaker=metered,to=open}"),
        Some(1.0)
    );
    assert_eq!(
        values.get("breaker_calls_total{breaker=metered,outcome=success}"),
        Some(1.0)
    );
    assert_eq!(
        values.get("breaker_calls_total{breaker=metered,outcome=failure}"),
        Some(3.0)
    );
    assert_eq!(
        values.get("breaker_rejected_total{breaker=metered}"),
        Some(1.0)
    );
    assert_eq!(
        values.get("breaker_failure_rate{breaker=metered}"),
        Some(75.0)
    );
}
