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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::connect::{self, ConnectError, Sender};
use super::headers::{self, ClientSide};
use super::upstream::{InFlight, Upstream};
use super::ProxyError;
use crate::front::{segments_body, EarlyHints, Piece, ResponseBody, Segment};

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

    fn body(&self, label: &str) -> ResponseBody {
        match self {
            Payload::Empty => ResponseBody::empty(),
            Payload::Mem(b) => ResponseBody::Full(Some(b.clone())),
            Payload::File(file, len) => {
                segments_body(vec![Segment::File { file: Arc::clone(file), offset: 0, len: *len }], label.to_string())
            }
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
        tried.push(i);
        let in_flight = upstream.start(i);
        match try_server(upstream, i, &out).await {
            Ok((response, sender)) => {
                upstream.succeeded(i);
                let (head, body) = response.into_parts();
                // A connection the server closes after this response is
                // not kept (hyper may not have noticed the close yet).
                let sender = (!headers::closes(head.version, &head.headers)).then_some(sender);
                let idle = upstream.spec.idle_timeout;
                let body = UpstreamBody {
                    body,
                    idle,
                    upstream: Arc::clone(upstream),
                    node: i,
                    sender,
                    in_flight: Some(in_flight),
                };
                return Ok(Answer { head, body });
            }
            Err((err, sent)) => {
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
) -> Result<(http::Response<Incoming>, Sender), (ProxyError, bool)> {
    let spec = &upstream.spec;
    let addr = &upstream.nodes[i].addr;
    let here = &upstream.nodes[i].label;
    let mut reused = upstream.idle_connection(i);
    loop {
        let was_reused = reused.is_some();
        let mut sender = match reused.take() {
            Some(sender) => sender,
            None => connect::connect(addr, spec.connect_timeout)
                .await
                .map_err(|source| (ProxyError::Connect { at: here.clone(), source }, false))?,
        };
        let request = build(out, &upstream.nodes[i].host);
        match tokio::time::timeout(spec.response_timeout, sender.try_send_request(request)).await {
            Err(_) => return Err((ProxyError::HeadTimeout { at: here.clone(), after: spec.response_timeout }, true)),
            Ok(Ok(response)) => return Ok((response, sender)),
            Ok(Err(err)) => {
                let sent = err.message().is_none();
                // A kept-alive connection the server closed meanwhile: try a
                // fresh one to the same server, if nothing was sent or if
                // sending again is harmless.
                if was_reused && (!sent || idempotent(&out.parts.method)) {
                    tracing::debug!(
                        "{}: {here}: kept-alive connection failed ({}), reconnecting",
                        out.label,
                        err.error()
                    );
                    continue;
                }
                return Err((ProxyError::Send { at: here.clone(), source: err.into_error() }, sent));
            }
        }
    }
}

fn build(out: &Outgoing<'_>, server: &str) -> Request<ResponseBody> {
    let parts = out.parts;
    let len = out.payload.len();
    let body_len = (out.has_body || len > 0).then_some(len);
    let mut headers = headers::request(&parts.headers, &out.client, body_len, server);
    // The body is complete: nothing to wait for.
    headers.remove(http::header::EXPECT);
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut request = Request::new(out.payload.body(out.label));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = target.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    if let Some(hints) = parts.extensions.get::<EarlyHints>().cloned() {
        // The upstream's 103s go on to the client as the app's would.
        hyper::ext::on_informational(&mut request, move |interim| {
            if interim.status() == http::StatusCode::EARLY_HINTS {
                let fields: Vec<(Bytes, Bytes)> = interim
                    .headers()
                    .iter()
                    .map(|(name, value)| {
                        (Bytes::copy_from_slice(name.as_str().as_bytes()), Bytes::copy_from_slice(value.as_bytes()))
                    })
                    .collect();
                hints.send(&fields);
            }
        });
    }
    request
}

/// An upstream response body, read with the idle timeout; once read in full
/// its connection goes back to the pool.
pub struct UpstreamBody {
    body: Incoming,
    idle: Duration,
    upstream: Arc<Upstream>,
    node: usize,
    /// The connection, until the body has been read (then back to the pool).
    sender: Option<Sender>,
    in_flight: Option<InFlight>,
}

impl UpstreamBody {
    fn at(&self) -> String {
        self.upstream.nodes[self.node].label.clone()
    }

    fn finish(&mut self) -> Piece<ProxyError> {
        self.in_flight = None;
        if let Some(sender) = self.sender.take() {
            self.upstream.release(self.node, sender);
        }
        Piece::End
    }

    fn failed(&mut self, source: hyper::Error) -> Piece<ProxyError> {
        self.in_flight = None;
        self.sender = None;
        Piece::Failed(ProxyError::Body { at: self.at(), source })
    }

    /// Whether the body is already known to be empty (HEAD, 204, 304 ...).
    pub fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

impl crate::front::BodySource for UpstreamBody {
    type Error = ProxyError;

    fn try_next(&mut self) -> Option<Piece<ProxyError>> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match Pin::new(&mut self.body).poll_frame(&mut cx) {
                Poll::Pending => return None,
                Poll::Ready(None) => return Some(self.finish()),
                Poll::Ready(Some(Err(err))) => return Some(self.failed(err)),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Some(Piece::Data(data)),
                    _ => continue,
                },
            }
        }
    }

    async fn next(&mut self) -> Piece<ProxyError> {
        loop {
            match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => {
                    self.in_flight = None;
                    self.sender = None;
                    return Piece::Failed(ProxyError::IdleTimeout { at: self.at(), after: self.idle });
                }
                Ok(None) => return self.finish(),
                Ok(Some(Err(err))) => return self.failed(err),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Piece::Data(data),
                    _ => continue,
                },
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
