//! Reading a request body in full before any worker sees it: in memory up
//! to the spill threshold, in an unlinked temp file beyond it, refused
//! with 413 beyond `--max-request-body`, with 408 when the client stalls
//! longer than `--body-timeout` between two pieces (over HTTP/1.1 the guard
//! usually notices first; over HTTP/2 this is the only clock).

use std::io::{Seek, Write};
use std::os::fd::OwnedFd;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::wire::{BodyRef, INLINE_BODY_MAX};

/// A request body, read completely.
pub enum RequestBody {
    Mem(Bytes),
    /// Spilled to disk: an unlinked temp file of `len` bytes.
    File {
        file: std::fs::File,
        len: u64,
    },
}

/// A request body as a connection hands it over: `http1`'s for HTTP/1.1,
/// the `h2` stream's for HTTP/2.
pub trait ClientBody:
    http_body::Body<Data = Bytes, Error: std::error::Error + Send + Sync + 'static> + Send + Unpin + 'static
{
}

impl<B> ClientBody for B where
    B: http_body::Body<Data = Bytes, Error: std::error::Error + Send + Sync + 'static> + Send + Unpin + 'static
{
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading request body: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
    #[error("spilling request body to disk: {0}")]
    Spill(#[from] std::io::Error),
    #[error("request body stalled for more than {0:?}")]
    Stalled(std::time::Duration),
}

impl BodyError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            BodyError::TooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
            // The guard ends a body it refuses (bad chunking, too large,
            // too slow) with an error that knows its status.
            BodyError::Read(err) => super::guard::status_of(err.as_ref()).unwrap_or(http::StatusCode::BAD_REQUEST),
            BodyError::Spill(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
            BodyError::Stalled(_) => http::StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Reads `body` to its end, waiting at most `stall` for each piece.
pub async fn read<B: ClientBody>(
    mut body: B,
    max: u64,
    spill_above: usize,
    stall: std::time::Duration,
) -> Result<RequestBody, BodyError> {
    if body.is_end_stream() {
        return Ok(RequestBody::Mem(Bytes::new()));
    }
    let mut mem = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut spill: Option<(tokio::fs::File, u64)> = None;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(BodyError::Stalled(stall)),
        };
        let frame = frame.map_err(|e| BodyError::Read(Box::new(e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if let Some((file, len)) = &mut spill {
            *len += data.len() as u64;
            if *len > max {
                return Err(BodyError::TooLarge(max));
            }
            tokio::io::AsyncWriteExt::write_all(file, &data).await?;
            continue;
        }
        let total = first.as_ref().map_or(0, |f| f.len()) + mem.len() + data.len();
        if total as u64 > max {
            return Err(BodyError::TooLarge(max));
        }
        if first.is_none() && mem.is_empty() {
            // The common case of a body in one piece: keep it without copying.
            first = Some(data);
            continue;
        }
        if let Some(f) = first.take() {
            mem.extend_from_slice(&f);
        }
        mem.extend_from_slice(&data);
        if mem.len() > spill_above {
            // Created and first written off the event loop: both may wait
            // for the disk.
            let held = std::mem::take(&mut mem).freeze();
            let len = held.len() as u64;
            let file = tokio::task::spawn_blocking(move || {
                let mut file = tempfile::tempfile()?;
                file.write_all(&held)?;
                Ok::<_, std::io::Error>(file)
            });
            let file = file.await.map_err(std::io::Error::other)??;
            spill = Some((tokio::fs::File::from_std(file), len));
        }
    }
    if let Some((file, len)) = spill {
        let mut file = file.into_std().await;
        file.flush()?;
        file.rewind()?;
        return Ok(RequestBody::File { file, len });
    }
    Ok(RequestBody::Mem(first.unwrap_or_else(|| mem.freeze())))
}

impl RequestBody {
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Mem(b) => b.len() as u64,
            RequestBody::File { len, .. } => *len,
        }
    }

    /// How the body travels to the worker: in the frame if small, else as a
    /// descriptor (a memfd for an in-memory body, the spill file otherwise).
    pub fn into_wire(self) -> std::io::Result<(BodyRef, Option<OwnedFd>)> {
        match self {
            RequestBody::Mem(data) if data.len() <= INLINE_BODY_MAX => Ok((BodyRef::Inline(data), None)),
            RequestBody::Mem(data) => {
                let mut file = crate::sys::memfd(c"tandem-body")?;
                file.write_all(&data)?;
                file.rewind()?;
                Ok((BodyRef::Fd { len: data.len() as u64 }, Some(file.into())))
            }
            RequestBody::File { file, len } => Ok((BodyRef::Fd { len }, Some(file.into()))),
        }
    }
}
