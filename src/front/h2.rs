//! HTTP/2 connections, served with the `h2` crate: the `--h2-*` settings,
//! the request-head limits HTTP/1.1 gets from `framing`, the client
//! timeouts that `guard` applies to HTTP/1.1, and `103 Early Hints`.
//!
//! Each stream runs in its own task: its request goes to the handler as
//! HTTP/1.1 requests do (with `Host` from the `:authority` pseudo-header),
//! and its response is sent within the stream's flow-control window, the
//! connection-specific fields HTTP/2 forbids (`Connection`, `Keep-Alive`,
//! `Transfer-Encoding`...) left out. A stream the client resets is dropped
//! with whatever was working on it. A connection with no request open
//! closes after the keep-alive timeout (the header timeout before its first
//! request); a stream whose client grants no window for the send timeout is
//! reset, and a connection whose writes stall that long is closed. What a
//! request gets is `handler`'s business.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};

use super::conn::stopped;
use super::early_hints::{EarlyHints, HintSink, CONNECTION_FIELDS};
use super::framing::Limits;
use super::guard::Settings;
use super::handler::{error_response, Front, Lent, Peer};
use super::response::ResponseBody;
use crate::metrics::METRICS;

/// How long a closing connection with no request open may wait for the
/// client to close it (after GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Response bytes `h2` may hold per stream beyond what the window allows.
const SEND_BUFFER: usize = 400 * 1024;

/// A complete body up to this size is handed to `h2` at once, without
/// waiting for window first.
const DIRECT_SEND: usize = 16 * 1024;

/// Serves one HTTP/2 connection (its preface not yet read) until it closes.
pub async fn serve<S>(socket: S, peer: Arc<Peer>, front: Arc<Front>, mut stop: watch::Receiver<bool>, accepted: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = Settings::new(&front.config);
    let h2 = front.config.http2;
    let streams = Arc::new(Streams::new(accepted));
    let io = SendTimeout::new(socket, settings.send_timeout);
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_window_size(h2.initial_stream_window)
        .initial_connection_window_size(h2.initial_connection_window)
        .max_frame_size(h2.max_frame_size)
        .max_header_list_size(header_list_limit(&settings.limits))
        .max_send_buffer_size(SEND_BUFFER);
    let handshake = tokio::time::timeout_at(accepted + settings.header_timeout, builder.handshake::<_, Bytes>(io));
    let mut conn = tokio::select! {
        done = handshake => match done {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!("HTTP/2 handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::info!("closing connection: HTTP/2 preface incomplete after the header timeout");
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    let stream = Stream { front, peer, limits: settings.limits, send_timeout: settings.send_timeout };
    // Since when the connection has been closing (GOAWAY sent).
    let mut closing: Option<Instant> = None;
    // When the connection, with no request open, has waited long enough:
    // for a request (idle), or for the client to close (closing).
    let deadline = |closing: Option<Instant>| match closing {
        None => streams.idle_deadline(settings.header_timeout, settings.keepalive_timeout),
        Some(since) => streams.idle_since().map(|idle| idle.max(since) + CLOSE_GRACE),
    };
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    let open = Streams::open(&streams);
                    tokio::spawn(stream.clone().serve(req, respond, open));
                }
                Some(Err(e)) => {
                    tracing::debug!("HTTP/2 connection error: {e}");
                    return;
                }
                None => return,
            },
            _ = stopped(&mut stop), if closing.is_none() => {
                conn.graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = streams.went_idle.notified() => {}
            _ = sleep_until(deadline(closing)) => {
                // Streams may have opened since the deadline was taken.
                let now = Instant::now();
                if deadline(closing).is_none_or(|d| d > now) {
                    continue;
                }
                if closing.is_some() {
                    tracing::debug!("closing HTTP/2 connection: the client kept it open after GOAWAY");
                    return;
                }
                tracing::debug!("closing idle HTTP/2 connection: keep-alive timeout");
                conn.graceful_shutdown();
                closing = Some(now);
            }
        }
    }
}

/// What every stream of a connection needs.
#[derive(Clone)]
struct Stream {
    front: Arc<Front>,
    peer: Arc<Peer>,
    limits: Limits,
    send_timeout: Duration,
}

impl Stream {
    /// Answers one stream's request; `_open` holds the connection's count
    /// of open requests until the response has been sent.
    async fn serve(self, req: Request<RecvStream>, respond: SendResponse<Bytes>, _open: OpenStream) {
        let reply = Arc::new(StreamReply(Mutex::new(Some(respond))));
        let (parts, recv) = req.into_parts();
        let hints = EarlyHints::new(Arc::clone(&reply) as Arc<dyn HintSink>);
        let req = Request::from_parts(parts, RequestBody { recv, data_done: false });
        let handling = async {
            if req.method() == Method::CONNECT {
                tracing::info!("refused HTTP/2 request: 405, CONNECT is not supported");
                METRICS.refused(405);
                return error_response(StatusCode::METHOD_NOT_ALLOWED);
            }
            match check_head(req, &self.limits) {
                // Boxed: the handler's state is large, and the stream task
                // is moved whole when spawned.
                Ok(req) => match Box::pin(Arc::clone(&self.front).handle(
                    req,
                    Arc::clone(&self.peer),
                    Lent { hints: Some(hints), sends: None },
                ))
                .await
                {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(status) => {
                    METRICS.refused(status.as_u16());
                    error_response(status)
                }
            }
        };
        let reset = poll_fn(|cx| match reply.lock().as_mut() {
            Some(respond) => respond.poll_reset(cx),
            None => Poll::Pending,
        });
        let response = tokio::select! {
            response = handling => response,
            reason = reset => {
                tracing::debug!("HTTP/2 stream reset by the client: {}", describe_reset(reason));
                // Hints that still come (a proxied upstream's) go nowhere.
                reply.lock().take();
                return;
            }
        };
        let Some(mut respond) = reply.lock().take() else {
            return;
        };
        let (mut head, body) = response.into_parts();
        strip_connection_fields(&mut head.headers);
        head.headers.entry(header::DATE).or_insert_with(date_now);
        let end = body.is_end_stream();
        if !end {
            if let Some(len) = body.size_hint().exact() {
                head.headers.entry(header::CONTENT_LENGTH).or_insert_with(|| HeaderValue::from(len));
            }
        }
        let mut sent = respond.send_response(Response::from_parts(head, ()), end);
        if let (Ok(send), ResponseBody::Full(Some(data))) = (&mut sent, &body) {
            if data.len() <= DIRECT_SEND {
                // Small and complete: h2 holds it until the window allows.
                if let Err(e) = send.send_data(data.clone(), true) {
                    tracing::debug!("HTTP/2 response cut: {e}");
                }
                return;
            }
        }
        match sent {
            Ok(send) if !end => self.send_body(body, send).await,
            Ok(_) => {}
            Err(e) => tracing::debug!("HTTP/2 response not sent: {e}"),
        }
    }

    /// Sends the response body within the stream's window.
    async fn send_body(&self, mut body: ResponseBody, mut send: SendStream<Bytes>) {
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                reason = poll_fn(|cx| send.poll_reset(cx)) => {
                    tracing::debug!("HTTP/2 stream reset by the client: {}", describe_reset(reason));
                    return;
                }
            };
            let sent = match frame {
                None => send.send_data(Bytes::new(), true),
                Some(Err(e)) => {
                    tracing::debug!("HTTP/2 response body failed: {e}");
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = body.is_end_stream();
                        match self.send_data(&mut send, data, end).await {
                            Ok(()) if end => return,
                            Ok(()) => continue,
                            Err(e) => Err(e),
                        }
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => send.send_trailers(trailers),
                        Err(_) => continue,
                    },
                },
            };
            if let Err(e) = sent {
                tracing::debug!("HTTP/2 response cut: {e}");
            }
            return;
        }
    }

    /// Sends `data` as the client's window allows, resetting the stream if
    /// the client grants no room for the send timeout.
    async fn send_data(&self, send: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), h2::Error> {
        if data.is_empty() {
            return if end { send.send_data(data, true) } else { Ok(()) };
        }
        while !data.is_empty() {
            // As much as h2 will buffer, so that one stream never asks for
            // more of the connection's window than it can use at once.
            send.reserve_capacity(data.len().min(SEND_BUFFER));
            let room = match tokio::time::timeout(self.send_timeout, poll_fn(|cx| send.poll_capacity(cx))).await {
                Ok(Some(room)) => room?,
                Ok(None) => return Err(h2::Error::from(Reason::CANCEL)),
                Err(_) => {
                    tracing::info!("HTTP/2 stream reset: the client granted no window for the send timeout");
                    send.send_reset(Reason::CANCEL);
                    return Err(h2::Error::from(Reason::CANCEL));
                }
            };
            if room == 0 {
                // h2 reports no room as pending, never as 0; should that
                // change, yield rather than spin.
                tokio::task::yield_now().await;
                continue;
            }
            let piece = data.split_to(room.min(data.len()));
            send.send_data(piece, end && data.is_empty())?;
        }
        Ok(())
    }
}

fn describe_reset(reason: Result<Reason, h2::Error>) -> String {
    match reason {
        Ok(reason) => reason.to_string(),
        Err(e) => e.to_string(),
    }
}

/// A stream's way to answer: its early hints while the handler works, then
/// the response.
struct StreamReply(Mutex<Option<SendResponse<Bytes>>>);

impl StreamReply {
    fn lock(&self) -> MutexGuard<'_, Option<SendResponse<Bytes>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl HintSink for StreamReply {
    fn send(&self, headers: &[(Bytes, Bytes)]) {
        let mut hints = Response::new(());
        *hints.status_mut() = StatusCode::EARLY_HINTS;
        *hints.headers_mut() = hint_fields(headers);
        if let Some(respond) = self.lock().as_mut() {
            if let Err(e) = respond.send_informational(hints) {
                tracing::debug!("early hints not sent: {e}");
            }
        }
    }
}

/// The app's hint headers as HTTP/2 fields: names lower-cased,
/// connection-specific ones left out. The worker has already refused
/// anything that is not a valid field.
fn hint_fields(headers: &[(Bytes, Bytes)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    strip_connection_fields(&mut map);
    map.remove(header::CONTENT_LENGTH);
    map
}

/// Removes what HTTP/2 forbids in a response (RFC 9113, 8.2.2): the
/// connection-specific fields and whatever `Connection` names.
fn strip_connection_fields(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in CONNECTION_FIELDS {
        headers.remove(name);
    }
}

/// The `Date` value for now, formatted once a second per thread.
fn date_now() -> HeaderValue {
    thread_local! {
        static DATE: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|cached| match cached {
        Some((at, value)) if *at == second => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(now)).unwrap_or(HeaderValue::from_static(""));
            *cached = Some((second, value.clone()));
            value
        }
    })
}

/// A stream's request body, giving back flow-control window as the
/// handler takes each piece.
struct RequestBody {
    recv: RecvStream,
    data_done: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        // Requests are open: `went_idle` will say when that changes.
        None => std::future::pending().await,
    }
}

/// The header-list size (as HTTP/2 counts it: name, value and 32 bytes per
/// field) that a request head within `--limit-request-*` can reach.
fn header_list_limit(limits: &Limits) -> u32 {
    let fields = limits.fields.saturating_add(5); // the pseudo-headers
    let total = limits.request_line.saturating_add(fields.saturating_mul(limits.field_size.saturating_add(32)));
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Applies `--limit-request-*` to an HTTP/2 request head and gives it the
/// `Host` header its `:authority` stands for.
fn check_head<B>(mut req: Request<B>, limits: &Limits) -> Result<Request<B>, StatusCode> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target + req.method().as_str().len() + 10 > limits.request_line {
        tracing::info!("refused HTTP/2 request: 414, target longer than the request-line limit");
        return Err(StatusCode::URI_TOO_LONG);
    }
    if req.headers().len() > limits.fields {
        tracing::info!("refused HTTP/2 request: 431, more than {} header fields", limits.fields);
        return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    if req.headers().iter().any(|(name, value)| name.as_str().len() + 2 + value.len() > limits.field_size) {
        tracing::info!("refused HTTP/2 request: 431, a header field over {} bytes", limits.field_size);
        return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    if !req.headers().contains_key(header::HOST) {
        let host = req.uri().authority().and_then(|a| header::HeaderValue::from_str(a.as_str()).ok());
        if let Some(host) = host {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    Ok(req)
}

/// How many requests a connection has open, and since when it has none.
struct Streams {
    count: Mutex<StreamCount>,
    /// Notified when the last open request ends.
    went_idle: Notify,
}

struct StreamCount {
    open: usize,
    /// When `open` last dropped to 0 (accept, before any request).
    idle_since: Instant,
    served: bool,
}

impl Streams {
    fn new(accepted: Instant) -> Streams {
        Streams {
            count: Mutex::new(StreamCount { open: 0, idle_since: accepted, served: false }),
            went_idle: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamCount> {
        self.count.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(this: &Arc<Streams>) -> OpenStream {
        let mut count = this.lock();
        count.open += 1;
        count.served = true;
        OpenStream(Arc::clone(this))
    }

    /// Since when no request has been open; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        let count = self.lock();
        (count.open == 0).then_some(count.idle_since)
    }

    /// When the connection will have been idle too long; `None` while a
    /// request is open.
    fn idle_deadline(&self, header_timeout: Duration, keepalive: Option<Duration>) -> Option<Instant> {
        let count = self.lock();
        if count.open > 0 {
            return None;
        }
        let limit = if count.served { keepalive.unwrap_or(header_timeout) } else { header_timeout };
        Some(count.idle_since + limit)
    }
}

/// One open request; it ends when its response body is dropped.
struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut count = self.0.lock();
        count.open -= 1;
        if count.open == 0 {
            count.idle_since = Instant::now();
            self.0.went_idle.notify_one();
        }
    }
}

/// The socket, failing a write the client has left stalled for the send
/// timeout.
struct SendTimeout<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> SendTimeout<S> {
    fn new(inner: S, limit: Duration) -> SendTimeout<S> {
        SendTimeout { inner, limit, stalled: None }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading (send timeout)")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_list_limit_covers_the_request_limits() {
        let limits = Limits { request_line: 8190, fields: 100, field_size: 8190, max_body: 0 };
        assert_eq!(header_list_limit(&limits), 8190 + 105 * (8190 + 32));
        let huge = Limits { request_line: usize::MAX, fields: usize::MAX, field_size: usize::MAX, max_body: 0 };
        assert_eq!(header_list_limit(&huge), u32::MAX);
    }

    #[test]
    fn idle_deadline_waits_for_open_streams() {
        let start = Instant::now();
        let streams = Arc::new(Streams::new(start));
        let (head, keep) = (Duration::from_secs(5), Some(Duration::from_secs(75)));
        assert_eq!(streams.idle_deadline(head, keep), Some(start + head));
        let open = Streams::open(&streams);
        assert_eq!(streams.idle_deadline(head, keep), None);
        std::thread::sleep(Duration::from_millis(20));
        drop(open);
        let deadline = streams.idle_deadline(head, keep).unwrap();
        assert!(deadline >= start + Duration::from_millis(20) + Duration::from_secs(75));
        // Without keep-alive, an idle connection gets the header timeout.
        assert!(streams.idle_deadline(head, None).unwrap() < deadline);
    }

    #[test]
    fn connection_fields_are_left_out() {
        let headers = vec![
            (Bytes::from_static(b"Link"), Bytes::from_static(b"</a.js>; rel=preload")),
            (Bytes::from_static(b"Connection"), Bytes::from_static(b"close, X-Private")),
            (Bytes::from_static(b"X-Private"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"Keep-Alive"), Bytes::from_static(b"timeout=5")),
            (Bytes::from_static(b"link"), Bytes::from_static(b"</b.css>; rel=preload")),
        ];
        let map = hint_fields(&headers);
        assert_eq!(map.get_all("link").iter().count(), 2);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn date_is_an_http_date() {
        let date = date_now();
        assert!(httpdate::parse_http_date(date.to_str().unwrap()).is_ok());
    }
}
