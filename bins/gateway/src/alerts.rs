//! Critical alerts: a security fail-closed and a breaker opening. Each
//! raise is an ERROR log line with `alert="critical"`, a count in
//! `gateway_alerts_total{alert}`, the gauge `gateway_alert_active{alert}`,
//! and, when a webhook is configured, a PagerDuty Events API v2 `trigger`
//! with a stable `dedup_key` per incident; clearing it sends the `resolve`.
//! An alert already raised is not raised again until it is resolved.
//! Events are sent in order by one task, retried a few times.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;
use tokio::sync::mpsc;

use crate::settings::Secret;

/// What an alert is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alert {
    /// The gateway is refusing every request: no usable signing keys.
    SecurityFailClosed,
    /// A breaker opened (its name).
    BreakerOpen(String),
}

impl Alert {
    /// The metric label and the stable part of the dedup key.
    pub fn name(&self) -> String {
        match self {
            Self::SecurityFailClosed => "security_fail_closed".into(),
            Self::BreakerOpen(name) => format!("breaker_open:{name}"),
        }
    }

    /// What the page says.
    pub fn summary(&self) -> String {
        match self {
            Self::SecurityFailClosed => {
                "gateway fails closed: the security service's signing keys cannot be obtained or are too old; every request is denied".into()
            }
            Self::BreakerOpen(name) => format!("gateway: the `{name}` circuit breaker is open"),
        }
    }
}

/// Where PagerDuty events go.
#[derive(Clone, Debug)]
pub struct PagerDuty {
    /// The Events API v2 URL.
    pub url: String,
    /// The integration's routing key.
    pub routing_key: Secret,
    /// The events' `source`.
    pub source: String,
}

/// The alerting state, shared by every layer (cheap to clone).
#[derive(Clone, Debug)]
pub struct Alerts {
    /// Raised and not yet resolved.
    active: Arc<Mutex<HashSet<Alert>>>,
    /// The sender's queue, when a webhook is configured.
    queue: Option<mpsc::UnboundedSender<serde_json::Value>>,
    /// The dedup keys' prefix (the source).
    source: String,
}

impl Alerts {
    /// Alerts with PagerDuty events when `pagerduty` is given (spawns the
    /// sender: call inside the runtime).
    pub fn new(pagerduty: Option<PagerDuty>, http: reqwest::Client) -> Self {
        let source = pagerduty
            .as_ref()
            .map_or_else(|| "gateway".to_owned(), |p| p.source.clone());
        let queue = pagerduty.map(|pagerduty| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(send_events(pagerduty, http, receiver));
            sender
        });
        metrics::describe_counter!("gateway_alerts_total", "Critical alerts raised, by alert");
        metrics::describe_gauge!("gateway_alert_active", "1 while a critical alert is raised");
        Self {
            active: Arc::default(),
            queue,
            source,
        }
    }

    /// The stable PagerDuty dedup key of `alert`.
    pub fn dedup_key(&self, alert: &Alert) -> String {
        format!("{}/{}", self.source, alert.name())
    }

    /// Raises `alert` unless it is active; true if this call raised it.
    pub fn raise(&self, alert: &Alert) -> bool {
        let fresh = self
            .active
            .lock()
            .map(|mut active| active.insert(alert.clone()))
            .unwrap_or(false);
        if !fresh {
            return false;
        }
        let dedup_key = self.dedup_key(alert);
        tracing::error!(alert = "critical", name = %alert.name(), %dedup_key, "{}", alert.summary());
        metrics::counter!("gateway_alerts_total", "alert" => alert.name()).increment(1);
        metrics::gauge!("gateway_alert_active", "alert" => alert.name()).set(1.0);
        self.enqueue(json!({
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": alert.summary(),
                "source": self.source,
                "severity": "critical",
                "component": "gateway",
                "class": alert.name(),
            },
        }));
        true
    }

    /// Resolves `alert` if it is active; true if this call resolved it.
    pub fn resolve(&self, alert: &Alert) -> bool {
        let was = self
            .active
            .lock()
            .map(|mut active| active.remove(alert))
            .unwrap_or(false);
        if !was {
            return false;
        }
        let dedup_key = self.dedup_key(alert);
        tracing::warn!(alert = "resolved", name = %alert.name(), %dedup_key, "alert resolved");
        metrics::gauge!("gateway_alert_active", "alert" => alert.name()).set(0.0);
        self.enqueue(json!({ "event_action": "resolve", "dedup_key": dedup_key }));
        true
    }

    /// Whether `alert` is raised.
    pub fn is_active(&self, alert: &Alert) -> bool {
        self.active
            .lock()
            .map(|a| a.contains(alert))
            .unwrap_or(false)
    }

    fn enqueue(&self, event: serde_json::Value) {
        if let Some(queue) = &self.queue {
            let _ = queue.send(event);
        }
    }
}

/// PagerDuty's retries: 200 ms doubling (200, 400, 800, 1,600 ms between
/// the 5 attempts), breaker's back-off, no jitter.
const PAGERDUTY_BACKOFF: breaker::ExponentialBackoff =
    breaker::ExponentialBackoff::new(Duration::from_millis(200), Duration::from_secs(30));

/// Sends queued events in order, each retried up to 5 times.
async fn send_events(
    pagerduty: PagerDuty,
    http: reqwest::Client,
    mut receiver: mpsc::UnboundedReceiver<serde_json::Value>,
) {
    while let Some(mut event) = receiver.recv().await {
        event["routing_key"] = json!(pagerduty.routing_key.expose());
        for attempt in 1..=5 {
            let sent = http
                .post(&pagerduty.url)
                .timeout(Duration::from_secs(5))
                .json(&event)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => {
                    tracing::warn!(
                        status = response.status().as_u16(),
                        attempt,
                        "PagerDuty refused an event"
                    );
                }
                Err(error) => {
                    tracing::warn!(error = %error.without_url(), attempt, "PagerDuty unreachable")
                }
            }
            tokio::time::sleep(PAGERDUTY_BACKOFF.delay(attempt - 1)).await;
        }
    }
}

/// Raises [`Alert::BreakerOpen`] when `breaker` opens and resolves it when
/// it closes (a task per breaker, until the breaker is dropped).
pub fn watch_breaker(alerts: Alerts, breaker: &breaker::Breaker) {
    let mut events = breaker.subscribe();
    let alert = Alert::BreakerOpen(breaker.name().to_owned());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let breaker::Event::Transition { to, .. } = event {
                match to {
                    breaker::State::Open | breaker::State::ForcedOpen => {
                        alerts.raise(&alert);
                    }
                    breaker::State::Closed => {
                        alerts.resolve(&alert);
                    }
                    _ => {}
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raised_once_until_resolved() {
        crate::tls::rustls_provider();
        let alerts = Alerts::new(None, reqwest::Client::new());
        let alert = Alert::SecurityFailClosed;
        assert!(alerts.raise(&alert));
        assert!(!alerts.raise(&alert));
        assert!(alerts.is_active(&alert));
        assert!(alerts.resolve(&alert));
        assert!(!alerts.resolve(&alert));
        assert!(alerts.raise(&alert));
        assert_eq!(alerts.dedup_key(&alert), "gateway/security_fail_closed");
    }
}
