//! HTTP/1.1 from the client's side: a connection's requests read one after
//! another, each handed to the handler, and each response written back
//! before the next request is read.
//!
//! The bytes arrive through `guard`, whose `framing` has already checked
//! every head and body framing byte by byte and refuses what it can't vouch
//! for; what comes out of it is parsed here in place (`head`), bodies are
//! taken out of the same buffer as the handler reads them (`body`), and the
//! response is encoded and written straight from the handler's body
//! (`serve`). Timeouts, limits, early hints and `sendfile` stay the
//! guard's; what a request gets is the handler's.

mod body;
mod head;
mod serve;

pub use serve::{serve, Lends};
