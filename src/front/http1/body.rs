//! A request body as the handler reads it: taken out of the connection's
//! read buffer, and read from the socket (through `guard`) as the handler
//! asks for more. The connection and the body share the socket
//! ([`Shared`]); they take turns in one task, so its lock is never
//! contended.
//!
//! A client that sent `Expect: 100-continue` gets its `100 Continue` when
//! the handler first asks for the body, so a request refused before that
//! (413 on its declared length, 404) never has its body sent at all.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::super::guard::GuardedIo;
use super::super::sendfile::FileSink;
use crate::proxy::exchange::{Decoder, Framing, Step};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Most bytes of a body the handler left unread that are read and dropped
/// to keep the connection; beyond this it is closed instead.
pub const DISCARD_MAX: u64 = 1024 * 1024;

/// The socket and what has been read from it, shared by a connection and
/// the body of its current request.
pub type Shared<S> = Arc<Mutex<Io<S>>>;

pub fn lock<S>(shared: &Shared<S>) -> MutexGuard<'_, Io<S>> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// See [`Shared`].
pub struct Io<S> {
    pub guard: GuardedIo<S>,
    /// Bytes read through `framing` not taken yet: the rest of a head,
    /// of a body, or pipelined requests.
    pub buf: BytesMut,
    /// The current request's body, as far as it has been taken.
    body: Decoder,
    /// How much of `100 Continue` is still to be written (0: none).
    continue_left: usize,
}

impl<S> Io<S>
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin,
{
    pub fn new(guard: GuardedIo<S>) -> Io<S> {
        Io { guard, buf: BytesMut::new(), body: Decoder::new(Framing::Empty), continue_left: 0 }
    }

    /// A new request's body begins.
    pub fn start_body(&mut self, framing: Framing, expect_continue: bool) {
        // `framing` has checked the chunk lines and trailers against the
        // client limits already.
        self.body = Decoder::unlimited(framing);
        self.continue_left = if expect_continue && !self.body.is_done() { CONTINUE.len() } else { 0 };
    }

    pub fn body_done(&self) -> bool {
        self.body.is_done()
    }

    /// The client still waits for `100 Continue`: its body is not coming.
    pub fn body_withheld(&self) -> bool {
        self.continue_left == CONTINUE.len()
    }

    /// Part of `100 Continue` has been written, not all of it.
    pub fn continue_under_way(&self) -> bool {
        self.continue_left > 0 && self.continue_left < CONTINUE.len()
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        while self.continue_left > 0 {
            let at = CONTINUE.len() - self.continue_left;
            let slice = [io::IoSlice::new(&CONTINUE[at..])];
            match ready!(self.guard.poll_write_vectored(cx, &slice)) {
                Ok(0) => return Poll::Ready(Some(Err(io::ErrorKind::WriteZero.into()))),
                Ok(n) => self.continue_left -= n,
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        loop {
            match self.body.step(&mut self.buf) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(e) => {
                    let why = format!("malformed request body: {e}");
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, why))));
                }
            }
            match ready!(self.guard.poll_read_into(cx, &mut self.buf)) {
                Ok(0) => {
                    let closed = "client closed the connection inside the request body";
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, closed))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    /// Reads and drops the rest of a body the handler left, at most
    /// `left` more bytes of it. Ready with whether it came to its end.
    pub fn poll_discard(&mut self, cx: &mut Context<'_>, left: &mut u64) -> Poll<bool> {
        loop {
            match self.poll_body(cx) {
                Poll::Ready(None) => return Poll::Ready(true),
                Poll::Ready(Some(Ok(data))) if (data.len() as u64) <= *left => *left -= data.len() as u64,
                Poll::Ready(Some(_)) => return Poll::Ready(false),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A request body for the handler; see the module doc.
pub struct Incoming<S> {
    /// `None` for a request without a body.
    io: Option<Shared<S>>,
}

impl<S> Incoming<S> {
    pub fn new(io: Option<Shared<S>>) -> Incoming<S> {
        Incoming { io }
    }
}

impl<S> http_body::Body for Incoming<S>
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        let Some(io) = &self.io else {
            return Poll::Ready(None);
        };
        lock(io).poll_body(cx).map(|next| next.map(|data| data.map(http_body::Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.io.as_ref().is_none_or(|io| lock(io).body_done())
    }
}
