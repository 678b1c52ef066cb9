//! The crate's error type. Whether an error may be retried, and whether a
//! write's outcome is unknown, are properties of the error itself.

use std::time::Duration;

use crate::NodeId;

/// Why a connection could not be taken from a node's pool.
pub type PoolError = deadpool::managed::PoolError<tokio_postgres::Error>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (no nodes, a zero timeout, no user...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// No node was primary for the whole wait (at most the operation's
    /// deadline). Nothing was sent. Retryable.
    #[error("no primary within {waited:?}")]
    NoPrimary {
        /// How long the request waited for one.
        waited: Duration,
    },

    /// No replica qualifies for reads (down, lagging or behind the token)
    /// and falling back to the primary is off. Retryable.
    #[error("no replica qualifies for this read and fallback to the primary is off")]
    NoReplica,

    /// A connection could not be taken from `node`'s pool (connect refused,
    /// handshake or pool wait timed out). Nothing was sent. Retryable.
    #[error("no connection to {node}: {source}")]
    Acquire {
        /// The node.
        node: NodeId,
        /// deadpool's error.
        #[source]
        source: PoolError,
    },

    /// `node` turned out to be read-only (SQLSTATE 25006, or a new
    /// connection reported `in_hot_standby = on`) while routed to as the
    /// primary. Nothing was written. Retryable: the cluster re-probes.
    #[error("{node} is read-only (a standby) but was routed to as primary")]
    ReadOnly {
        /// The node.
        node: NodeId,
        /// The server's error, when it came from one.
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// The connection to `node` broke, or the server went away, during a
    /// read or an operation marked idempotent. Retryable.
    #[error("connection to {node} failed: {source}")]
    Connection {
        /// The node.
        node: NodeId,
        /// The error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The statement failed on a working connection (constraint violation,
    /// syntax, statement timeout, a value that does not decode). Not
    /// retried: the same statement would fail the same way. When the
    /// source is a server error of severity ERROR, the transaction did not
    /// commit; a decoding error may come after a successful statement.
    #[error("query on {node} failed: {source}")]
    Query {
        /// The node.
        node: NodeId,
        /// The error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A statement was denied (SQLSTATE 42501) on a connection logged in
    /// with rotating credentials of `generation`: the user was dropped or
    /// lost its grants (its lease revoked early). Nothing was written (the
    /// statement failed). Retryable: [`crate::Event::CredentialsRefused`]
    /// went out, and connections of a newer generation replace this one.
    #[error("{node} denied a statement to the credentials of generation {generation}: {source}")]
    CredentialsRefused {
        /// The node.
        node: NodeId,
        /// The credentials generation the connection logged in with.
        generation: u64,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A write was sent to `node` and then the connection broke, the server
    /// went away or the deadline passed before the answer came: it may or
    /// may not have committed. Never retried automatically; check (by a
    /// key or idempotency token) before writing again.
    #[error("outcome of the write on {node} is unknown: {reason}")]
    OutcomeUnknown {
        /// The node the write was sent to.
        node: NodeId,
        /// What happened.
        reason: String,
        /// The error, when there was one (none for a deadline).
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// The operation's deadline passed before an attempt succeeded; nothing
    /// is in flight (a write that was in flight is
    /// [`Error::OutcomeUnknown`] instead). Retryable.
    #[error("deadline of {deadline:?} passed after {attempts} attempt(s){}", last.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    DeadlineExceeded {
        /// The operation's deadline.
        deadline: Duration,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: Option<Box<Error>>,
    },
}

impl Error {
    /// Whether the same request may be sent again safely and may succeed
    /// later. `false` for [`Error::OutcomeUnknown`] (it may have committed),
    /// [`Error::Query`] and [`Error::Config`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NoPrimary { .. }
            | Error::NoReplica
            | Error::Acquire { .. }
            | Error::ReadOnly { .. }
            | Error::Connection { .. }
            | Error::CredentialsRefused { .. }
            | Error::DeadlineExceeded { .. } => true,
            Error::Config(_) | Error::Query { .. } | Error::OutcomeUnknown { .. } => false,
        }
    }

    /// Whether a write may have committed although it returned an error.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// The node the error came from, when one did.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            Error::Acquire { node, .. }
            | Error::ReadOnly { node, .. }
            | Error::Connection { node, .. }
            | Error::Query { node, .. }
            | Error::CredentialsRefused { node, .. }
            | Error::OutcomeUnknown { node, .. } => Some(*node),
            Error::DeadlineExceeded { last, .. } => last.as_ref().and_then(|e| e.node()),
            Error::Config(_) | Error::NoPrimary { .. } | Error::NoReplica => None,
        }
    }

    /// The server's SQLSTATE, when the error came from the server.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Connection { source, .. }
            | Error::Query { source, .. }
            | Error::CredentialsRefused { source, .. } => source.code(),
            Error::ReadOnly { source, .. } | Error::OutcomeUnknown { source, .. } => {
                source.as_ref().and_then(|e| e.code())
            }
            Error::DeadlineExceeded { last, .. } => last.as_ref().and_then(|e| e.code()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_safety_is_on_the_error() {
        let unknown = Error::OutcomeUnknown {
            node: NodeId(0),
            reason: "deadline passed while the write was in flight".into(),
            source: None,
        };
        assert!(!unknown.is_retryable());
        assert!(unknown.is_outcome_unknown());
        assert_eq!(unknown.node(), Some(NodeId(0)));

        let no_primary = Error::NoPrimary {
            waited: Duration::from_secs(1),
        };
        assert!(no_primary.is_retryable());
        assert!(!no_primary.is_outcome_unknown());

        let deadline = Error::DeadlineExceeded {
            deadline: Duration::from_secs(5),
            attempts: 3,
            last: Some(Box::new(Error::ReadOnly {
                node: NodeId(2),
                source: None,
            })),
        };
        assert!(deadline.is_retryable());
        assert_eq!(deadline.node(), Some(NodeId(2)));
        assert!(
            deadline.to_string().contains("node2 is read-only"),
            "{deadline}"
        );
        assert!(!Error::Config("x".into()).is_retryable());
    }
}
