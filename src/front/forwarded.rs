//! Proxies in front of tandem: which peers are trusted to say who the client
//! is (`X-Forwarded-For`), how it connected (`X-Forwarded-Proto`) and which
//! host it asked for (`X-Forwarded-Host`), or all three in one `Forwarded`
//! header (RFC 7239), which wins over the others when present.
//!
//! Only a peer in `--forwarded-allow-ips` (or one on a unix socket, as with
//! gunicorn: a local process such as nginx) changes what the app sees as
//! `REMOTE_ADDR`, `wsgi.url_scheme` and `Host` (so `HTTP_HOST`,
//! `SERVER_NAME` and `SERVER_PORT`); from anyone else the headers still
//! reach the app but change nothing. The client is found from the right,
//! past every trusted proxy, to the first address that isn't one (nginx's
//! `real_ip_recursive on`, uvicorn's `--forwarded-allow-ips`). Pure: no I/O.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use super::handler::Peer;
use crate::wire::Scheme;

/// The de facto forwarding headers, named once: looking a header up by a
/// string parses the string each time.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
/// trusted proxy, the client and scheme its headers name. A forwarded host
/// replaces the request's `Host` header in `headers`.
pub fn resolve(trusted: &TrustedProxies, headers: &mut HeaderMap, peer: Arc<Peer>) -> Arc<Peer> {
    // One pass over the names: cheaper than four lookups, each hashing one.
    let (mut standard, mut has_for, mut has_proto, mut has_host) = (false, false, false, false);
    for name in headers.keys() {
        standard |= name == header::FORWARDED;
        has_for |= name == X_FORWARDED_FOR;
        has_proto |= name == X_FORWARDED_PROTO;
        has_host |= name == X_FORWARDED_HOST;
    }
    if !standard && !has_for && !has_proto && !has_host {
        return peer;
    }
    if !is_trusted(trusted, &peer) {
        return peer;
    }
    let said = if standard {
        forwarded_element(trusted, headers)
    } else {
        Said {
            client: if has_for { forwarded_client(trusted, headers) } else { None },
            scheme: last_value(headers, X_FORWARDED_PROTO).and_then(parse_scheme),
            host: last_value(headers, X_FORWARDED_HOST).and_then(parse_host),
        }
    };
    if let Some(host) = said.host {
        headers.insert(header::HOST, host);
    }
    if said.client.is_none() && said.scheme.is_none() {
        return peer;
    }
    let mut seen = (*peer).clone();
    if let Some(ip) = said.client {
        seen.remote_addr = Bytes::from(ip.to_string());
        seen.remote_port = 0;
    }
    if let Some(scheme) = said.scheme {
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

/// What trusted forwarding headers say about the client.
#[derive(Debug, Default, PartialEq)]
struct Said {
    client: Option<IpAddr>,
    scheme: Option<Scheme>,
    host: Option<HeaderValue>,
}

/// RFC 7239: the element (`for=…;proto=…;host=…`) of the first hop from
/// the right whose `for` isn't a trusted proxy (the leftmost if all are).
/// A `for` that is not an address (`unknown`, `_hidden`) ends the search
/// there without naming a client.
fn forwarded_element(trusted: &TrustedProxies, headers: &HeaderMap) -> Said {
    let mut elements = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let Ok(text) = value.to_str() else { return Said::default() };
        elements.extend(split_outside_quotes(text, ',').into_iter().filter(|e| !e.trim().is_empty()));
    }
    let mut chosen = None;
    for element in elements.iter().rev() {
        let pairs = element_pairs(element);
        let client = pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case("for")).map(|(_, v)| parse_hop(v));
        chosen = Some((pairs, client.flatten()));
        match client {
            Some(Some(ip)) if trusted.contains(ip) => continue,
            _ => break,
        }
    }
    let Some((pairs, client)) = chosen else { return Said::default() };
    let get = |key: &str| pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str());
    Said { client, scheme: get("proto").and_then(parse_scheme), host: get("host").and_then(parse_host) }
}

/// `key=value` pairs of one `Forwarded` element, quotes removed.
fn element_pairs(element: &str) -> Vec<(String, String)> {
    split_outside_quotes(element, ';')
        .into_iter()
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => value.to_string(),
            };
            Some((key.trim().to_string(), value))
        })
        .collect()
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The last comma-separated value of the last `name` header (the one the
/// nearest proxy added).
fn last_value(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    let last = headers.get_all(name).iter().next_back()?;
    Some(last.to_str().ok()?.rsplit(',').next()?.trim())
}

/// A host as a `Host` header may carry it: a name or address, and a port.
fn parse_host(value: &str) -> Option<HeaderValue> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if ok {
        HeaderValue::from_str(value).ok()
    } else {
        None
    }
}

/// The rightmost address in `X-Forwarded-For` that isn't a trusted proxy
/// (the leftmost if all are); `None` if any entry is not an address.
fn forwarded_client(trusted: &TrustedProxies, headers: &HeaderMap) -> Option<IpAddr> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
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

/// `http` or `https`, in any case.
fn parse_scheme(value: &str) -> Option<Scheme> {
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
        let p = resolve(&trusted, &mut headers(pairs), peer(from));
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

    /// The client, scheme and Host a request ends up with.
    fn seen_host(trusted: &str, from: &str, pairs: &[(&'static str, &'static str)]) -> (String, Scheme, String) {
        let trusted = TrustedProxies::parse(trusted).unwrap();
        let mut h = headers(pairs);
        h.insert(header::HOST, HeaderValue::from_static("internal:8000"));
        let p = resolve(&trusted, &mut h, peer(from));
        let host = h.get(header::HOST).unwrap().to_str().unwrap().to_string();
        (String::from_utf8(p.remote_addr.to_vec()).unwrap(), p.scheme, host)
    }

    #[test]
    fn forwarded_host_from_trusted_peers_only() {
        let h = [("x-forwarded-host", "example.com"), ("x-forwarded-proto", "https")];
        assert_eq!(seen_host("127.0.0.1", "127.0.0.1", &h), ("127.0.0.1".into(), Scheme::Https, "example.com".into()));
        assert_eq!(seen_host("127.0.0.1", "192.0.2.1", &h).2, "internal:8000");
        let nearest = [("x-forwarded-host", "a.example, b.example:8443")];
        assert_eq!(seen_host("*", "192.0.2.1", &nearest).2, "b.example:8443");
        for bad in ["", "a b", "evil/path", "x@y"] {
            let h = [("x-forwarded-host", bad)];
            assert_eq!(seen_host("*", "192.0.2.1", &h).2, "internal:8000", "{bad:?}");
        }
    }

    #[test]
    fn rfc7239_forwarded() {
        let one = [("forwarded", "for=203.0.113.7;proto=https;host=example.com")];
        assert_eq!(
            seen_host("127.0.0.1", "127.0.0.1", &one),
            ("203.0.113.7".into(), Scheme::Https, "example.com".into())
        );
        assert_eq!(
            seen_host("127.0.0.1", "192.0.2.9", &one),
            ("192.0.2.9".into(), Scheme::Http, "internal:8000".into())
        );
        // The client's element is the first untrusted hop from the right;
        // quoted IPv6 with a port; case-insensitive keys; several headers.
        let chain = [
            ("forwarded", "for=198.51.100.1;proto=http, For=\"[2001:db8::7]:4711\";Proto=https;Host=\"shop.example\""),
            ("forwarded", "for=10.0.0.5;proto=http;host=internal"),
        ];
        assert_eq!(
            seen_host("127.0.0.1,10.0.0.0/8", "127.0.0.1", &chain),
            ("2001:db8::7".into(), Scheme::Https, "shop.example".into())
        );
        // An obfuscated client: no address, but its proto and host count.
        let hidden = [("forwarded", "for=_hidden;proto=https;host=example.com")];
        assert_eq!(seen_host("*", "127.0.0.1", &hidden), ("127.0.0.1".into(), Scheme::Https, "example.com".into()));
        // Forwarded wins over X-Forwarded-*.
        let both =
            [("forwarded", "for=203.0.113.7"), ("x-forwarded-for", "192.0.2.200"), ("x-forwarded-host", "x.example")];
        assert_eq!(seen_host("*", "127.0.0.1", &both), ("203.0.113.7".into(), Scheme::Http, "internal:8000".into()));
        assert_eq!(split_outside_quotes("a=\"x,y\",b", ','), vec!["a=\"x,y\"", "b"]);
    }

    #[test]
    fn only_known_schemes_count() {
        assert_eq!(seen("*", "9.9.9.9", &[("x-forwarded-proto", "HTTPS")]).2, Scheme::Https);
        assert_eq!(seen("*", "9.9.9.9", &[("x-forwarded-proto", "http, https")]).2, Scheme::Https);
        assert_eq!(seen("*", "9.9.9.9", &[("x-forwarded-proto", "gopher")]).2, Scheme::Http);
    }
}
