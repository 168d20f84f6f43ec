//! Proxies in front of tandem: which peers are trusted to say who the client
//! is (`X-Forwarded-For`) and how it connected (`X-Forwarded-Proto`).
//!
//! Only a peer in `--forwarded-allow-ips` (or one on a unix socket, as with
//! gunicorn: a local process such as nginx) changes what the app sees as
//! `REMOTE_ADDR` and `wsgi.url_scheme`; from anyone else the headers still
//! reach the app but change nothing. `X-Forwarded-For` is read from the
//! right, past every trusted proxy, to the first address that isn't one
//! (nginx's `real_ip_recursive on`, uvicorn's `--forwarded-allow-ips`).
//! `X-Forwarded-Host` and `Forwarded` (RFC 7239) are not read. Pure: no I/O.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::handler::Peer;
use crate::wire::Scheme;

/// The peers whose forwarding headers are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    any: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses `*` or a comma-separated list of addresses and CIDR blocks
    /// (`127.0.0.1,10.0.0.0/8,::1`). An empty list trusts no one.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut trusted = TrustedProxies { any: false, nets: Vec::new() };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                trusted.any = true;
                continue;
            }
            let (addr, bits) = match item.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (item, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| format!("'{item}' is not an IP address or CIDR block"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max),
                None => Some(max),
            }
            .ok_or_else(|| format!("'{item}': prefix length must be from 0 to {max}"))?;
            trusted.nets.push((addr.to_canonical(), bits));
        }
        Ok(trusted)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.any || self.nets.iter().any(|&(net, bits)| in_net(ip, net, bits))
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (ip >> shift) == (net >> shift)
}

/// The connection as the app should see it: `peer` itself, or, from a
/// trusted proxy, the client and scheme its headers name.
pub fn resolve(trusted: &TrustedProxies, headers: &HeaderMap, peer: Arc<Peer>) -> Arc<Peer> {
    let has_for = headers.contains_key("x-forwarded-for");
    let has_proto = headers.contains_key("x-forwarded-proto");
    if !has_for && !has_proto {
        return peer;
    }
    if !is_trusted(trusted, &peer) {
        return peer;
    }
    let client = if has_for { forwarded_client(trusted, headers) } else { None };
    let scheme = if has_proto { forwarded_scheme(headers) } else { None };
    if client.is_none() && scheme.is_none() {
        return peer;
    }
    let mut seen = (*peer).clone();
    if let Some(ip) = client {
        seen.remote_addr = Bytes::from(ip.to_string());
        seen.remote_port = 0;
    }
    if let Some(scheme) = scheme {
        seen.scheme = scheme;
    }
    Arc::new(seen)
}

/// Whether the connection's peer may speak for the client. An empty
/// address is a unix-socket peer: a local process, trusted.
pub fn is_trusted(trusted: &TrustedProxies, peer: &Peer) -> bool {
    peer.remote_addr.is_empty()
        || std::str::from_utf8(&peer.remote_addr)
            .ok()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .is_some_and(|ip| trusted.contains(ip))
}

/// The rightmost address in `X-Forwarded-For` that isn't a trusted proxy
/// (the leftmost if all are); `None` if any entry is not an address.
fn forwarded_client(trusted: &TrustedProxies, headers: &HeaderMap) -> Option<IpAddr> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for item in value.to_str().ok()?.split(',') {
            hops.push(parse_hop(item.trim())?);
        }
    }
    let first = *hops.first()?;
    Some(hops.into_iter().rev().find(|ip| !trusted.contains(*ip)).unwrap_or(first))
}

/// An address as proxies write it: `1.2.3.4`, `::1`, `[::1]`, `1.2.3.4:5678`.
fn parse_hop(item: &str) -> Option<IpAddr> {
    let bare = item.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(item);
    bare.parse::<IpAddr>().or_else(|_| item.parse::<SocketAddr>().map(|s| s.ip())).ok().map(|ip| ip.to_canonical())
}

/// The scheme the nearest proxy reports (the last value), if it is one we know.
fn forwarded_scheme(headers: &HeaderMap) -> Option<Scheme> {
    let last = headers.get_all("x-forwarded-proto").iter().next_back()?;
    let value = last.to_str().ok()?.rsplit(',').next()?.trim();
    if value.eq_ignore_ascii_case("https") {
        Some(Scheme::Https)
    } else if value.eq_ignore_ascii_case("http") {
        Some(Scheme::Http)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str) -> Arc<Peer> {
        Arc::new(Peer {
            remote_addr: Bytes::from(addr.to_string()),
            remote_port: 4000,
            local_name: Bytes::from_static(b"127.0.0.1"),
            local_port: 8000,
            scheme: Scheme::Http,
        })
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    fn seen(trusted: &str, from: &str, pairs: &[(&'static str, &'static str)]) -> (String, u16, Scheme) {
        let trusted = TrustedProxies::parse(trusted).unwrap();
        let p = resolve(&trusted, &headers(pairs), peer(from));
        (String::from_utf8(p.remote_addr.to_vec()).unwrap(), p.remote_port, p.scheme)
    }

    #[test]
    fn parses_addresses_blocks_and_star() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8,::1,fd00::/8").unwrap();
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()), "v4-mapped");
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(TrustedProxies::parse("*").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(TrustedProxies::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(!TrustedProxies::parse("").unwrap().contains("127.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "::1/129", "1.2.3.4/x"] {
            assert!(TrustedProxies::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn trusted_peer_sets_client_and_scheme() {
        let h = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")];
        assert_eq!(seen("127.0.0.1", "127.0.0.1", &h), ("203.0.113.7".into(), 0, Scheme::Https));
        // Unix-socket peers (no address) are trusted.
        assert_eq!(seen("", "", &h), ("203.0.113.7".into(), 0, Scheme::Https));
    }

    #[test]
    fn untrusted_peer_changes_nothing() {
        let h = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")];
        assert_eq!(seen("127.0.0.1", "198.51.100.1", &h), ("198.51.100.1".into(), 4000, Scheme::Http));
    }

    #[test]
    fn client_is_the_first_untrusted_hop_from_the_right() {
        let h = [("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.2"), ("x-forwarded-for", "10.0.0.3")];
        assert_eq!(seen("127.0.0.1,10.0.0.0/8", "127.0.0.1", &h).0, "203.0.113.7");
        let all_trusted = [("x-forwarded-for", "10.0.0.1, 10.0.0.2")];
        assert_eq!(seen("127.0.0.1,10.0.0.0/8", "127.0.0.1", &all_trusted).0, "10.0.0.1");
        let forms = [("x-forwarded-for", "[2001:db8::1], 192.0.2.1:5555")];
        assert_eq!(seen("127.0.0.1", "127.0.0.1", &forms).0, "192.0.2.1");
        let garbage = [("x-forwarded-for", "1.1.1.1, unknown")];
        assert_eq!(seen("127.0.0.1", "127.0.0.1", &garbage).0, "127.0.0.1");
    }

    #[test]
    fn only_known_schemes_count() {
        assert_eq!(seen("*", "9.9.9.9", &[("x-forwarded-proto", "HTTPS")]).2, Scheme::Https);
        assert_eq!(seen("*", "9.9.9.9", &[("x-forwarded-proto", "http, https")]).2, Scheme::Https);
        assert_eq!(seen("*", "9.9.9.9", &[("x-forwarded-proto", "gopher")]).2, Scheme::Http);
    }
}
