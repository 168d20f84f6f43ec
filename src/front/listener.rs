//! Listening sockets: binding them at start-up (with errors that name the
//! address), the accept loops (which stop accepting at `--max-connections`,
//! leaving further clients in the kernel's listen backlog); what happens on
//! each accepted connection is `conn`'s business.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};

use super::handler::{Front, Peer};
use super::loops::Loops;
use crate::config::Bind;
use crate::wire::Scheme;

/// A bound listening socket (non-blocking, watched by the supervisor's
/// runtime; accepted connections are registered only by the event loop
/// that serves them).
pub enum Listener {
    Tcp(AsyncFd<TcpListener>),
    /// A unix socket and the path it was bound at (removed on exit), if
    /// tandem created it.
    Unix(AsyncFd<UnixListener>, Option<PathBuf>),
}

impl Listener {
    /// How the listener is announced: `http://HOST:PORT` or `unix:PATH`.
    pub fn url(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.get_ref().local_addr() {
                Ok(addr) => format!("http://{addr}"),
                Err(_) => "http://?".into(),
            },
            Listener::Unix(l, _) => {
                match l.get_ref().local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.to_path_buf())) {
                    Some(path) => format!("unix:{}", path.display()),
                    None => "unix:?".into(),
                }
            }
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
            Ok(Listener::Tcp(crate::sys::async_listener(socket.listen(2048)?.into_std()?)?))
        }
        Bind::Unix(path) => {
            if path.exists() {
                // A live server answers on it; a stale file from a crash doesn't.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    bail!("address already in use (another server answers on {})", path.display());
                }
                std::fs::remove_file(path).context("removing stale socket file")?;
            }
            let std_listener = UnixListener::bind(path)?;
            Ok(Listener::Unix(crate::sys::async_listener(std_listener)?, Some(path.clone())))
        }
        Bind::Fd(fd) => from_inherited(*fd),
    }
}

fn from_inherited(fd: RawFd) -> anyhow::Result<Listener> {
    let inherited = crate::sys::inherited_listener(fd)?;
    Ok(match inherited {
        crate::sys::Inherited::Tcp(l) => Listener::Tcp(crate::sys::async_listener(l)?),
        crate::sys::Inherited::Unix(l) => Listener::Unix(crate::sys::async_listener(l)?, None),
    })
}

/// Starts the front's event loops and an accept loop per listener, which
/// hands each connection to an event loop. Accept loops stop accepting when
/// `stop` turns true; connections then finish their current request and
/// close, and the event loops end after their last one.
pub fn serve(listeners: Vec<Listener>, front: Arc<Front>, stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let loops = Arc::new(Loops::start(front.config.front_threads)?);
    let max = front.config.client.max_connections;
    // Each connection is a descriptor, and so is each idle upstream
    // connection (kept per loop); workers, listeners and files need some too.
    let idle_upstream: usize = front.upstreams.iter().map(|u| u.spec.keepalive * u.nodes.len()).sum();
    let want = (max + idle_upstream * front.config.front_threads) as u64 + 256;
    match crate::sys::raise_open_files_limit(want) {
        Ok(limit) if limit < want => tracing::warn!(
            "--max-connections {max} is close to or above the open-files limit ({limit});              accepting will fail before that many clients"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-files limit: {e}"),
    }
    let slots = Arc::new(Semaphore::new(max));
    for listener in listeners {
        let (front, loops) = (Arc::clone(&front), Arc::clone(&loops));
        // Counted before it runs: a stop waits until it has seen the stop.
        let running = front.accept_loop();
        let accepting = accept_loop(listener, front, loops, Arc::clone(&slots), stop.clone());
        tokio::spawn(async move {
            accepting.await;
            drop(running);
        });
    }
    Ok(())
}

async fn accept_loop(
    listener: Listener,
    front: Arc<Front>,
    loops: Arc<Loops>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // At --max-connections, wait here: clients queue in the listen backlog.
        let slot = tokio::select! {
            _ = stopped(&mut stop) => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok((io, peer)) => {
                // Counted from accept, so a graceful stop waits for it even
                // before its loop has started it.
                let open = front.connection();
                let (front, stop) = (Arc::clone(&front), stop.clone());
                crate::metrics::METRICS.connection_opened();
                loops.hand_off(move |assigned| {
                    // Registered with the loop it will live on.
                    let io = match io.into_loop() {
                        Ok(io) => io,
                        Err(e) => {
                            tracing::warn!("cannot serve an accepted connection: {e}");
                            crate::metrics::METRICS.connection_closed();
                            return;
                        }
                    };
                    tokio::spawn(async move {
                        serve_connection(io, peer, front, stop).await;
                        crate::metrics::METRICS.connection_closed();
                        drop((slot, assigned, open));
                    });
                });
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

/// An accepted connection on its way to an event loop (non-blocking).
enum StdIo {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl StdIo {
    /// Registers the connection with the runtime this runs in.
    fn into_loop(self) -> std::io::Result<Io> {
        Ok(match self {
            StdIo::Tcp(s) => Io::Tcp(tokio::net::TcpStream::from_std(s)?),
            StdIo::Unix(s) => Io::Unix(tokio::net::UnixStream::from_std(s)?),
        })
    }
}

/// The next connection on `listener`, not yet registered with any runtime.
async fn accept(listener: &Listener) -> std::io::Result<(StdIo, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (fd, remote) = accept_fd(l).await?;
            let stream = std::net::TcpStream::from(fd);
            let remote = remote.ok_or_else(|| std::io::Error::other("accepted a TCP connection with no address"))?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr()?;
            Ok((
                StdIo::Tcp(stream),
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
            let (fd, _) = accept_fd(l).await?;
            Ok((
                StdIo::Unix(std::os::unix::net::UnixStream::from(fd)),
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

/// Waits for a connection on `listener` and accepts it (`sys::accept`).
async fn accept_fd<T: AsRawFd>(listener: &AsyncFd<T>) -> std::io::Result<(OwnedFd, Option<std::net::SocketAddr>)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|l| crate::sys::accept::accept(l.get_ref())) {
            return accepted;
        }
    }
}

async fn serve_connection(io: Io, peer: Peer, front: Arc<Front>, stop: watch::Receiver<bool>) {
    match io {
        Io::Tcp(s) => super::conn::serve(s, peer, front, stop).await,
        Io::Unix(s) => super::conn::serve(s, peer, front, stop).await,
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
