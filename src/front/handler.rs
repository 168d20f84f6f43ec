//! One request's whole journey through the front, top to bottom:
//!
//! ```text
//! router: static route → static_files::serve (done, unless it falls through to the app)
//!         no route     → 404 (tandem runs without an app)
//! read body (413 if too large)
//!   proxy route → proxy::forward (502/504 if no upstream answers)
//!   app         → build the request head → dispatch::Pool::submit (503 if the queue is full)
//!                 → early hints (103) on their way to the client
//!                 → wait for the app's head (500 app error, 502 worker died, 504 timeout)
//! X-Accel-Redirect / X-Sendfile in the head → accel::serve (an internal static file)
//! otherwise → stream or buffer the body to the client
//! access log: one line once the response has been sent; metrics: counted by route kind
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Version};

use super::accel;
use super::access_log::AccessLog;
use super::early_hints::EarlyHints;
use super::request_body::{self, ClientBody, RequestBody};
use super::response::{self, ResponseBody};
use super::sendfile::FileSends;
use crate::config::Config;
use crate::dispatch::{DispatchError, Pool, Reply};
use crate::metrics::{RouteKind, METRICS};
use crate::proxy::{self, Upstream};
use crate::router::{Route, Router};
use crate::static_files::{Served, StaticFiles};
use crate::wire::{RequestHead, Scheme};

/// What a request's connection lends its handler besides the request:
/// passed alongside it rather than in its extensions, which would cost a
/// map and a box per request.
#[derive(Default)]
pub struct Lent {
    /// Where its `103 Early Hints` go (none for HTTP/1.0).
    pub hints: Option<EarlyHints>,
    /// The connection's `sendfile` record, if it can take one.
    pub sends: Option<Arc<FileSends>>,
}

/// What the access log and the metrics learn of how a request was answered.
pub struct Outcome {
    route: RouteKind,
    worker: Option<u32>,
}

/// What every request handler shares: the settings, the route table, the
/// static-file handler, the upstream pools and the app's pool.
pub struct Front {
    pub config: Arc<Config>,
    pub router: Router,
    pub statics: StaticFiles,
    pub upstreams: Vec<Arc<Upstream>>,
    pub pool: Arc<Pool>,
    /// `--access-logfile`, if given.
    pub access_log: Option<AccessLog>,
    /// `--certfile`: every connection starts with a TLS handshake.
    pub tls: Option<Arc<super::tls::Tls>>,
    /// Client connections open: a graceful stop waits for them to finish
    /// (idle ones close at once), so that a request read just as the stop
    /// began is still answered.
    connections: AtomicUsize,
    /// Accept loops still running: a graceful stop waits for them to see
    /// it, or one could accept a connection after the stop found none open.
    accepting: AtomicUsize,
}

/// Counts a client connection in [`Front::connections`] until dropped.
pub struct Connection(Arc<Front>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts an accept loop in [`Front::accepting`] until dropped.
pub struct AcceptLoop(Arc<Front>);

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the front knows about a connection before any request on it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote_addr: Bytes,
    pub remote_port: u16,
    /// The listener's address, used when a request carries no `Host`.
    pub local_name: Bytes,
    pub local_port: u16,
    pub scheme: Scheme,
}

impl Front {
    /// The front for `config`; starts the upstream pools' health checks.
    pub fn new(
        config: Arc<Config>,
        pool: Arc<Pool>,
        access_log: Option<AccessLog>,
        tls: Option<Arc<super::tls::Tls>>,
    ) -> Front {
        Front {
            access_log,
            tls,
            router: Router::new(&config),
            statics: StaticFiles::new(&config.static_mounts(), config.static_options.clone()),
            upstreams: proxy::start(&config.upstreams, config.front_threads),
            config,
            pool,
            connections: AtomicUsize::new(0),
            accepting: AtomicUsize::new(0),
        }
    }

    /// Counts a client connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> Connection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Connection(Arc::clone(self))
    }

    /// Client connections open.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts an accept loop in [`Front::accepting`] until dropped.
    pub fn accept_loop(self: &Arc<Self>) -> AcceptLoop {
        self.accepting.fetch_add(1, Ordering::Relaxed);
        AcceptLoop(Arc::clone(self))
    }

    /// Whether an accept loop may still take a connection.
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed) > 0
    }

    /// Reopens the log files (on `USR1`, after log rotation).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    /// Answers one request. Never fails: every error becomes a response.
    /// Counts it in the metrics by the route that answered, and logs it.
    pub async fn handle<B: ClientBody>(
        self: Arc<Self>,
        req: Request<B>,
        conn: Arc<Peer>,
        lent: Lent,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let peer = super::forwarded::resolve(&self.config.forwarded_allow_ips, &mut parts.headers, Arc::clone(&conn));
        let entry = self.access_log.as_ref().map(|log| log.entry(&parts, &peer));
        // One call, not one per branch: the future's size is that of the
        // largest journey, and each request's future is moved into place.
        let mut outcome = Outcome { route: RouteKind::App, worker: None };
        let hints = lent.hints.as_ref();
        let mut response = self.respond(parts, body, &conn, &peer, hints, &mut outcome).await;
        response.body_mut().send_files_with(lent.sends);
        let Outcome { route, worker } = outcome;
        let response = match entry {
            None => response,
            Some(mut entry) => {
                entry.worker = worker;
                entry.status = response.status().as_u16();
                response.map(|body| body.logged(entry))
            }
        };
        METRICS.request(route, response.status().as_u16(), started.elapsed());
        Ok(response)
    }

    /// The journey itself. `conn` is the connection's peer, `peer` what
    /// trusted proxies say of the client; `outcome` learns which kind of
    /// route answered, and which worker, if one did.
    async fn respond<B: ClientBody>(
        &self,
        parts: http::request::Parts,
        body: B,
        conn: &Peer,
        peer: &Peer,
        hints: Option<&EarlyHints>,
        outcome: &mut Outcome,
    ) -> Response<ResponseBody> {
        let route = &mut outcome.route;
        // "GET /path", for log lines (built by hand: `format!` costs more).
        let (method, path) = (parts.method.as_str(), parts.uri.path());
        let mut label = String::with_capacity(method.len() + 1 + path.len());
        label.push_str(method);
        label.push(' ');
        label.push_str(path);
        let host = self.router.by_host().then(|| parts.headers.get(header::HOST)).flatten();
        let host = host.and_then(|h| split_host(h.as_bytes())).map(|(name, _)| name);
        let host = host.as_deref().and_then(|h| std::str::from_utf8(h).ok());

        let upstream = match self.router.route(host, parts.uri.path()) {
            Route::Static { mount, rest } => match Box::pin(self.statics.serve(mount, rest, &parts, &label)).await {
                Served::Response(response) => {
                    *route = RouteKind::Static;
                    return response;
                }
                Served::FallThrough if self.config.has_app() => None,
                Served::FallThrough => {
                    *route = RouteKind::Static;
                    return not_found(&label);
                }
            },
            Route::NotFound => {
                // Answered by the front itself, as a static route would.
                *route = RouteKind::Static;
                return not_found(&label);
            }
            Route::Proxy(i) => {
                *route = RouteKind::Proxy;
                Some(i)
            }
            Route::App => None,
        };

        let max = self.config.max_request_body;
        if declared_length(&parts.headers).is_some_and(|len| len > max) {
            tracing::info!("{label}: 413, declared body larger than {max} bytes");
            return error_response(StatusCode::PAYLOAD_TOO_LARGE);
        }
        let body = match request_body::read(body, max, self.config.request_spill, self.config.client.body_timeout).await
        {
            Ok(body) => body,
            Err(err) => {
                tracing::info!("{label}: {}, {err}", err.status().as_u16());
                return error_response(err.status());
            }
        };
        match upstream {
            Some(i) => self.proxy(i, &parts, body, conn, hints, &label).await,
            None => self.call_app(&parts, body, peer, hints, &label, &mut outcome.worker).await,
        }
    }

    /// Forwards the request to upstream pool `i`.
    async fn proxy(
        &self,
        i: usize,
        parts: &http::request::Parts,
        body: RequestBody,
        conn: &Peer,
        hints: Option<&EarlyHints>,
        label: &str,
    ) -> Response<ResponseBody> {
        let addr = std::str::from_utf8(&conn.remote_addr).unwrap_or("");
        let client = proxy::ClientSide {
            addr,
            trusted: super::forwarded::is_trusted(&self.config.forwarded_allow_ips, conn),
            scheme: conn.scheme,
        };
        let payload = match body {
            RequestBody::Mem(data) if data.is_empty() => proxy::Payload::Empty,
            RequestBody::Mem(data) => proxy::Payload::Mem(data),
            RequestBody::File { file, len } => proxy::Payload::File(Arc::new(file), len),
        };
        let has_body =
            declared_length(&parts.headers).is_some() || parts.headers.contains_key(header::TRANSFER_ENCODING);
        let out = proxy::Outgoing { parts, payload, has_body, client, hints, label };
        let _sealed = hints.map(EarlyHints::sealed_on_drop);
        if let Some(hints) = hints {
            hints.expect_from_elsewhere().await;
        }
        let answer = proxy::forward(&self.upstreams[i], out).await;
        if let Some(hints) = hints {
            hints.finish().await;
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                let status = err.status();
                tracing::error!("{label}: {}, {err}", status.as_u16());
                return error_response(status);
            }
        };
        let mut head = answer.head;
        if let Some(redirect) = self.router.has_internal().then(|| accel::target(&head.headers)).flatten() {
            return Box::pin(accel::serve(self, redirect, parts, &head.headers, label)).await;
        }
        let streaming =
            head.headers.remove(response::X_ACCEL_BUFFERING).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"));
        proxy::strip_response_headers(&mut head.headers);
        let mut upstream_body = answer.body;
        let body = if parts.method == Method::HEAD || upstream_body.is_end_stream() {
            // Read to its (empty) end, which gives the connection back.
            let _ = response::BodySource::try_next(&mut upstream_body);
            ResponseBody::empty()
        } else {
            let expected = upstream_body.length();
            let buffer = self.config.response_buffer;
            match response::body_of_length(upstream_body, expected, streaming, buffer, label).await {
                Ok(body) => body,
                Err(err) => {
                    let status = err.status();
                    tracing::error!("{label}: {}, {err}", status.as_u16());
                    return error_response(status);
                }
            }
        };
        Response::from_parts(head, body)
    }

    /// Hands the request to the app's workers.
    async fn call_app(
        &self,
        parts: &http::request::Parts,
        body: RequestBody,
        peer: &Peer,
        hints: Option<&EarlyHints>,
        label: &str,
        worker: &mut Option<u32>,
    ) -> Response<ResponseBody> {
        let head_only = parts.method == Method::HEAD;
        let call = match self.build_head(parts, body, peer) {
            Ok((head, fd)) => self.pool.submit(label.to_string(), head, fd),
            Err(err) => Err(DispatchError::Internal(err.to_string())),
        };
        let mut call = match call {
            Ok(call) => call,
            Err(err) => return failure(label, err),
        };

        let _sealed = hints.map(EarlyHints::sealed_on_drop);
        let head = loop {
            match call.next().await {
                Reply::Hints(headers) => {
                    if let Some(hints) = hints {
                        hints.send(&headers);
                    }
                }
                Reply::Head { head, worker: pid } => {
                    *worker = Some(pid);
                    break head;
                }
                Reply::Failed(err) => return failure(label, err),
                _ => return failure(label, DispatchError::Internal("reply before response head".into())),
            }
        };
        if let Some(hints) = hints {
            hints.finish().await;
        }
        let app_head = match response::convert_head(head) {
            Ok(h) => h,
            Err(why) => {
                tracing::error!("{label}: 500, app response not sendable: {why}");
                return error_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        let accel = app_head.response.headers_ref().filter(|_| self.router.has_internal()).and_then(accel::target);
        if let Some(redirect) = accel {
            let original = app_head.response.headers_ref().cloned().unwrap_or_default();
            return Box::pin(accel::serve(self, redirect, parts, &original, label)).await;
        }
        let body = if head_only {
            ResponseBody::empty()
        } else {
            match response::body(call, app_head.streaming, self.config.response_buffer, label.to_string()) {
                Ok(body) => body,
                Err(err) => return failure(label, err),
            }
        };
        app_head.response.body(body).unwrap_or_else(|_| error_response(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// The request as a worker will see it.
    fn build_head(
        &self,
        parts: &http::request::Parts,
        body: RequestBody,
        peer: &Peer,
    ) -> std::io::Result<(RequestHead, Option<std::os::fd::OwnedFd>)> {
        let (server_name, server_port) = parts
            .headers
            .get(header::HOST)
            .and_then(|h| split_host(h.as_bytes()))
            .map(|(name, port)| (name, port.unwrap_or(default_port(peer.scheme))))
            .unwrap_or_else(|| (peer.local_name.clone(), peer.local_port));

        let body_len = body.len();
        let mut headers = Vec::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            // Underscored names would alias dashed ones in the environ
            // (X_Forwarded_For vs X-Forwarded-For); drop them, as nginx does.
            if name.as_str().contains('_') || name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
                continue;
            }
            headers.push((Bytes::copy_from_slice(name.as_str().as_bytes()), Bytes::copy_from_slice(value.as_bytes())));
        }
        // The body has been read in full, so its length is known even if the
        // client sent it chunked.
        if body_len > 0 || declared_length(&parts.headers).is_some() {
            headers.push((Bytes::from_static(b"content-length"), Bytes::from(body_len.to_string())));
        }
        let (body, fd) = body.into_wire()?;
        let head = RequestHead {
            method: Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
            path: Bytes::copy_from_slice(parts.uri.path().as_bytes()),
            query: Bytes::copy_from_slice(parts.uri.query().unwrap_or("").as_bytes()),
            version: match parts.version {
                Version::HTTP_09 => 9,
                Version::HTTP_10 => 10,
                Version::HTTP_2 => 20,
                Version::HTTP_3 => 30,
                _ => 11,
            },
            scheme: peer.scheme,
            remote_addr: peer.remote_addr.clone(),
            remote_port: peer.remote_port,
            server_name,
            server_port,
            script_name: Bytes::copy_from_slice(self.config.root_path.as_bytes()),
            headers,
            body,
        };
        Ok((head, fd))
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn default_port(scheme: Scheme) -> u16 {
    match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    }
}

/// Splits a `Host` value into name and optional port (`[::1]:8000` too).
fn split_host(host: &[u8]) -> Option<(Bytes, Option<u16>)> {
    let host = std::str::from_utf8(host).ok()?.trim();
    if host.is_empty() {
        return None;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        (name, after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((Bytes::copy_from_slice(name.to_ascii_lowercase().as_bytes()), port))
}

fn not_found(label: &str) -> Response<ResponseBody> {
    tracing::info!("{label}: 404, no route");
    error_response(StatusCode::NOT_FOUND)
}

/// Logs why a request failed and builds the response the client gets.
fn failure(label: &str, err: DispatchError) -> Response<ResponseBody> {
    let status = err.status();
    match status {
        StatusCode::SERVICE_UNAVAILABLE => tracing::warn!("{label}: {}, {err}", status.as_u16()),
        _ => tracing::error!("{label}: {}, {err}", status.as_u16()),
    }
    error_response(status)
}

/// A short HTML error page, as nginx sends.
pub fn error_response(status: StatusCode) -> Response<ResponseBody> {
    let text = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>tandem</center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16(),
        reason = status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(ResponseBody::Full(Some(Bytes::from(text))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html"));
    if matches!(status, StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE) {
        // The body was not (all) read; the connection can't carry another request.
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert_eq!(split_host(b"Example.com"), Some((Bytes::from("example.com"), None)));
        assert_eq!(split_host(b"a:81"), Some((Bytes::from("a"), Some(81))));
        assert_eq!(split_host(b"[::1]:8000"), Some((Bytes::from("::1"), Some(8000))));
        assert_eq!(split_host(b"[::1]"), Some((Bytes::from("::1"), None)));
        assert_eq!(split_host(b"a:notaport"), None);
        assert_eq!(split_host(b""), None);
    }
}
