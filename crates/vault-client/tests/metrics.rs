//! Feature `metrics` (the test needs it: `required-features`): what a
//! client records, through a recorder installed for this test binary only.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::json;

type Store = Arc<Mutex<BTreeMap<String, f64>>>;

/// One metric: `name{label=value,...}` in the store.
struct Slot {
    key: String,
    store: Store,
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut f64)) {
        let mut store = self.store.lock().unwrap();
        f(store.entry(self.key.clone()).or_insert(0.0));
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.update(|v| *v += value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|v| *v = value as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.update(|v| *v += value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| *v -= value);
    }
    fn set(&self, value: f64) {
        self.update(|v| *v = value);
    }
}

impl HistogramFn for Slot {
    fn record(&self, _value: f64) {
        // Count the samples.
        self.update(|v| *v += 1.0);
    }
}

#[derive(Clone, Default)]
struct Memory(Store);

impl Memory {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Slot {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            store: Arc::clone(&self.0),
        })
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.0.lock().unwrap().get(key).copied()
    }
}

impl Recorder for Memory {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.slot(key))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fallbacks_and_breaker_state_are_recorded() {
    let memory = Memory::default();
    metrics::set_global_recorder(memory.clone()).expect("the only recorder of this binary");
    vault_client::describe_metrics();

    let bao = common::bao().await;
    common::enable_kv2(&bao, "secret").await;
    bao.kv_put("secret", "app", json!({ "k": "v" }))
        .await
        .unwrap();
    let client = common::root_client(&bao).await;
    let kv = client.kv2("secret");
    kv.read("app").await.unwrap();
    kv.read("app").await.unwrap();
    assert!(kv.read("missing").await.unwrap_err().is_not_found());
    assert_eq!(
        memory.get("vault_requests_total{op=kv2.read,outcome=ok}"),
        Some(2.0)
    );
    assert_eq!(
        memory.get("vault_requests_total{op=kv2.read,outcome=error}"),
        Some(1.0)
    );
    assert_eq!(
        memory.get("vault_request_duration_seconds{op=kv2.read}"),
        Some(3.0)
    );

    client.breaker().force_open();
    let stale = kv.read("app").await.unwrap();
    assert!(stale.source.is_fallback());
    assert_eq!(
        memory.get("vault_requests_total{op=kv2.read,outcome=rejected}"),
        Some(1.0)
    );
    assert_eq!(
        memory.get("vault_fallbacks_total{source=last_known_good}"),
        Some(1.0)
    );
    client.export_metrics();
    assert!(
        memory
            .0
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("breaker_state{breaker=vault")),
        "the breaker's own metrics"
    );
}
