//! Bodies read from files as the peer takes them: static files, byte
//! ranges and multipart pieces, and request bodies spilled to disk on their
//! way to an upstream.
//!
//! Each time the connection asks for the next piece, up to [`FILE_CHUNK`] bytes are
//! read with `pread`. What is in the page cache (nearly everything a busy
//! site serves) is read right there on the event-loop thread, with
//! `RWF_NOWAIT` so that the call can never wait for the disk; only what
//! would wait goes to the blocking pool. That spares most chunks two thread
//! hand-offs, and keeps at most one chunk per response in memory.
//!
//! On a connection that can take `sendfile(2)` ([`FileBody::send_with`]),
//! a piece found in the page cache is not read at all: the connection gets
//! a stand-in and the socket sends the file itself (see `sendfile`). What
//! the pieces are is the caller's business; how they reach the client is
//! the connection's.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::response::ResponseBody;
use super::sendfile::FileSends;

/// Largest piece read from a file at a time.
pub const FILE_CHUNK: usize = 256 * 1024;

/// One piece of a body: bytes in memory, or a range of a file.
#[derive(Debug)]
pub enum Segment {
    Mem(Bytes),
    File { file: Arc<std::fs::File>, offset: u64, len: u64 },
}

/// A body made of `segments` (static files, multipart ranges), read as it
/// is sent.
pub fn segments_body(segments: Vec<Segment>, label: String) -> ResponseBody {
    ResponseBody::Files(Box::new(FileBody { queue: segments.into(), reading: None, sends: None, label }))
}

/// The state of a [`segments_body`].
pub struct FileBody {
    queue: VecDeque<Segment>,
    /// A read the page cache couldn't answer, on the blocking pool.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// The connection's `sendfile` record, if it can take one.
    sends: Option<Arc<FileSends>>,
    /// Names the request in error logs.
    label: String,
}

impl FileBody {
    /// Sends the file pieces with `sendfile(2)` through `sends`.
    pub fn send_with(&mut self, sends: Arc<FileSends>) {
        self.sends = Some(sends);
    }

    /// The next piece; `None` at the end.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(reading) = &mut self.reading {
                let done = std::task::ready!(Pin::new(reading).poll(cx));
                self.reading = None;
                let chunk = done.map_err(io::Error::other).and_then(|r| r);
                return Poll::Ready(Some(self.checked(chunk)));
            }
            let (file, offset, len) = match self.queue.pop_front() {
                None => return Poll::Ready(None),
                Some(Segment::Mem(data)) if data.is_empty() => continue,
                Some(Segment::Mem(data)) => return Poll::Ready(Some(Ok(data))),
                Some(Segment::File { len: 0, .. }) => continue,
                Some(Segment::File { file, offset, len }) => (file, offset, len),
            };
            if let Some(sends) = &self.sends {
                let piece = (len as usize).min(super::sendfile::MAX_PIECE);
                if in_page_cache(&file, offset + piece as u64 - 1) {
                    let stand_in = sends.stand_in(Arc::clone(&file), offset, piece);
                    self.put_back(file, offset + piece as u64, len - piece as u64);
                    return Poll::Ready(Some(Ok(stand_in)));
                }
            }
            let want = (len as usize).min(FILE_CHUNK);
            let mut buf = BytesMut::zeroed(want);
            match crate::sys::pread_cached(&file, &mut buf, offset) {
                Ok(0) => {
                    return Poll::Ready(Some(self.checked(Err(shrank()))));
                }
                Ok(n) => {
                    buf.truncate(n);
                    self.put_back(file, offset + n as u64, len - n as u64);
                    return Poll::Ready(Some(Ok(buf.freeze())));
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Unsupported) => {
                    self.put_back(Arc::clone(&file), offset + want as u64, len - want as u64);
                    self.reading = Some(tokio::task::spawn_blocking(move || read_exact(&file, buf, offset)));
                }
                Err(e) => return Poll::Ready(Some(self.checked(Err(e)))),
            }
        }
    }

    fn put_back(&mut self, file: Arc<std::fs::File>, offset: u64, len: u64) {
        if len > 0 {
            self.queue.push_front(Segment::File { file, offset, len });
        }
    }

    /// Logs a failed read; the error then ends the response.
    fn checked(&mut self, chunk: io::Result<Bytes>) -> io::Result<Bytes> {
        if let Err(e) = &chunk {
            tracing::error!("{}: reading file: {e}", self.label);
            self.queue.clear();
        }
        chunk
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.queue
            .iter()
            .map(|s| match s {
                Segment::Mem(data) => data.len() as u64,
                Segment::File { len, .. } => *len,
            })
            .sum()
    }

    pub fn is_done(&self) -> bool {
        self.reading.is_none() && self.remaining() == 0
    }
}

/// Whether the byte at `offset` can be read without waiting for the disk:
/// the last of a piece about to be sent with `sendfile(2)`, which would
/// otherwise wait on the event-loop thread. (Read-ahead fills the cache in
/// order, so the last byte stands for the piece.) A piece that fails the
/// test, or a file that no longer reaches `offset`, is read as usual.
fn in_page_cache(file: &std::fs::File, offset: u64) -> bool {
    matches!(crate::sys::pread_cached(file, &mut [0u8; 1], offset), Ok(1))
}

/// Reads `buf.len()` bytes at `offset` (blocking).
fn read_exact(file: &std::fs::File, mut buf: BytesMut, offset: u64) -> io::Result<Bytes> {
    match file.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(buf.freeze()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(shrank()),
        Err(e) => Err(e),
    }
}

fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(mut body: FileBody) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            loop {
                match std::future::poll_fn(|cx| body.poll_next(cx)).await {
                    Some(chunk) => out.extend_from_slice(&chunk?),
                    None => return Ok::<_, io::Error>(()),
                }
            }
        })?;
        Ok(out)
    }

    fn body_of(segments: Vec<Segment>) -> FileBody {
        FileBody { queue: segments.into(), reading: None, sends: None, label: "test".into() }
    }

    #[test]
    fn reads_ranges_and_memory_in_order_in_bounded_chunks() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..FILE_CHUNK * 2 + 100).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let file = Arc::new(file);
        let body = body_of(vec![
            Segment::Mem(Bytes::from_static(b"head")),
            Segment::File { file: Arc::clone(&file), offset: 10, len: (FILE_CHUNK * 2) as u64 },
            Segment::Mem(Bytes::new()),
            Segment::File { file: Arc::clone(&file), offset: 0, len: 0 },
            Segment::Mem(Bytes::from_static(b"tail")),
        ]);
        assert_eq!(body.remaining(), 8 + (FILE_CHUNK * 2) as u64);
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&data[10..10 + FILE_CHUNK * 2]);
        expected.extend_from_slice(b"tail");
        assert_eq!(collect(body).unwrap(), expected);
    }

    #[test]
    fn a_file_shorter_than_announced_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"short").unwrap();
        let body = body_of(vec![Segment::File { file: Arc::new(file), offset: 0, len: 100 }]);
        let err = collect(body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
