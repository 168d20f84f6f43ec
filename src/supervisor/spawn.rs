//! Starting Python processes: workers (the interpreter that started
//! tandem, running `tandem._worker` with the generation's request socket
//! and a fresh reply socket as their only inherited descriptors) and, with
//! `--preload`, template processes that fork workers.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;

use crate::config::Config;
use crate::sys::{self, PairKind};

/// A started process.
pub struct Started {
    pub child: tokio::process::Child,
    pub pid: u32,
}

/// Starts a worker reading requests from `requests`. Returns it and the
/// front's end of its reply socket.
pub fn start(config: &Config, requests: &OwnedFd) -> std::io::Result<(Started, OwnedFd)> {
    let (front_end, worker_end) = sys::socketpair(PairKind::Stream)?;
    let (requests_fd, replies_fd) = (requests.as_raw_fd(), worker_end.as_raw_fd());
    let mut cmd = command(config, &[requests_fd, replies_fd]);
    cmd.arg("--requests-fd")
        .arg(requests_fd.to_string())
        .arg("--replies-fd")
        .arg(replies_fd.to_string())
        .arg("--max-requests")
        .arg(max_requests(config).to_string());
    let started = run(cmd)?;
    drop(worker_end);
    Ok((started, front_end))
}

/// Starts a `--preload` template that takes orders on `control`.
pub fn start_template(config: &Config, control: &OwnedFd) -> std::io::Result<Started> {
    let control_fd = control.as_raw_fd();
    let mut cmd = command(config, &[control_fd]);
    cmd.arg("--template").arg(control_fd.to_string());
    run(cmd)
}

/// This worker's `--max-requests`, jitter included (0: no limit).
pub fn max_requests(config: &Config) -> u64 {
    match config.max_requests {
        0 => 0,
        n => n + jitter(config.max_requests_jitter),
    }
}

/// `python -m tandem._worker APP ...` with the settings every worker
/// process shares, keeping `inherit` open across exec.
fn command(config: &Config, inherit: &[RawFd]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&config.app.python);
    cmd.arg("-m")
        .arg("tandem._worker")
        .arg(&config.app.target)
        .arg("--threads")
        .arg(config.threads.to_string())
        .arg("--max-memory")
        .arg(config.max_worker_memory.to_string());
    if !config.app.pythonpath.is_empty() {
        if let Ok(joined) = std::env::join_paths(&config.app.pythonpath) {
            cmd.arg("--pythonpath").arg(joined);
        }
    }
    cmd.envs(config.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).kill_on_drop(false);
    let inherit = inherit.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (fcntl, prctl) on plain integers.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &inherit {
                sys::clear_cloexec(*fd)?;
            }
            // Python children die with the master even if it is SIGKILLed.
            sys::die_with_parent()
        });
    }
    cmd
}

fn run(mut cmd: tokio::process::Command) -> std::io::Result<Started> {
    let child = cmd.spawn()?;
    let pid = child.id().ok_or_else(|| std::io::Error::other("process exited at once"))?;
    Ok(Started { child, pid })
}

/// A random number in 0..=max, different for every call.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    // RandomState is seeded randomly per process and per instance.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish() % (max + 1)
}

/// Starts the tandem that takes over from this one (USR2): the same
/// command line, run again from the directory tandem started in, with the
/// listening sockets `listeners` inherited and named in `TANDEM_FDS` (and
/// the metrics listener in `TANDEM_METRICS_FD`). It is not tied to this
/// process's life: it outlives it.
pub fn start_successor(listeners: &[RawFd], metrics: Option<RawFd>, cwd: &std::path::Path) -> std::io::Result<Started> {
    let mut argv = std::env::args_os();
    let program = argv.next().ok_or_else(|| std::io::Error::other("no command line to run again"))?;
    let fds: Vec<String> = listeners.iter().map(|fd| fd.to_string()).collect();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(argv)
        .current_dir(cwd)
        .env(crate::config::INHERITED_FDS_ENV, fds.join(","))
        .env(crate::supervisor::UPGRADE_FROM_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(false);
    if let Some(fd) = metrics {
        cmd.env(crate::config::INHERITED_METRICS_FD_ENV, fd.to_string());
    }
    let inherit: Vec<RawFd> = listeners.iter().copied().chain(metrics).collect();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl on plain integers (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            for fd in &inherit {
                sys::clear_cloexec(*fd)?;
            }
            Ok(())
        });
    }
    run(cmd)
}
