//! HTTP/2 connections: hyper's HTTP/2 server with the `--h2-*` settings,
//! the request-head limits HTTP/1.1 gets from `framing`, and the client
//! timeouts that `guard` applies to HTTP/1.1.
//!
//! HTTP/2 framing is hyper's (and the `h2` crate's), which also strips the
//! connection-specific headers (`Connection`, `Keep-Alive`,
//! `Transfer-Encoding`…) an app may answer with. Here: the request line and
//! header limits (414/431, and the header-list size the client is told);
//! `Host` from the `:authority` pseudo-header, so the handler sees HTTP/2
//! requests as it sees HTTP/1.1 ones; closing a connection with no request
//! open for the keep-alive timeout (the header timeout before its first
//! request); and failing writes stalled for the send timeout. What a
//! request gets is `handler`'s business.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};

use super::conn::stopped;
use super::framing::Limits;
use super::guard::Settings;
use super::handler::{error_response, Front, Peer};
use super::response::ResponseBody;

/// How long a closing connection with no request open may wait for the
/// client to close it (after GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves one HTTP/2 connection (its preface not yet read) until it closes.
pub async fn serve<S>(socket: S, peer: Arc<Peer>, front: Arc<Front>, mut stop: watch::Receiver<bool>, accepted: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = Settings::new(&front.config);
    let h2 = front.config.http2;
    let streams = Arc::new(Streams::new(accepted));
    let io = SendTimeout::new(TokioIo::new(socket), settings.send_timeout);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(h2.initial_stream_window)
        .initial_connection_window_size(h2.initial_connection_window)
        .max_frame_size(h2.max_frame_size)
        .max_header_list_size(header_list_limit(&settings.limits));
    let limits = settings.limits;
    let tracked = Arc::clone(&streams);
    let service = service_fn(move |req: Request<Incoming>| {
        let (front, peer, open) = (Arc::clone(&front), Arc::clone(&peer), Streams::open(&tracked));
        async move {
            let response = match check_head(req, &limits) {
                Ok(req) => front.handle(req, peer).await?,
                Err(status) => error_response(status),
            };
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _open: open }))
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
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
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("HTTP/2 connection error: {e}");
                }
                return;
            }
            _ = stopped(&mut stop), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
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
                conn.as_mut().graceful_shutdown();
                closing = Some(now);
            }
        }
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
fn check_head(mut req: Request<Incoming>, limits: &Limits) -> Result<Request<Incoming>, StatusCode> {
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

/// A response body that holds its stream open.
struct Tracked {
    body: ResponseBody,
    _open: OpenStream,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, io::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// hyper's view of the socket, failing a write the client has left
/// stalled for the send timeout.
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

impl<S: hyper::rt::Read + Unpin> hyper::rt::Read for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: hyper::rt::Write + Unpin> hyper::rt::Write for SendTimeout<S> {
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
}
