//! The metrics listener: `GET /metrics` answers the exposition text; any
//! other path is 404 and any other method 405. It is a separate listener
//! (`--metrics-bind`) so it can stay on a private address while clients
//! reach the front, and its own tiny hyper server so it never competes
//! with `--max-connections` or client limits.
//!
//! During a binary upgrade the new tandem inherits this socket from the old
//! one rather than binding the address again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use super::METRICS;
use crate::dispatch::Pool;

/// The bound metrics socket.
pub struct MetricsListener(TcpListener);

impl std::os::fd::AsFd for MetricsListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl MetricsListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Binds `addr`, or adopts `inherited` (a listening socket for it handed
/// over by the tandem this one upgrades). Must be called inside the runtime.
pub fn bind(addr: SocketAddr, inherited: Option<i32>) -> anyhow::Result<MetricsListener> {
    let bound = || -> std::io::Result<TcpListener> {
        if let Some(fd) = inherited {
            return match crate::sys::inherited_listener(fd)? {
                crate::sys::Inherited::Tcp(l) => {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                }
                crate::sys::Inherited::Unix(_) => Err(std::io::Error::other("inherited socket is not TCP")),
            };
        }
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(128)
    };
    Ok(MetricsListener(bound().with_context(|| format!("cannot listen on --metrics-bind {addr}"))?))
}

/// Answers scrapes until `stop` turns true.
pub fn serve(listener: MetricsListener, pool: Arc<Pool>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopped(&mut stop) => return,
                accepted = listener.0.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                let service = service_fn(move |req| std::future::ready(answer(&req, &pool)));
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics connection: {e}");
                }
            });
        }
    });
}

fn answer(req: &Request<Incoming>, pool: &Pool) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = if req.uri().path() != "/metrics" {
        (StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n".to_string())
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".to_string())
    } else {
        (StatusCode::OK, METRICS.render(pool.queued(), pool.in_flight()))
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let kind = if status == StatusCode::OK { "text/plain; version=0.0.4; charset=utf-8" } else { "text/plain" };
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    Ok(response)
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
