//! Turning a worker's (or an upstream's) reply into an HTTP response, and
//! the buffering that frees the worker or upstream connection before a slow
//! client has finished downloading.
//!
//! By default the front reads the body as fast as the worker or upstream
//! produces it: into memory up to `response_buffer` bytes per response, into
//! an unlinked temp file beyond that. With `X-Accel-Buffering: no` (as with
//! nginx) the body streams through instead, and a slow client slows the
//! producer down. Where the pieces come from is a [`BodySource`]: a
//! dispatch [`Call`] here, an upstream body in `proxy`.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::mpsc;

use super::access_log::Entry;
use super::file_body::{FileBody, Segment};
use super::sendfile::FileSends;
use crate::dispatch::{Call, DispatchError, Reply};
use crate::wire::ResponseHead;

/// Largest piece read from a file (spilled or sent by the app) at a time.
const FILE_CHUNK: usize = 256 * 1024;
/// Chunks queued between the buffering task and the client connection.
const CLIENT_QUEUE: usize = 4;
/// A response arriving in pieces is joined into one buffer below this size.
const JOIN_BELOW: usize = 64 * 1024;

/// The body of every response the front sends.
pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
    /// Another body whose bytes are counted for the access log; the line
    /// is written when this is dropped.
    Logged(Box<ResponseBody>, Box<Entry>),
    /// Read from files as the client takes it (static files).
    Files(Box<FileBody>),
}

impl ResponseBody {
    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }

    /// This body, logged by `entry` once it has been sent.
    /// Sends the files of a [`ResponseBody::Files`] with `sendfile(2)`
    /// through `sends` (nothing changes for other bodies).
    pub fn send_files_with(&mut self, sends: Option<Arc<FileSends>>) {
        if let (ResponseBody::Files(body), Some(sends)) = (self, sends) {
            body.send_with(sends);
        }
    }

    pub fn logged(self, entry: Entry) -> ResponseBody {
        ResponseBody::Logged(Box::new(self), Box::new(entry))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(http_body::Frame::data(d)))),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|item| item.map(|r| r.map(http_body::Frame::data))),
            ResponseBody::Files(body) => body.poll_next(cx).map(|item| item.map(|r| r.map(http_body::Frame::data))),
            ResponseBody::Logged(inner, entry) => {
                let polled = Pin::new(inner.as_mut()).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    entry.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Logged(inner, _) => inner.is_end_stream(),
            ResponseBody::Files(body) => body.is_done(),
            other => matches!(other, ResponseBody::Full(None)),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::Full(data) => http_body::SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ResponseBody::Stream(_) => http_body::SizeHint::default(),
            ResponseBody::Logged(inner, _) => inner.size_hint(),
            ResponseBody::Files(body) if body.is_done() => http_body::SizeHint::with_exact(0),
            ResponseBody::Files(_) => http_body::SizeHint::default(),
        }
    }
}

/// Headers an app must not set (PEP 3333: hop-by-hop) or that the front
/// consumes itself.
fn is_dropped_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "x-accel-buffering"
    )
}

/// `X-Accel-Buffering: no` streams a response instead of buffering it.
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// A response head from the app, checked again on this side of the wire.
pub struct AppHead {
    pub response: http::response::Builder,
    pub streaming: bool,
}

/// Converts the app's head into an HTTP response head. Fails with the
/// name of the offending part if it can't be sent as it is.
pub fn convert_head(head: ResponseHead) -> Result<AppHead, String> {
    let status = StatusCode::from_u16(head.status).map_err(|_| format!("invalid status {}", head.status))?;
    if status.is_informational() {
        // A client would take it for an interim response and the next
        // response for this one's.
        return Err(format!("status {} is not a final response", status.as_u16()));
    }
    let mut response = Response::builder().status(status);
    let mut streaming = false;
    let mut length = None;
    let headers = response.headers_mut().expect("fresh builder has headers");
    for (name, value) in head.headers {
        let name = HeaderName::from_bytes(&name)
            .map_err(|_| format!("invalid header name {:?}", String::from_utf8_lossy(&name)))?;
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| format!("invalid value for header {name}"))?;
        if name.as_str() == "x-accel-buffering" {
            streaming = value.as_bytes().eq_ignore_ascii_case(b"no");
        }
        if is_dropped_header(&name) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            let len = content_length(value.as_bytes()).ok_or_else(|| format!("invalid Content-Length {value:?}"))?;
            match length.replace(len) {
                Some(earlier) if earlier != len => return Err("two different Content-Lengths".into()),
                Some(_) => continue,
                None => {}
            }
        }
        headers.append(name, value);
    }
    Ok(AppHead { response, streaming })
}

/// A `Content-Length` value: a decimal number of 1 to 19 digits, without
/// sign or spaces.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// One piece of a response body, from a worker or an upstream.
pub enum Piece<E> {
    Data(Bytes),
    /// `len` bytes of `file` from `offset` (`wsgi.file_wrapper`).
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    End,
    Failed(E),
}

/// Where a response body comes from.
pub trait BodySource: Send + 'static {
    type Error: std::fmt::Display + Send + 'static;
    /// The next piece if one has already arrived, without waiting.
    fn try_next(&mut self) -> Option<Piece<Self::Error>>;
    /// The next piece, when it arrives.
    fn next(&mut self) -> impl Future<Output = Piece<Self::Error>> + Send;
}

impl From<Reply> for Piece<DispatchError> {
    fn from(reply: Reply) -> Self {
        match reply {
            Reply::Body(data) => Piece::Data(data),
            Reply::File { file, offset, len } => Piece::File { file, offset, len },
            Reply::End => Piece::End,
            Reply::Failed(err) => Piece::Failed(err),
            Reply::Head { .. } => Piece::Failed(DispatchError::Internal("second response head".into())),
            Reply::Hints(_) => Piece::Failed(DispatchError::Internal("early hints after the response head".into())),
        }
    }
}

impl BodySource for Call {
    type Error = DispatchError;

    fn try_next(&mut self) -> Option<Piece<DispatchError>> {
        Call::try_next(self).map(Piece::from)
    }

    fn next(&mut self) -> impl Future<Output = Piece<DispatchError>> + Send {
        let reply = Call::next(self);
        async move { Piece::from(reply.await) }
    }
}

/// Builds the body that follows the head. If the whole body has already
/// arrived it is sent in one piece; otherwise a task buffers it (or streams
/// it, if `streaming`) while the client downloads.
pub fn body<S: BodySource>(
    mut source: S,
    streaming: bool,
    memory_limit: usize,
    label: String,
) -> Result<ResponseBody, S::Error> {
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut size = 0;
    loop {
        match source.try_next() {
            Some(Piece::Data(data)) => {
                size += data.len();
                pieces.push(data);
                if size >= JOIN_BELOW {
                    break;
                }
            }
            Some(Piece::End) => return Ok(ResponseBody::Full(Some(join(pieces)))),
            Some(Piece::Failed(err)) => return Err(err),
            Some(Piece::File { file, offset, len }) => {
                let mut spool = Spool::holding(pieces, memory_limit);
                spool.queue.push_back(Segment::File { file: Arc::new(file), offset, len });
                return Ok(spawn_pump(source, spool, streaming, label));
            }
            None => break,
        }
    }
    Ok(spawn_pump(source, Spool::holding(pieces, memory_limit), streaming, label))
}

/// Like `body`, for a buffered body whose announced length is `expected`
/// (an upstream's `Content-Length`): a small one is on its way in full, so
/// it is awaited here and sent with the head, with no task between the
/// source and the client.
pub async fn body_of_length<S: BodySource>(
    mut source: S,
    expected: Option<u64>,
    streaming: bool,
    memory_limit: usize,
    label: &str,
) -> Result<ResponseBody, S::Error> {
    let small = expected.is_some_and(|len| len <= JOIN_BELOW as u64);
    if streaming || !small {
        return body(source, streaming, memory_limit, label.to_string());
    }
    let mut pieces: Vec<Bytes> = Vec::new();
    loop {
        match source.next().await {
            Piece::Data(data) => pieces.push(data),
            Piece::End => return Ok(ResponseBody::Full(Some(join(pieces)))),
            Piece::Failed(err) => return Err(err),
            Piece::File { file, offset, len } => {
                let mut spool = Spool::holding(pieces, memory_limit);
                spool.queue.push_back(Segment::File { file: Arc::new(file), offset, len });
                return Ok(spawn_pump(source, spool, streaming, label.to_string()));
            }
        }
    }
}

fn join(mut pieces: Vec<Bytes>) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for p in pieces {
                all.extend_from_slice(&p);
            }
            all.freeze()
        }
    }
}

fn spawn_pump<S: BodySource>(source: S, spool: Spool, streaming: bool, label: String) -> ResponseBody {
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    tokio::spawn(pump(source, spool, tx, streaming, label));
    ResponseBody::Stream(rx)
}

/// Moves the body to the client. While buffering, pieces are taken from
/// the source as fast as they come; while streaming, only when the client
/// has taken what came before.
async fn pump<S: BodySource>(
    mut source: S,
    mut spool: Spool,
    client: mpsc::Sender<io::Result<Bytes>>,
    streaming: bool,
    label: String,
) {
    let mut worker_done = false;
    loop {
        let can_send = !spool.queue.is_empty();
        let can_take = !worker_done && (!streaming || !can_send);
        if !can_send && !can_take {
            return;
        }
        tokio::select! {
            permit = client.reserve(), if can_send => {
                // A closed client: dropping `source` discards the rest.
                let Ok(permit) = permit else { return };
                match spool.next_chunk().await {
                    Ok(chunk) => permit.send(Ok(chunk)),
                    Err(e) => {
                        tracing::error!("{label}: reading buffered response: {e}");
                        permit.send(Err(e));
                        return;
                    }
                }
            }
            piece = source.next(), if can_take => {
                let result = match piece {
                    Piece::Data(data) => spool.push(data).await,
                    Piece::File { file, offset, len } => {
                        spool.queue.push_back(Segment::File { file: Arc::new(file), offset, len });
                        Ok(())
                    }
                    Piece::End => {
                        worker_done = true;
                        Ok(())
                    }
                    Piece::Failed(err) => Err(io::Error::other(err.to_string())),
                };
                if let Err(e) = result {
                    tracing::error!("{label}: response aborted after it started: {e}");
                    let _ = client.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}

/// Response bytes received from the worker and not yet sent to the client.
struct Spool {
    queue: VecDeque<Segment>,
    /// Bytes held in memory segments.
    mem: usize,
    limit: usize,
    /// The temp file that takes what doesn't fit in memory.
    disk: Option<(Arc<std::fs::File>, u64)>,
}

impl Spool {
    /// A spool that starts with `pieces` already taken in memory.
    fn holding(pieces: Vec<Bytes>, limit: usize) -> Spool {
        let mem = pieces.iter().map(Bytes::len).sum();
        Spool { queue: pieces.into_iter().map(Segment::Mem).collect(), mem, limit, disk: None }
    }

    async fn push(&mut self, data: Bytes) -> io::Result<()> {
        if self.mem + data.len() <= self.limit {
            self.mem += data.len();
            self.queue.push_back(Segment::Mem(data));
            return Ok(());
        }
        if self.disk.is_none() {
            let file = tokio::task::spawn_blocking(tempfile::tempfile).await.map_err(io::Error::other)??;
            self.disk = Some((Arc::new(file), 0));
        }
        let Some((file, end)) = &mut self.disk else { unreachable!("created above") };
        let (writer, at, len) = (Arc::clone(file), *end, data.len() as u64);
        tokio::task::spawn_blocking(move || writer.write_all_at(&data, at)).await.map_err(io::Error::other)??;
        *end += len;
        self.queue.push_back(Segment::File { file: Arc::clone(file), offset: at, len });
        Ok(())
    }

    async fn next_chunk(&mut self) -> io::Result<Bytes> {
        match self.queue.pop_front() {
            None => Ok(Bytes::new()),
            Some(Segment::Mem(data)) => {
                self.mem -= data.len();
                Ok(data)
            }
            Some(Segment::File { file, offset, len }) => {
                let want = (len as usize).min(FILE_CHUNK);
                let reader = Arc::clone(&file);
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    let n = reader.read_at(&mut buf, offset)?;
                    buf.truncate(n);
                    Ok::<_, io::Error>(buf)
                })
                .await
                .map_err(io::Error::other)??;
                if chunk.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced"));
                }
                let n = chunk.len() as u64;
                if n < len {
                    self.queue.push_front(Segment::File { file, offset: offset + n, len: len - n });
                }
                Ok(Bytes::from(chunk))
            }
        }
    }
}
