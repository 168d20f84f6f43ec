//! The supervisor's operations side: the metrics and control listeners,
//! the pid file, service-manager notifications, and USR2 binary upgrades.
//!
//! Upgrade sequence (as nginx and gunicorn): USR2 makes this master start
//! the same command line again (so the new binary and code on disk) with
//! duplicates of its listening sockets, named in `TANDEM_FDS`, and moves
//! the pid file to `PATH.oldbin`. The new master binds nothing: it adopts
//! those sockets, boots its workers, writes the pid file and only then
//! sends TERM to the old master (named in `TANDEM_UPGRADE_FROM`), which
//! stops accepting, finishes what it holds and exits. Both accept from the
//! same kernel queue until then, so no connection is refused. If the new
//! master exits before taking over, the old one keeps serving and puts the
//! pid file back.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::{describe, spawn, Event, State, Supervisor};
use crate::config::Config;
use crate::control::{self, Command, ControlListener};
use crate::dispatch::Pool;
use crate::front::Listener;
use crate::metrics::{self, MetricsListener, RestartReason, WorkerCounts, METRICS};
use crate::service::{self, PidFile};
use crate::sys;

/// Environment variable naming the master a new tandem takes over from.
pub const UPGRADE_FROM_ENV: &str = "TANDEM_UPGRADE_FROM";

/// Control commands waiting for the supervisor.
const COMMAND_QUEUE: usize = 64;

/// What the supervisor needs to be watched, controlled and upgraded.
pub(super) struct Ops {
    pub(super) commands: mpsc::Receiver<control::Request>,
    commands_tx: mpsc::Sender<control::Request>,
    control: Option<ControlListener>,
    metrics: Option<MetricsListener>,
    pid_file: Option<PidFile>,
    /// Copies of the listening sockets, for a successor (USR2).
    handover: Vec<OwnedFd>,
    metrics_handover: Option<OwnedFd>,
    /// The directory tandem started in; a successor starts there too.
    start_dir: PathBuf,
    /// The master this one took over from, told to stop once we serve.
    predecessor: Option<u32>,
    /// A new master started by USR2 that has not exited.
    successor: Option<u32>,
    started: Instant,
}

impl Default for Ops {
    fn default() -> Ops {
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        Ops {
            commands,
            commands_tx,
            control: None,
            metrics: None,
            pid_file: None,
            handover: Vec::new(),
            metrics_handover: None,
            start_dir: PathBuf::from("/"),
            predecessor: None,
            successor: None,
            started: Instant::now(),
        }
    }
}

impl Ops {
    /// Opens the metrics and control sockets and writes the pid file, so a
    /// bad address fails at start. `start_dir`: where tandem was started.
    pub(super) fn open(config: &Config, start_dir: PathBuf) -> anyhow::Result<Ops> {
        let predecessor = std::env::var(UPGRADE_FROM_ENV).ok().and_then(|p| p.parse().ok());
        std::env::remove_var(UPGRADE_FROM_ENV);
        let mut ops = Ops { start_dir, predecessor, ..Ops::default() };
        if let Some(addr) = config.ops.metrics_bind {
            let listener = metrics::bind(addr, config.ops.inherited_metrics_fd)?;
            ops.metrics_handover = listener.as_fd().try_clone_to_owned().ok();
            ops.metrics = Some(listener);
        }
        ops.control = control::bind(&config.ops.control_socket, predecessor.is_some())?;
        if let Some(path) = &config.ops.pid_file {
            let pid = PidFile::create(path).with_context(|| format!("cannot write --pid {}", path.display()))?;
            ops.pid_file = Some(pid);
        }
        Ok(ops)
    }

    /// Keeps a copy of each listening socket for a USR2 successor.
    pub(super) fn keep_listeners(&mut self, listeners: &[Listener]) {
        for listener in listeners {
            let copy = match listener {
                Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
                Listener::Unix(l, _) => l.as_fd().try_clone_to_owned(),
            };
            match copy {
                Ok(fd) => self.handover.push(fd),
                Err(e) => tracing::warn!("cannot keep {} for upgrades: {e}", listener.url()),
            }
        }
    }

    /// Unix socket files this tandem took over from the one it upgrades:
    /// they are this one's to remove at exit now.
    pub(super) fn taken_over_files(&self, listeners: &[Listener]) -> Vec<PathBuf> {
        if self.predecessor.is_none() {
            return Vec::new();
        }
        let path = |l: &tokio::io::unix::AsyncFd<std::os::unix::net::UnixListener>| {
            l.get_ref().local_addr().ok()?.as_pathname().map(PathBuf::from)
        };
        listeners
            .iter()
            .filter_map(|listener| match listener {
                Listener::Unix(l, None) => path(l),
                _ => None,
            })
            .collect()
    }

    /// The front is serving: start answering scrapes and commands, tell the
    /// service manager, and retire the master we took over from.
    pub(super) fn serving(&mut self, pool: &Arc<Pool>, stop: &watch::Receiver<bool>, workers: usize) {
        if let Some(listener) = self.metrics.take() {
            match listener.local_addr() {
                Ok(addr) => tracing::info!("metrics on http://{addr}/metrics"),
                Err(e) => tracing::warn!("metrics listener: {e}"),
            }
            metrics::serve(listener, Arc::clone(pool), stop.clone());
        }
        if let Some(listener) = &mut self.control {
            tracing::info!("control socket at {}", listener.path().display());
            control::serve(listener, self.commands_tx.clone(), stop.clone());
        }
        let mut state = format!("READY=1\nSTATUS=serving with {workers} workers");
        if let Some(old) = self.predecessor.take() {
            tracing::info!("took over the listening sockets from tandem {old}; asking it to stop (TERM)");
            let _ = sys::kill(old, libc::SIGTERM);
            // With NotifyAccess=all, systemd follows the new main process.
            state = format!("MAINPID={}\n{state}", std::process::id());
        }
        service::notify(&state);
    }

    /// Whether the sockets now belong to a successor (so their files stay).
    pub(super) fn handed_over(&self) -> bool {
        self.successor.is_some()
    }
}

impl Supervisor {
    /// Publishes workers by state to the metrics (after every event or tick).
    pub(super) fn publish(&self) {
        let busy = self.pool.busy();
        let mut counts = WorkerCounts::default();
        for (pid, w) in &self.workers {
            match w.state {
                State::Booting => counts.booting += 1,
                State::Draining => counts.draining += 1,
                State::Ready if busy.contains_key(pid) => counts.busy += 1,
                State::Ready => counts.idle += 1,
            }
        }
        METRICS.set_workers(counts);
    }

    /// Counts a worker that exited in the restart metric, by why it went.
    pub(super) fn count_restart(&mut self, pid: u32, retired: bool, served: u64) {
        let reason = if self.timed_out.remove(&pid) {
            RestartReason::Timeout
        } else if !retired {
            RestartReason::Crash
        } else if self.config.max_requests > 0 && served >= self.config.max_requests {
            RestartReason::MaxRequests
        } else {
            RestartReason::Memory
        };
        METRICS.restart(reason, 1);
    }

    /// Acts on a control command; returns true if tandem should stop.
    pub(super) fn on_control(&mut self, request: control::Request) -> bool {
        let (answer, stop) = match request.command {
            Command::Status => (self.status_json(), false),
            Command::Reload => {
                self.start_reload("control socket");
                let answer = match &self.reload {
                    Some(reload) => json!({"ok": true, "generation": reload.generation}),
                    None => json!({"ok": false, "error": "the reload did not start (see the log)"}),
                };
                (answer, false)
            }
            Command::Stop => (json!({"ok": true}), true),
            Command::Workers(delta) => {
                for _ in 0..delta.unsigned_abs() {
                    if delta > 0 {
                        self.add_worker("control socket");
                    } else {
                        self.remove_worker("control socket");
                    }
                }
                (json!({"ok": true, "target": self.target}), false)
            }
        };
        let _ = request.reply.send(answer);
        stop
    }

    fn status_json(&self) -> Value {
        let workers: Vec<Value> = self
            .status()
            .into_iter()
            .map(|w| {
                let age = self.workers.get(&w.pid).map_or(0.0, |x| x.started.elapsed().as_secs_f64());
                json!({
                    "pid": w.pid,
                    "generation": w.generation,
                    "state": match w.state {
                        State::Booting => "booting",
                        State::Ready if w.current.is_some() => "busy",
                        State::Ready => "idle",
                        State::Draining => "draining",
                    },
                    "served": w.served,
                    "rss_bytes": w.rss_bytes,
                    "age_secs": age,
                    "current": w.current.map(|(label, busy)| json!({"request": label, "secs": busy.as_secs_f64()})),
                })
            })
            .collect();
        json!({
            "ok": true,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "app": self.config.app.target,
            "uptime_secs": self.ops.started.elapsed().as_secs_f64(),
            "generation": self.generation,
            "reloading": self.reload.is_some(),
            "target_workers": self.target,
            "queue_depth": self.pool.queued(),
            "in_flight": self.pool.in_flight(),
            "requests_total": METRICS.requests_total(),
            "latency_buckets": METRICS.latency_buckets(),
            "workers": workers,
        })
    }

    /// USR2: starts a new master on the same sockets (see the module doc).
    pub(super) fn start_upgrade(&mut self) {
        if let Some(pid) = self.ops.successor {
            tracing::warn!("USR2: new tandem {pid} is already starting");
            return;
        }
        if self.ops.handover.is_empty() {
            tracing::error!("USR2: no listening sockets to hand over; not upgrading");
            return;
        }
        let fds: Vec<_> = self.ops.handover.iter().map(|fd| fd.as_raw_fd()).collect();
        let metrics_fd = self.ops.metrics_handover.as_ref().map(|fd| fd.as_raw_fd());
        let started = match spawn::start_successor(&fds, metrics_fd, &self.ops.start_dir) {
            Ok(started) => started,
            Err(e) => {
                tracing::error!("USR2: cannot start a new tandem: {e}");
                return;
            }
        };
        let pid = started.pid;
        let mut child = started.child;
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = events.send(Event::SuccessorExited { pid, status });
        });
        self.ops.successor = Some(pid);
        if let Some(pid_file) = &mut self.ops.pid_file {
            pid_file.move_aside();
        }
        tracing::info!("USR2: started new tandem {pid}; this one stops once it serves");
    }

    /// The new master exited while this one still runs: the upgrade failed.
    pub(super) fn on_successor_exit(&mut self, pid: u32, status: Option<ExitStatus>) {
        if self.ops.successor != Some(pid) {
            return;
        }
        self.ops.successor = None;
        if let Some(pid_file) = &mut self.ops.pid_file {
            pid_file.restore();
        }
        tracing::error!("upgrade failed: new tandem {pid} exited ({}); this one keeps serving", describe(status));
    }
}
