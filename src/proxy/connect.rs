//! Opening an HTTP/1.1 connection to an upstream server, over TCP or a
//! unix socket, within the pool's connect timeout.
//!
//! The connection itself runs in its own task (hyper's client connection
//! future); what is sent on it is `forward`'s business, and keeping it for
//! the next request is `upstream`'s.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::ServerAddr;
use crate::front::ResponseBody;

/// The sending half of one upstream connection; request bodies are the
/// front's body type (bytes in memory or chunks read from a spill file).
pub struct Sender {
    send: http1::SendRequest<ResponseBody>,
    /// The front event loop its connection task runs on (`front::loops`).
    pub home: usize,
}

impl std::ops::Deref for Sender {
    type Target = http1::SendRequest<ResponseBody>;
    fn deref(&self) -> &Self::Target {
        &self.send
    }
}

impl std::ops::DerefMut for Sender {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.send
    }
}

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Connects to `addr` and starts the HTTP/1.1 connection task.
pub async fn connect(addr: &ServerAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let opened = tokio::time::timeout(timeout, async {
        match addr {
            ServerAddr::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                handshake(stream).await
            }
            ServerAddr::Unix(path) => handshake(tokio::net::UnixStream::connect(path).await?).await,
        }
    })
    .await;
    opened.map_err(|_| ConnectError::Timeout(timeout))?
}

async fn handshake<S>(stream: S) -> Result<Sender, ConnectError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (send, connection) = http1::Builder::new().handshake(TokioIo::new(NoShutdown(stream))).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("upstream connection ended: {err}");
        }
    });
    Ok(Sender { send, home: crate::front::loops::current() })
}

/// An upstream socket that closes without a separate `shutdown` first:
/// hyper shuts a connection down before dropping it, and closing sends the
/// same FIN, so that is one system call per connection saved (the
/// connection per request of a server that closes each one, as gunicorn's
/// sync workers do).
struct NoShutdown<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for NoShutdown<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoShutdown<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
