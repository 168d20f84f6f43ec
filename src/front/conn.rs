//! One client connection from accept to close: the PROXY protocol header
//! with `--proxy-protocol`, the TLS handshake when the front has TLS, the choice of protocol (ALPN, or on a connection without
//! it the HTTP/2 connection preface `PRI * HTTP/2.0` that a client with
//! prior knowledge opens with), then an HTTP/1.1 connection
//! (`http1`, read through `guard`) or an HTTP/2 one (`h2`).
//!
//! The PROXY header, the TLS handshake and the first bytes share one
//! deadline, the header timeout counted from accept. What the handshake involves is `tls`'s
//! business, what a request gets is `handler`'s, and accepting is
//! `listener`'s.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::early_hints::Interim;
use super::guard::{GuardedIo, Settings};
use super::handler::{Front, Peer};
use super::proxy_protocol;
use super::sendfile::{FileSends, FileSink};
use crate::wire::Scheme;

/// What a client with HTTP/2 prior knowledge sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection that has not sent a request yet may still send
/// its first one once tandem is stopping (the header timeout if shorter).
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one accepted connection until it closes.
pub async fn serve<S>(socket: S, mut peer: Peer, front: Arc<Front>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin + Send + 'static,
{
    let accepted = Instant::now();
    let settings = Settings::new(&front.config);
    let deadline = accepted + settings.header_timeout;
    let mut socket = socket;
    let socket = if front.config.proxy_protocol {
        match opening(deadline, &mut stop, proxy_protocol::read(&mut socket)).await {
            Ok(Ok((header, rest))) => {
                apply_proxy_header(&mut peer, &header);
                Prefixed::new(socket, rest)
            }
            Ok(Err(e)) => {
                tracing::info!("closing connection from {}: {e}", describe(&peer));
                return;
            }
            Err(cut) => {
                tracing::info!("closing connection: PROXY protocol header incomplete {cut}");
                return;
            }
        }
    } else {
        Prefixed::new(socket, Bytes::new())
    };
    let Some(tls) = front.tls.clone() else {
        return choose_protocol(socket, false, peer, front, stop, accepted).await;
    };
    // Boxed, as the protocol loops are (`choose_protocol`): the handshake's state is large.
    let (stream, negotiated) = match opening(deadline, &mut stop, Box::pin(tls.accept(socket))).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            tracing::info!("TLS handshake with {} failed: {e}", describe(&peer));
            return;
        }
        Err(cut) => {
            tracing::info!("closing connection: TLS handshake incomplete {cut}");
            return;
        }
    };
    peer.scheme = Scheme::Https;
    choose_protocol(stream, negotiated.h2, peer, front, stop, accepted).await
}

/// Serves the connection over the protocol it speaks. Each protocol's loop
/// is boxed (one allocation per connection): inline, the largest of them,
/// for plain and TLS streams alike, would make every connection's task
/// tens of kilobytes.
async fn choose_protocol<S>(
    mut socket: S,
    alpn_h2: bool,
    peer: Peer,
    front: Arc<Front>,
    mut stop: watch::Receiver<bool>,
    accepted: Instant,
) where
    S: AsyncRead + AsyncWrite + FileSink + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    if alpn_h2 {
        return Box::pin(super::h2::serve(Prefixed::new(socket, Bytes::new()), peer, front, stop, accepted)).await;
    }
    if !front.config.http2.enabled {
        return Box::pin(serve_http1(Prefixed::new(socket, Bytes::new()), peer, front, stop, accepted)).await;
    }
    let deadline = accepted + front.config.client.header_timeout;
    let first = match opening(deadline, &mut stop, sniff(&mut socket)).await {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => {
            tracing::debug!("connection error: {e}");
            return;
        }
        Err(Cut::Timeout) => {
            tracing::info!("closing connection: request head incomplete {}", Cut::Timeout);
            return;
        }
        Err(Cut::Stopping) => {
            tracing::debug!("closing connection: no request {}", Cut::Stopping);
            return;
        }
    };
    let h2 = first.len() == PREFACE.len() && first[..] == *PREFACE;
    let io = Prefixed::new(socket, first);
    if h2 {
        Box::pin(super::h2::serve(io, peer, front, stop, accepted)).await
    } else {
        Box::pin(serve_http1(io, peer, front, stop, accepted)).await
    }
}

/// Reads until the input is either the whole HTTP/2 preface or something
/// else (usually decided by the first byte). Returns what it read.
async fn sniff<S: AsyncRead + Unpin>(socket: &mut S) -> io::Result<Bytes> {
    let mut first = BytesMut::with_capacity(PREFACE.len());
    while first.len() < PREFACE.len() && PREFACE.starts_with(&first) {
        if socket.read_buf(&mut first).await? == 0 {
            break;
        }
    }
    Ok(first.freeze())
}

/// HTTP/1.1 through the guard (framing, limits and timeouts).
async fn serve_http1<S>(io: S, peer: Arc<Peer>, front: Arc<Front>, stop: watch::Receiver<bool>, accepted: Instant)
where
    S: AsyncRead + AsyncWrite + FileSink + Unpin + Send + 'static,
{
    let settings = Settings::new(&front.config);
    let interim = Interim::new();
    let sends = (io.sends_files() && front.config.static_options.sendfile).then(FileSends::new);
    let mut io = GuardedIo::new(io, settings).accepted_at(accepted).with_interim(Arc::clone(&interim));
    if let Some(sends) = &sends {
        io = io.with_file_sends(Arc::clone(sends));
    }
    let access_log = front.access_log.is_some().then(|| (Arc::clone(&front), Arc::clone(&peer)));
    let grace = FIRST_REQUEST_GRACE.min(settings.header_timeout);
    let lends = super::http1::Lends { interim, sends };
    let Some(io) = super::http1::serve(io, peer, front, stop, lends, grace).await else {
        return;
    };
    let refused = io.finish().await;
    if let Some((status, len)) = refused {
        crate::metrics::METRICS.refused(status.as_u16());
        if let Some((front, peer)) = &access_log {
            if let Some(log) = &front.access_log {
                log.refusal(peer, status.as_u16(), len);
            }
        }
    }
}

/// Why a connection's opening (PROXY header, TLS handshake, first bytes)
/// was cut short.
#[derive(Clone, Copy, Debug)]
enum Cut {
    Timeout,
    Stopping,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Timeout => f.write_str("after the header timeout"),
            Cut::Stopping => f.write_str("while tandem is stopping"),
        }
    }
}

/// Runs one step of a connection's opening until the header `deadline`.
/// Once tandem stops, the step still gets `FIRST_REQUEST_GRACE`: a client
/// that connected just before the stop is on its way with a request.
async fn opening<F: std::future::Future>(
    deadline: Instant,
    stop: &mut watch::Receiver<bool>,
    step: F,
) -> Result<F::Output, Cut> {
    tokio::select! {
        done = tokio::time::timeout_at(deadline, step) => done.map_err(|_| Cut::Timeout),
        _ = async {
            stopped(stop).await;
            tokio::time::sleep(FIRST_REQUEST_GRACE).await;
        } => Err(Cut::Stopping),
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The client a load balancer's PROXY header names becomes the peer.
fn apply_proxy_header(peer: &mut Peer, header: &proxy_protocol::Header) {
    if let Some(source) = header.source {
        peer.remote_addr = Bytes::from(source.ip().to_canonical().to_string());
        peer.remote_port = source.port();
    }
    if let Some(destination) = header.destination {
        peer.local_name = Bytes::from(destination.ip().to_canonical().to_string());
        peer.local_port = destination.port();
    }
}

fn describe(peer: &Peer) -> String {
    if peer.remote_addr.is_empty() {
        "a unix-socket client".into()
    } else {
        format!("{}:{}", String::from_utf8_lossy(&peer.remote_addr), peer.remote_port)
    }
}

/// A socket whose first bytes were already read (to sniff the protocol):
/// reads give those back first.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(inner: S, prefix: Bytes) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Let go of the buffer the prefix was read into.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: FileSink> FileSink for Prefixed<S> {
    fn sends_files(&self) -> bool {
        self.inner.sends_files()
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_send_file(cx, file, offset, len)
    }

    fn poll_write_more(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.inner.poll_write_more(cx, bufs)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniff_stops_at_the_first_difference() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n").await.unwrap();
        let first = sniff(&mut server).await.unwrap();
        assert!(first.starts_with(b"G") && first.len() < PREFACE.len());

        let (mut client, mut server) = tokio::io::duplex(64);
        for part in [&PREFACE[..3], &PREFACE[3..], b"\0\0"] {
            tokio::io::AsyncWriteExt::write_all(&mut client, part).await.unwrap();
        }
        assert_eq!(sniff(&mut server).await.unwrap(), PREFACE);
    }

    #[tokio::test]
    async fn prefixed_reads_the_prefix_first() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"world").await.unwrap();
        drop(client);
        let mut io = Prefixed::new(server, Bytes::from_static(b"hello "));
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
