//! Turning a worker's replies into an HTTP response, and the buffering that
//! frees the worker before a slow client has finished downloading.
//!
//! By default the front reads the worker's body as fast as the worker
//! produces it: into memory up to `response_buffer` bytes per response, into
//! an unlinked temp file beyond that. With `X-Accel-Buffering: no` (as with
//! nginx) the body streams through instead, and a slow client slows the
//! worker down.

use std::collections::VecDeque;
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
}

impl ResponseBody {
    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }

    /// This body, logged by `entry` once it has been sent.
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
            other => matches!(other, ResponseBody::Full(None)),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::Full(data) => http_body::SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ResponseBody::Stream(_) => http_body::SizeHint::default(),
            ResponseBody::Logged(inner, _) => inner.size_hint(),
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

/// A response head from the app, checked again on this side of the wire.
pub struct AppHead {
    pub response: http::response::Builder,
    pub streaming: bool,
}

/// Converts the app's head into an HTTP response head. Fails with the
/// name of the offending part if it can't be sent as it is.
pub fn convert_head(head: ResponseHead) -> Result<AppHead, String> {
    let status = StatusCode::from_u16(head.status).map_err(|_| format!("invalid status {}", head.status))?;
    let mut response = Response::builder().status(status);
    let mut streaming = false;
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
        headers.append(name, value);
    }
    Ok(AppHead { response, streaming })
}

/// Builds the body that follows the head. If the whole body has already
/// arrived it is sent in one piece; otherwise a task buffers it (or streams
/// it, if `streaming`) while the client downloads.
pub fn body(
    mut call: Call,
    streaming: bool,
    memory_limit: usize,
    label: String,
) -> Result<ResponseBody, DispatchError> {
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut size = 0;
    loop {
        match call.try_next() {
            Some(Reply::Body(data)) => {
                size += data.len();
                pieces.push(data);
                if size >= JOIN_BELOW {
                    break;
                }
            }
            Some(Reply::End) => return Ok(ResponseBody::Full(Some(join(pieces)))),
            Some(Reply::Failed(err)) => return Err(err),
            Some(Reply::Head { .. }) => return Err(DispatchError::Internal("second response head".into())),
            Some(Reply::File { file, offset, len }) => {
                let mut spool = Spool::new(memory_limit);
                spool.queue.extend(pieces.into_iter().map(Segment::Mem));
                spool.mem = size;
                spool.queue.push_back(Segment::File { file: Arc::new(file), offset, len });
                return Ok(spawn_pump(call, spool, streaming, label));
            }
            None => break,
        }
    }
    let mut spool = Spool::new(memory_limit);
    spool.mem = size;
    spool.queue.extend(pieces.into_iter().map(Segment::Mem));
    Ok(spawn_pump(call, spool, streaming, label))
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

fn spawn_pump(call: Call, spool: Spool, streaming: bool, label: String) -> ResponseBody {
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    tokio::spawn(pump(call, spool, tx, streaming, label));
    ResponseBody::Stream(rx)
}

/// Moves the app's body to the client. While buffering, replies are taken
/// from the worker as fast as they come; while streaming, only when the
/// client has taken what came before.
async fn pump(
    mut call: Call,
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
                // A closed client: dropping `call` discards the rest.
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
            reply = call.next(), if can_take => {
                let result = match reply {
                    Reply::Body(data) => spool.push(data).await,
                    Reply::File { file, offset, len } => {
                        spool.queue.push_back(Segment::File { file: Arc::new(file), offset, len });
                        Ok(())
                    }
                    Reply::End => {
                        worker_done = true;
                        Ok(())
                    }
                    Reply::Head { .. } => Err(io::Error::other("second response head")),
                    Reply::Failed(err) => Err(io::Error::other(err)),
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

/// A piece of a response body: bytes in memory, or a range of a file read
/// in [`FILE_CHUNK`] pieces only when the client is ready for them.
pub enum Segment {
    Mem(Bytes),
    File { file: Arc<std::fs::File>, offset: u64, len: u64 },
}

/// A body made of `segments` (static files, multipart ranges): a task
/// reads file ranges a chunk at a time as the client takes them, so at most
/// [`CLIENT_QUEUE`] chunks per response are ever in memory.
pub fn segments_body(segments: Vec<Segment>, label: String) -> ResponseBody {
    let mut spool = Spool::new(0);
    for segment in segments {
        if let Segment::Mem(data) = &segment {
            spool.mem += data.len();
        }
        spool.queue.push_back(segment);
    }
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    tokio::spawn(async move {
        while !spool.queue.is_empty() {
            // A closed client: stop reading.
            let Ok(permit) = tx.reserve().await else { return };
            match spool.next_chunk().await {
                Ok(chunk) => permit.send(Ok(chunk)),
                Err(e) => {
                    tracing::error!("{label}: reading file: {e}");
                    permit.send(Err(e));
                    return;
                }
            }
        }
    });
    ResponseBody::Stream(rx)
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
    fn new(limit: usize) -> Spool {
        Spool { queue: VecDeque::new(), mem: 0, limit, disk: None }
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
