//! The front: listeners, TLS, HTTP/1.1 and HTTP/2 connections and the
//! journey of each request through tandem.
//!
//! `listener` binds and accepts, and hands each connection to one of the
//! `loops` (an event loop per front thread); `conn` takes a client from accept to close
//! (the `tls` handshake, then HTTP/1.1 or `h2` for HTTP/2); `http1` serves
//! an HTTP/1.1 connection's requests one after another, through `guard`
//! (timeouts, and `framing`'s strict reading of request syntax and
//! limits); `proxy_protocol` reads a load
//! balancer's PROXY header; `forwarded` decides what a trusted proxy may
//! say about the client; `handler` reads one request's whole journey top
//! to bottom; `request_body` and `response` own the buffering on either
//! side of the app or upstream; `accel` serves what `X-Accel-Redirect`
//! names; `early_hints` carries the app's `103` responses to the client;
//! `access_log` records each request once its response is sent; `sendfile`
//! sends files on plain HTTP/1.1 connections without copying them.
//! What happens inside a worker is `worker`'s business, and how requests
//! reach workers is `dispatch`'s.

mod accel;
mod access_log;
mod conn;
mod early_hints;
mod file_body;
mod forwarded;
mod framing;
mod guard;
mod h2;
mod handler;
mod http1;
mod listener;
pub mod loops;
mod proxy_protocol;
mod request_body;
mod response;
mod sendfile;
mod tls;

pub use access_log::{AccessLog, Format as AccessLogFormat, Target as AccessLogTarget};
pub use forwarded::{TrustedProxies, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
pub use tls::{Tls, TlsError};

pub use early_hints::EarlyHints;
pub use file_body::{segments_body, Segment};
pub use handler::{error_response, Front};
pub use listener::{bind_all, serve, Listener};
pub use response::{BodySource, Piece, ResponseBody};
