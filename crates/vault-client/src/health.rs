//! `sys/health`, for readiness probes.
//!
//! Vault answers with a status code per state: 200 active, 429 unsealed
//! standby, 472 disaster-recovery secondary, 473 performance standby, 501
//! not initialised, 503 sealed. These are answers, not failures: a standby's
//! 429 is never mistaken for rate limiting, and none of them is retried.
//! (A sealed server's 503 still counts against the breaker.)

use reqwest::Method;

use crate::client::{Call, CallAuth, Client};
use crate::error::Result;
use crate::json::Answer;
use crate::path::ApiPath;

/// What `sys/health` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The HTTP status (200, 429, 472, 473, 501, 503).
    pub status: u16,
    /// Whether the server is initialised.
    pub initialized: bool,
    /// Whether it is sealed.
    pub sealed: bool,
    /// Whether it is a standby.
    pub standby: bool,
    /// Whether it is a performance standby.
    pub performance_standby: bool,
    /// The server's version.
    pub version: String,
    /// The cluster's name, if it has one.
    pub cluster_name: Option<String>,
}

impl Health {
    /// Initialised, unsealed and active (status 200).
    pub fn is_active(&self) -> bool {
        self.status == 200 && self.initialized && !self.sealed
    }

    /// Ready to serve this client: active, or an unsealed standby when
    /// `standby_ok` (standbys forward requests to the active node).
    pub fn is_ready(&self, standby_ok: bool) -> bool {
        self.is_active()
            || (standby_ok && self.initialized && !self.sealed && matches!(self.status, 429 | 473))
    }
}

impl Client {
    /// Asks `sys/health` (no token needed). Through the breaker like every
    /// call; not retried.
    pub async fn health(&self) -> Result<Health> {
        let path = ApiPath::new("sys/health")?;
        let call = Call {
            auth: CallAuth::None,
            answer_statuses: &[429, 472, 473, 501, 503],
            ..Call::new("sys.health", Method::GET, &path)
        };
        let reply = self.inner.send_once_health(call).await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        Ok(Health {
            status: reply.status,
            initialized: answer.bool("/initialized")?,
            sealed: answer.bool("/sealed")?,
            standby: answer.opt_bool("/standby")?.unwrap_or(false),
            performance_standby: answer.opt_bool("/performance_standby")?.unwrap_or(false),
            version: answer.opt_str("/version")?.unwrap_or_default().to_owned(),
            cluster_name: answer.opt_str("/cluster_name")?.map(str::to_owned),
        })
    }
}
