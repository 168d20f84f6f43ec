//! Files sent with `sendfile(2)` on plain HTTP/1.1 connections, as nginx's
//! `sendfile on`: the bytes go from the page cache to the socket without a
//! copy through user space.
//!
//! A response body reaches the connection as pieces of bytes (the
//! `http_body` interface HTTP/2 shares), so a piece of a file travels as a
//! *stand-in*: a slice, of the piece's length, of a region reserved for the
//! purpose that nothing ever writes or reads ([`stand_in`]). When a file
//! body hands out a stand-in it records the real piece in the connection's
//! [`FileSends`]; when the connection's socket (`guard::GuardedIo`) finds a
//! stand-in among the bytes it is to write, it sends the recorded piece in
//! its place.
//!
//! This relies on what the HTTP/1.1 writer (`http1`) does: it keeps each
//! body piece as it was given, never copying or joining it (on a socket
//! that sends files, which writes vectored), and writes pieces in the order
//! it was given them. Each stand-in written is checked against the length
//! of the piece recorded for it; a mismatch fails the connection rather
//! than send the wrong bytes.
//!
//! Only plain TCP sockets take this path ([`FileSink`]); TLS and HTTP/2
//! read files into memory as before (`file_body`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The longest stand-in: pieces of files are sent at most this much at a time.
pub const MAX_PIECE: usize = 256 * 1024;

/// The reserved region stand-ins are slices of. Allocated zeroed and never
/// touched, so it costs address space, not memory.
fn region() -> &'static [u8] {
    static REGION: OnceLock<&'static [u8]> = OnceLock::new();
    REGION.get_or_init(|| Box::leak(vec![0u8; MAX_PIECE].into_boxed_slice()))
}

/// Whether `bytes` lie inside the reserved region: a stand-in, or what is
/// left of one after a partial write.
fn is_stand_in(bytes: &[u8]) -> bool {
    let base = region().as_ptr() as usize;
    let at = bytes.as_ptr() as usize;
    !bytes.is_empty() && at >= base && at < base + MAX_PIECE
}

/// A piece of a file still to be sent.
struct Piece {
    file: Arc<File>,
    offset: u64,
    left: usize,
}

/// The file pieces one connection's stand-ins stand for, in order.
#[derive(Default)]
pub struct FileSends {
    pieces: Mutex<VecDeque<Piece>>,
}

impl FileSends {
    pub fn new() -> Arc<FileSends> {
        Arc::new(FileSends::default())
    }

    /// Records `len` bytes (at most [`MAX_PIECE`]) of `file` from `offset`,
    /// and returns the stand-in to hand on in their place.
    pub fn stand_in(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(MAX_PIECE);
        self.lock().push_back(Piece { file, offset, left: len });
        Bytes::from_static(&region()[..len])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Piece>> {
        self.pieces.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file and offset the stand-in `written` (at the head of the
    /// output) stands for.
    fn next(&self, written: &[u8]) -> io::Result<(Arc<File>, u64)> {
        match self.lock().front() {
            Some(piece) if piece.left == written.len() => Ok((Arc::clone(&piece.file), piece.offset)),
            _ => Err(io::Error::other("sendfile: a stand-in does not match the file piece recorded for it")),
        }
    }

    /// `n` bytes of the head piece were sent.
    fn advance(&self, n: usize) {
        let mut pieces = self.lock();
        if let Some(piece) = pieces.front_mut() {
            piece.offset += n as u64;
            piece.left -= n.min(piece.left);
            if piece.left == 0 {
                pieces.pop_front();
            }
        }
    }
}

/// Sockets a file can be sent to directly.
pub trait FileSink {
    /// Whether [`FileSink::poll_send_file`] works on this socket.
    fn sends_files(&self) -> bool {
        false
    }

    /// Sends up to `len` bytes of `file` from `offset`.
    fn poll_send_file(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &File,
        _offset: u64,
        _len: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// Writes `bufs`, telling the kernel that more (a file) follows.
    fn poll_write_more(&mut self, _cx: &mut Context<'_>, _bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// Runs the non-blocking socket call `op` once the socket is writable.
fn poll_writing(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(socket.poll_write_ready(cx))?;
        match socket.try_io(Interest::WRITABLE, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

impl FileSink for TcpStream {
    fn sends_files(&self) -> bool {
        true
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let fd = self.as_raw_fd();
        poll_writing(self, cx, || crate::sys::sendfile(&fd, file, offset, len))
    }

    fn poll_write_more(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let fd = self.as_raw_fd();
        poll_writing(self, cx, || crate::sys::send_more(&fd, bufs))
    }
}

impl FileSink for tokio::net::UnixStream {}

impl<S> FileSink for tokio_rustls::server::TlsStream<S> {}

/// How a socket with [`FileSends`] writes what it is given: the bytes
/// up to the first stand-in, or the file piece that stand-in stands for.
/// `None` if there is no stand-in (an ordinary write).
pub fn poll_write<S: FileSink>(
    socket: &mut S,
    sends: &FileSends,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Option<Poll<io::Result<usize>>> {
    let first = bufs.iter().position(|b| is_stand_in(b))?;
    if first > 0 {
        return Some(socket.poll_write_more(cx, &bufs[..first]));
    }
    let (file, offset) = match sends.next(&bufs[0]) {
        Ok(next) => next,
        Err(e) => return Some(Poll::Ready(Err(e))),
    };
    Some(match socket.poll_send_file(cx, &file, offset, bufs[0].len()) {
        Poll::Ready(Ok(0)) => {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sendfile: file shorter than announced")))
        }
        Poll::Ready(Ok(n)) => {
            sends.advance(n);
            crate::metrics::METRICS.sendfile_bytes(n);
            Poll::Ready(Ok(n))
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncWrite;

    #[test]
    fn stand_ins_are_recognised_and_nothing_else_is() {
        let sends = FileSends::new();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let stand_in = sends.stand_in(Arc::clone(&file), 0, 10);
        assert_eq!(stand_in.len(), 10);
        assert!(is_stand_in(&stand_in));
        assert!(is_stand_in(&stand_in[4..]));
        assert!(!is_stand_in(&stand_in[10..]));
        assert!(!is_stand_in(b"0000000000"));
        assert!(!is_stand_in(&[0u8; 10]));
        assert_eq!(sends.stand_in(file, 0, MAX_PIECE * 2).len(), MAX_PIECE);
    }

    #[test]
    fn pieces_are_matched_in_order_and_by_length() {
        let sends = FileSends::new();
        let a = Arc::new(tempfile::tempfile().unwrap());
        let b = Arc::new(tempfile::tempfile().unwrap());
        let first = sends.stand_in(Arc::clone(&a), 100, 8);
        let second = sends.stand_in(Arc::clone(&b), 5, 4);
        assert!(sends.next(&second).is_err(), "the second stand-in is not due yet");
        let (file, offset) = sends.next(&first).unwrap();
        assert!(Arc::ptr_eq(&file, &a));
        assert_eq!(offset, 100);
        sends.advance(3);
        let (_, offset) = sends.next(&first[3..]).unwrap();
        assert_eq!(offset, 103);
        sends.advance(5);
        let (file, offset) = sends.next(&second).unwrap();
        assert!(Arc::ptr_eq(&file, &b));
        assert_eq!(offset, 5);
    }

    #[tokio::test]
    async fn a_socket_gets_the_head_then_the_file() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut socket = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut socket, &mut got).unwrap();
            got
        });
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let sends = FileSends::new();
        let stand_in = sends.stand_in(Arc::new(file), 2, 6);
        let mut queue: Vec<Bytes> = vec![Bytes::from_static(b"head:"), stand_in, Bytes::from_static(b":tail")];
        while !queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = queue.iter().map(|b| IoSlice::new(b)).collect();
            let written = std::future::poll_fn(|cx| {
                poll_write(&mut socket, &sends, cx, &slices)
                    .unwrap_or_else(|| std::pin::Pin::new(&mut socket).poll_write_vectored(cx, &slices))
            })
            .await
            .unwrap();
            drop(slices);
            let mut n = written;
            while n > 0 {
                let take = n.min(queue[0].len());
                bytes::Buf::advance(&mut queue[0], take);
                n -= take;
                if queue[0].is_empty() {
                    queue.remove(0);
                }
            }
        }
        drop(socket);
        assert_eq!(client.join().unwrap(), b"head:234567:tail");
    }
}
