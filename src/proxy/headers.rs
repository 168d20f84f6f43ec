//! The headers a request and a response get on the way through the proxy,
//! as nginx's `proxy_pass` users expect them: hop-by-hop headers removed in
//! both directions (with any the `Connection` header names), `Host` passed
//! through, and `X-Forwarded-For`/`-Proto`/`-Host` added, appended to the
//! incoming ones only when the peer is a trusted proxy (`front::forwarded`
//! decides who is). Pure: no I/O.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::wire::Scheme;

/// What the proxy knows about the client connection.
pub struct ClientSide<'a> {
    /// The peer's address, empty on a unix socket.
    pub addr: &'a str,
    /// Whether the peer may speak for the client (`--forwarded-allow-ips`).
    pub trusted: bool,
    pub scheme: Scheme,
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Whether `name` is hop-by-hop in `headers`: always so, or named by its
/// `Connection` header.
fn is_hop_by_hop(headers: &HeaderMap, name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The headers sent upstream for a client request. `body_len` is the
/// length of the (complete) body, if the request has one.
pub fn request(incoming: &HeaderMap, client: &ClientSide, body_len: Option<u64>, fallback_host: &str) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len() + 3);
    let forwarded = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];
    for (name, value) in incoming {
        if is_hop_by_hop(incoming, name) || name == header::CONTENT_LENGTH || forwarded.contains(&name.as_str()) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    let joined = |name: &str| {
        let values: Vec<&str> = incoming.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (client.trusted && !values.is_empty()).then(|| values.join(", "))
    };
    let xff = match (joined("x-forwarded-for"), client.addr) {
        (Some(chain), "") => Some(chain),
        (Some(chain), addr) => Some(format!("{chain}, {addr}")),
        (None, "") => None,
        (None, addr) => Some(addr.to_string()),
    };
    if let Some(value) = xff.and_then(|v| HeaderValue::from_str(&v).ok()) {
        out.insert("x-forwarded-for", value);
    }
    let proto = match client.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let proto = joined("x-forwarded-proto").unwrap_or_else(|| proto.to_string());
    if let Ok(value) = HeaderValue::from_str(&proto) {
        out.insert("x-forwarded-proto", value);
    }
    let host = joined("x-forwarded-host")
        .or_else(|| incoming.get(header::HOST).and_then(|h| h.to_str().ok()).map(String::from));
    if let Some(value) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        out.insert("x-forwarded-host", value);
    }
    if !out.contains_key(header::HOST) {
        if let Ok(value) = HeaderValue::from_str(fallback_host) {
            out.insert(header::HOST, value);
        }
    }
    if let Some(len) = body_len {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    out
}

/// Whether the server said it closes the connection after this response
/// (`Connection: close`), so the connection is not worth keeping.
pub fn closes(version: http::Version, headers: &HeaderMap) -> bool {
    let tokens = headers.get_all(http::header::CONNECTION).iter().filter_map(|v| v.to_str().ok());
    let mut tokens = tokens.flat_map(|v| v.split(',')).map(str::trim);
    if version == http::Version::HTTP_10 {
        return !tokens.any(|t| t.eq_ignore_ascii_case("keep-alive"));
    }
    tokens.any(|t| t.eq_ignore_ascii_case("close"))
}

/// Removes the hop-by-hop headers of an upstream's response.
pub fn response(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_hop_by_hop(headers, n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn hop_by_hop_go_and_forwarding_is_added() {
        let incoming = map(&[
            ("host", "example.com"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("content-length", "999"),
            ("accept", "*/*"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        let client = ClientSide { addr: "10.1.1.1", trusted: false, scheme: Scheme::Http };
        let out = request(&incoming, &client, Some(3), "up:80");
        assert_eq!(out["host"], "example.com");
        assert_eq!(out["accept"], "*/*");
        assert_eq!(out["content-length"], "3");
        assert_eq!(out["x-forwarded-for"], "10.1.1.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "example.com");
        for gone in ["connection", "x-secret", "te"] {
            assert!(!out.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn trusted_peers_extend_the_chain() {
        let incoming =
            map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2"), ("x-forwarded-proto", "https")]);
        let client = ClientSide { addr: "127.0.0.1", trusted: true, scheme: Scheme::Http };
        let out = request(&incoming, &client, None, "up:80");
        assert_eq!(out["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["host"], "up:80");
        assert!(!out.contains_key("content-length"));
    }

    #[test]
    fn connection_close_is_seen() {
        use http::Version;
        assert!(closes(Version::HTTP_11, &map(&[("connection", "Keep-Alive, Close")])));
        assert!(!closes(Version::HTTP_11, &map(&[("connection", "keep-alive")])));
        assert!(!closes(Version::HTTP_11, &map(&[])));
        assert!(closes(Version::HTTP_10, &map(&[])));
        assert!(!closes(Version::HTTP_10, &map(&[("connection", "keep-alive")])));
    }

    #[test]
    fn response_hop_by_hop_go() {
        let mut h =
            map(&[("connection", "close, x-a"), ("x-a", "1"), ("keep-alive", "5"), ("content-type", "text/plain")]);
        response(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }
}
