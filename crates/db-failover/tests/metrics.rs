//! The `metrics` feature against a real cluster: pool, probe, lag and
//! failover metrics reach the installed recorder.

#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{config, connect, node, start, wait_event, wait_readable, wait_until, whereami};
use db_failover::Event;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// One metric: a counter total, the last gauge value, histogram samples.
#[derive(Default)]
struct Handle {
    count: AtomicU64,
    gauge: Mutex<f64>,
    samples: Mutex<Vec<f64>>,
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.count.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.count.fetch_max(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        *self.gauge.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.gauge.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.gauge.lock().unwrap() = value;
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.samples.lock().unwrap().push(value);
    }
}

/// Keeps every metric by its full key (name and labels).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<BTreeMap<String, Arc<Handle>>>>);

impl Capture {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> Option<Arc<Handle>> {
        self.0.lock().unwrap().get(name).cloned()
    }
}

impl Recorder for Capture {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_probe_lag_and_failover_metrics_are_recorded() {
    let capture = Capture::default();
    metrics::set_global_recorder(capture.clone()).expect("the only recorder of this binary");
    let pg = start(1).await;
    let cluster = connect(config(&pg)).await;
    wait_readable(&cluster, 1).await;
    let mut events = cluster.events();
    let primary = format!("node=127.0.0.1:{}", pg.node(pg.primary()).port());
    let replica_id = pg.replicas()[0];
    let replica = format!("node=127.0.0.1:{}", pg.node(replica_id).port());

    cluster
        .write_op(|conn| Box::pin(async move { whereami(conn).await }))
        .await
        .unwrap();
    cluster
        .read_op(|conn| Box::pin(async move { whereami(conn).await }))
        .await
        .unwrap();
    let waits = capture
        .get(&format!("db_failover_pool_wait_seconds{{{primary}}}"))
        .expect("pool wait histogram of the primary");
    assert!(!waits.samples.lock().unwrap().is_empty());
    let size = capture
        .get(&format!("db_failover_pool_size{{{replica}}}"))
        .expect("pool size gauge of the replica");
    assert_eq!(*size.gauge.lock().unwrap(), 1.0);
    let probes = capture
        .get(&format!("db_failover_probe_seconds{{{primary}}}"))
        .expect("probe latency histogram");
    assert!(!probes.samples.lock().unwrap().is_empty());
    let up = capture
        .get(&format!("db_failover_node_up{{{replica}}}"))
        .expect("node up gauge");
    assert_eq!(*up.gauge.lock().unwrap(), 1.0);
    wait_until("a lag measurement for the replica", || {
        let lag = capture.get(&format!("db_failover_replica_lag_bytes{{{replica}}}"));
        async move { lag.is_some() }
    })
    .await;

    pg.kill(pg.primary()).await.unwrap();
    pg.promote(replica_id).await.unwrap();
    wait_event(
        &mut events,
        "FailoverCompleted",
        |e| matches!(e, Event::FailoverCompleted { to, .. } if *to == node(replica_id)),
    )
    .await;
    let failovers = capture
        .get("db_failover_failovers_total{}")
        .expect("failover counter");
    assert_eq!(failovers.count.load(Ordering::SeqCst), 1);
    wait_until("a failed probe of the killed primary", || {
        let failures = capture.get(&format!("db_failover_probe_failures_total{{{primary}}}"));
        async move { failures.is_some_and(|f| f.count.load(Ordering::SeqCst) >= 1) }
    })
    .await;
}
