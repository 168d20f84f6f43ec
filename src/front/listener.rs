//! Listening sockets: binding them at start-up (with errors that name the
//! address) and the accept loops that hand each connection to hyper.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::watch;

use super::handler::{Front, Peer};
use crate::config::Bind;
use crate::wire::Scheme;

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    /// A unix socket and the path it was bound at (removed on exit), if
    /// tandem created it.
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// How the listener is announced: `http://HOST:PORT` or `unix:PATH`.
    pub fn url(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("http://{addr}"),
                Err(_) => "http://?".into(),
            },
            Listener::Unix(l, _) => match l.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.to_path_buf())) {
                Some(path) => format!("unix:{}", path.display()),
                None => "unix:?".into(),
            },
        }
    }

    /// The socket file tandem created and should remove when it stops.
    pub fn owned_path(&self) -> Option<&PathBuf> {
        match self {
            Listener::Unix(_, path) => path.as_ref(),
            Listener::Tcp(_) => None,
        }
    }
}

/// Binds every address, failing on the first that can't be bound.
/// Must be called inside the runtime.
pub fn bind_all(binds: &[Bind]) -> anyhow::Result<Vec<Listener>> {
    binds.iter().map(|b| bind(b).with_context(|| format!("cannot listen on {b}"))).collect()
}

fn bind(bind: &Bind) -> anyhow::Result<Listener> {
    match bind {
        Bind::Tcp(addr) => {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.bind(*addr)?;
            Ok(Listener::Tcp(socket.listen(2048)?))
        }
        Bind::Unix(path) => {
            if path.exists() {
                // A live server answers on it; a stale file from a crash doesn't.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    bail!("address already in use (another server answers on {})", path.display());
                }
                std::fs::remove_file(path).context("removing stale socket file")?;
            }
            let std_listener = std::os::unix::net::UnixListener::bind(path)?;
            std_listener.set_nonblocking(true)?;
            Ok(Listener::Unix(UnixListener::from_std(std_listener)?, Some(path.clone())))
        }
        Bind::Fd(fd) => from_inherited(*fd),
    }
}

fn from_inherited(fd: RawFd) -> anyhow::Result<Listener> {
    let inherited = crate::sys::inherited_listener(fd)?;
    Ok(match inherited {
        crate::sys::Inherited::Tcp(l) => {
            l.set_nonblocking(true)?;
            Listener::Tcp(TcpListener::from_std(l)?)
        }
        crate::sys::Inherited::Unix(l) => {
            l.set_nonblocking(true)?;
            Listener::Unix(UnixListener::from_std(l)?, None)
        }
    })
}

/// Starts an accept loop per listener. Loops stop accepting when `stop`
/// turns true; connections then finish their current request and close.
pub fn serve(listeners: Vec<Listener>, front: Arc<Front>, stop: watch::Receiver<bool>) {
    for listener in listeners {
        tokio::spawn(accept_loop(listener, Arc::clone(&front), stop.clone()));
    }
}

async fn accept_loop(listener: Listener, front: Arc<Front>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok((io, peer)) => {
                tokio::spawn(serve_connection(io, Arc::new(peer), Arc::clone(&front), stop.clone()));
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::error!("accept failed on {}: {e}", listener.url());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

enum Io {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Io, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, remote) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr()?;
            Ok((
                Io::Tcp(stream),
                Peer {
                    remote_addr: Bytes::from(remote.ip().to_string()),
                    remote_port: remote.port(),
                    local_name: Bytes::from(local.ip().to_string()),
                    local_port: local.port(),
                    scheme: Scheme::Http,
                },
            ))
        }
        Listener::Unix(l, _) => {
            let (stream, _) = l.accept().await?;
            Ok((
                Io::Unix(stream),
                Peer {
                    remote_addr: Bytes::new(),
                    remote_port: 0,
                    local_name: Bytes::from_static(b"localhost"),
                    local_port: 0,
                    scheme: Scheme::Http,
                },
            ))
        }
    }
}

async fn serve_connection(io: Io, peer: Arc<Peer>, front: Arc<Front>, stop: watch::Receiver<bool>) {
    match io {
        Io::Tcp(s) => drive(TokioIo::new(s), peer, front, stop).await,
        Io::Unix(s) => drive(TokioIo::new(s), peer, front, stop).await,
    }
}

async fn drive<I>(io: I, peer: Arc<Peer>, front: Arc<Front>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| Arc::clone(&front).handle(req, Arc::clone(&peer)));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60))
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection error: {e}");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
