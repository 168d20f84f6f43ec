//! `start_response`, the `write()` callable, and the reply frames they
//! produce.
//!
//! A [`Responder`] is the `start_response` callable the app receives for
//! one request. It validates what the app passes (a bad status or a header
//! with CR/LF never reaches the wire), keeps the head until the first body
//! byte (so `start_response(..., exc_info)` can still replace it), and
//! writes frames through the worker's [`Sink`].

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::wire::{self, Frame, Message, ResponseHead, MAX_BODY_CHUNK};

/// Buffered reply bytes are written out once they pass this size.
const FLUSH_ABOVE: usize = 64 * 1024;

/// The worker's reply socket, shared by its threads. Each write is whole
/// frames, so frames of concurrent requests never interleave.
pub struct Sink {
    stream: Mutex<UnixStream>,
}

impl Sink {
    pub fn new(fd: OwnedFd) -> Sink {
        Sink { stream: Mutex::new(UnixStream::from(fd)) }
    }

    /// Writes whole frames, with the GIL released.
    pub fn write(&self, py: Python<'_>, frames: &[u8]) -> std::io::Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        py.allow_threads(|| {
            let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
            stream.write_all(frames)
        })
    }

    /// Writes one frame with `file` attached as `SCM_RIGHTS`.
    pub fn write_with_fd(&self, py: Python<'_>, frame: &[u8], file: &OwnedFd) -> std::io::Result<()> {
        py.allow_threads(|| {
            let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
            let mut sent = crate::sys::send_with_fd(&*stream, &[std::io::IoSlice::new(frame)], Some(file.as_raw_fd()))?;
            // The descriptor went with the first byte; the rest is plain data.
            while sent < frame.len() {
                sent += (&*stream).write(&frame[sent..])?;
            }
            Ok(())
        })
    }

    /// Encodes one frame and writes it at once.
    pub fn send(&self, py: Python<'_>, id: u64, message: Message) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        encode_into(&mut buf, id, message)?;
        self.write(py, &buf)
    }
}

/// Frames are built by this module within the limits, so encoding can't
/// fail short of a bug; a failure is reported as an I/O error all the same.
fn encode_into(buf: &mut BytesMut, id: u64, message: Message) -> std::io::Result<()> {
    wire::encode(&Frame::new(id, message), buf).map_err(std::io::Error::other)
}

/// The `start_response` callable for one request.
#[pyclass(module = "tandem._native")]
pub struct Responder {
    id: u64,
    sink: Arc<Sink>,
    /// This response's frames not yet written.
    buf: BytesMut,
    /// HEAD request: the body is produced by the app but never sent.
    head_request: bool,
    status: Option<(u16, Bytes)>,
    headers: Vec<(Bytes, Bytes)>,
    content_length: Option<u64>,
    streaming: bool,
    /// The head frame has been queued (the first body byte came).
    head_sent: bool,
    /// Some frame after `Took` has reached the socket.
    flushed: bool,
    body_sent: u64,
}

impl Responder {
    pub fn new(id: u64, sink: Arc<Sink>, head_request: bool) -> Responder {
        Responder {
            id,
            sink,
            buf: BytesMut::new(),
            head_request,
            status: None,
            headers: Vec::new(),
            content_length: None,
            streaming: false,
            head_sent: false,
            flushed: false,
            body_sent: 0,
        }
    }

    fn push(&mut self, message: Message) -> std::io::Result<()> {
        encode_into(&mut self.buf, self.id, message)
    }

    fn flush(&mut self, py: Python<'_>) -> std::io::Result<()> {
        self.sink.write(py, &self.buf)?;
        if !self.buf.is_empty() {
            self.flushed = true;
        }
        self.buf.clear();
        Ok(())
    }

    fn body_allowed(&self) -> bool {
        let status = self.status.as_ref().map_or(200, |s| s.0);
        !(self.head_request || status == 204 || status == 304 || (100..200).contains(&status))
    }

    fn send_head(&mut self) -> PyResult<()> {
        if self.head_sent {
            return Ok(());
        }
        let Some((status, reason)) = self.status.clone() else {
            return Err(PyAssertionError::new_err("the app returned a body before calling start_response"));
        };
        let head = ResponseHead { status, reason, headers: std::mem::take(&mut self.headers) };
        self.push(Message::ResponseHead(head))?;
        self.head_sent = true;
        Ok(())
    }

    /// Sends a piece of the body (the `write()` callable and each item of
    /// the app's iterable come here).
    pub fn write_body(&mut self, py: Python<'_>, mut data: &[u8]) -> PyResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.send_head()?;
        if !self.body_allowed() {
            return Ok(());
        }
        if let Some(limit) = self.content_length {
            let room = limit.saturating_sub(self.body_sent);
            if (data.len() as u64) > room {
                // Never send more than the app announced.
                data = &data[..room as usize];
            }
        }
        self.body_sent += data.len() as u64;
        for chunk in data.chunks(MAX_BODY_CHUNK) {
            self.push(Message::Body(Bytes::copy_from_slice(chunk)))?;
            if self.buf.len() >= FLUSH_ABOVE {
                self.flush(py)?;
            }
        }
        if self.streaming {
            self.flush(py)?;
        }
        Ok(())
    }

    /// Sends `len` bytes of an open file from `offset` (file_wrapper).
    pub fn send_file(&mut self, py: Python<'_>, file: OwnedFd, offset: u64, mut len: u64) -> PyResult<()> {
        self.send_head()?;
        if !self.body_allowed() {
            return Ok(());
        }
        if let Some(limit) = self.content_length {
            len = len.min(limit.saturating_sub(self.body_sent));
        }
        if len == 0 {
            return Ok(());
        }
        self.body_sent += len;
        self.flush(py)?;
        let mut frame = BytesMut::new();
        encode_into(&mut frame, self.id, Message::File { offset, len })?;
        self.sink.write_with_fd(py, &frame, &file)?;
        self.flushed = true;
        Ok(())
    }

    /// The app is done: sends the head if no body came, then `End`.
    pub fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        self.send_head()?;
        let short = self.body_allowed() && self.content_length.is_some_and(|cl| self.body_sent < cl);
        if short {
            // The client was promised more bytes than the app produced; the
            // front must cut the connection rather than pretend.
            let text = format!(
                "response body ({} bytes) shorter than its Content-Length ({})",
                self.body_sent,
                self.content_length.unwrap_or(0)
            );
            self.push(Message::Error(text))?;
        } else {
            self.push(Message::End)?;
        }
        self.flush(py)?;
        Ok(())
    }

    /// The app failed: if nothing reached the client yet the front answers
    /// 500; otherwise it cuts the connection.
    pub fn fail(&mut self, py: Python<'_>, why: String) -> std::io::Result<()> {
        if !self.flushed {
            // Nothing reached the front: drop the half-built response so
            // the client gets a clean 500.
            self.buf.clear();
        }
        self.push(Message::Error(why))?;
        self.flush(py)
    }
}

#[pymethods]
impl Responder {
    /// start_response(status, response_headers, exc_info=None) -> write
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        {
            let mut this = slf.borrow_mut();
            match exc_info.filter(|e| !e.is_none()) {
                Some(exc) if this.head_sent => {
                    // PEP 3333: too late to change the response; re-raise.
                    return Err(PyErr::from_value(exc.get_item(1)?));
                }
                Some(_) => {}
                None if this.status.is_some() => {
                    return Err(PyAssertionError::new_err("start_response called a second time without exc_info"));
                }
                None => {}
            }
            let status = status
                .downcast::<PyString>()
                .map_err(|_| PyTypeError::new_err("status must be a str, like '200 OK'"))?;
            let parsed = parse_status(status.to_str()?)?;
            let list = header_list(headers, false)?;
            let mut content_length = None;
            let mut streaming = false;
            for (name, value) in &list {
                if name.eq_ignore_ascii_case(b"content-length") {
                    let text = std::str::from_utf8(value).unwrap_or("");
                    content_length = Some(text.trim().parse::<u64>().map_err(|_| {
                        PyValueError::new_err(format!("invalid Content-Length response header {text:?}"))
                    })?);
                }
                if name.eq_ignore_ascii_case(b"x-accel-buffering") {
                    streaming = value.eq_ignore_ascii_case(b"no");
                }
            }
            this.status = Some(parsed);
            this.headers = list;
            this.content_length = content_length;
            this.streaming = streaming;
        }
        slf.getattr("write")
    }

    /// `environ['wsgi.early_hints'](headers)`: sends a `103 Early Hints`
    /// response with `headers` (a list of `(name, value)` tuples, checked
    /// as `start_response`'s are) at once, so the client can start loading
    /// what they name while the app works on the response. May be called
    /// more than once; does nothing once `start_response` has been called,
    /// when the real head is about to go anyway.
    fn early_hints(&mut self, py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let list = header_list(headers, true)?;
        if self.status.is_some() || list.is_empty() {
            return Ok(());
        }
        let mut frame = BytesMut::new();
        wire::encode(&Frame::new(self.id, Message::Hints(list)), &mut frame)
            .map_err(|e| PyValueError::new_err(format!("early hints not sendable: {e}")))?;
        self.sink.write(py, &frame)?;
        Ok(())
    }

    /// The legacy write() callable of PEP 3333.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.downcast::<PyBytes>().map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        self.write_body(py, data.as_bytes())
    }
}

/// The app's `[(name, value), ...]`, checked so that nothing a client
/// could misread reaches the wire. Names and values are str, as PEP 3333
/// wants; `bytes_too` also takes bytes (as gunicorn's early hints do).
fn header_list(headers: &Bound<'_, PyAny>, bytes_too: bool) -> PyResult<Vec<(Bytes, Bytes)>> {
    let field = |v: &Bound<'_, PyAny>, what: &str| match v.downcast::<PyBytes>() {
        Ok(raw) if bytes_too => Ok(raw.as_bytes().to_vec()),
        _ => latin1_bytes(v, what),
    };
    let mut list = Vec::new();
    for item in headers.try_iter()? {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item?.extract().map_err(|_| PyTypeError::new_err("each response header must be a (name, value) tuple"))?;
        let name = field(&name, "header name")?;
        let value = field(&value, "header value")?;
        check_header(&name, &value)?;
        list.push((Bytes::from(name), Bytes::from(value)));
    }
    Ok(list)
}

fn parse_status(status: &str) -> PyResult<(u16, Bytes)> {
    let bad = || PyValueError::new_err(format!("invalid status {status:?}: expected like '200 OK'"));
    let (code, reason) = status.split_once(' ').unwrap_or((status, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let code: u16 = code.parse().map_err(|_| bad())?;
    if code < 100 {
        return Err(bad());
    }
    if reason.bytes().any(|b| b.is_ascii_control() && b != b'\t') || !reason.is_ascii() {
        return Err(bad());
    }
    Ok((code, Bytes::copy_from_slice(reason.as_bytes())))
}

/// A WSGI "native string" (latin-1) as bytes.
fn latin1_bytes(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    let text = value.downcast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "response {what} must be a str, got {}",
            value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    text.to_str()?
        .chars()
        .map(|c| u8::try_from(c as u32))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| PyValueError::new_err(format!("response {what} {:?} is not latin-1", text.to_string())))
}

/// Refuses header names that are not HTTP tokens and values that could
/// split the response (CR, LF, NUL).
fn check_header(name: &[u8], value: &[u8]) -> PyResult<()> {
    let shown = String::from_utf8_lossy(name);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(PyValueError::new_err(format!("invalid response header name {shown:?}")));
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(PyValueError::new_err(format!("invalid response header {shown:?}: value contains CR, LF or NUL")));
    }
    if value.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(PyValueError::new_err(format!(
            "invalid response header {shown:?}: value contains a control character"
        )));
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(parse_status("200 OK").unwrap(), (200, Bytes::from_static(b"OK")));
        assert_eq!(parse_status("404 Not Found").unwrap().0, 404);
        assert_eq!(parse_status("204").unwrap(), (204, Bytes::new()));
        for bad in ["", "OK", "20 OK", "2000 OK", "abc OK", "200 OK\r\nX: y", "099 Low"] {
            assert!(parse_status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        assert!(check_header(b"X-Ok", b"fine value\twith tab").is_ok());
        assert!(check_header(b"X-Bad", b"a\r\nSet-Cookie: x").is_err());
        assert!(check_header(b"X-Bad", b"a\nb").is_err());
        assert!(check_header(b"Bad Name", b"v").is_err());
        assert!(check_header(b"Bad:Name", b"v").is_err());
        assert!(check_header(b"", b"v").is_err());
    }
}
