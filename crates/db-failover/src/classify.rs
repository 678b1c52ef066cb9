//! What a `tokio_postgres` error says about the node and about the request:
//! the table behind re-probing and retry decisions.

use tokio_postgres::error::{DbError, Severity, SqlState};

/// The kind of failure, from the router's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// SQLSTATE 25006 `read_only_sql_transaction`: the node is a standby.
    /// Nothing was written, so the request may go to the real primary.
    ReadOnly,
    /// The server is going away or the connection broke: SQLSTATE class 08,
    /// 57P01 `admin_shutdown`, 57P02 `crash_shutdown`, 57P03
    /// `cannot_connect_now`, any FATAL or PANIC, a closed connection or an
    /// I/O error. Whatever was in flight has an unknown outcome.
    Connection,
    /// The statement failed on a working connection (constraint, syntax,
    /// statement timeout, a value that could not be decoded...). The node
    /// is fine; the request is not retried.
    Statement,
}

impl Failure {
    /// Whether this failure says something about the node, so that the
    /// cluster should re-probe.
    pub(crate) fn is_topology_signal(self) -> bool {
        matches!(self, Failure::ReadOnly | Failure::Connection)
    }
}

/// Classifies `err`; `connection_closed` is the client's `is_closed()` after
/// the error (a client-side error on a live connection is a `Statement`).
pub(crate) fn classify(err: &tokio_postgres::Error, connection_closed: bool) -> Failure {
    if let Some(db) = err.as_db_error() {
        return classify_db(db);
    }
    let io = std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>());
    if err.is_closed() || connection_closed || io {
        Failure::Connection
    } else {
        Failure::Statement
    }
}

/// Classifies an error the server sent.
pub(crate) fn classify_db(db: &DbError) -> Failure {
    classify_code(db.code(), db.parsed_severity())
}

fn classify_code(code: &SqlState, severity: Option<Severity>) -> Failure {
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return Failure::ReadOnly;
    }
    if code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || matches!(severity, Some(Severity::Fatal | Severity::Panic))
    {
        return Failure::Connection;
    }
    Failure::Statement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: &str, severity: Option<Severity>, expected: Failure) {
        assert_eq!(
            classify_code(&SqlState::from_code(code), severity),
            expected,
            "{code} {severity:?}"
        );
    }

    #[test]
    fn sqlstate_table() {
        use Failure::*;
        let error = Some(Severity::Error);
        let fatal = Some(Severity::Fatal);
        check("25006", error, ReadOnly);
        check("57P01", fatal, Connection);
        check("57P02", fatal, Connection);
        check("57P03", fatal, Connection);
        check("08006", error, Connection);
        check("08001", None, Connection);
        check("08P01", error, Connection);
        check("28P01", fatal, Connection);
        check("57014", error, Statement); // statement timeout: the node answered
        check("23505", error, Statement);
        check("40001", error, Statement);
        check("42601", error, Statement);
        check("53300", fatal, Connection); // too many connections, at login
    }

    #[test]
    fn read_only_and_connection_failures_trigger_reprobe() {
        assert!(Failure::ReadOnly.is_topology_signal());
        assert!(Failure::Connection.is_topology_signal());
        assert!(!Failure::Statement.is_topology_signal());
    }
}
