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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::intern;
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
        FileWrapper { filelike, blksize: blksize.max(1) }
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

/// When a worker stops taking requests and exits on its own.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Retire after this many requests (0: never).
    max_requests: u64,
    /// Retire once resident memory passes this many bytes (0: never).
    max_memory: u64,
}

/// What every thread of a worker shares.
struct Worker {
    app: PyObject,
    shared: environ::Shared,
    requests: OwnedFd,
    sink: Arc<Sink>,
    limits: Limits,
    multithread: bool,
    served: AtomicU64,
    /// Set when the worker has decided to exit; threads finish their
    /// current request and stop taking new ones.
    retiring: AtomicBool,
}

/// How often (in requests) a worker with a memory limit checks its RSS.
const MEMORY_CHECK_EVERY: u64 = 8;
/// A thread blocked on the request queue wakes this often to notice a stop.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// serve(app, requests_fd, replies_fd, threads=1, max_requests=0, max_memory=0) -> None
///
/// Runs the worker loop on `threads` threads until the front closes the
/// request queue, SIGTERM arrives (the current requests finish first), or a
/// limit says the worker should retire.
#[pyfunction]
#[pyo3(signature = (app, requests_fd, replies_fd, threads = 1, max_requests = 0, max_memory = 0))]
pub fn serve(
    py: Python<'_>,
    app: PyObject,
    requests_fd: i32,
    replies_fd: i32,
    threads: usize,
    max_requests: u64,
    max_memory: u64,
) -> PyResult<()> {
    let requests = sys::adopt(requests_fd).map_err(|e| PyOSError::new_err(format!("requests fd: {e}")))?;
    let replies = sys::adopt(replies_fd).map_err(|e| PyOSError::new_err(format!("replies fd: {e}")))?;
    sys::set_nonblocking(&requests, false)?;
    sys::set_nonblocking(&replies, false)?;
    sys::set_recv_timeout(&requests, IDLE_WAKE)?;
    sys::catch_stop_signal()?;
    let sink = Arc::new(Sink::new(replies));
    sink.send(py, 0, Message::Ready { version: wire::VERSION, pid: std::process::id() })?;
    let threads = threads.max(1);
    let worker = Arc::new(Worker {
        app,
        shared: environ::Shared::new(py)?,
        requests,
        sink,
        limits: Limits { max_requests, max_memory },
        multithread: threads > 1,
        served: AtomicU64::new(0),
        retiring: AtomicBool::new(false),
    });
    let helpers: Vec<_> = (1..threads)
        .map(|_| {
            let worker = Arc::clone(&worker);
            std::thread::spawn(move || Python::with_gil(|py| run_loop(py, &worker)))
        })
        .collect();
    let result = run_loop(py, &worker);
    worker.retiring.store(true, Ordering::SeqCst);
    for helper in helpers {
        let joined = py.allow_threads(|| helper.join());
        match joined {
            Ok(Err(err)) => err.display(py),
            Err(_) => eprintln!("[tandem worker {}] a worker thread panicked", std::process::id()),
            Ok(Ok(())) => {}
        }
    }
    result
}

/// One thread's loop: take a request, run the app, repeat.
fn run_loop(py: Python<'_>, worker: &Worker) -> PyResult<()> {
    let mut buf = BytesMut::with_capacity(MAX_FRAME + wire::LEN_PREFIX);
    let mut fds: Vec<OwnedFd> = Vec::new();
    loop {
        if worker.retiring.load(Ordering::SeqCst) {
            return Ok(());
        }
        if sys::stop_requested() {
            worker.retiring.store(true, Ordering::SeqCst);
            return Ok(());
        }
        buf.clear();
        buf.reserve(MAX_FRAME + wire::LEN_PREFIX);
        fds.clear();
        let received = py.allow_threads(|| sys::recv_into(&worker.requests, &mut buf, &mut fds));
        match received {
            Ok(0) => {
                // The front closed this generation's queue and it is empty.
                worker.retiring.store(true, Ordering::SeqCst);
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => {
                py.check_signals()?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let frame = match wire::decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => return Err(PyOSError::new_err("malformed request frame from the front")),
        };
        let Message::Request(head) = frame.message else {
            return Err(PyOSError::new_err("unexpected frame from the front"));
        };
        worker.sink.send(py, frame.id, Message::Took)?;
        let body_fd = match head.body {
            BodyRef::Fd { .. } => fds.pop(),
            BodyRef::Inline(_) => None,
        };
        handle(py, worker, frame.id, &head, body_fd)?;
        py.check_signals()?;
        let served = worker.served.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(why) = retire_reason(worker, served) {
            if !worker.retiring.swap(true, Ordering::SeqCst) {
                eprintln!("[tandem worker {}] retiring: {why}", std::process::id());
            }
            return Ok(());
        }
    }
}

/// Why the worker should stop after `served` requests, if it should.
fn retire_reason(worker: &Worker, served: u64) -> Option<String> {
    let Limits { max_requests, max_memory } = worker.limits;
    if max_requests > 0 && served >= max_requests {
        return Some(format!("served {served} requests (--max-requests)"));
    }
    if max_memory > 0 && served % MEMORY_CHECK_EVERY == 0 {
        let rss = sys::resident_bytes(0).unwrap_or(0);
        if rss > max_memory {
            return Some(format!(
                "resident memory {} MB is over --max-worker-memory {} MB",
                rss >> 20,
                max_memory >> 20
            ));
        }
    }
    None
}

/// Runs the app on one request. Only failures to talk to the front are
/// returned; app failures are logged and answered here.
fn handle(py: Python<'_>, worker: &Worker, id: u64, head: &RequestHead, body_fd: Option<OwnedFd>) -> PyResult<()> {
    let head_request = head.method.as_ref() == b"HEAD";
    let responder = Bound::new(py, Responder::new(id, Arc::clone(&worker.sink), head_request))?;
    let outcome = environ::build(py, &worker.shared, head, body_fd, worker.multithread)
        .and_then(|env| {
            env.set_item(intern!(py, "wsgi.early_hints"), responder.getattr(intern!(py, "early_hints"))?)?;
            worker.app.bind(py).call1((env, &responder))
        })
        .and_then(|result| {
            let sent = send_result(py, &responder, &result);
            let closed = close_result(&result);
            sent.and(closed)
        });
    let mut responder = responder.borrow_mut();
    let outcome = outcome.and_then(|()| responder.finish(py));
    if let Err(err) = outcome {
        let label = format!("{} {}", String::from_utf8_lossy(&head.method), String::from_utf8_lossy(&head.path));
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
