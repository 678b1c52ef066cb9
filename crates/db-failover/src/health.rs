//! The [`Cluster::health`](crate::Cluster::health) snapshot, for readiness
//! endpoints and dashboards.

use std::time::Duration;

use crate::{Lsn, NodeId, Role};

/// The whole cluster at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The topology generation.
    pub generation: u64,
    /// Where writes go now, if anywhere.
    pub primary: Option<NodeId>,
    /// Every node, in configuration order.
    pub nodes: Vec<NodeHealth>,
}

impl Health {
    /// Whether writes can be served: there is a primary.
    pub fn is_ready(&self) -> bool {
        self.primary.is_some()
    }

    /// Nodes reads may go to now (up, answering, within the lag bounds).
    pub fn readable_replicas(&self) -> impl Iterator<Item = &NodeHealth> {
        self.nodes
            .iter()
            .filter(|n| n.role == Some(Role::Standby) && n.up && n.reachable && !n.lagging)
    }
}

/// One node at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeHealth {
    /// Its id.
    pub id: NodeId,
    /// `host:port`.
    pub address: String,
    /// What its last successful probe said it is.
    pub role: Option<Role>,
    /// Up: answered a probe and has not failed `failure_threshold` since,
    /// nor left its probes unanswered for `down_after`.
    pub up: bool,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Whether its last probe succeeded (and it has not answered a write
    /// with SQLSTATE 25006 since).
    pub reachable: bool,
    /// Its timeline, for a primary.
    pub timeline: Option<u32>,
    /// Current WAL position (primary) or replay position (standby).
    pub lsn: Option<Lsn>,
    /// Bytes of WAL behind the primary (standby).
    pub lag_bytes: Option<u64>,
    /// Time behind the primary (standby).
    pub lag: Option<Duration>,
    /// Whether it is over a lag bound and skipped by reads.
    pub lagging: bool,
    /// How long its last successful probe took.
    pub probe_latency: Option<Duration>,
    /// The last probe error while it is failing.
    pub last_error: Option<String>,
    /// Its connection pool.
    pub pool: PoolStats,
}

/// A node's pool, as deadpool counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Largest size allowed.
    pub max_size: usize,
    /// Connections open (idle and in use).
    pub size: usize,
    /// Idle connections.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}
