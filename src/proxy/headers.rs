//! The headers a request and a response get on the way through the proxy,
//! as nginx's `proxy_pass` users expect them: hop-by-hop headers removed in
//! both directions (with any the `Connection` header names), `Host` passed
//! through, and `X-Forwarded-For`/`-Proto`/`-Host` added, appended to the
//! incoming ones only when the peer is a trusted proxy (`front::forwarded`
//! decides who is). Pure: no I/O.

use http::header::{self, HeaderMap, HeaderName};

use crate::front::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::wire::Scheme;

/// What the proxy knows about the client connection.
pub struct ClientSide<'a> {
    /// The peer's address, empty on a unix socket.
    pub addr: &'a str,
    /// Whether the peer may speak for the client (`--forwarded-allow-ips`).
    pub trusted: bool,
    pub scheme: Scheme,
}

/// Whether `name` is hop-by-hop in every message.
fn always_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
    )
}

/// The options of the `Connection` fields of `headers`, comma-separated
/// tokens (split as bytes: cheaper than `str` patterns on short values).
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    let values = headers.get_all(header::CONNECTION).into_iter();
    values.flat_map(|v| v.as_bytes().split(|&b| b == b',')).map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// The `Connection` options of `headers` that name other fields, hop-by-hop
/// in this message. `close` and `keep-alive`, nearly always the only ones,
/// name none (`Keep-Alive` is hop-by-hop anyway), so the usual message gets
/// an empty list, which costs no allocation.
fn connection_tokens(headers: &HeaderMap) -> Vec<&[u8]> {
    let named = |t: &&[u8]| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive");
    connection_options(headers).filter(named).collect()
}

/// Whether `name` is hop-by-hop: always so, or named in `connection`.
fn is_hop_by_hop(connection: &[&[u8]], name: &HeaderName) -> bool {
    always_hop_by_hop(name) || connection.iter().any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))
}

/// A request to go upstream.
pub struct RequestHead<'a> {
    pub method: &'a http::Method,
    /// Origin form: path and query.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// The length of the (complete) body, if the request has one.
    pub body_len: Option<u64>,
    /// `Host` for a request that came without one.
    pub fallback_host: &'a str,
}

/// Writes the HTTP/1.1 head sent upstream for a client request to `out`:
/// its headers less the hop-by-hop ones and `Expect` (the body is
/// complete: nothing to wait for), with the forwarding headers and the
/// body's length.
pub fn write_request(out: &mut Vec<u8>, request: &RequestHead, client: &ClientSide) {
    let incoming = request.headers;
    let line = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = connection_tokens(incoming);
    let forwarded = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST];
    // What a trusted peer sent in each of them, to be extended.
    let mut chains: [Vec<&[u8]>; 3] = Default::default();
    let mut host = None;
    for (name, value) in incoming {
        if name == header::HOST {
            // Never hop-by-hop, even if `Connection` names it (as nginx).
            host.get_or_insert(value.as_bytes());
        } else if let Some(i) = forwarded.iter().position(|f| f == name) {
            if client.trusted {
                chains[i].push(value.as_bytes());
            }
            continue;
        } else if name == header::CONTENT_LENGTH || name == header::EXPECT || is_hop_by_hop(&connection, name) {
            continue;
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let [xff, proto, forwarded_host] = chains.map(|values| (!values.is_empty()).then(|| values.join(&b", "[..])));
    // The trusted chain, then the peer.
    if xff.is_some() || !client.addr.is_empty() {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(chain) = &xff {
            out.extend_from_slice(chain);
            if !client.addr.is_empty() {
                out.extend_from_slice(b", ");
            }
        }
        out.extend_from_slice(client.addr.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let scheme: &[u8] = match client.scheme {
        Scheme::Http => b"http",
        Scheme::Https => b"https",
    };
    line(out, b"x-forwarded-proto", proto.as_deref().unwrap_or(scheme));
    if let Some(value) = forwarded_host.as_deref().or(host) {
        line(out, b"x-forwarded-host", value);
    }
    if host.is_none() {
        line(out, b"host", request.fallback_host.as_bytes());
    }
    if let Some(len) = request.body_len {
        line(out, b"content-length", len.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Removes the hop-by-hop headers of an upstream's response.
pub fn response(headers: &mut HeaderMap) {
    // Found before any is removed (`Connection` names others); a response
    // rarely has more than one or two, so they are gathered on the stack.
    let mut found: [Option<HeaderName>; 4] = Default::default();
    let mut more = Vec::new();
    let connection = connection_tokens(headers);
    for (i, name) in headers.keys().filter(|name| is_hop_by_hop(&connection, name)).enumerate() {
        match found.get_mut(i) {
            Some(slot) => *slot = Some(name.clone()),
            None => more.push(name.clone()),
        }
    }
    for name in found.into_iter().flatten().chain(more) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    /// The head `write_request` makes, parsed back: request line and headers.
    fn sent(incoming: &HeaderMap, client: &ClientSide, body_len: Option<u64>) -> (String, HeaderMap) {
        let method = http::Method::GET;
        let request =
            RequestHead { method: &method, target: "/a?b=1", headers: incoming, body_len, fallback_host: "up:80" };
        let mut out = Vec::new();
        write_request(&mut out, &request, client);
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut fields);
        assert_eq!(parsed.parse(&out).unwrap(), httparse::Status::Complete(out.len()));
        let line = format!("{} {} 1.{}", parsed.method.unwrap(), parsed.path.unwrap(), parsed.version.unwrap());
        let mut map = HeaderMap::new();
        for h in parsed.headers.iter() {
            map.append(HeaderName::from_bytes(h.name.as_bytes()).unwrap(), HeaderValue::from_bytes(h.value).unwrap());
        }
        (line, map)
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
            ("expect", "100-continue"),
        ]);
        let client = ClientSide { addr: "10.1.1.1", trusted: false, scheme: Scheme::Http };
        let (line, out) = sent(&incoming, &client, Some(3));
        assert_eq!(line, "GET /a?b=1 1.1");
        assert_eq!(out["host"], "example.com");
        assert_eq!(out["accept"], "*/*");
        assert_eq!(out["content-length"], "3");
        assert_eq!(out["x-forwarded-for"], "10.1.1.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "example.com");
        assert_eq!(out.len(), 6, "{out:?}");
        for gone in ["connection", "x-secret", "te", "expect"] {
            assert!(!out.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn trusted_peers_extend_the_chain() {
        let incoming =
            map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2"), ("x-forwarded-proto", "https")]);
        let client = ClientSide { addr: "127.0.0.1", trusted: true, scheme: Scheme::Http };
        let (_, out) = sent(&incoming, &client, None);
        assert_eq!(out["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["host"], "up:80");
        assert!(!out.contains_key("x-forwarded-host"));
        assert!(!out.contains_key("content-length"));
    }

    #[test]
    fn host_stays_even_when_connection_names_it() {
        let incoming = map(&[("host", "example.com"), ("connection", "host, x-a"), ("x-a", "1")]);
        let client = ClientSide { addr: "10.1.1.1", trusted: false, scheme: Scheme::Http };
        let (_, out) = sent(&incoming, &client, None);
        assert_eq!(out.get_all("host").iter().collect::<Vec<_>>(), ["example.com"]);
        assert!(!out.contains_key("x-a"));
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
