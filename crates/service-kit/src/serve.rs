//! The accept loop: hyper's HTTP/1.1 connection per client, with a timer
//! (without one hyper enforces no header-read timeout at all, and
//! `axum::serve` sets none), at most [`Limits::max_connections`] at once,
//! and graceful shutdown.
//!
//! - **Slow and idle clients.** hyper's header-read timer starts when a
//!   connection is ready for a request head: for a new connection, and for
//!   a keep-alive connection after each response. A client that has not
//!   sent a whole head within [`Limits::header_read_timeout`] (a slow loris,
//!   or a kept-alive connection left idle) is closed, and its memory freed.
//! - **Too many clients.** Past [`Limits::max_connections`], a new
//!   connection is answered `503` (an RFC 9457 problem with `Retry-After:
//!   1`, `Connection: close`) and closed, without reading it: a clear
//!   refusal rather than unbounded memory.
//! - **Heads.** At most [`Limits::max_header_bytes`] of request line and
//!   headers (431 past it), and hyper's buffer capped to match.
//!
//! - **After a load.** Once the open connections fall to a quarter of their
//!   peak, freed memory is given back to the kernel (`memory::Trimmer`).
//!
//! Figures (through the `metrics` facade): `http_connections_open` (gauge),
//! `http_connections_refused_total` (counter).

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo, serve::Listener};
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{io::AsyncWriteExt as _, sync::Semaphore};

use crate::memory::Trimmer;

/// The smallest buffer hyper accepts.
const MIN_BUF: usize = 8192;

/// How a server bounds its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; past it, new ones are refused (503).
    pub max_connections: usize,
    /// How long a client may take to send a request head, from when the
    /// connection is ready for one (a new connection, or a keep-alive one
    /// after its last response): slow and idle clients are closed after it.
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(20),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Why [`Limits`] were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// `max_connections` is 0.
    #[error("max_connections must be at least 1")]
    NoConnections,
    /// `header_read_timeout` is 0.
    #[error("header_read_timeout must be more than 0")]
    NoTimeout,
    /// `max_header_bytes` is under 1 KiB.
    #[error("max_header_bytes must be at least 1024")]
    TinyHeaders,
}

impl Limits {
    /// Checks the values.
    pub fn check(&self) -> Result<(), LimitsError> {
        if self.max_connections == 0 {
            return Err(LimitsError::NoConnections);
        }
        if self.header_read_timeout.is_zero() {
            return Err(LimitsError::NoTimeout);
        }
        if self.max_header_bytes < 1024 {
            return Err(LimitsError::TinyHeaders);
        }
        Ok(())
    }
}

/// The answer to a connection past [`Limits::max_connections`].
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/problem+json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 162\r\n\
\r\n\
{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\"error\":\"TOO_MANY_CONNECTIONS\",\"message\":\"The server is at its connection limit; retry shortly.\"}";

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes; then stops accepting and lets the requests in flight finish
/// for at most `drain`. Every request carries the client's
/// `ConnectInfo<L::Addr>`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) where
    L: Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open_now = {
        let slots = Arc::clone(&slots);
        move || limits.max_connections - slots.available_permits()
    };
    let trimmer = Arc::new(Trimmer::default());
    // Dropping the set when the loop ends aborts the trimmer.
    let mut background = tokio::task::JoinSet::new();
    background.spawn(Arc::clone(&trimmer).run(open_now.clone()));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF))
        .keep_alive(true);
    let open = metrics::gauge!("http_connections_open");
    let refused = metrics::counter!("http_connections_refused_total");
    refused.increment(0);
    tokio::pin!(shutdown);
    loop {
        let (io, address) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused.increment(1);
            tokio::spawn(refuse(io));
            continue;
        };
        trimmer.opened(open_now());
        // The router is shared (an `Arc` inside); each request gets the
        // client's address as `ConnectInfo`.
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo(address.clone()));
            tower_service::Service::call(&mut router.clone(), request)
        });
        let connection = http.serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, "drain deadline passed: closing the connections left");
        }
    }
}

/// Answers a connection past the limit with [`REFUSAL`] and closes it,
/// within a second whatever the client does.
async fn refuse<I: tokio::io::AsyncWrite + Unpin>(mut io: I) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(REFUSAL).await?;
        io.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_message() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        assert!(body.starts_with('{') && body.ends_with('}'));
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(Limits::default().check(), Ok(()));
        let zero = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert_eq!(zero.check(), Err(LimitsError::NoConnections));
        let tiny = Limits {
            max_header_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(tiny.check(), Err(LimitsError::TinyHeaders));
    }
}
