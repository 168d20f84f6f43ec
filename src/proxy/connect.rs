//! One HTTP/1.1 connection to an upstream server, over TCP or a unix
//! socket: opening it within the pool's connect timeout, writing to it,
//! reading from it into its own buffer, and telling whether an idle one is
//! still worth sending a request on.
//!
//! The request that owns a connection drives it directly: there is no
//! task per connection and no channel between the request and its socket,
//! so a proxied request costs its event loop no more wake-ups than its own
//! reads and writes. What is written and how the answer is read is
//! `exchange`'s business; keeping the connection for the next request is
//! `upstream`'s.

use std::io::{self, IoSlice};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::config::ServerAddr;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An open upstream connection and what has been read from it and not yet
/// used.
pub struct Conn {
    stream: Stream,
    pub buf: BytesMut,
    /// The front event loop its socket is registered with (`front::loops`).
    pub home: usize,
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
        let stream = match addr {
            ServerAddr::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
            ServerAddr::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
        };
        Ok::<_, io::Error>(Conn { stream, buf: BytesMut::new(), home: crate::front::loops::current() })
    })
    .await;
    Ok(opened.map_err(|_| ConnectError::Timeout(timeout))??)
}

impl Conn {
    /// Writes all of `parts`, in as few system calls as the socket takes.
    /// `Ok` carries nothing; an error says how many bytes went out first.
    pub async fn write_all(&mut self, mut parts: &mut [IoSlice<'_>]) -> Result<(), (io::Error, usize)> {
        let mut written = 0;
        while !parts.is_empty() {
            let n = match &mut self.stream {
                Stream::Tcp(s) => s.write_vectored(parts).await,
                Stream::Unix(s) => s.write_vectored(parts).await,
            };
            match n {
                Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written)),
                Ok(n) => {
                    written += n;
                    IoSlice::advance_slices(&mut parts, n);
                }
                Err(err) => return Err((err, written)),
            }
        }
        Ok(())
    }

    /// Reads what comes next into `buf`; `Ok(0)` when the server has
    /// closed the connection.
    pub async fn read(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        match &mut self.stream {
            Stream::Tcp(s) => s.read_buf(&mut self.buf).await,
            Stream::Unix(s) => s.read_buf(&mut self.buf).await,
        }
    }

    /// Like `read`, without waiting: `WouldBlock` if nothing has arrived.
    /// Costs no system call unless the loop has seen the socket readable.
    pub fn try_read(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        match &mut self.stream {
            Stream::Tcp(s) => s.try_read_buf(&mut self.buf),
            Stream::Unix(s) => s.try_read_buf(&mut self.buf),
        }
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
