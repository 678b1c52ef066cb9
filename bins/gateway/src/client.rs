//! Who the client is: the peer's address, or, when the peer is one of
//! `server.trusted_proxies`, the address that proxy forwarded in
//! `X-Forwarded-For` (the rightmost one that is not itself a trusted
//! proxy: the leftmost entries are whatever the client wrote).
//!
//! The answer ([`ClientIp`]) keys the limit before authentication and the
//! per-route buckets of tokens without a subject, and decides whether the
//! proxy appends to `X-Forwarded-For` (a trusted proxy's chain) or
//! replaces it (anyone else's is a claim, not a fact).

use std::{net::IpAddr, str::FromStr};

use axum::http::{HeaderMap, HeaderName};
use serde::{Deserialize, Deserializer};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A trusted proxy: one address or a network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyNet(pub ipnet::IpNet);

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|net| Self(net.trunc()))
            .map_err(|_| format!("`{text}` is not an address or a CIDR network"))
    }
}

impl<'de> Deserialize<'de> for ProxyNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The most `X-Forwarded-For` entries looked at, from the right.
const MAX_HOPS: usize = 16;

/// The client of a request (request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp {
    /// The client's address.
    pub ip: IpAddr,
    /// The connection's peer (the client, or the proxy in front of it).
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy (its `X-Forwarded-For` is
    /// kept and appended to).
    pub via_trusted_proxy: bool,
}

/// Whether `ip` is in one of `trusted`.
fn is_trusted(ip: IpAddr, trusted: &[ProxyNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.0.contains(&ip))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client of a request from `peer` with `headers`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[ProxyNet]) -> ClientIp {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return ClientIp {
            ip: peer,
            peer,
            via_trusted_proxy: false,
        };
    }
    // Every X-Forwarded-For line, as one list, walked from the right.
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_HOPS) {
        let Some(ip) = parse_entry(entry) else {
            // A broken chain: the nearest trusted hop is all we know.
            break;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    ClientIp {
        ip: client,
        peer,
        via_trusted_proxy: true,
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps in brackets or with a
/// port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(lines: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static(line));
        }
        headers
    }

    fn trusted(nets: &[&str]) -> Vec<ProxyNet> {
        nets.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let peer: IpAddr = [203, 0, 113, 9].into();
        let got = resolve(peer, &headers(&["1.2.3.4"]), &trusted(&["10.0.0.0/8"]));
        assert_eq!(
            got,
            ClientIp {
                ip: peer,
                peer,
                via_trusted_proxy: false
            }
        );
        let got = resolve(peer, &headers(&["1.2.3.4"]), &[]);
        assert_eq!(got.ip, peer);
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry() {
        let peer: IpAddr = [10, 0, 0, 2].into();
        let nets = trusted(&["10.0.0.0/8", "192.168.1.1"]);
        let cases: &[(&[&'static str], [u8; 4])] = &[
            // The client wrote a fake first entry; the proxies appended.
            (&["6.6.6.6, 198.51.100.7, 192.168.1.1"], [198, 51, 100, 7]),
            (&["6.6.6.6", "198.51.100.7"], [198, 51, 100, 7]),
            (&["198.51.100.7:4711"], [198, 51, 100, 7]),
            // Nothing forwarded: the proxy itself.
            (&[], [10, 0, 0, 2]),
            // Only trusted hops: the leftmost of them.
            (&["10.1.1.1, 10.2.2.2"], [10, 1, 1, 1]),
            // Garbage ends the walk at the nearest trusted hop.
            (&["198.51.100.7, garbage"], [10, 0, 0, 2]),
        ];
        for (lines, expected) in cases {
            let got = resolve(peer, &headers(lines), &nets);
            assert_eq!(got.ip, IpAddr::from(*expected), "{lines:?}");
            assert!(got.via_trusted_proxy);
        }
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let got = resolve(
            mapped,
            &headers(&["198.51.100.7"]),
            &trusted(&["10.0.0.0/8"]),
        );
        assert_eq!(got.ip, IpAddr::from([198, 51, 100, 7]));
    }
}
