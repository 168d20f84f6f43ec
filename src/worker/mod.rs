//! The worker loop, run inside each Python worker process: take a request
//! off the pool's shared queue, build the environ, call the app, send the
//! response frames back. The only module that uses pyo3.
//!
//! Loading the app (import paths, `module:callable`) is done in Python by
//! `tandem._worker` before it calls [`serve`]; process lifecycle belongs to
//! the supervisor in the master.

mod environ;
mod responder;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::sys;
use crate::wire::{self, BodyRef, Message, RequestHead, MAX_FRAME};
use responder::{Responder, Sink};

/// `wsgi.file_wrapper`: wraps a file-like object so the front can send it
/// straight from the file when it has a real descriptor, and iterates it in
/// blocks otherwise.
#[pyclass(module = "tandem._native")]
pub struct FileWrapper {
    filelike: PyObject,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: PyObject, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        let data = self.filelike.call_method1(py, "read", (self.blksize,))?;
        if data.bind(py).len()? == 0 {
            return Ok(None);
        }
        Ok(Some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.filelike.bind(py).hasattr("close")? {
            self.filelike.call_method0(py, "close")?;
        }
        Ok(())
    }
}

/// serve(app, requests_fd, replies_fd) -> None
///
/// Runs the worker loop until the front closes the request queue.
#[pyfunction]
pub fn serve(py: Python<'_>, app: Bound<'_, PyAny>, requests_fd: i32, replies_fd: i32) -> PyResult<()> {
    let requests = sys::adopt(requests_fd).map_err(|e| PyOSError::new_err(format!("requests fd: {e}")))?;
    let replies = sys::adopt(replies_fd).map_err(|e| PyOSError::new_err(format!("replies fd: {e}")))?;
    sys::set_nonblocking(&requests, false)?;
    sys::set_nonblocking(&replies, false)?;
    let sink = Arc::new(Mutex::new(Sink::new(replies)));
    {
        let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
        s.push(
            0,
            Message::Ready {
                version: wire::VERSION,
                pid: std::process::id(),
            },
        )?;
        s.flush(py)?;
    }
    let shared = environ::Shared::new(py)?;
    let mut buf = BytesMut::with_capacity(MAX_FRAME + wire::LEN_PREFIX);
    let mut fds: Vec<OwnedFd> = Vec::new();
    loop {
        buf.clear();
        buf.reserve(MAX_FRAME + wire::LEN_PREFIX);
        fds.clear();
        let received = py.allow_threads(|| sys::recv_into(&requests, &mut buf, &mut fds));
        match received {
            Ok(0) => return Ok(()), // the front is gone
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                py.check_signals()?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let frame = match wire::decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => {
                return Err(PyOSError::new_err("malformed request frame from the front"));
            }
        };
        let Message::Request(head) = frame.message else {
            return Err(PyOSError::new_err("unexpected frame from the front"));
        };
        {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push(frame.id, Message::Took)?;
            s.flush(py)?;
        }
        let body_fd = match head.body {
            BodyRef::Fd { .. } => fds.pop(),
            BodyRef::Inline(_) => None,
        };
        handle(py, &app, &shared, &sink, frame.id, &head, body_fd)?;
        py.check_signals()?;
    }
}

/// Runs the app on one request. Only failures to talk to the front are
/// returned; app failures are logged and answered here.
fn handle(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    shared: &environ::Shared,
    sink: &Arc<Mutex<Sink>>,
    id: u64,
    head: &RequestHead,
    body_fd: Option<OwnedFd>,
) -> PyResult<()> {
    let head_request = head.method.as_ref() == b"HEAD";
    let responder = Bound::new(py, Responder::new(id, Arc::clone(sink), head_request))?;
    let outcome = environ::build(py, shared, head, body_fd, false)
        .and_then(|env| app.call1((env, &responder)))
        .and_then(|result| {
            let sent = send_result(py, &responder, &result);
            let closed = close_result(&result);
            sent.and(closed)
        });
    let mut responder = responder.borrow_mut();
    let outcome = outcome.and_then(|()| responder.finish(py));
    if let Err(err) = outcome {
        let label = format!(
            "{} {}",
            String::from_utf8_lossy(&head.method),
            String::from_utf8_lossy(&head.path)
        );
        eprintln!("[tandem worker {}] error handling request {label}:", std::process::id());
        err.display(py);
        let summary = err.to_string();
        responder.fail(py, summary)?;
    }
    Ok(())
}

/// Sends what the app returned: a file straight from its descriptor when
/// possible, otherwise each item of the iterable.
fn send_result(py: Python<'_>, responder: &Bound<'_, Responder>, result: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(wrapper) = result.downcast::<FileWrapper>() {
        if let Some((file, offset, len)) = file_of(py, &wrapper.borrow().filelike) {
            return responder.borrow_mut().send_file(py, file, offset, len);
        }
    }
    for item in result.try_iter()? {
        let item = item?;
        let data = item.downcast::<PyBytes>().map_err(|_| {
            let kind = item.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            PyTypeError::new_err(format!("the app's iterable yielded {kind}, not bytes"))
        })?;
        responder.borrow_mut().write_body(py, data.as_bytes())?;
    }
    Ok(())
}

/// PEP 3333: `close()` is called on the result whatever happened.
fn close_result(result: &Bound<'_, PyAny>) -> PyResult<()> {
    if result.hasattr("close")? {
        result.call_method0("close")?;
    }
    Ok(())
}

/// A duplicate descriptor, the current offset and the bytes left, for a
/// file-like object backed by a regular file.
fn file_of(py: Python<'_>, filelike: &PyObject) -> Option<(OwnedFd, u64, u64)> {
    let filelike = filelike.bind(py);
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    let dup = sys::dup(fd).ok()?;
    let file = std::fs::File::from(dup);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let offset: u64 = match filelike.call_method0("tell") {
        Ok(pos) => pos.extract().ok()?,
        Err(_) => 0,
    };
    let len = meta.len().saturating_sub(offset);
    debug_assert!(file.as_raw_fd() >= 0);
    Some((file.into(), offset, len))
}
