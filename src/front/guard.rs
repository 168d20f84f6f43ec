//! A client's HTTP/1.1 socket as the connection loop (`http1`) sees it:
//! read through [`Framing`] and watched by timers.
//!
//! Reading, [`GuardedIo`] hands on only bytes that [`Framing`] let through,
//! and ends the input when a client is silent too long: before a request
//! head is complete (`header_timeout`, counted from accept for a
//! connection's first request), between requests (`keepalive_timeout`) or
//! inside a body (`body_timeout`, a body error the handler answers with
//! 408). Writing, it fails a response the client has stopped reading for
//! `send_timeout`, puts the `103 Early Hints` responses of
//! `early_hints::Interim` ahead of the response they precede, and sends
//! the file pieces that `sendfile` stand-ins name.
//!
//! A refused request *head* never reaches the loop: the loop sees the end of
//! the input once it has answered every request before it (it reads only
//! between requests and inside bodies), and [`GuardedIo::finish`] then
//! writes the refusal's status itself. A refusal inside a *body* reaches the
//! handler as a body error that knows its status ([`status_of`]). Parsing is
//! `framing`'s and `http1`'s; what to answer is the handler's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::early_hints::Interim;
use super::framing::{Framing, Limits, Phase, Reject};
use super::response::ResponseBody;
use super::sendfile::{FileSends, FileSink};
use crate::config::Config;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where socket reads land before `Framing` copies what passes into a
    /// connection's `ready` buffer: one per thread rather than per connection,
    /// so that thousands of idle clients cost no read buffers.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
}
/// After a refusal, how long the client's further input is read and
/// dropped before closing, so that closing doesn't reset the connection
/// before the client has read the answer (as nginx's lingering close).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// What a guarded connection enforces; taken from [`Config`] once.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: Limits,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keepalive_timeout: Option<Duration>,
    pub send_timeout: Duration,
}

impl Settings {
    pub fn new(config: &Config) -> Settings {
        let client = &config.client;
        Settings {
            limits: Limits {
                request_line: client.request_line,
                fields: client.request_fields,
                field_size: client.request_field_size,
                max_body: config.max_request_body,
            },
            header_timeout: client.header_timeout,
            body_timeout: client.body_timeout,
            keepalive_timeout: client.keepalive_timeout,
            send_timeout: client.send_timeout,
        }
    }
}

/// An error the guard gives instead of bytes.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Rejected(#[from] Reject),
    #[error("request body stalled for more than {0:?}")]
    BodyTimeout(Duration),
}

impl GuardError {
    pub fn status(&self) -> StatusCode {
        match self {
            GuardError::Rejected(reject) => reject.status(),
            GuardError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// The status a request-body error stands for, if the guard caused it.
pub fn status_of(err: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(guard) = err.downcast_ref::<GuardError>() {
            return Some(guard.status());
        }
        // io::Error::source() skips the error it wraps; look inside.
        let inner = err.downcast_ref::<io::Error>().and_then(|e| e.get_ref());
        if let Some(guard) = inner.and_then(|e| e.downcast_ref::<GuardError>()) {
            return Some(guard.status());
        }
        next = err.source();
    }
    None
}

/// A socket read through [`Framing`], with timeouts; see the module doc.
pub struct GuardedIo<S> {
    inner: S,
    settings: Settings,
    framing: Framing,
    refused: Option<(Reject, Phase)>,
    /// The loop saw the end of input because of a refused head.
    refusal_delivered: bool,
    /// The loop closes with input unread (a body it did not take).
    unread: bool,
    /// The client closed, or a timeout ended the input.
    input_ended: bool,
    accepted: Instant,
    head_started: Instant,
    last_input: Instant,
    /// Since when the loop has been waiting for the next request.
    idle_since: Option<Instant>,
    messages_seen: u64,
    read_timer: Timer,
    /// Since when a write has been waiting for the client.
    write_stalled: Option<Instant>,
    write_timer: Timer,
    /// Early hints of this connection's requests.
    interim: Option<Arc<Interim>>,
    /// The file pieces behind the stand-ins among the bytes written (`sendfile`).
    sends: Option<Arc<FileSends>>,
}

impl<S> GuardedIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(inner: S, settings: Settings) -> GuardedIo<S> {
        let now = Instant::now();
        GuardedIo {
            inner,
            settings,
            framing: Framing::new(settings.limits),
            refused: None,
            refusal_delivered: false,
            unread: false,
            input_ended: false,
            accepted: now,
            head_started: now,
            last_input: now,
            idle_since: None,
            messages_seen: 0,
            read_timer: Timer::default(),
            write_stalled: None,
            write_timer: Timer::default(),
            interim: None,
            sends: None,
        }
    }

    /// Sends the file pieces `sends` records in place of their stand-ins.
    pub fn with_file_sends(mut self, sends: Arc<FileSends>) -> GuardedIo<S> {
        self.sends = Some(sends);
        self
    }

    /// Writes the early hints `interim` is given ahead of the responses.
    pub fn with_interim(mut self, interim: Arc<Interim>) -> GuardedIo<S> {
        self.interim = Some(interim);
        self
    }

    /// Counts the first request's header timeout from `at` (the accept,
    /// before a TLS handshake or protocol sniffing) rather than from now.
    pub fn accepted_at(mut self, at: Instant) -> GuardedIo<S> {
        self.accepted = at;
        self.head_started = at;
        self.last_input = at;
        self
    }

    /// Called once the loop is done: answers a refused head, then closes.
    /// Returns the status of the answer and its body's length, if one was
    /// sent, for the access log.
    pub async fn finish(mut self) -> Option<(StatusCode, u64)> {
        let send_timeout = self.settings.send_timeout;
        let mut linger = self.unread && !self.input_ended;
        let mut answered = None;
        if let Some((reject, phase)) = self.refused {
            if phase != Phase::Body && self.refusal_delivered {
                let status = reject.status();
                tracing::info!("refused request: {}, {reject}", status.as_u16());
                let (answer, body_len) = refusal(status);
                if let Ok(Ok(())) = tokio::time::timeout(send_timeout, self.inner.write_all(&answer)).await {
                    answered = Some((status, body_len));
                }
            }
            linger = !self.input_ended;
        }
        let _ = tokio::time::timeout(send_timeout, self.inner.shutdown()).await;
        if linger {
            let mut sink = vec![0; READ_CHUNK];
            let drain = async {
                let mut total = 0;
                while total < LINGER_BYTES {
                    match self.inner.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        }
        answered
    }

    /// The deadline for the input's next byte, and what the client is late for.
    fn read_deadline(&mut self, phase: Phase) -> (Instant, Wait) {
        let s = &self.settings;
        match phase {
            Phase::Idle if self.framing.messages() > 0 && s.keepalive_timeout.is_some() => {
                let since = *self.idle_since.get_or_insert_with(Instant::now);
                (since + s.keepalive_timeout.unwrap_or_default(), Wait::KeepAlive)
            }
            Phase::Idle => (self.accepted + s.header_timeout, Wait::Head),
            Phase::Head => (self.head_started + s.header_timeout, Wait::Head),
            Phase::Body => (self.last_input + s.body_timeout, Wait::Body),
        }
    }

    fn timed_out(&mut self, wait: Wait) -> Poll<io::Result<usize>> {
        self.input_ended = true;
        match wait {
            Wait::Body => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                GuardError::BodyTimeout(self.settings.body_timeout),
            ))),
            Wait::Head => {
                tracing::info!("closing connection: request head incomplete after the header timeout");
                Poll::Ready(Ok(0))
            }
            Wait::KeepAlive => {
                tracing::debug!("closing idle connection: keep-alive timeout");
                Poll::Ready(Ok(0))
            }
        }
    }

    /// Reads once from the socket and feeds what came through `framing`;
    /// returns how many bytes the socket gave (0 at its end).
    fn read_through_framing(
        &mut self,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
        dst: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let mut read = ReadBuf::new(scratch);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
        let input = read.filled();
        if let Err(reject) = self.framing.feed(input, dst) {
            self.refused = Some((reject, self.framing.phase()));
        }
        Poll::Ready(Ok(input.len()))
    }

    /// Writes the early hints that are due before the next bytes.
    /// `at_flush`: every response before them has been written, so hints
    /// queued since may start.
    fn poll_interim(&mut self, cx: &mut Context<'_>, at_flush: bool) -> Poll<io::Result<()>> {
        let Some(interim) = self.interim.as_ref().filter(|i| i.pending()).map(Arc::clone) else {
            return Poll::Ready(Ok(()));
        };
        let mut state = interim.lock(at_flush);
        while !state.writing.is_empty() {
            let written = self.poll_write_with(cx, |io, cx| io.poll_write(cx, &state.writing));
            let n = match written {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            crate::metrics::METRICS.bytes_out(n);
            state.writing.advance(n);
        }
        interim.settle(&state);
        Poll::Ready(Ok(()))
    }

    fn poll_write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(result) => {
                self.write_stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let since = *self.write_stalled.get_or_insert_with(Instant::now);
                match self.write_timer.poll_at(cx, since + self.settings.send_timeout) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading the response (send timeout)",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S> GuardedIo<S>
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin,
{
    /// Reads from the socket through `framing`, appending what passes to
    /// `dst`. Returns how many bytes were appended; 0 at the end of the
    /// input: the client closed, a head or keep-alive timeout ended it, or a
    /// refused head stands in its place (`finish` answers it). A refusal
    /// inside a body, or its timeout, is an error that knows its status.
    pub fn poll_read_into(&mut self, cx: &mut Context<'_>, dst: &mut BytesMut) -> Poll<io::Result<usize>> {
        loop {
            if let Some((reject, phase)) = self.refused {
                if phase == Phase::Body {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, GuardError::from(reject))));
                }
                self.refusal_delivered = true;
                return Poll::Ready(Ok(0));
            }
            if self.input_ended {
                return Poll::Ready(Ok(0));
            }
            if self.framing.messages() != self.messages_seen {
                self.messages_seen = self.framing.messages();
                self.idle_since = None;
            }
            let phase = self.framing.phase();
            let messages = self.framing.messages();
            let before = dst.len();
            match SCRATCH.with_borrow_mut(|scratch| self.read_through_framing(cx, scratch, dst)) {
                Poll::Ready(Ok(0)) => {
                    self.input_ended = true;
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Ok(n)) => {
                    crate::metrics::METRICS.bytes_in(n);
                    let now = Instant::now();
                    self.last_input = now;
                    // A later request's head starts now: read from idle, or
                    // begun in the same read as the end of the one before.
                    let later = self.framing.messages() > 0;
                    let begun = self.framing.phase() == Phase::Head && self.framing.messages() != messages;
                    if later && (phase == Phase::Idle || begun) {
                        self.head_started = now;
                    }
                    if dst.len() > before {
                        return Poll::Ready(Ok(dst.len() - before));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let (deadline, wait) = self.read_deadline(phase);
                    return match self.read_timer.poll_at(cx, deadline) {
                        Poll::Ready(()) => self.timed_out(wait),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }

    /// Writes `bufs` (the early hints due go first); a stand-in among them
    /// is sent as the file piece it stands for (`sendfile`). Fails once the
    /// client has taken nothing for `send_timeout`.
    pub fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        ready!(self.poll_interim(cx, false))?;
        // Out of its field for the call, which borrows `self` whole.
        let written = match self.sends.take() {
            Some(sends) => {
                let written = self.poll_write_with(cx, |io, cx| {
                    let io = io.get_mut();
                    super::sendfile::poll_write(io, &sends, cx, bufs)
                        .unwrap_or_else(|| Pin::new(io).poll_write_vectored(cx, bufs))
                });
                self.sends = Some(sends);
                written
            }
            None => self.poll_write_with(cx, |io, cx| io.poll_write_vectored(cx, bufs)),
        };
        if let Poll::Ready(Ok(n)) = written {
            crate::metrics::METRICS.bytes_out(n);
        }
        written
    }

    /// Writes the early hints queued so far; called when every response
    /// before them has been written.
    pub fn poll_hints(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_interim(cx, true)
    }

    /// Flushes what the socket holds back (a TLS session's records).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_with(cx, |io, cx| io.poll_flush(cx))
    }

    /// A head that `framing` let through turned out unusable: it is
    /// refused as a malformed one would have been.
    pub fn refuse_head(&mut self, why: &'static str) {
        self.refused = Some((Reject::Malformed(why), Phase::Head));
        self.refusal_delivered = true;
    }

    /// The connection closes with part of the client's input unread: its
    /// close lingers (as after a refusal), so that the client, still
    /// sending, reads the answer rather than a reset.
    pub fn close_unread(&mut self) {
        self.unread = true;
    }

    /// Nothing of a next request has arrived.
    pub fn is_idle(&self) -> bool {
        self.framing.phase() == Phase::Idle
    }
}

/// What a silent client is late for.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Head,
    KeepAlive,
    Body,
}

/// One lazily created, re-armable sleep.
#[derive(Default)]
struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    fn poll_at(&mut self, cx: &mut Context<'_>, at: Instant) -> Poll<()> {
        let sleep = match &mut self.0 {
            Some(sleep) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        sleep.as_mut().poll(cx)
    }
}

/// The whole answer to a refused head: the handler's error page, closing.
/// The bytes of a refusal, and the length of its body.
fn refusal(status: StatusCode) -> (Vec<u8>, u64) {
    let page = super::handler::error_response(status);
    let body = match page.body() {
        ResponseBody::Full(Some(body)) => body.as_ref(),
        _ => &[],
    };
    let mut out = format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("")).into_bytes();
    for (name, value) in page.headers() {
        if name != http::header::CONNECTION {
            out.extend_from_slice(format!("{name}: ").as_bytes());
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    out.extend_from_slice(
        format!("content-length: {}\r\nconnection: close\r\ndate: {date}\r\n\r\n", body.len()).as_bytes(),
    );
    out.extend_from_slice(body);
    (out, body.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_a_complete_closing_response() {
        let (bytes, body_len) = refusal(StatusCode::URI_TOO_LONG);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len() as u64, body_len);
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        assert!(body.contains("414"));
    }

    #[test]
    fn body_errors_carry_their_status() {
        let io = io::Error::new(io::ErrorKind::InvalidData, GuardError::from(Reject::BodyTooLarge(1)));
        assert_eq!(status_of(&io), Some(StatusCode::PAYLOAD_TOO_LARGE));
        let timeout = io::Error::new(io::ErrorKind::TimedOut, GuardError::BodyTimeout(Duration::from_secs(1)));
        assert_eq!(status_of(&timeout), Some(StatusCode::REQUEST_TIMEOUT));
        assert_eq!(status_of(&io::Error::other("unrelated")), None);
    }
}
