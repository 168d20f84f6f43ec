//! One HTTP/1.1 connection to an upstream server, over TCP or a unix
//! socket: opening it within the pool's connect timeout, writing to it,
//! reading from it into its own buffer, and telling whether an idle one is
//! still worth sending a request on.
//!
//! The request that owns a connection drives it directly: there is no
//! task per connection and no channel between the request and its socket,
//! so a proxied request costs its event loop no more wake-ups than its own
//! reads and writes. A new connection that is open as soon as `connect`
//! returns (loopback, a unix socket, a fast network: `sys::connect`) takes
//! its request at once, not one event-loop turn later: with servers that
//! close every connection (gunicorn's sync workers) that is one turn per
//! request. What is written and how the answer is read is
//! `exchange`'s business; keeping the connection for the next request is
//! `upstream`'s.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::config::ServerAddr;

/// Room made in the read buffer for the first read: enough for most
/// responses, head and body.
const FIRST_READ: usize = 8 * 1024;
/// The most room made for one read, when reads keep filling it (a large
/// body).
const MAX_READ: usize = 64 * 1024;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An open upstream connection and what has been read from it and not yet
/// used.
pub struct Conn {
    stream: Stream,
    pub buf: BytesMut,
    /// Room to make for the next read: doubled each time a read fills it.
    room: usize,
    /// Whether Nagle's algorithm is off (set before a request written in
    /// several parts; a request in one write never waits for it).
    nodelay: bool,
    /// The front event loop its socket is registered with (`front::loops`).
    pub home: usize,
    /// Opened, and not written to yet: the loop has not reported the
    /// socket writable (it will, a turn later), so the first write is made
    /// directly rather than after waiting for that.
    fresh: bool,
}

/// How much of a request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    All,
    /// Stopped because the server answered (or closed) first.
    Cut,
}

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Io(#[from] io::Error),
}

/// Connects to `addr`.
pub async fn connect(addr: &ServerAddr, timeout: Duration) -> Result<Conn, ConnectError> {
    let opened = tokio::time::timeout(timeout, async {
        let (stream, fresh) = match addr {
            ServerAddr::Tcp(addr) => {
                let (socket, open) = crate::sys::connect::start(addr)?;
                let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
                if !open {
                    stream.writable().await?;
                    if let Some(err) = stream.take_error()? {
                        return Err(err);
                    }
                }
                (Stream::Tcp(stream), open)
            }
            ServerAddr::Unix(path) => {
                let (socket, open) = crate::sys::connect::start_unix(path)?;
                let stream = UnixStream::from_std(std::os::unix::net::UnixStream::from(socket))?;
                if !open {
                    stream.writable().await?;
                    if let Some(err) = stream.take_error()? {
                        return Err(err);
                    }
                }
                (Stream::Unix(stream), open)
            }
        };
        let home = crate::front::loops::current();
        Ok::<_, io::Error>(Conn { stream, buf: BytesMut::new(), room: FIRST_READ, nodelay: false, home, fresh })
    })
    .await;
    Ok(opened.map_err(|_| ConnectError::Timeout(timeout))??)
}

impl Conn {
    /// Sends what is written from now on without waiting for the
    /// acknowledgement of what went before (`TCP_NODELAY`): wanted before a
    /// request that takes more than one write.
    pub fn no_delay(&mut self) -> io::Result<()> {
        if let (Stream::Tcp(s), false) = (&self.stream, self.nodelay) {
            s.set_nodelay(true)?;
            self.nodelay = true;
        }
        Ok(())
    }

    /// Writes all of `parts`, in as few system calls as the socket takes,
    /// adding each write's bytes to `written` as it goes (so that a caller
    /// who gives up half-way knows whether anything went out).
    ///
    /// Stops with [`Sent::Cut`] when the server answers before it has read
    /// everything: the socket is full and there is something to read, or
    /// the server has closed or reset its end. (A server may refuse a body
    /// with a `413` without reading it; the caller reads that answer.)
    pub async fn write_all(&mut self, parts: &mut [IoSlice<'_>], written: &mut usize) -> io::Result<Sent> {
        let mut parts = parts;
        if std::mem::take(&mut self.fresh) {
            let sent = match &self.stream {
                Stream::Tcp(s) => crate::sys::send(s, parts),
                Stream::Unix(s) => crate::sys::send(s, parts),
            };
            match sent {
                Ok(n) => {
                    *written += n;
                    IoSlice::advance_slices(&mut parts, n);
                    if !parts.is_empty() {
                        self.no_delay()?;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // As below: the server closed first; what it said is read next.
                Err(err) if matches!(err.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
                    return Ok(Sent::Cut);
                }
                Err(err) => return Err(err),
            }
        }
        poll_fn(|cx| loop {
            if parts.is_empty() {
                return Poll::Ready(Ok(Sent::All));
            }
            let wrote = match &mut self.stream {
                Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, parts),
                Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, parts),
            };
            match wrote {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *written += n;
                    IoSlice::advance_slices(&mut parts, n);
                    if !parts.is_empty() {
                        // The rest must not wait for what went first.
                        if let Err(err) = self.no_delay() {
                            return Poll::Ready(Err(err));
                        }
                    }
                }
                Poll::Ready(Err(err))
                    if matches!(err.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) =>
                {
                    return Poll::Ready(Ok(Sent::Cut));
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    let answering = match &self.stream {
                        Stream::Tcp(s) => s.poll_read_ready(cx),
                        Stream::Unix(s) => s.poll_read_ready(cx),
                    };
                    return if answering.is_ready() { Poll::Ready(Ok(Sent::Cut)) } else { Poll::Pending };
                }
            }
        })
        .await
    }

    /// Reads what comes next into `buf`; `Ok(0)` when the server has
    /// closed the connection.
    pub async fn read(&mut self) -> io::Result<usize> {
        let room = self.make_room();
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.read_buf(&mut self.buf).await,
            Stream::Unix(s) => s.read_buf(&mut self.buf).await,
        };
        self.grow_after(n, room)
    }

    /// Like `read`, without waiting: `WouldBlock` if nothing has arrived.
    /// Costs no system call unless the loop has seen the socket readable.
    pub fn try_read(&mut self) -> io::Result<usize> {
        let room = self.make_room();
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.try_read_buf(&mut self.buf),
            Stream::Unix(s) => s.try_read_buf(&mut self.buf),
        };
        self.grow_after(n, room)
    }

    fn make_room(&mut self) -> usize {
        self.buf.reserve(self.room);
        self.buf.capacity() - self.buf.len()
    }

    fn grow_after(&mut self, n: io::Result<usize>, room: usize) -> io::Result<usize> {
        if matches!(n, Ok(n) if n == room) {
            self.room = (self.room * 2).min(MAX_READ);
        }
        n
    }

    /// Whether an idle connection can take a request: the server has
    /// neither closed it nor sent anything unasked. A close the event loop
    /// has already seen is caught here, before a request is lost to it.
    pub fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let ready = match &self.stream {
            Stream::Tcp(s) => s.poll_read_ready(&mut cx),
            Stream::Unix(s) => s.poll_read_ready(&mut cx),
        };
        match ready {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(self.try_read(), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        }
    }
}
