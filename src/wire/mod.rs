//! The front–worker wire protocol: frames and their codec.
//!
//! This module owns the byte layout of every message that crosses the unix
//! sockets between the front and the Python workers, and the limits those
//! messages must respect. It does no I/O, knows nothing of sockets, file
//! descriptors or Python; `crate::sys` moves the bytes (and the descriptors
//! that ride along with [`Message::File`] and request bodies) and
//! `crate::dispatch` / `crate::worker` give the frames meaning.
//!
//! Every frame is
//!
//! ```text
//! len: u32 LE | kind: u8 | id: u64 LE | payload (len - 9 bytes)
//! ```
//!
//! where `len` counts everything after itself and `id` names the request the
//! frame belongs to (0 for frames about the worker itself). Strings and byte
//! fields inside payloads are length-prefixed; every length is checked
//! against the limits below before anything is allocated.

mod codec;

pub use codec::{decode, encode, WireError};

use bytes::Bytes;

/// Bumped whenever the layout changes; a worker announces the version it
/// speaks in [`Message::Ready`] and the front refuses a mismatch.
pub const VERSION: u16 = 2;

/// Largest frame (after the length prefix) either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest body chunk a worker puts in one [`Message::Body`] frame.
pub const MAX_BODY_CHUNK: usize = 64 * 1024;
/// Request bodies up to this size travel inside the request frame; larger
/// ones travel as a file descriptor (memfd or spilled temp file).
pub const INLINE_BODY_MAX: usize = 64 * 1024;
/// Most header fields in a request or response head.
pub const MAX_HEADERS: usize = 512;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of kind + id that follow the length prefix.
pub const FRAME_HEADER: usize = 9;

/// One unit on the wire: a message about request `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub message: Message,
}

/// What a frame says. Front → worker: `Request`. Worker → front: the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The worker has loaded the app and speaks `version` of this protocol.
    Ready { version: u16, pid: u32 },
    /// A complete request for the app.
    Request(Box<RequestHead>),
    /// The worker has taken request `id` off the shared queue.
    Took,
    /// Status and headers of the response to request `id`.
    ResponseHead(ResponseHead),
    /// A piece of the response body.
    Body(Bytes),
    /// Send `len` bytes of the file whose descriptor rides with this frame,
    /// starting at `offset` (the `wsgi.file_wrapper` fast path).
    File { offset: u64, len: u64 },
    /// The response to request `id` is complete.
    End,
    /// A `103 Early Hints` response with these headers, sent before the
    /// response head (`environ['wsgi.early_hints']`). Validated by the
    /// worker as response headers are.
    Hints(Vec<(Bytes, Bytes)>),
    /// The app failed on request `id`; the text says how (already logged
    /// with its traceback by the worker).
    Error(String),
}

/// How a request's body travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRef {
    /// The body bytes are in the frame.
    Inline(Bytes),
    /// The body is in the file whose descriptor rides with the frame,
    /// positioned at offset 0, `len` bytes long.
    Fd { len: u64 },
}

/// The URL scheme the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Everything a worker needs to build a WSGI environ. Byte fields are kept
/// as the client sent them; the worker applies WSGI's latin-1 mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Bytes,
    /// The path as sent, still percent-encoded, without the query.
    pub path: Bytes,
    /// The query string as sent, without the `?`.
    pub query: Bytes,
    /// HTTP version as major * 10 + minor (10, 11, 20).
    pub version: u8,
    pub scheme: Scheme,
    pub remote_addr: Bytes,
    pub remote_port: u16,
    pub server_name: Bytes,
    pub server_port: u16,
    /// The mount point (`SCRIPT_NAME`), empty for the root.
    pub script_name: Bytes,
    /// Header names are lower-case; repeated names appear repeatedly.
    pub headers: Vec<(Bytes, Bytes)>,
    pub body: BodyRef,
}

/// A response head as the app gave it to `start_response`, validated by the
/// worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Bytes,
    pub headers: Vec<(Bytes, Bytes)>,
}

impl Frame {
    pub fn new(id: u64, message: Message) -> Frame {
        Frame { id, message }
    }
}
