//! Start-up: configuration → alerts → signing keys → routes → layers →
//! listener, and the graceful shutdown (stop accepting, drain in-flight
//! requests until `server.drain_timeout`).
//!
//! The layers, outermost first: request id (and problem completion) →
//! metrics → the limit of failures before authentication, per client
//! address → routing (path, framing, 404/405/413) → authentication and
//! scopes → rate limit → proxy. Issue 8's degraded modes slot in between
//! the rate limit and the proxy, per route.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context as _;
use axum::{Router, middleware, routing::get};
use tokio::net::TcpListener;

use crate::{
    alerts::{self, Alerts, PagerDuty},
    auth,
    config::Config,
    degraded::Degraded,
    framing::GuardedListener,
    limiter::PreAuthLimiter,
    metrics, openapi,
    principal::Verifier,
    proxy, ratelimit, readiness, replay, requests,
    routes::Routes,
    routing,
    settings::Settings,
    tls, upstream,
};

pub use crate::{state::Gateway, tls::rustls_provider};

/// The built gateway: a bound listener and its router.
#[derive(Debug)]
pub struct Application {
    /// The bound listener.
    listener: TcpListener,
    /// The bound address.
    address: SocketAddr,
    /// The routes with their layers.
    router: Router,
    /// The shared state.
    gateway: Arc<Gateway>,
    /// The background key refresher.
    refresher: tokio::task::JoinHandle<()>,
    /// The replay loop of queued writes.
    replayer: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Reads the configuration file named by `settings`, applies the
    /// environment's overrides, and builds the gateway.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let config = Config::load(&settings.config)
            .context("loading the configuration")?
            .with_upstreams(
                settings.store_service_url.clone(),
                settings.hardware_service_url.clone(),
            )
            .context("checking the configuration")?;
        Self::with_config(config, &settings).await
    }

    /// Builds the gateway from a checked `config` and binds the listener
    /// (`settings.port` 0: any free port). Keys are fetched in the
    /// background; until they arrive, requests fail closed.
    pub async fn with_config(mut config: Config, settings: &Settings) -> anyhow::Result<Self> {
        rustls_provider();
        if config.routes.is_empty() {
            config = config.with_upstreams(None, None)?;
        }
        let metrics = metrics::install();
        let http = tls::https_client(config.server.extra_ca_file.as_deref())?;
        let pagerduty = config.alerts.pagerduty_url.clone().and_then(|url| {
            let routing_key = settings
                .pagerduty_routing_key
                .clone()
                .or_else(|| config.alerts.routing_key.clone())?;
            Some(PagerDuty {
                url,
                routing_key,
                source: config
                    .alerts
                    .source
                    .clone()
                    .unwrap_or_else(|| "gateway".into()),
            })
        });
        if config.alerts.pagerduty_url.is_some() && pagerduty.is_none() {
            anyhow::bail!(
                "alerts.pagerduty_url is set but no routing key (alerts.routing_key or PAGERDUTY_ROUTING_KEY)"
            );
        }
        let alerts = Alerts::new(pagerduty, http.clone());
        let verifier = Arc::new(Verifier::new(
            config.auth.verify_config(),
            http,
            auth::observer(alerts.clone()),
        ));
        let keys = verifier.keys().clone();
        alerts::watch_breaker(alerts.clone(), keys.breaker());
        let routes = Routes::new(&config).context("building the routes")?;
        for route in routes.0.iter() {
            alerts::watch_breaker(alerts.clone(), &route.breaker);
        }
        let degraded = Degraded::open(
            &config.degraded,
            settings.queue_key.as_ref(),
            settings.nats_token.as_ref(),
        )
        .await
        .context("starting degraded mode")?;
        let client = upstream::client(
            config.server.upstream_idle_timeout.0,
            config.server.upstream_connect_timeout.0,
            config.server.upstream_max_idle,
        );
        let config_pre_auth = config.pre_auth_limit.into();
        let gateway = Arc::new(Gateway {
            config,
            routes,
            verifier,
            alerts,
            client,
            metrics,
            pre_auth: PreAuthLimiter::new(config_pre_auth),
            degraded: Some(Arc::new(degraded)),
            openapi: crate::state::KeptDocument::default(),
            shutting_down: AtomicBool::new(false),
        });
        let refresher = keys.spawn_refresher();
        let replayer = tokio::spawn(replay::run(
            Arc::clone(&gateway),
            std::future::pending::<()>(),
        ));
        tokio::spawn(forget_idle_clients(Arc::clone(&gateway)));
        let router = router(Arc::clone(&gateway));
        let listener = TcpListener::bind((settings.host, settings.port))
            .await
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let address = listener.local_addr()?;
        Ok(Self {
            listener,
            address,
            router,
            gateway,
            refresher,
            replayer,
        })
    }

    /// The port the listener is bound to.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The shared state (tests inspect it).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Serves until SIGTERM or ctrl-c, then drains.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(service_kit::shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then stops accepting and drains
    /// the requests in flight for at most `server.drain_timeout`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(address = %self.address, "gateway listening");
        let drain = self.gateway.config.server.drain_timeout.0;
        let gateway = Arc::clone(&self.gateway);
        let signal = async move {
            shutdown.await;
            gateway.start_shutdown();
            tracing::info!("shutting down: draining requests in flight");
        };
        service_kit::serve(
            GuardedListener::new(self.listener),
            self.router,
            self.gateway.config.server.limits(),
            signal,
            drain,
        )
        .await;
        self.refresher.abort();
        self.replayer.abort();
        Ok(())
    }
}

/// Every route and layer.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let proxied = Router::new()
        .fallback(proxy::forward)
        .layer(middleware::from_fn(ratelimit::layer))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&gateway),
            auth::layer,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&gateway),
            routing::layer,
        ))
        .with_state(Arc::clone(&gateway));
    Router::new()
        .route("/api/requests/{id}", get(requests::status))
        .route("/health", get(readiness::health))
        .route("/ready", get(readiness::ready))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::document))
        .fallback_service(proxied)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&gateway),
            ratelimit::pre_auth_layer,
        ))
        .layer(middleware::from_fn(metrics::layer))
        .layer(middleware::from_fn(service_kit::request_id::layer))
        .with_state(gateway)
}

/// Drops the buckets of clients that are full again, every minute.
async fn forget_idle_clients(gateway: Arc<Gateway>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        for route in gateway.routes.0.iter() {
            route.bucket.forget_idle();
        }
        gateway.pre_auth.forget_idle();
        if Arc::strong_count(&gateway) == 1 {
            return;
        }
    }
}
