//! Forwarding one complete request to an upstream pool, top to bottom:
//!
//! ```text
//! pick a server (balance, health) → an idle keep-alive connection or a new one (connect timeout)
//!   → send the request, wait for the response head (response timeout)
//!   → failed? count it against the server; retry on another server when the
//!     request was not sent (refused, reset before a byte), or when it is
//!     idempotent and no response byte came; never a POST once sent
//!   → the response head, and its body as a `BodySource` (idle timeout)
//!     that gives the connection back to the pool once read in full
//! ```
//!
//! Reading the client's body beforehand and buffering the response for the
//! client are the front's (`front::request_body`, `front::response`).

use std::fs::File;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;

use super::connect::{self, Conn, ConnectError, Sent};
use super::exchange::{self, Decoder, ExchangeError, Framing, Step};
use super::headers::{self, ClientSide, RequestHead};
use super::upstream::{InFlight, Upstream};
use super::ProxyError;
use crate::front::{segments_body, EarlyHints, Piece, Segment};

/// A request body that can be sent again on a retry.
#[derive(Clone)]
pub enum Payload {
    Empty,
    Mem(Bytes),
    File(Arc<File>, u64),
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Mem(b) => b.len() as u64,
            Payload::File(_, len) => *len,
        }
    }
}

/// What the proxy needs from the client's request.
pub struct Outgoing<'a> {
    pub parts: &'a http::request::Parts,
    pub payload: Payload,
    /// Whether the client's request announced a body (Content-Length or chunked).
    pub has_body: bool,
    pub client: ClientSide<'a>,
    /// Where the upstream's `103 Early Hints` go, if the client takes them.
    pub hints: Option<&'a EarlyHints>,
    pub label: &'a str,
}

/// The upstream's answer: its head, and its body still to be read.
pub struct Answer {
    pub head: http::response::Parts,
    pub body: UpstreamBody,
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE)
}

/// Sends `out` to a server of `upstream`, retrying on others as the module
/// doc says.
pub async fn forward(upstream: &Arc<Upstream>, out: Outgoing<'_>) -> Result<Answer, ProxyError> {
    let name = &upstream.spec.name;
    let retry_after_send = idempotent(&out.parts.method);
    let mut tried = Vec::new();
    let mut last: Option<ProxyError> = None;
    while let Some(i) = upstream.pick(&tried) {
        let in_flight = upstream.start(i);
        match try_server(upstream, i, &out).await {
            Ok((head, sent, conn)) => {
                upstream.succeeded(i);
                let framing = match exchange::framing(&out.parts.method, &head) {
                    Ok(framing) => framing,
                    Err(source) => return Err(ProxyError::Invalid { at: upstream.nodes[i].label.clone(), source }),
                };
                // A connection is kept only when the whole request went
                // out, its response ends by its own framing and the server
                // did not say it closes it.
                let keep = sent == Sent::All && framing != Framing::UntilClose && !head.closes();
                let body = UpstreamBody {
                    conn: Some(conn),
                    length: match framing {
                        Framing::Length(n) => Some(n),
                        _ => None,
                    },
                    decoder: Decoder::new(framing),
                    keep,
                    idle: upstream.spec.idle_timeout,
                    upstream: Arc::clone(upstream),
                    node: i,
                    in_flight: Some(in_flight),
                };
                return Ok(Answer { head: head.parts, body });
            }
            Err((err, sent)) => {
                // Noted only on failure: a request that goes through at
                // once allocates no list.
                tried.push(i);
                drop(in_flight);
                upstream.failed(i);
                let retry = !sent || (retry_after_send && err.before_response());
                let more = retry && tried.len() < upstream.nodes.len();
                if more {
                    tracing::warn!("{}: {err}; trying another server", out.label);
                    last = Some(err);
                    continue;
                }
                return Err(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| ProxyError::NoServer { upstream: name.clone() }))
}

/// One try on server `i`: an idle connection (and a fresh one if that turns
/// out closed before the request went out), the request, the response head.
/// On failure, also says whether the request may have reached the server.
async fn try_server(
    upstream: &Upstream,
    i: usize,
    out: &Outgoing<'_>,
) -> Result<(exchange::Head, Sent, Conn), (ProxyError, bool)> {
    let spec = &upstream.spec;
    let node = &upstream.nodes[i];
    let here = &node.label;
    let parts = out.parts;
    let len = out.payload.len();
    let request = RequestHead {
        method: &parts.method,
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers: &parts.headers,
        body_len: (out.has_body || len > 0).then_some(len),
        fallback_host: &node.host,
    };
    let mut head = Vec::with_capacity(512);
    headers::write_request(&mut head, &request, &out.client);
    let hints = out.hints;
    let mut reused = upstream.idle_connection(i);
    loop {
        let was_reused = reused.is_some();
        let mut conn = match reused.take() {
            Some(conn) => conn,
            None => connect::connect(&node.addr, spec.connect_timeout)
                .await
                .map_err(|source| (ProxyError::Connect { at: here.clone(), source }, false))?,
        };
        let mut written = 0;
        let exchange = exchange(&mut conn, &head, &out.payload, hints, out.label, &mut written);
        let failure = match tokio::time::timeout(spec.response_timeout, exchange).await {
            Ok(Ok((response, sent))) => return Ok((response, sent, conn)),
            Ok(Err(err)) => err,
            Err(_) => {
                let err = ProxyError::HeadTimeout { at: here.clone(), after: spec.response_timeout };
                return Err((err, written > 0));
            }
        };
        let sent = written > 0;
        // A kept-alive connection the server closed meanwhile: try a fresh
        // one to the same server, if nothing was sent or if sending again
        // is harmless.
        let closed = matches!(failure, ExchangeError::Io(_) | ExchangeError::ClosedBeforeHead);
        if was_reused && closed && (!sent || idempotent(&parts.method)) {
            tracing::debug!("{}: {here}: kept-alive connection failed ({failure}), reconnecting", out.label);
            continue;
        }
        let err = match failure {
            ExchangeError::Invalid(_) | ExchangeError::HeadTooLarge => {
                ProxyError::Invalid { at: here.clone(), source: failure }
            }
            _ => ProxyError::Send { at: here.clone(), source: failure },
        };
        return Err((err, sent));
    }
}

/// Writes the request (`head`, then the payload) and reads up to the final
/// response head, passing 103 Early Hints on to `hints`. `written` counts
/// the bytes that went out, so that a failure (or a timeout) can tell
/// whether the request may have reached the server. Also says whether the
/// whole request went out.
async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    payload: &Payload,
    hints: Option<&EarlyHints>,
    label: &str,
    written: &mut usize,
) -> Result<(exchange::Head, Sent), ExchangeError> {
    let sent = match payload {
        Payload::Empty => conn.write_all(&mut [IoSlice::new(head)], written).await?,
        Payload::Mem(body) => conn.write_all(&mut [IoSlice::new(head), IoSlice::new(body)], written).await?,
        Payload::File(file, len) => {
            conn.no_delay()?;
            let mut sent = conn.write_all(&mut [IoSlice::new(head)], written).await?;
            let whole = Segment::File { file: Arc::clone(file), offset: 0, len: *len };
            let mut body = segments_body(vec![whole], label.to_string());
            while sent == Sent::All {
                let Some(frame) = body.frame().await else { break };
                let data = frame?.into_data().unwrap_or_default();
                sent = conn.write_all(&mut [IoSlice::new(&data)], written).await?;
            }
            sent
        }
    };
    // Cut short, the request can only be answered by a final response
    // already on its way (1xx responses are read past); the connection is
    // not kept after it.
    Ok((final_head(conn, hints).await?, sent))
}

/// Reads up to the final response head on `conn`: 100 Continue and other
/// 1xx are read past, 103 Early Hints passed on to `hints`, an unasked 101
/// is an error.
pub async fn final_head(conn: &mut Conn, hints: Option<&EarlyHints>) -> Result<exchange::Head, ExchangeError> {
    loop {
        if let Some(response) = exchange::parse_head(&mut conn.buf)? {
            match response.parts.status.as_u16() {
                103 => {
                    if let Some(hints) = hints {
                        let fields: Vec<(Bytes, Bytes)> = response
                            .parts
                            .headers
                            .iter()
                            .map(|(name, value)| {
                                (
                                    Bytes::copy_from_slice(name.as_str().as_bytes()),
                                    Bytes::copy_from_slice(value.as_bytes()),
                                )
                            })
                            .collect();
                        hints.send(&fields);
                    }
                }
                101 => return Err(ExchangeError::Invalid("101 Switching Protocols unasked".into())),
                100..=199 => {}
                _ => return Ok(response),
            }
            continue;
        }
        if conn.read().await? == 0 {
            return Err(ExchangeError::ClosedBeforeHead);
        }
    }
}

/// An upstream response body, read with the idle timeout; once read in full
/// its connection goes back to the pool.
pub struct UpstreamBody {
    /// The connection, until the body has been read (then back to the pool).
    conn: Option<Conn>,
    /// The body's length, when the response gave one.
    length: Option<u64>,
    decoder: Decoder,
    /// Whether the connection may be kept once the body is read.
    keep: bool,
    idle: Duration,
    upstream: Arc<Upstream>,
    node: usize,
    in_flight: Option<InFlight>,
}

impl UpstreamBody {
    fn at(&self) -> String {
        self.upstream.nodes[self.node].label.clone()
    }

    /// The body's `Content-Length`, as its framing was read.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// Whether the body is already known to be empty (HEAD, 204, 304 ...).
    pub fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    /// What the decoder makes of what has been read; `None` if it needs
    /// more.
    fn decoded(&mut self) -> Option<Piece<ProxyError>> {
        let Some(conn) = self.conn.as_mut() else { return Some(Piece::End) };
        match self.decoder.step(&mut conn.buf) {
            Ok(Step::More) => None,
            Ok(Step::Data(data)) => Some(Piece::Data(data)),
            Ok(Step::End) => Some(self.finish()),
            Err(err) => Some(self.failed(err)),
        }
    }

    /// What a read brought: `None` to decode again.
    fn read(&mut self, read: std::io::Result<usize>) -> Option<Piece<ProxyError>> {
        match read {
            Ok(0) => match self.decoder.closed() {
                Ok(_) => {
                    self.keep = false;
                    Some(self.finish())
                }
                Err(err) => Some(self.failed(err)),
            },
            Ok(_) => None,
            Err(err) => Some(self.failed(err.into())),
        }
    }

    fn finish(&mut self) -> Piece<ProxyError> {
        self.in_flight = None;
        if let Some(conn) = self.conn.take() {
            // Bytes beyond the response: the connection is out of step.
            if self.keep && conn.buf.is_empty() {
                self.upstream.release(self.node, conn);
            }
        }
        Piece::End
    }

    fn failed(&mut self, source: ExchangeError) -> Piece<ProxyError> {
        self.in_flight = None;
        self.conn = None;
        Piece::Failed(ProxyError::Body { at: self.at(), source })
    }
}

impl crate::front::BodySource for UpstreamBody {
    type Error = ProxyError;

    fn try_next(&mut self) -> Option<Piece<ProxyError>> {
        loop {
            if let Some(piece) = self.decoded() {
                return Some(piece);
            }
            let read = self.conn.as_mut()?.try_read();
            if matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                return None;
            }
            if let Some(piece) = self.read(read) {
                return Some(piece);
            }
        }
    }

    async fn next(&mut self) -> Piece<ProxyError> {
        loop {
            if let Some(piece) = self.decoded() {
                return piece;
            }
            let Some(conn) = self.conn.as_mut() else { return Piece::End };
            match tokio::time::timeout(self.idle, conn.read()).await {
                Err(_) => {
                    self.in_flight = None;
                    self.conn = None;
                    return Piece::Failed(ProxyError::IdleTimeout { at: self.at(), after: self.idle });
                }
                Ok(read) => {
                    if let Some(piece) = self.read(read) {
                        return piece;
                    }
                }
            }
        }
    }
}

impl ProxyError {
    /// Whether the server failed before any byte of a response: an
    /// idempotent request may go to another server.
    fn before_response(&self) -> bool {
        matches!(self, ProxyError::Connect { .. } | ProxyError::HeadTimeout { .. } | ProxyError::Send { .. })
    }

    /// The status the client gets.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ProxyError::Connect { source: ConnectError::Timeout(_), .. }
            | ProxyError::HeadTimeout { .. }
            | ProxyError::IdleTimeout { .. } => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}
