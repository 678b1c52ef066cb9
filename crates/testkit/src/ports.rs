//! Free loopback ports, never handed out twice by one process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{LazyLock, Mutex};

use crate::Result;
use crate::error::IoContext;

static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process
/// has not handed out before. The kernel picks it (port 0), so parallel test
/// processes rarely meet; a server that still loses the race fails to bind
/// and says so in its error.
pub fn free_port() -> Result<u16> {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").context(|| "binding 127.0.0.1:0".into())?;
        let port = listener
            .local_addr()
            .context(|| "reading a bound address".into())?
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}
