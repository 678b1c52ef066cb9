//! What every layer shares: [`Gateway`]. It sits below the layers that
//! read it; [`crate::startup`] builds it and composes the layers on top.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    alerts::Alerts, auth::Verifier, config::Config, degraded::Degraded, proxy,
    ratelimit::PreAuthLimiter, routing::Routes,
};

/// What every layer shares.
#[derive(Debug)]
pub struct Gateway {
    /// The checked configuration.
    pub config: Config,
    /// The routes.
    pub routes: Routes,
    /// Token verification (and the key store).
    pub verifier: Verifier,
    /// Critical alerts.
    pub alerts: Alerts,
    /// The pooled upstream client.
    pub client: proxy::UpstreamClient,
    /// The metrics renderer.
    pub metrics: PrometheusHandle,
    /// The limit of failures before authentication, per client address.
    pub pre_auth: PreAuthLimiter,
    /// Degraded mode: stale reads and the durable write queue.
    pub degraded: Option<Arc<Degraded>>,
    /// Set once shutdown started (`/ready` answers 503).
    pub(crate) shutting_down: AtomicBool,
}

impl Gateway {
    /// Whether shutdown started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Marks shutdown as started.
    pub(crate) fn start_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}
