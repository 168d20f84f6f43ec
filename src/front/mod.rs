//! The front: listeners, HTTP/1.1 connections and the journey of each
//! request through tandem.
//!
//! `listener` binds and accepts; `handler` reads one request's whole
//! journey top to bottom; `request_body` and `response` own the buffering
//! on either side of the app. What happens inside a worker is `worker`'s
//! business, and how requests reach workers is `dispatch`'s.

mod handler;
mod listener;
mod request_body;
mod response;

pub use handler::{error_response, Front};
pub use listener::{bind_all, serve, Listener};
pub use response::{segments_body, ResponseBody, Segment};
