//! The dispatcher: one FIFO queue of requests per app pool, and the routing
//! of each worker's reply frames back to the request they answer.
//!
//! All workers of a pool read requests from one shared `SOCK_SEQPACKET`
//! socket, so the kernel hands each request to exactly one idle worker and
//! a long request never holds up the ones behind it while another worker is
//! free (the same idea as gunicorn's shared `accept()`). A worker says
//! [`Message::Took`](crate::wire::Message::Took) on its own reply socket as
//! soon as it takes a request; from then on that request's fate is tied to
//! that worker (its crash is the request's 502, its silence the request's
//! 504).
//!
//! This module owns the queue, the table of pending requests and the reply
//! routing. Spawning and killing worker processes is the supervisor's job;
//! HTTP is the front's.

mod pool;
mod queue;
mod replies;

pub use pool::{Call, Pool, Reply, WorkerLink};
pub use queue::Queue;
pub use replies::{read_replies, LinkEnd};

/// Why a request got no (complete) response from the app.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("queue full ({0} requests waiting for a worker)")]
    QueueFull(usize),
    #[error("app raised: {0}")]
    App(String),
    #[error("worker {pid} died: {why}")]
    WorkerDied { pid: u32, why: String },
    #[error("worker {pid} timed out after {secs}s")]
    Timeout { pid: u32, secs: u64 },
    #[error("shutting down")]
    Closed,
    #[error("request could not be handed to a worker: {0}")]
    Internal(String),
}

impl DispatchError {
    /// The status the client gets.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            DispatchError::QueueFull(_) | DispatchError::Closed => S::SERVICE_UNAVAILABLE,
            DispatchError::App(_) | DispatchError::Internal(_) => S::INTERNAL_SERVER_ERROR,
            DispatchError::WorkerDied { .. } => S::BAD_GATEWAY,
            DispatchError::Timeout { .. } => S::GATEWAY_TIMEOUT,
        }
    }
}
