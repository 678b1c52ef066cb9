//! The one error type of testkit.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, configuring or faulting a
/// service. Messages are written for a person reading a failed test: they
/// name the command, the file or the install step that fixes the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required program is not installed. The message carries the command
    /// that installs it; tests fail with it instead of skipping.
    #[error("`{program}` was not found ({looked_in}); install it with `{install}`")]
    MissingBinary {
        /// The program that was looked for.
        program: &'static str,
        /// Where it was looked for.
        looked_in: String,
        /// The command that installs it.
        install: &'static str,
    },
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command (initdb, pg_basebackup, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line, without secrets.
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines of its output.
        output: String,
    },
    /// A server process exited while it was expected to run.
    #[error("{what} exited unexpectedly ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// Which server.
        what: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log file.
        tail: String,
    },
    /// Something did not become ready in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
    },
    /// A service did not answer its readiness URL with 200 in time.
    #[error("{what} was not ready at {url} within {after:?}; last lines of {log}:\n{tail}")]
    NotReady {
        /// Which service.
        what: String,
        /// Its readiness URL.
        url: String,
        /// How long it was awaited.
        after: Duration,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log file.
        tail: String,
    },
    /// A PostgreSQL query issued by testkit failed.
    #[error("PostgreSQL: {context}: {source}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The driver error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Applying the migrations failed.
    #[error("migrations: {0}")]
    Migration(#[source] Box<refinery::Error>),
    /// An HTTP request to OpenBao could not be sent or read.
    #[error("OpenBao {path}: {source}")]
    Http {
        /// The API path.
        path: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A NATS server's monitoring endpoint could not be reached or read.
    #[error("NATS monitoring {url}: {source}")]
    Monitor {
        /// The monitoring URL.
        url: String,
        /// The transport or decoding error.
        #[source]
        source: reqwest::Error,
    },
    /// OpenBao answered a request with an error status.
    #[error("OpenBao {method} {path} returned {status}: {body}")]
    Bao {
        /// The HTTP method.
        method: String,
        /// The API path.
        path: String,
        /// The status code.
        status: u16,
        /// The response body (OpenBao's `errors` list; never contains the token).
        body: String,
    },
    /// The caller asked for something that does not exist or is not possible.
    #[error("{0}")]
    Usage(String),
    /// Starting a kept cluster with `primary` would discard committed
    /// transactions that only `node` holds (its WAL past the point where it
    /// parted from the primary's history). Nothing was started.
    #[error(
        "{node} holds {count} committed transaction(s) that {primary} does not have (WAL past {from}: {commits}); starting {primary} as the primary would discard them",
        count = commits.len(),
        commits = commits.join(", ")
    )]
    Diverged {
        /// The node with the divergent WAL.
        node: String,
        /// The node chosen as primary.
        primary: String,
        /// Where their histories part.
        from: String,
        /// The commits (`xid <n> at <time>`).
        commits: Vec<String>,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path or an action to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

/// Attaches an action to a `tokio_postgres::Error`.
pub(crate) trait PgContext<T> {
    fn pg_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> PgContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn pg_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Postgres {
            context: context(),
            source,
        })
    }
}
