//! The front: listeners, HTTP/1.1 connections and the journey of each
//! request through tandem.
//!
//! `listener` binds and accepts; `guard` stands between each socket and
//! hyper (timeouts, and `framing`'s strict reading of request syntax and
//! limits); `forwarded` decides what a trusted proxy may say about the
//! client; `handler` reads one request's whole journey top to bottom;
//! `request_body` and `response` own the buffering on either side of the
//! app or upstream; `accel` serves what `X-Accel-Redirect` names;
//! `access_log` records each request once its response is sent. What
//! happens inside a worker is `worker`'s business, and how requests reach
//! workers is `dispatch`'s.

mod accel;
mod access_log;
mod forwarded;
mod framing;
mod guard;
mod handler;
mod listener;
mod request_body;
mod response;

pub use access_log::{AccessLog, Format as AccessLogFormat, Target as AccessLogTarget};
pub use forwarded::TrustedProxies;

pub use handler::{error_response, Front};
pub use listener::{bind_all, serve, Listener};
pub use response::{segments_body, BodySource, Piece, ResponseBody, Segment};
