//! Start-up: Vault → database credentials → pools → routes → listener, and
//! the graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, middleware, routing::get};
use db_failover::{Cluster, Config, CredentialsProvider};
use tokio::net::TcpListener;
use vault_client::{
    AuthMethod, Client, ConfigBuilder, ExposeSecret, Kubernetes, LeaseManager, ProcessEnv,
};

use crate::{
    fingerprint::FingerprintKey,
    idempotency, metrics, routes as api,
    secrets::SecretBox,
    settings::Settings,
    state::{AppState, CredentialSource},
    subject, timeout,
};

/// The built service: a bound listener and its router.
#[derive(Debug)]
pub struct Application {
    /// The bound listener.
    listener: TcpListener,
    /// The bound address.
    address: SocketAddr,
    /// The routes with their layers.
    router: Router,
    /// The shared state (tests inspect it).
    state: AppState,
    /// The server's connection limits.
    limits: service_kit::Limits,
    /// How long requests in flight may run after shutdown starts.
    drain: std::time::Duration,
}

impl Application {
    /// Connects to Vault and the database and binds the listener
    /// (`settings.port` 0: any free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        vault_client::install_crypto_provider();
        let metrics = metrics::install();
        let (vault, leases, derived, source) = connect_vault(&settings).await;
        let fingerprints = match (&settings.idempotency_hmac_key, derived) {
            (Some(configured), _) => FingerprintKey::configured(configured.expose().as_bytes()),
            (None, Some(derived)) => derived,
            (None, None) => {
                tracing::warn!(
                    "no IDEMPOTENCY_HMAC_KEY and no Vault: Idempotency-Key fingerprints use a \
                     key of this process only (a retry reaching another instance gets a 422)"
                );
                FingerprintKey::ephemeral()
            }
        };
        let cluster = connect_database(&settings, leases.as_ref(), &source).await?;
        let secrets = SecretBox::new(
            vault.as_ref().map(|c| c.transit(&settings.transit_mount)),
            settings.transit_key.clone(),
        );
        let state = AppState {
            cluster: Arc::new(cluster),
            secrets,
            vault,
            leases: leases.map(Arc::new),
            source,
            fingerprints,
            metrics,
        };
        let router = router(state.clone(), settings.request_timeout());
        let listener = TcpListener::bind((settings.host, settings.port))
            .await
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let address = listener.local_addr()?;
        tokio::spawn(purge_loop(state.clone()));
        if let Some(leases) = &state.leases {
            tokio::spawn(replace_refused_credentials(
                state.cluster.events(),
                Arc::clone(leases),
            ));
        }
        Ok(Self {
            listener,
            address,
            router,
            state,
            limits: settings.limits(),
            drain: std::time::Duration::from_secs(settings.drain_timeout_secs),
        })
    }

    /// The port the listener is bound to.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or ctrl-c, then stops accepting and drains the
    /// requests in flight.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then stops accepting connections
    /// and drains the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(address = %self.address, "store-service listening");
        service_kit::serve(
            self.listener,
            self.router,
            self.limits,
            shutdown,
            self.drain,
        )
        .await;
        Ok(())
    }
}

/// Every route and layer.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let (routes, document) = crate::openapi::document();
    let document = Arc::new(crate::openapi::render(&document));
    routes
        .route(
            "/openapi.json",
            get(move || crate::openapi::serve(Arc::clone(&document))),
        )
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        // Outside idempotency, which keys its records by the subject.
        .layer(middleware::from_fn(subject::layer))
        .layer(middleware::from_fn_with_state(
            request_timeout,
            timeout::layer,
        ))
        // Outside the timeout, so a timed-out request (504) is counted too.
        .layer(middleware::from_fn(metrics::layer))
        .layer(middleware::from_fn(service_kit::request_id::layer))
        .with_state(state)
}

/// What Vault gave at start: a client, the lease manager of the database
/// credentials and the fingerprint key derived from Transit.
type VaultStart = (
    Option<Client>,
    Option<LeaseManager>,
    Option<FingerprintKey>,
    CredentialSource,
);

/// Vault → AppRole/token login → lease manager → fingerprint key, retried
/// with back-off up to the start-up budget; on failure, the fallback with
/// its cause.
async fn connect_vault(settings: &Settings) -> VaultStart {
    let fallback = |cause: String| (None, None, None, CredentialSource::Fallback { cause });
    let Some(address) = settings.vault_address() else {
        return fallback("no BAO_ADDR/VAULT_ADDR configured".into());
    };
    let auth = match (
        &settings.bao_role_id,
        &settings.bao_secret_id,
        &settings.bao_k8s_role,
        &settings.bao_token,
    ) {
        (Some(role), Some(secret), _, _) => AuthMethod::approle(role.clone(), secret.expose()),
        (_, _, Some(role), _) => AuthMethod::Kubernetes(Kubernetes {
            mount: settings.bao_k8s_mount.clone(),
            role: role.clone(),
            jwt_path: settings.bao_k8s_jwt_path.clone(),
        }),
        (_, _, _, Some(token)) => AuthMethod::token(token.expose()),
        _ => {
            return fallback(
                "no BAO_ROLE_ID/BAO_SECRET_ID, BAO_K8S_ROLE or BAO_TOKEN configured".into(),
            );
        }
    };
    let deadline = tokio::time::Instant::now() + settings.vault_startup_timeout();
    // 250 ms doubling to 5 s (breaker's back-off, the workspace's one).
    let backoff =
        breaker::ExponentialBackoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut attempts = 0;
    loop {
        let attempt = async {
            // TLS, namespace and the like from BAO_*/VAULT_* as vault-client
            // reads them; address, login and retries from the settings.
            let config = ConfigBuilder::from_environment(&ProcessEnv)?
                .address(address)
                .auth(auth.clone())
                .max_retries(0)
                .client_timeout(Duration::from_secs(5))
                .build()?;
            let client = Client::new(config).await?;
            let manager = client
                .database(&settings.vault_db_mount)
                .lease_manager(&settings.vault_db_role)
                .start()
                .await?;
            let fingerprints = match settings.idempotency_hmac_key {
                Some(_) => None,
                None => Some(
                    FingerprintKey::from_transit(
                        &client.transit(&settings.transit_mount),
                        &settings.transit_key,
                    )
                    .await
                    .context("deriving the Idempotency-Key fingerprint key (transit/hmac)")?,
                ),
            };
            Ok::<_, anyhow::Error>((client, manager, fingerprints))
        };
        match attempt.await {
            Ok((client, manager, fingerprints)) => {
                return (
                    Some(client),
                    Some(manager),
                    fingerprints,
                    CredentialSource::Vault,
                );
            }
            Err(error) => {
                let now = tokio::time::Instant::now();
                let delay = backoff.delay(attempts);
                attempts += 1;
                if now + delay >= deadline {
                    tracing::warn!(error = %format!("{error:#}"), "Vault unusable at start (unreachable, or the login or a read refused): falling back to DATABASE_URL");
                    return fallback(format!("Vault unusable at start: {error:#}"));
                }
                tracing::warn!(%error, retry_in = ?delay, "Vault not ready, retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The database cluster: DB_PRIMARY + DB_REPLICAS with Vault's rotating
/// credentials, or DATABASE_URL in fallback.
async fn connect_database(
    settings: &Settings,
    leases: Option<&LeaseManager>,
    source: &CredentialSource,
) -> anyhow::Result<Cluster> {
    let config = match (leases, &settings.db_primary) {
        (Some(manager), Some(primary)) => {
            let credentials = manager.map(|c| {
                db_failover::Credentials::new(
                    c.username.clone(),
                    c.password.expose_secret(),
                    c.generation,
                )
            });
            let user = credentials.borrow().username().to_owned();
            let url = |host: &str| format!("postgres://{user}@{host}/{}", settings.db_name);
            let replicas: Vec<String> = settings
                .db_replicas
                .iter()
                .filter(|r| !r.trim().is_empty())
                .map(|r| url(r.trim()))
                .collect();
            Config::from_urls(&url(primary), replicas.iter().map(String::as_str))?
                .with_credentials(CredentialsProvider::watch(credentials))
        }
        _ => {
            let url = settings
                .database_url
                .as_ref()
                .with_context(|| match source {
                    CredentialSource::Fallback { cause } => {
                        format!("{cause}, and no DATABASE_URL to fall back to")
                    }
                    CredentialSource::Vault => "DB_PRIMARY is not set".to_owned(),
                })?;
            Config::from_url(url.expose())?
        }
    }
    .with_max_connections(settings.db_max_connections);
    Ok(Cluster::connect(config).await?)
}

/// Passes the cluster's word that the database refused the credentials
/// (their lease revoked early: the user dropped) on to the lease manager,
/// which reads new ones at once instead of at the lease's end.
async fn replace_refused_credentials(
    mut events: tokio::sync::broadcast::Receiver<db_failover::Event>,
    leases: Arc<LeaseManager>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(db_failover::Event::CredentialsRefused { generation, .. }) => {
                leases.refused(generation);
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Purges expired idempotency records every hour.
async fn purge_loop(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match idempotency::purge_expired(&state).await {
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys purged"),
            Err(error) => tracing::warn!(%error, "purging idempotency keys failed"),
        }
    }
}

/// SIGTERM or ctrl-c (`service_kit::shutdown_signal`), logged.
async fn shutdown_signal() {
    service_kit::shutdown_signal().await;
    tracing::info!("shutting down: draining requests in flight");
}
