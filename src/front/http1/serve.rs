//! The loop of one HTTP/1.1 connection: read a head, let the handler
//! answer it, write the answer, and again while the connection is kept.
//!
//! ```text
//! next head (guard: header and keep-alive timeouts; a refused head ends the input)
//!   → handler (the body read through `body` as it asks; early hints written while it works)
//!   → response head (`head::encode`) and body, written as the body produces them
//!   → the unread rest of the request body dropped, or the connection closed
//! ```
//!
//! Once tandem stops, the response under way goes out with
//! `Connection: close`, an idle connection closes at once, and one that
//! has not sent a request yet gets `FIRST_REQUEST_GRACE` to send it.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, Method, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::{self, Incoming, Io, Shared, DISCARD_MAX};
use super::head::{self, Length, Persist};
use crate::front::early_hints::{EarlyHints, Interim, RequestInterim};
use crate::front::guard::GuardedIo;
use crate::front::handler::{error_response, Front, Lent, Peer};
use crate::front::response::ResponseBody;
use crate::front::sendfile::{FileSends, FileSink};
use crate::metrics::METRICS;
use crate::proxy::exchange::Framing;

/// Body bytes gathered before they are written, when more are ready.
const GATHER: usize = 256 * 1024;
/// Pieces written in one vectored write.
const MAX_SLICES: usize = 64;

/// What a connection's requests are lent besides the socket.
pub struct Lends {
    pub interim: Arc<Interim>,
    pub sends: Option<Arc<FileSends>>,
}

/// Serves the requests on `guard` until the connection is to close;
/// returns the socket for `GuardedIo::finish` (`None` if a body outlived
/// its request).
pub async fn serve<S>(
    guard: GuardedIo<S>,
    peer: Arc<Peer>,
    front: Arc<Front>,
    stop: watch::Receiver<bool>,
    lends: Lends,
    grace: Duration,
) -> Option<GuardedIo<S>>
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin + Send + 'static,
{
    let keep_alive = front.config.client.keepalive_timeout.is_some();
    let max_fields = front.config.client.request_fields;
    let shared: Shared<S> = Arc::new(Mutex::new(Io::new(guard)));
    let mut conn =
        Conn { shared, out: BytesMut::new(), queue: VecDeque::new(), stopping: false, served: 0, stop: stop.clone() };
    // One wait for the stop, for the connection's whole life.
    let mut stop = stop;
    let mut stopped = pin!(crate::front::conn::stopped(&mut stop));
    loop {
        let Some(head) = conn.next_head(stopped.as_mut(), grace, max_fields).await else {
            break;
        };
        conn.served += 1;
        let head_only = head.parts.method == Method::HEAD;
        let version = head.parts.version;
        if head.parts.method == Method::CONNECT {
            // What follows a 2xx to CONNECT is a tunnel, not requests.
            tracing::info!("refused request: 405, CONNECT is not supported");
            METRICS.refused(405);
            let refusal = error_response(StatusCode::METHOD_NOT_ALLOWED);
            if let Err(e) = conn.respond(refusal, false, version, true).await {
                tracing::debug!("connection error: {e}");
            }
            break;
        }
        let has_body = head.body != Framing::Empty;
        body::lock(&conn.shared).start_body(head.body, head.expect_continue);
        let request = http::Request::from_parts(head.parts, Incoming::new(has_body.then(|| Arc::clone(&conn.shared))));
        let lent = Lent {
            hints: (version == Version::HTTP_11).then(|| EarlyHints::new(RequestInterim::new(&lends.interim))),
            sends: lends.sends.clone(),
        };
        // Pinned here and lent to `answer`: a future passed by value is
        // stored again in the callee's, and this one is kilobytes.
        let handler = pin!(Arc::clone(&front).handle(request, Arc::clone(&peer), lent));
        let Some(response) = conn.answer(handler, &lends.interim).await else {
            break;
        };
        let wants_close = !head.keep_alive || !keep_alive;
        match conn.respond(response, head_only, version, wants_close).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::debug!("connection error: {e}");
                break;
            }
        }
    }
    let Conn { shared, .. } = conn;
    Arc::try_unwrap(shared).ok().map(|io| io.into_inner().unwrap_or_else(|p| p.into_inner()).guard)
}

/// One connection's state between its requests.
struct Conn<S> {
    shared: Shared<S>,
    /// Where response heads are encoded (its memory is reused).
    out: BytesMut,
    /// What a response's writer has still to write (kept for its memory).
    queue: VecDeque<Bytes>,
    /// Tandem is stopping: no request after the one under way.
    stopping: bool,
    served: u64,
    stop: watch::Receiver<bool>,
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin + Send + 'static,
{
    /// The next request head; `None` once there is none to answer.
    async fn next_head(
        &mut self,
        mut stopped: Pin<&mut impl Future<Output = ()>>,
        grace: Duration,
        max_fields: usize,
    ) -> Option<head::Head> {
        let mut grace_until: Option<Instant> = None;
        loop {
            {
                let mut io = body::lock(&self.shared);
                match head::parse(&mut io.buf, max_fields) {
                    Ok(Some(head)) => return Some(head),
                    Ok(None) => {}
                    Err(invalid) => {
                        io.guard.refuse_head(invalid.reason());
                        return None;
                    }
                }
                if self.stopping && io.buf.is_empty() && io.guard.is_idle() && self.served > 0 {
                    return None;
                }
            }
            let read = poll_fn(|cx| {
                let io = &mut *body::lock(&self.shared);
                io.guard.poll_read_into(cx, &mut io.buf)
            });
            let grace_over = async move {
                match grace_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                read = read => match read {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("connection error: {e}");
                        return None;
                    }
                },
                _ = stopped.as_mut(), if !self.stopping => {
                    self.stopping = true;
                    grace_until = Some(Instant::now() + grace);
                }
                _ = grace_over => {
                    let io = body::lock(&self.shared);
                    if io.buf.is_empty() && io.guard.is_idle() {
                        return None;
                    }
                    // A head is on its way: the header timeout bounds it.
                    grace_until = None;
                }
            }
        }
    }

    /// Runs the handler, writing the early hints it sends while it works.
    /// `None` if the connection failed meanwhile.
    async fn answer(
        &mut self,
        mut handler: Pin<&mut impl Future<Output = Result<http::Response<ResponseBody>, std::convert::Infallible>>>,
        interim: &Interim,
    ) -> Option<http::Response<ResponseBody>> {
        let shared = &self.shared;
        let done = poll_fn(|cx| {
            if let Poll::Ready(Ok(response)) = handler.as_mut().poll(cx) {
                return Poll::Ready(Ok(response));
            }
            if interim.pending() {
                let mut io = body::lock(shared);
                // Never inside a `100 Continue` half written.
                if !io.continue_under_way() {
                    if let Poll::Ready(Err(e)) = io.guard.poll_hints(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
            }
            Poll::Pending
        })
        .await;
        // A stop while the handler worked closes the connection after it.
        self.stopping |= *self.stop.borrow();
        match done {
            Ok(response) => Some(response),
            Err(e) => {
                tracing::debug!("connection error writing early hints: {e}");
                None
            }
        }
    }

    /// Writes `response`. Ready with whether the connection is kept.
    async fn respond(
        &mut self,
        response: http::Response<ResponseBody>,
        head_only: bool,
        version: Version,
        wants_close: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let mut close = wants_close || self.stopping || says_close(&parts.headers);
        let length = if status == StatusCode::NO_CONTENT || status.is_informational() {
            Length::Nothing
        } else if head_only || status == StatusCode::NOT_MODIFIED {
            Length::None
        } else if let Some(len) = declared_length(&parts.headers).or(body.size_hint().exact()) {
            Length::Known(len)
        } else if version == Version::HTTP_11 {
            Length::Chunked
        } else {
            close = true;
            Length::UntilClose
        };
        {
            let io = body::lock(&self.shared);
            // A client waiting for `100 Continue` may send its body later
            // anyway, where the next request would be read.
            close |= !io.body_done() && io.body_withheld();
        }
        let persist = match (close, version) {
            (true, _) => Persist::Close,
            (false, Version::HTTP_10) => Persist::KeepAlive,
            (false, _) => Persist::Default,
        };
        head::encode(&mut self.out, status, &parts.headers, length, persist);
        let head = self.out.split().freeze();
        let complete = Writer::new(&self.shared, &mut self.queue).send(head, &mut body, length).await?;
        drop(body);
        if complete && !close && self.discard_rest().await {
            return Ok(true);
        }
        let mut io = body::lock(&self.shared);
        if !io.body_done() {
            io.guard.close_unread();
        }
        Ok(false)
    }

    /// Drops what is left of a request body the handler did not read;
    /// whether the connection can carry another request after it.
    async fn discard_rest(&mut self) -> bool {
        let mut left = DISCARD_MAX;
        poll_fn(|cx| body::lock(&self.shared).poll_discard(cx, &mut left)).await
    }
}

/// Writes one response, gathering the body's pieces while they come
/// without waiting and writing them in as few calls as it can.
struct Writer<'a, S> {
    shared: &'a Shared<S>,
    queue: &'a mut VecDeque<Bytes>,
    queued: usize,
}

impl<'a, S> Writer<'a, S>
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin,
{
    fn new(shared: &'a Shared<S>, queue: &'a mut VecDeque<Bytes>) -> Writer<'a, S> {
        queue.clear();
        Writer { shared, queue, queued: 0 }
    }

    /// Sends `head`, then `body` framed by `length`. Ready with whether the
    /// whole response went out as announced (if not, the connection can
    /// only close).
    async fn send(mut self, head: Bytes, body: &mut ResponseBody, length: Length) -> io::Result<bool> {
        self.push(head);
        if matches!(length, Length::None | Length::Nothing) {
            self.flush().await?;
            return Ok(true);
        }
        let mut left = match length {
            Length::Known(len) => Some(len),
            _ => None,
        };
        loop {
            let next = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    self.flush().await?;
                    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
            let data = match next {
                None => break,
                Some(Err(e)) => {
                    tracing::info!("response body failed, closing the connection: {e}");
                    self.flush().await?;
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            match (&mut left, length) {
                (Some(left), _) => {
                    if data.len() as u64 > *left {
                        tracing::info!("response body longer than its Content-Length, closing the connection");
                        let fits = data.slice(..*left as usize);
                        *left = 0;
                        self.push(fits);
                        self.flush().await?;
                        return Ok(false);
                    }
                    *left -= data.len() as u64;
                    self.push(data);
                }
                (None, Length::Chunked) => {
                    self.push(Bytes::from(format!("{:x}\r\n", data.len())));
                    self.push(data);
                    self.push(Bytes::from_static(b"\r\n"));
                }
                (None, _) => self.push(data),
            }
            if self.queued >= GATHER {
                self.flush().await?;
            }
        }
        if length == Length::Chunked {
            self.push(Bytes::from_static(b"0\r\n\r\n"));
        }
        self.flush().await?;
        if left.is_some_and(|left| left > 0) {
            tracing::info!("response body shorter than its Content-Length, closing the connection");
            return Ok(false);
        }
        Ok(length != Length::UntilClose)
    }

    fn push(&mut self, data: Bytes) {
        self.queued += data.len();
        self.queue.push_back(data);
    }

    /// Writes everything queued.
    async fn flush(&mut self) -> io::Result<()> {
        let shared = self.shared;
        poll_fn(|cx| {
            let mut io = body::lock(shared);
            while !self.queue.is_empty() {
                let mut slices = [io::IoSlice::new(&[]); MAX_SLICES];
                let n = self.queue.len().min(MAX_SLICES);
                for (slice, data) in slices.iter_mut().zip(self.queue.iter()) {
                    *slice = io::IoSlice::new(data);
                }
                let written = match io.guard.poll_write_vectored(cx, &slices[..n]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(written)) => written,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                };
                self.advance(written);
            }
            io.guard.poll_flush(cx)
        })
        .await
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(first) = self.queue.front_mut() else { return };
            if n < first.len() {
                first.advance(n);
                return;
            }
            n -= first.len();
            self.queue.pop_front();
        }
    }
}

fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close")))
}

/// The handler's `Content-Length`, if it is one plain number (the app's
/// and the upstream's were checked on the way; static files write their own).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    crate::front::response::content_length(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_close_is_read_among_other_tokens() {
        let mut headers = HeaderMap::new();
        assert!(!says_close(&headers));
        headers.append(header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        assert!(!says_close(&headers));
        headers.append(header::CONNECTION, http::HeaderValue::from_static("te, Close"));
        assert!(says_close(&headers));
    }
}
