//! tandem serves a Python WSGI app with a Rust front and a supervised pool
//! of Python worker processes, in one process tree; the same binary runs as
//! a front node (static files and a reverse proxy to other hosts, no
//! workers) from a config file.
//!
//! ```text
//! client ──TCP──▶ front::listener ─▶ front::conn: PROXY header (proxy_protocol), TLS (tls),
//!                 (max-connections)   then HTTP/1.1 or HTTP/2 by ALPN or the h2c preface
//!                                           │                              │
//!                      HTTP/1.1 (front::http1) through front::guard  HTTP/2 on the h2 crate (front::h2:
//!                      (framing, limits, timeouts)                 limits, timeouts, stream tasks)
//!                                           └──────────┬───────────────────┘
//!                                                      ▼
//!                                               front::handler ── router (host, path) ──┐
//!                                                         │                              │ Route::Static
//!                                                         │ Route::App / Route::Proxy    ▼
//!                                                         │          static_files::serve (files under
//!                                                         │          the root; 404, or falls through)
//!                                                         │ reads the whole body (request_body)
//!                                                         ├──── Route::Proxy ──▶ proxy::forward ──▶ upstream servers
//!                                                         ▼                     (pick, keep-alive pool,  (TCP / unix)
//!                          dispatch::Pool ── one SOCK_SEQPACKET queue ──▶ worker (Python) × N
//!                                                         ▲                  │ worker::serve:
//!                     dispatch::read_replies ◀── reply socket per worker ────┘ environ, app, frames
//!                                                         │
//!          103 Early Hints from the app or upstream ──▶ client (front::early_hints)
//!          X-Accel-Redirect? front::accel (an internal static file) instead of the body
//!                          front::response (buffer / spill / stream) ──▶ client
//!
//! config: flags + --config TOML → one Config; supervisor: binds, boots workers, respawns,
//! kills hung ones, reloads on HUP (workers and the TLS certificate), stops on TERM/INT/QUIT;
//! wire: the frames on both sockets; sys: the few raw system calls; metrics (--metrics-bind),
//! control (tandem ctl/top), service (sd_notify,
//! --pid): watching and steering the master from outside
//! ```
//!
//! The master is the Python process that ran the `tandem` console script: it
//! enters [`main`] at once, releases the GIL and never runs app code.
//! Workers are started with the same interpreter and enter
//! [`worker::serve`] once `tandem._worker` has imported the app.

pub mod config;
pub mod control;
pub mod dispatch;
pub mod front;
pub mod metrics;
pub mod proxy;
pub mod router;
pub mod service;
pub mod static_files;
pub mod supervisor;
pub mod sys;
pub mod wire;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;

use config::{Config, Invocation};

/// Runs tandem with `args` (without the program name); `python` is the
/// interpreter to start workers with. Returns the exit code.
pub fn run(args: Vec<String>, python: PathBuf) -> i32 {
    let config = match Config::from_args(args, python) {
        Ok(Invocation::Run(config)) => config,
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            return 0;
        }
        Err(err) => {
            eprintln!("tandem: error: {err}");
            return 2;
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(config.log_level)
        .with_target(false)
        .with_ansi(false)
        .init();
    // The supervisor's runtime: signals, workers, the accept loops and the
    // app's request queue. Client connections run on the front's own event
    // loops (`front::loops`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tandem-main")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("tandem: error: starting the event loop: {err}");
            return 1;
        }
    };
    match runtime.block_on(supervisor::run(Arc::new(*config))) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tandem: error: {err:#}");
            1
        }
    }
}

/// main(args, python) -> int: the `tandem` command.
#[pyfunction]
#[pyo3(name = "main")]
fn py_main(py: Python<'_>, args: Vec<String>, python: PathBuf) -> i32 {
    py.allow_threads(|| run(args, python))
}

/// The native half of tandem.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_main, m)?)?;
    m.add_function(wrap_pyfunction!(worker::serve, m)?)?;
    m.add_class::<worker::FileWrapper>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
