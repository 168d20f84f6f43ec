//! Building the WSGI environ (PEP 3333) from a request head.

use std::os::fd::{IntoRawFd, OwnedFd};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};

use crate::wire::{BodyRef, RequestHead, Scheme};

/// Objects every environ shares, looked up once per worker.
pub struct Shared {
    version: Py<PyTuple>,
    errors: PyObject,
    file_wrapper: PyObject,
    bytes_io: PyObject,
    open: PyObject,
}

impl Shared {
    pub fn new(py: Python<'_>) -> PyResult<Shared> {
        let io = py.import("io")?;
        Ok(Shared {
            version: PyTuple::new(py, [1, 0])?.unbind(),
            errors: py.import("sys")?.getattr("stderr")?.unbind(),
            file_wrapper: py.get_type::<super::FileWrapper>().into_any().unbind(),
            bytes_io: io.getattr("BytesIO")?.unbind(),
            open: io.getattr("open")?.unbind(),
        })
    }
}

/// A WSGI "native string": each byte becomes the code point of the same
/// value (latin-1), as PEP 3333 requires for environ values.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.is_ascii() => PyString::new(py, text),
        _ => PyString::new(py, &bytes.iter().map(|&b| b as char).collect::<String>()),
    }
}

/// Builds the environ for `head`. `body_fd` is the descriptor that came
/// with the request when its body travels as a file.
pub fn build<'py>(
    py: Python<'py>,
    shared: &Shared,
    head: &RequestHead,
    body_fd: Option<OwnedFd>,
    multithread: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    let set = |key: &Bound<'py, PyString>, value: &[u8]| env.set_item(key, latin1(py, value));

    set(intern!(py, "REQUEST_METHOD"), &head.method)?;
    let path = percent_encoding::percent_decode(&head.path).collect::<Vec<u8>>();
    let script = head.script_name.as_ref();
    let path_info = match path.strip_prefix(script) {
        Some(rest) if !script.is_empty() && (rest.is_empty() || rest.starts_with(b"/")) => rest,
        _ => &path[..],
    };
    set(intern!(py, "SCRIPT_NAME"), script)?;
    set(intern!(py, "PATH_INFO"), path_info)?;
    set(intern!(py, "QUERY_STRING"), &head.query)?;
    let mut raw_uri = head.path.to_vec();
    if !head.query.is_empty() {
        raw_uri.push(b'?');
        raw_uri.extend_from_slice(&head.query);
    }
    set(intern!(py, "RAW_URI"), &raw_uri)?;
    let protocol: &[u8] = match head.version {
        9 => b"HTTP/0.9",
        10 => b"HTTP/1.0",
        20 => b"HTTP/2",
        30 => b"HTTP/3",
        _ => b"HTTP/1.1",
    };
    set(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    set(intern!(py, "SERVER_NAME"), &head.server_name)?;
    set(intern!(py, "SERVER_PORT"), head.server_port.to_string().as_bytes())?;
    set(intern!(py, "REMOTE_ADDR"), &head.remote_addr)?;
    set(intern!(py, "REMOTE_PORT"), head.remote_port.to_string().as_bytes())?;

    for (name, value) in &head.headers {
        let key = match name.as_ref() {
            b"content-type" => intern!(py, "CONTENT_TYPE").clone(),
            b"content-length" => intern!(py, "CONTENT_LENGTH").clone(),
            _ => {
                let mut key = Vec::with_capacity(name.len() + 5);
                key.extend_from_slice(b"HTTP_");
                key.extend(name.iter().map(|&b| if b == b'-' { b'_' } else { b.to_ascii_uppercase() }));
                latin1(py, &key)
            }
        };
        match env.get_item(&key)? {
            // Repeated fields are one field whose values are joined
            // (RFC 9110 §5.3); cookies are joined the way browsers send them.
            Some(existing) => {
                let sep = if name.as_ref() == b"cookie" { "; " } else { ", " };
                let joined = format!("{}{sep}{}", existing.extract::<String>()?, latin1(py, value).to_str()?);
                env.set_item(key, joined)?;
            }
            None => env.set_item(key, latin1(py, value))?,
        }
    }

    let input = match (&head.body, body_fd) {
        (BodyRef::Fd { .. }, Some(fd)) => shared.open.call1(py, (fd.into_raw_fd(), "rb"))?,
        (BodyRef::Inline(data), _) => shared.bytes_io.call1(py, (pyo3::types::PyBytes::new(py, data),))?,
        (BodyRef::Fd { .. }, None) => {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("request body descriptor missing"))
        }
    };
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "wsgi.version"), shared.version.bind(py))?;
    env.set_item(
        intern!(py, "wsgi.url_scheme"),
        match head.scheme {
            Scheme::Http => intern!(py, "http"),
            Scheme::Https => intern!(py, "https"),
        },
    )?;
    env.set_item(intern!(py, "wsgi.errors"), shared.errors.bind(py))?;
    env.set_item(intern!(py, "wsgi.multithread"), PyBool::new(py, multithread))?;
    env.set_item(intern!(py, "wsgi.multiprocess"), PyBool::new(py, true))?;
    env.set_item(intern!(py, "wsgi.run_once"), PyBool::new(py, false))?;
    env.set_item(intern!(py, "wsgi.input_terminated"), PyBool::new(py, true))?;
    env.set_item(intern!(py, "wsgi.file_wrapper"), shared.file_wrapper.bind(py))?;
    Ok(env)
}
