//! What every layer shares: [`Gateway`], made of the parts below it (the
//! configuration, the route table, the verifier, the upstream client,
//! degraded mode, the limiter before authentication, alerts). It sits
//! below the layers and handlers that read it, which take the narrow part
//! they need through axum's `FromRef`; `startup` builds it and composes
//! the layers on top.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    alerts::Alerts, config::Config, degraded::Degraded, limiter::PreAuthLimiter,
    principal::Verifier, routes::Routes, upstream::UpstreamClient,
};

/// What every layer shares.
#[derive(Debug)]
pub struct Gateway {
    /// The checked configuration.
    pub config: Config,
    /// The routes.
    pub routes: Routes,
    /// Token verification (and the key store).
    pub verifier: Arc<Verifier>,
    /// Critical alerts.
    pub alerts: Alerts,
    /// The pooled upstream client.
    pub client: UpstreamClient,
    /// The metrics renderer.
    pub metrics: PrometheusHandle,
    /// The limit of failures before authentication, per client address.
    pub pre_auth: PreAuthLimiter,
    /// Degraded mode: stale reads and the durable write queue.
    pub degraded: Option<Arc<Degraded>>,
    /// The last composed OpenAPI document (`crate::openapi`).
    pub openapi: KeptDocument,
    /// Set once shutdown started (`/ready` answers 503).
    pub(crate) shutting_down: AtomicBool,
}

/// The last composed OpenAPI document and when it is due again; one
/// composition at a time (others are answered with what is kept).
#[derive(Debug, Default)]
pub struct KeptDocument {
    /// The document and the instant after which it is composed again.
    pub kept: std::sync::Mutex<Option<(tokio::time::Instant, axum::body::Bytes)>>,
    /// Held while the upstreams' documents are read.
    pub composing: tokio::sync::Mutex<()>,
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
