//! The proxy route: forwarding requests to pools of upstream HTTP servers
//! (other tandem nodes, gunicorn, anything that speaks HTTP/1.1) over TCP
//! or unix sockets.
//!
//! `upstream` owns a pool's servers, balancing, passive health and idle
//! keep-alive connections; `health` the active checks; `connect` opening
//! and driving connections; `headers` what a request and response look
//! like on the way through; `exchange` reading a response; `forward` one
//! request's tries, retries and timeouts. The
//! front reads the client's request and buffers the response; the router
//! decides which requests come here.

mod connect;
pub(crate) mod exchange;
mod forward;
mod headers;
mod health;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

pub use connect::ConnectError;
pub use exchange::ExchangeError;
pub use forward::{forward, Answer, Outgoing, Payload, UpstreamBody};
pub use headers::{response as strip_response_headers, ClientSide};
pub use upstream::Upstream;

use crate::config::UpstreamSpec;

/// Why a request got no (complete) response from an upstream. `at` names
/// the pool and server.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream}: no server left to try")]
    NoServer { upstream: String },
    #[error("{at}: {source}")]
    Connect { at: String, source: ConnectError },
    #[error("{at}: {source}")]
    Send { at: String, source: ExchangeError },
    #[error("{at}: {source}")]
    Invalid { at: String, source: ExchangeError },
    #[error("{at}: no response head within {after:?}")]
    HeadTimeout { at: String, after: Duration },
    #[error("{at}: response body silent for {after:?}")]
    IdleTimeout { at: String, after: Duration },
    #[error("{at}: reading response body: {source}")]
    Body { at: String, source: ExchangeError },
}

/// Every upstream pool of the config, by index, used from `loops` front
/// event loops, with their health checks started.
pub fn start(specs: &[UpstreamSpec], loops: usize) -> Vec<Arc<Upstream>> {
    let pools: Vec<Arc<Upstream>> = specs.iter().map(|s| Arc::new(Upstream::new(s.clone(), loops))).collect();
    for pool in &pools {
        health::spawn(pool);
        upstream::spawn_sweeper(pool);
    }
    pools
}
