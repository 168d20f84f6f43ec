//! Request heads parsed in place, and response heads encoded.
//!
//! A head reaches [`parse`] only once `framing` has let it through, whole
//! and valid: the request line, the field syntax, the limits and the body
//! framing are checked there. What is left here is building the request
//! the handler takes (method, target, fields whose values share the read
//! buffer) and reading what the connection needs from it: how its body
//! ends, whether the connection stays open, whether the client waits for
//! `100 Continue`. [`encode`] writes a response head; which length and
//! connection fields it carries is the caller's decision ([`Length`]).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{Method, StatusCode, Uri, Version};

use crate::proxy::exchange::Framing;

/// Header fields parsed on the stack (the default limit is 100); a head
/// with more (up to the configured limit, which `framing` enforces) takes
/// a heap array.
const STACK_FIELDS: usize = 128;

/// A request head, ready for the handler.
pub struct Head {
    pub parts: http::request::Parts,
    /// How the request body ends.
    pub body: Framing,
    /// The client allows another request on the connection after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// Why a head that `framing` let through still can't be used.
#[derive(Debug, thiserror::Error)]
#[error("malformed request: {0}")]
pub struct Invalid(&'static str);

impl Invalid {
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

/// Takes the head at the start of `buf` out of it; `None` while it is not
/// all there.
pub fn parse(buf: &mut BytesMut, max_fields: usize) -> Result<Option<Head>, Invalid> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let bytes = buf.split_to(end + 4).freeze();
    // Left uninitialised: the parser writes the ones it uses.
    if max_fields <= STACK_FIELDS {
        let mut fields = [const { MaybeUninit::uninit() }; STACK_FIELDS];
        build(&bytes, &mut fields).map(Some)
    } else {
        let mut fields = Vec::new();
        fields.resize_with(max_fields + 1, MaybeUninit::uninit);
        build(&bytes, &mut fields).map(Some)
    }
}

fn build<'b>(bytes: &'b Bytes, fields: &mut [MaybeUninit<httparse::Header<'b>>]) -> Result<Head, Invalid> {
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(bytes, fields) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Invalid("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Invalid("too many header fields")),
        Err(_) => return Err(Invalid("head does not parse")),
    }
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes()).map_err(|_| Invalid("method"))?;
    let target = request.path.unwrap_or_default();
    let uri = Uri::from_maybe_shared(bytes.slice_ref(target.as_bytes())).map_err(|_| Invalid("request target"))?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    let mut body = Framing::Empty;
    let (mut close, mut keep) = (false, false);
    let mut expect_continue = false;
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Invalid("header field name"))?;
        let value =
            HeaderValue::from_maybe_shared(bytes.slice_ref(field.value)).map_err(|_| Invalid("header field value"))?;
        if name == CONTENT_LENGTH {
            let len = value.to_str().ok().and_then(|v| v.parse().ok()).ok_or(Invalid("Content-Length"))?;
            body = Framing::Length(len);
        } else if name == TRANSFER_ENCODING {
            body = Framing::Chunked;
        } else if name == CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    if let Some(authority) = uri.authority().filter(|_| method != Method::CONNECT) {
        // RFC 9112 3.2.2: an absolute-form target's authority is the host,
        // whatever the Host field says (as nginx takes it).
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(http::header::HOST, host);
        }
    }
    let keep_alive = !close && (version == Version::HTTP_11 || keep);
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    let expect_continue = expect_continue && version == Version::HTTP_11 && body != Framing::Empty;
    Ok(Head { parts, body, keep_alive, expect_continue })
}

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// No body: a response to HEAD, or a 304. The handler's length field,
    /// if any, describes what a GET would get and goes out as it is.
    None,
    /// No body and no length field: a 204.
    Nothing,
    /// `Content-Length`, one field written here (the handler's are left out).
    Known(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// What the connection fields of a response say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// Nothing: HTTP/1.1 keeps the connection by default.
    Default,
    /// `Connection: keep-alive`, which an HTTP/1.0 client needs to hear.
    KeepAlive,
    Close,
}

/// Appends the head of a response with `status` and `headers` to `out`.
/// The handler's connection and framing fields are left out: `length` and
/// `persist` decide those.
pub fn encode(out: &mut BytesMut, status: StatusCode, headers: &HeaderMap, length: Length, persist: Persist) {
    out.reserve(256 + headers.len() * 48);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        if name == CONNECTION || name == TRANSFER_ENCODING || name.as_str() == "keep-alive" {
            continue;
        }
        if name == CONTENT_LENGTH && length != Length::None {
            continue;
        }
        dated |= name == http::header::DATE;
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match length {
        Length::Known(len) => {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa(len, &mut [0; 20]));
            out.put_slice(b"\r\n");
        }
        Length::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    match persist {
        Persist::Default => {}
        Persist::KeepAlive => out.put_slice(b"connection: keep-alive\r\n"),
        Persist::Close => out.put_slice(b"connection: close\r\n"),
    }
    if !dated {
        out.put_slice(b"date: ");
        with_date(|date| out.put_slice(date));
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// The decimal digits of `n`, written at the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

thread_local! {
    /// The current `Date` value, formatted once a second per thread.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Calls `f` with the `Date` field value for now.
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, date)| {
        if *at != secs {
            *at = secs;
            *date = httpdate::fmt_http_date(now).into_bytes();
        }
        f(date)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, Invalid> {
        parse(&mut BytesMut::from(text), 100)
    }

    #[test]
    fn a_head_is_taken_and_what_follows_stays() {
        let mut buf = BytesMut::from("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET");
        let head = parse(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&buf[..], b"abcGET");
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/a");
        assert_eq!(head.parts.uri.query(), Some("b=1"));
        assert_eq!(head.parts.headers["host"], "x");
        assert_eq!(head.body, Framing::Length(3));
        assert!(head.keep_alive && !head.expect_continue);
        assert!(parse(&mut BytesMut::from("GET / HTTP/1.1\r\nHost: x\r\n"), 100).unwrap().is_none());
    }

    #[test]
    fn connection_and_expect_are_read() {
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.parts.version, Version::HTTP_10);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nConnection: te, close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = head("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.expect_continue);
        assert_eq!(h.body, Framing::Chunked);
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap();
        assert!(!h.expect_continue, "nothing to wait for without a body");
    }

    #[test]
    fn many_fields_take_the_heap_array() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..150 {
            text.push_str(&format!("X-{i}: {i}\r\n"));
        }
        text.push_str("\r\n");
        let h = parse(&mut BytesMut::from(text.as_str()), 200).unwrap().unwrap();
        assert_eq!(h.parts.headers.len(), 151);
        assert!(parse(&mut BytesMut::from(text.as_str()), 100).is_err());
    }

    #[test]
    fn an_absolute_target_names_the_host() {
        let h = head("GET http://Example.com:8080/a?b HTTP/1.1\r\nHost: other\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.parts.headers["host"], "Example.com:8080");
        assert_eq!(h.parts.headers.get_all("host").iter().count(), 1);
        assert_eq!(h.parts.uri.path(), "/a");
    }

    #[test]
    fn targets_the_uri_type_refuses_are_invalid() {
        assert!(head("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
        let h = head("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.parts.uri, "*");
    }

    fn encoded(status: StatusCode, headers: &HeaderMap, length: Length, persist: Persist) -> String {
        let mut out = BytesMut::new();
        encode(&mut out, status, headers, length, persist);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn heads_carry_one_length_and_the_connection_decision() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let text = encoded(StatusCode::OK, &headers, Length::Known(1234), Persist::KeepAlive);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 1234\r\nconnection: keep-alive\r\ndate: "), "{text}");
        assert!(!text.contains("chunked") && !text.contains("close"), "{text}");
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");

        let text = encoded(StatusCode::NOT_FOUND, &HeaderMap::new(), Length::Chunked, Persist::Close);
        assert!(text.contains("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"), "{text}");

        headers.clear();
        headers.insert("content-length", HeaderValue::from_static("10"));
        let text = encoded(StatusCode::OK, &headers, Length::None, Persist::Default);
        assert_eq!(text.matches("content-length: 10").count(), 1, "{text}");
        headers.append("content-length", HeaderValue::from_static("10"));
        let text = encoded(StatusCode::OK, &headers, Length::Known(10), Persist::Default);
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        let text = encoded(StatusCode::NO_CONTENT, &headers, Length::Nothing, Persist::Default);
        assert!(!text.contains("content-length"), "{text}");
        let text = encoded(StatusCode::from_u16(299).unwrap(), &headers, Length::UntilClose, Persist::Close);
        assert!(text.starts_with("HTTP/1.1 299 \r\n") && !text.contains("content-length"), "{text}");
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
