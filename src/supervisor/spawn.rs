//! Starting one worker process: the interpreter that started tandem,
//! running `tandem._worker`, with the pool's request socket and a fresh
//! reply socket as its only inherited descriptors.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use crate::config::Config;
use crate::sys::{self, PairKind};

/// A started worker: its process and the front's end of its reply socket.
pub struct Started {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub replies: OwnedFd,
}

/// Starts a worker reading requests from `requests`.
pub fn start(config: &Config, requests: &OwnedFd) -> std::io::Result<Started> {
    let max_requests = match config.max_requests {
        0 => 0,
        n => n + jitter(config.max_requests_jitter),
    };
    let (front_end, worker_end) = sys::socketpair(PairKind::Stream)?;
    let requests_fd = requests.as_raw_fd();
    let replies_fd = worker_end.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&config.app.python);
    cmd.arg("-m")
        .arg("tandem._worker")
        .arg(&config.app.target)
        .arg(requests_fd.to_string())
        .arg(replies_fd.to_string());
    cmd.arg("--threads")
        .arg(config.threads.to_string())
        .arg("--max-requests")
        .arg(max_requests.to_string())
        .arg("--max-memory")
        .arg(config.max_worker_memory.to_string());
    if !config.app.pythonpath.is_empty() {
        let joined = std::env::join_paths(&config.app.pythonpath).map_err(std::io::Error::other)?;
        cmd.arg("--pythonpath").arg(joined);
    }
    cmd.envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (fcntl, prctl) on plain integers.
    unsafe {
        cmd.pre_exec(move || {
            sys::clear_cloexec(requests_fd)?;
            sys::clear_cloexec(replies_fd)?;
            // Workers die with the master even if it is SIGKILLed mid-request.
            sys::die_with_parent()
        });
    }
    let child = cmd.spawn()?;
    drop(worker_end);
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("worker exited at once"))?;
    Ok(Started {
        child,
        pid,
        replies: front_end,
    })
}

/// A random number in 0..=max, different for every call.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    // RandomState is seeded randomly per process and per instance.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() % (max + 1)
}
