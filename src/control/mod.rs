//! The control socket: a unix socket (mode 0600, owner only) on which
//! `tandem ctl` and `tandem top` talk to a running master, one JSON object
//! per line each way.
//!
//! `protocol` parses requests into [`Command`]s (pure, no I/O); `server`
//! owns the socket and hands each command to the supervisor, which alone
//! acts on it and builds the answer. The client side is Python
//! (`python/tandem/ctl.py`).

mod protocol;
mod server;

pub use protocol::{parse, Command};
pub use server::{bind, serve, ControlListener, Request};
