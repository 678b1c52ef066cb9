//! Free loopback ports, never handed out twice by one process.
//!
//! Ports are picked *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so the local port of some
//! outgoing connection can never take a port between the moment it was found
//! free and the moment the server binds it.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{LazyLock, Mutex};

use crate::Result;
use crate::error::IoContext;

static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);

/// The lowest port this module hands out.
const LOWEST: u16 = 10_000;

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process
/// has not handed out before.
pub fn free_port() -> Result<u16> {
    let highest = ephemeral_start().saturating_sub(1).max(LOWEST + 1_000);
    let span = u32::from(highest - LOWEST);
    for _ in 0..1_000 {
        let random = uuid::Uuid::new_v4().as_u128() as u32;
        let port = LOWEST + (random % span) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    // Practically unreachable; fall back to a kernel-chosen port.
    let listener = TcpListener::bind("127.0.0.1:0").context(|| "binding 127.0.0.1:0".into())?;
    let port = listener
        .local_addr()
        .context(|| "reading a bound address".into())?
        .port();
    HANDED_OUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port);
    Ok(port)
}

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(
            ports.iter().all(|&p| p >= LOWEST && p < ephemeral_start()),
            "{ports:?}"
        );
    }
}
