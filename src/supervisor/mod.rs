//! The supervisor: tandem's master process from start to exit. It binds the
//! listeners, boots the workers (stopping with the app's error if they
//! can't load it), starts the front, then watches: a worker that exits is
//! respawned (with back-off if it keeps dying), a worker hung on a request
//! past `--timeout` has its Python stack dumped and is killed, and TERM /
//! INT / QUIT stop the whole tree.
//!
//! Worker state lives here; the dispatcher only knows which worker holds
//! which request.

mod spawn;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::dispatch::{self, LinkEnd, Pool, WorkerLink};
use crate::front::{self, Front};
use crate::sys;

/// Exit code of a worker (and of tandem) when the app can't be imported.
pub const APP_LOAD_ERROR: i32 = 4;
/// Exit code when workers fail to boot for another reason.
pub const WORKER_BOOT_ERROR: i32 = 3;

/// Grace between SIGABRT (stack dump) and SIGKILL for a hung worker.
const DUMP_GRACE: Duration = Duration::from_secs(2);
/// How long stopped workers get to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// A worker that dies sooner than this after booting counts as failing.
const QUICK_DEATH: Duration = Duration::from_secs(5);

enum Event {
    Ready { pid: u32, version: u16 },
    Exited { pid: u32, status: Option<ExitStatus> },
    Broken { pid: u32, why: String },
    Respawn,
}

enum State {
    Booting,
    Ready,
}

struct Worker {
    state: State,
    started: Instant,
}

struct Supervisor {
    config: Arc<Config>,
    pool: Arc<Pool>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    workers: HashMap<u32, Worker>,
    /// Workers that died soon after booting, in a row.
    quick_deaths: u32,
    stopping: bool,
}

/// Runs tandem until it is told to stop. Returns the process exit code.
pub async fn run(config: Arc<Config>) -> anyhow::Result<i32> {
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).with_context(|| format!("--chdir {}", dir.display()))?;
    }
    let listeners = front::bind_all(&config.binds)?;
    let socket_files: Vec<_> = listeners.iter().filter_map(|l| l.owned_path().cloned()).collect();
    let pool = Pool::new(config.backlog).context("creating the request queue")?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut sup = Supervisor {
        config: Arc::clone(&config),
        pool: Arc::clone(&pool),
        events_tx,
        events,
        workers: HashMap::new(),
        quick_deaths: 0,
        stopping: false,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;

    let booted = tokio::select! {
        code = sup.boot() => code,
        _ = term.recv() => Some(0),
        _ = int.recv() => Some(0),
        _ = quit.recv() => Some(0),
    };
    if let Some(code) = booted {
        sup.stop_workers().await;
        remove_files(&socket_files);
        return Ok(code);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    for listener in &listeners {
        tracing::info!("listening on {}", listener.url());
    }
    let front = Arc::new(Front::new(Arc::clone(&config), Arc::clone(&pool)));
    front::serve(listeners, front, stop_rx);

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let graceful = loop {
        tokio::select! {
            Some(event) = sup.events.recv() => sup.on_event(event),
            _ = tick.tick() => sup.reap_hung(),
            _ = term.recv() => break true,
            _ = int.recv() => break false,
            _ = quit.recv() => break false,
        }
    };

    sup.stopping = true;
    let _ = stop_tx.send(true);
    if graceful {
        tracing::info!(
            "stopping: finishing in-flight requests (up to {}s)",
            config.graceful_timeout.as_secs()
        );
        let deadline = tokio::time::Instant::now() + config.graceful_timeout;
        while sup.pool.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = int.recv() => break,
                _ = quit.recv() => break,
            }
        }
    } else {
        tracing::info!("stopping now");
    }
    sup.stop_workers().await;
    remove_files(&socket_files);
    tracing::info!("stopped");
    Ok(0)
}

fn remove_files(paths: &[std::path::PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

impl Supervisor {
    /// Starts every worker and waits until all have loaded the app. Returns
    /// an exit code if they can't.
    async fn boot(&mut self) -> Option<i32> {
        for _ in 0..self.config.workers {
            if let Err(e) = self.spawn_worker() {
                tracing::error!("cannot start a worker with {}: {e}", self.config.app.python.display());
                return Some(WORKER_BOOT_ERROR);
            }
        }
        let mut ready = 0;
        while ready < self.config.workers {
            let event = self.events.recv().await?;
            match event {
                Event::Ready { .. } => {
                    self.on_event(event);
                    ready += 1;
                }
                Event::Exited { pid, status } => {
                    self.workers.remove(&pid);
                    let code = status.and_then(|s| s.code());
                    return Some(if code == Some(APP_LOAD_ERROR) {
                        tracing::error!(
                            "failed to load application '{}' (see the traceback above)",
                            self.config.app.target
                        );
                        APP_LOAD_ERROR
                    } else {
                        tracing::error!("worker {pid} failed to boot: {}", describe(status));
                        WORKER_BOOT_ERROR
                    });
                }
                other => self.on_event(other),
            }
        }
        tracing::info!(
            "{} workers ready, serving '{}' (python: {})",
            ready,
            self.config.app.target,
            self.config.app.python.display()
        );
        None
    }

    fn spawn_worker(&mut self) -> std::io::Result<()> {
        let started = spawn::start(&self.config, self.pool.worker_end())?;
        let pid = started.pid;
        let link = Arc::new(WorkerLink::new(pid, &self.pool));
        let (ready_tx, ready_rx) = oneshot::channel();
        let events = self.events_tx.clone();
        let pool = Arc::clone(&self.pool);
        tokio::spawn(async move {
            if let LinkEnd::Broken(why) = dispatch::read_replies(pool, link, started.replies, ready_tx).await {
                let _ = events.send(Event::Broken { pid, why });
            }
        });
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            if let Ok(version) = ready_rx.await {
                let _ = events.send(Event::Ready { pid, version });
            }
        });
        let events = self.events_tx.clone();
        let mut child = started.child;
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = events.send(Event::Exited { pid, status });
        });
        self.workers.insert(
            pid,
            Worker {
                state: State::Booting,
                started: Instant::now(),
            },
        );
        tracing::debug!("started worker {pid}");
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Ready { pid, version } => {
                if version != crate::wire::VERSION {
                    tracing::error!(
                        "worker {pid} speaks wire version {version}, this front {}: is an old tandem installed?",
                        crate::wire::VERSION
                    );
                    let _ = sys::kill(pid, libc::SIGKILL);
                    return;
                }
                if let Some(w) = self.workers.get_mut(&pid) {
                    tracing::info!("worker {pid} ready in {} ms", w.started.elapsed().as_millis());
                    w.state = State::Ready;
                }
            }
            Event::Exited { pid, status } => {
                let Some(worker) = self.workers.remove(&pid) else {
                    return;
                };
                if self.stopping {
                    return;
                }
                let booting = matches!(worker.state, State::Booting);
                let code = status.and_then(|s| s.code());
                if booting && code == Some(APP_LOAD_ERROR) {
                    tracing::error!("worker {pid} could not load '{}'", self.config.app.target);
                } else {
                    tracing::warn!("worker {pid} exited: {}", describe(status));
                }
                if booting || worker.started.elapsed() < QUICK_DEATH {
                    self.quick_deaths += 1;
                } else {
                    self.quick_deaths = 0;
                }
                // 0 s, then 0.1 s doubling to 10 s while workers keep dying young.
                let delay = match self.quick_deaths {
                    0 | 1 => Duration::ZERO,
                    n => Duration::from_millis(100u64 << (n - 2).min(7)).min(Duration::from_secs(10)),
                };
                if delay.is_zero() {
                    self.respawn();
                } else {
                    tracing::warn!("respawning in {} ms: workers keep dying", delay.as_millis());
                    let events = self.events_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = events.send(Event::Respawn);
                    });
                }
            }
            Event::Broken { pid, why } => {
                tracing::error!("worker {pid} broke the wire protocol ({why}); killing it");
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            Event::Respawn => self.respawn(),
        }
    }

    fn respawn(&mut self) {
        if self.stopping {
            return;
        }
        if let Err(e) = self.spawn_worker() {
            tracing::error!("cannot respawn a worker: {e}");
            let events = self.events_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = events.send(Event::Respawn);
            });
        }
    }

    /// Fails requests whose worker has been silent past `--timeout`, dumps
    /// that worker's Python stack (SIGABRT, caught by faulthandler) and
    /// kills it.
    fn reap_hung(&mut self) {
        let Some(timeout) = self.config.timeout else {
            return;
        };
        for (pid, label) in self.pool.reap_hung(timeout) {
            tracing::error!(
                "worker {pid} timed out after {}s on {label}: dumping its stack and killing it",
                timeout.as_secs()
            );
            let _ = sys::kill(pid, libc::SIGABRT);
            tokio::spawn(async move {
                tokio::time::sleep(DUMP_GRACE).await;
                let _ = sys::kill(pid, libc::SIGKILL);
            });
        }
    }

    /// SIGTERM to every worker, SIGKILL to those still there after a grace.
    async fn stop_workers(&mut self) {
        self.stopping = true;
        for pid in self.workers.keys() {
            let _ = sys::kill(*pid, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + TERM_GRACE;
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Exited { pid, .. })) => {
                    self.workers.remove(&pid);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for pid in self.workers.keys() {
            tracing::warn!("worker {pid} did not stop; killing it");
            let _ = sys::kill(*pid, libc::SIGKILL);
        }
    }
}

/// "exit code 1", "killed by signal 9 (SIGKILL)".
fn describe(status: Option<ExitStatus>) -> String {
    let Some(status) = status else {
        return "unknown status".into();
    };
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => format!("killed by signal {sig} ({})", signal_name(sig)),
        None => format!("{status}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL, e.g. the OOM killer",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
