//! What every handler and layer shares: [`AppState`]. It sits below the
//! layers and handlers that read it; [`crate::startup`] builds it and
//! composes the router on top.

use std::sync::Arc;

use db_failover::Cluster;
use metrics_exporter_prometheus::PrometheusHandle;
use vault_client::{Client, LeaseManager};

use crate::{fingerprint::FingerprintKey, secrets::SecretBox};

/// Where the database credentials came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// Vault's database secrets engine (rotating).
    Vault,
    /// `DATABASE_URL`, because Vault was unreachable at start (degraded).
    Fallback {
        /// Why Vault was not used.
        cause: String,
    },
}

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database nodes.
    pub cluster: Arc<Cluster>,
    /// Transit for store secrets.
    pub secrets: SecretBox,
    /// The Vault client, when Vault is in use.
    pub vault: Option<Client>,
    /// The lease manager of the database credentials, when Vault is in use.
    pub leases: Option<Arc<LeaseManager>>,
    /// Where the credentials came from.
    pub source: CredentialSource,
    /// The key of `Idempotency-Key` fingerprints.
    pub fingerprints: FingerprintKey,
    /// The metrics registry's renderer.
    pub metrics: PrometheusHandle,
}
