//! What the cluster tells its observers: node identities, roles and the
//! typed events of [`Cluster::events`](crate::Cluster::events).

use std::fmt;
use std::time::Duration;

use crate::Lsn;

/// A node of the cluster: its index in [`Config::nodes`](crate::Config::nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// What a node said it is on its last successful probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not in recovery: it accepts writes.
    Primary,
    /// In recovery (a hot standby): it serves reads and fails writes with
    /// SQLSTATE 25006.
    Standby,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        })
    }
}

/// A change in the cluster, sent to every receiver of
/// [`Cluster::events`](crate::Cluster::events).
///
/// Events are edges, not levels: `NodeDown` is sent once when a node
/// crosses the failure threshold (or its silence the time limit), not on
/// every failed probe. A receiver that
/// falls more than 256 events behind loses the oldest ones (tokio's
/// `broadcast` semantics); [`Cluster::health`](crate::Cluster::health) is
/// the level to reconcile with.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The node failed `failure_threshold` probes in a row, or answered
    /// none for `down_after` (see
    /// [`ProbeSettings`](crate::ProbeSettings)).
    NodeDown {
        /// The node.
        node: NodeId,
        /// The last probe's error.
        error: String,
    },
    /// The node answered a probe, for the first time or after being down.
    NodeUp {
        /// The node.
        node: NodeId,
        /// What it said it is.
        role: Role,
    },
    /// The node that was primary is not any more: down, demoted (it
    /// answered a write with SQLSTATE 25006 or a probe said it is in
    /// recovery) or outvoted by a primary on a higher timeline.
    PrimaryLost {
        /// The former primary.
        node: NodeId,
        /// The topology generation without it.
        generation: u64,
    },
    /// A node became the primary that writes are routed to.
    PrimaryElected {
        /// The new primary.
        node: NodeId,
        /// Its timeline, when known.
        timeline: Option<u32>,
        /// The topology generation it starts.
        generation: u64,
    },
    /// Writes have a primary again after losing one.
    FailoverCompleted {
        /// The former primary.
        from: NodeId,
        /// The new one.
        to: NodeId,
        /// From the first sign of trouble with `from` (a failed probe or a
        /// failed request) to the election of `to`.
        duration: Duration,
    },
    /// A replica's lag went over a configured bound: reads skip it until it
    /// is back under (then [`Event::LagRecovered`]).
    LagExceeded {
        /// The replica.
        node: NodeId,
        /// Bytes of WAL it has not replayed yet, when known.
        lag_bytes: Option<u64>,
        /// How long the oldest WAL it has not replayed has existed, when known.
        lag: Option<Duration>,
    },
    /// A replica that exceeded its lag bound is back under it.
    LagRecovered {
        /// The replica.
        node: NodeId,
    },
    /// The database refused the rotating credentials of `generation`: a
    /// node that had accepted that login refused it (SQLSTATE 28P01 /
    /// 28000: the user was dropped), or a statement was denied (42501) on
    /// a connection logged in with them. Sent once per generation. The
    /// credentials' source should replace them now (vault-client:
    /// `LeaseManager::refused(generation)`); the cluster picks up the new
    /// generation as the rotation contract says.
    CredentialsRefused {
        /// The node that refused them.
        node: NodeId,
        /// Their generation.
        generation: u64,
    },
    /// More than one reachable node claims to be primary. Writes go to
    /// `chosen`, the one on the highest timeline (the newest promotion);
    /// the others are fenced off from writes until they rejoin as standbys.
    SplitBrain {
        /// Every node that claims to be primary, with its timeline.
        primaries: Vec<(NodeId, Option<u32>)>,
        /// The node writes go to.
        chosen: NodeId,
    },
}

/// What one probe of one node found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeReport {
    /// `pg_is_in_recovery()` (or `in_hot_standby`).
    pub(crate) role: Role,
    /// The primary's timeline (from its current WAL file name).
    pub(crate) timeline: Option<u32>,
    /// `pg_current_wal_lsn()` on a primary.
    pub(crate) current_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()` on a standby.
    pub(crate) replay_lsn: Option<Lsn>,
    /// How long the probe took.
    pub(crate) latency: Duration,
}
