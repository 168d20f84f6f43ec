//! The supervisor: tandem's master process from start to exit. It binds the
//! listeners, boots the workers (stopping with the app's error if they
//! can't load it), starts the front, then watches over the workers:
//!
//! - a worker that exits is replaced (with back-off if workers keep dying
//!   young); one that retired itself (`--max-requests`,
//!   `--max-worker-memory`) is replaced at once;
//! - a worker silent on a request past `--timeout` has its Python stack
//!   dumped (SIGABRT, caught by faulthandler) and is killed;
//! - HUP (or a changed file with `--reload`) boots a new generation of
//!   workers on a new queue and switches to it only once every new worker
//!   has loaded the app; if the new code fails to import, the old
//!   generation keeps serving;
//! - TTIN / TTOU add or remove a worker; TERM stops gracefully, INT and
//!   QUIT at once.
//!
//! Worker state lives here ([`Supervisor::status`]); the dispatcher only
//! knows which worker holds which request.

mod spawn;
mod watch;

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch as watch_channel};

use crate::config::Config;
use crate::dispatch::{self, LinkEnd, Pool, Queue, WorkerLink};
use crate::front::{self, Front};
use crate::sys;

/// Exit code of a worker (and of tandem) when the app can't be imported.
pub const APP_LOAD_ERROR: i32 = 4;
/// Exit code when workers fail to boot for another reason.
pub const WORKER_BOOT_ERROR: i32 = 3;

/// Grace between SIGABRT (stack dump) and SIGKILL for a hung worker.
const DUMP_GRACE: Duration = Duration::from_secs(2);
/// How long stopping workers get to exit before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// A worker that fails sooner than this after starting counts as dying young.
const QUICK_DEATH: Duration = Duration::from_secs(5);

enum Event {
    Ready { pid: u32, version: u16 },
    Exited { pid: u32, status: Option<ExitStatus> },
    Broken { pid: u32, why: String },
    Respawn,
    Reload(String),
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Booting,
    Ready,
    /// Finishing what it holds, then exiting; not replaced.
    Draining,
}

struct Worker {
    generation: u64,
    state: State,
    started: Instant,
    link: Arc<WorkerLink>,
}

/// A worker as an operator sees it.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    pub pid: u32,
    pub generation: u64,
    pub state: State,
    pub served: u64,
    pub rss_bytes: u64,
    /// The request it is busy with, and for how long.
    pub current: Option<(String, Duration)>,
}

/// A reload in progress: the next generation, booting on its own queue.
struct Reload {
    generation: u64,
    queue: Arc<Queue>,
    booting: HashSet<u32>,
}

struct Supervisor {
    config: Arc<Config>,
    pool: Arc<Pool>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    workers: HashMap<u32, Worker>,
    /// The generation new requests go to.
    generation: u64,
    /// Workers the current generation should have (TTIN/TTOU change it).
    target: usize,
    reload: Option<Reload>,
    /// Workers that died young, in a row.
    quick_deaths: u32,
    stopping: bool,
}

struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    ttin: Signal,
    ttou: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU))?,
        })
    }
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
        target: config.workers,
        config: Arc::clone(&config),
        pool: Arc::clone(&pool),
        events_tx,
        events,
        workers: HashMap::new(),
        generation: 1,
        reload: None,
        quick_deaths: 0,
        stopping: false,
    };
    let mut signals = Signals::new()?;

    let booted = tokio::select! {
        code = sup.boot() => code,
        _ = signals.term.recv() => Some(0),
        _ = signals.int.recv() => Some(0),
        _ = signals.quit.recv() => Some(0),
    };
    if let Some(code) = booted {
        sup.stop_workers(Duration::ZERO).await;
        remove_files(&socket_files);
        return Ok(code);
    }

    let (stop_tx, stop_rx) = watch_channel::channel(false);
    for listener in &listeners {
        tracing::info!("listening on {}", listener.url());
    }
    let front = Arc::new(Front::new(Arc::clone(&config), Arc::clone(&pool)));
    front::serve(listeners, front, stop_rx);
    if config.reload {
        sup.watch_files();
    }

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let graceful = loop {
        tokio::select! {
            Some(event) = sup.events.recv() => sup.on_event(event),
            _ = tick.tick() => sup.reap_hung(),
            _ = signals.hup.recv() => sup.start_reload("HUP"),
            _ = signals.ttin.recv() => sup.add_worker(),
            _ = signals.ttou.recv() => sup.remove_worker(),
            _ = signals.term.recv() => break true,
            _ = signals.int.recv() => break false,
            _ = signals.quit.recv() => break false,
        }
    };

    sup.stopping = true;
    let _ = stop_tx.send(true);
    let mut grace = TERM_GRACE;
    if graceful {
        tracing::info!(
            "stopping: finishing in-flight requests (up to {}s)",
            config.graceful_timeout.as_secs()
        );
        let deadline = tokio::time::Instant::now() + config.graceful_timeout;
        while sup.pool.in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "{} requests still in flight after --graceful-timeout",
                    sup.pool.in_flight()
                );
                grace = Duration::ZERO;
                break;
            }
            tokio::select! {
                Some(event) = sup.events.recv() => sup.on_event(event),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = signals.int.recv() => { grace = Duration::ZERO; break }
                _ = signals.quit.recv() => { grace = Duration::ZERO; break }
            }
        }
    } else {
        tracing::info!("stopping now");
        grace = Duration::ZERO;
    }
    sup.stop_workers(grace).await;
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
    /// Starts the first generation and waits until every worker has loaded
    /// the app. Returns an exit code if they can't.
    async fn boot(&mut self) -> Option<i32> {
        let queue = self.pool.current()?;
        for _ in 0..self.target {
            if let Err(e) = self.spawn_worker(&queue) {
                tracing::error!("cannot start a worker with {}: {e}", self.config.app.python.display());
                return Some(WORKER_BOOT_ERROR);
            }
        }
        drop(queue);
        let mut ready = 0;
        while ready < self.target {
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
            "{ready} workers ready, serving '{}' (python: {})",
            self.config.app.target,
            self.config.app.python.display()
        );
        None
    }

    fn spawn_worker(&mut self, queue: &Queue) -> std::io::Result<u32> {
        let started = spawn::start(&self.config, queue.worker_end())?;
        let pid = started.pid;
        let link = Arc::new(WorkerLink::new(pid, &self.pool));
        let (ready_tx, ready_rx) = oneshot::channel();
        let events = self.events_tx.clone();
        let (pool, reader_link) = (Arc::clone(&self.pool), Arc::clone(&link));
        tokio::spawn(async move {
            if let LinkEnd::Broken(why) = dispatch::read_replies(pool, reader_link, started.replies, ready_tx).await {
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
        let worker = Worker {
            generation: queue.generation,
            state: State::Booting,
            started: Instant::now(),
            link,
        };
        self.workers.insert(pid, worker);
        tracing::debug!("started worker {pid} (generation {})", queue.generation);
        Ok(pid)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Ready { pid, version } => self.on_ready(pid, version),
            Event::Exited { pid, status } => self.on_exit(pid, status),
            Event::Broken { pid, why } => {
                tracing::error!("worker {pid} broke the wire protocol ({why}); killing it");
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            Event::Respawn => self.fill(),
            Event::Reload(why) => self.start_reload(&why),
        }
    }

    fn on_ready(&mut self, pid: u32, version: u16) {
        if version != crate::wire::VERSION {
            tracing::error!(
                "worker {pid} speaks wire version {version}, this front {}: is an old tandem installed?",
                crate::wire::VERSION
            );
            let _ = sys::kill(pid, libc::SIGKILL);
            return;
        }
        let Some(w) = self.workers.get_mut(&pid) else { return };
        if w.state == State::Booting {
            w.state = State::Ready;
        }
        tracing::info!(
            "worker {pid} ready in {} ms (generation {})",
            w.started.elapsed().as_millis(),
            w.generation
        );
        let Some(reload) = &mut self.reload else { return };
        reload.booting.remove(&pid);
        if reload.booting.is_empty() {
            self.finish_reload();
        }
    }

    fn on_exit(&mut self, pid: u32, status: Option<ExitStatus>) {
        let Some(worker) = self.workers.remove(&pid) else {
            return;
        };
        if self.stopping {
            return;
        }
        if let Some(reload) = &self.reload {
            if reload.booting.contains(&pid) {
                let why = match status.and_then(|s| s.code()) {
                    Some(APP_LOAD_ERROR) => format!("the new code of '{}' failed to import", self.config.app.target),
                    _ => format!("a new worker exited while booting ({})", describe(status)),
                };
                self.abort_reload(&why);
                return;
            }
        }
        if worker.state == State::Draining || worker.generation != self.generation {
            tracing::info!("worker {pid} (generation {}) has stopped", worker.generation);
            return;
        }
        let code = status.and_then(|s| s.code());
        let retired = code == Some(0) && worker.state == State::Ready;
        if retired {
            tracing::info!("worker {pid} retired; starting a replacement");
            self.quick_deaths = 0;
        } else {
            if worker.state == State::Booting && code == Some(APP_LOAD_ERROR) {
                tracing::error!("worker {pid} could not load '{}'", self.config.app.target);
            } else {
                tracing::warn!("worker {pid} exited: {}", describe(status));
            }
            if worker.state == State::Booting || worker.started.elapsed() < QUICK_DEATH {
                self.quick_deaths += 1;
            } else {
                self.quick_deaths = 0;
            }
        }
        // At once, then 0.1 s doubling to 10 s while workers keep dying young.
        let delay = match self.quick_deaths {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis(100u64 << (n - 2).min(7)).min(Duration::from_secs(10)),
        };
        if delay.is_zero() {
            self.fill();
        } else {
            tracing::warn!("replacing it in {} ms: workers keep dying", delay.as_millis());
            self.later(delay, Event::Respawn);
        }
    }

    fn later(&self, delay: Duration, event: Event) {
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(event);
        });
    }

    /// Workers of the current generation that are not on their way out.
    fn live(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.generation == self.generation && w.state != State::Draining)
            .count()
    }

    /// Starts workers until the current generation has its target.
    fn fill(&mut self) {
        if self.stopping {
            return;
        }
        let Some(queue) = self.pool.current() else { return };
        while self.live() < self.target {
            if let Err(e) = self.spawn_worker(&queue) {
                tracing::error!("cannot start a worker: {e}");
                self.later(Duration::from_secs(1), Event::Respawn);
                return;
            }
        }
    }

    fn add_worker(&mut self) {
        self.target += 1;
        tracing::info!("TTIN: going to {} workers", self.target);
        self.fill();
    }

    fn remove_worker(&mut self) {
        if self.target <= 1 {
            tracing::info!("TTOU: keeping the last worker");
            return;
        }
        self.target -= 1;
        let generation = self.generation;
        let victim = self
            .workers
            .iter_mut()
            .filter(|(_, w)| w.generation == generation && w.state != State::Draining)
            .max_by_key(|(_, w)| w.started);
        if let Some((pid, w)) = victim {
            w.state = State::Draining;
            // The worker finishes its current request, then exits.
            let _ = sys::kill(*pid, libc::SIGTERM);
            tracing::info!(
                "TTOU: going to {} workers; worker {pid} stops after its current request",
                self.target
            );
        }
    }

    /// Boots the next generation of workers on a new queue. Requests keep
    /// going to the current generation until the new one is ready.
    fn start_reload(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        if let Some(reload) = &self.reload {
            tracing::info!("{why}: reload to generation {} already in progress", reload.generation);
            return;
        }
        let generation = self.generation + 1;
        let queue = match self.pool.next_queue(generation) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!("{why}: cannot reload: {e}");
                return;
            }
        };
        tracing::info!(
            "{why}: reloading, booting {} workers of generation {generation}",
            self.target
        );
        let mut booting = HashSet::new();
        for _ in 0..self.target {
            match self.spawn_worker(&queue) {
                Ok(pid) => {
                    booting.insert(pid);
                }
                Err(e) => {
                    tracing::error!("reload: cannot start a worker: {e}");
                    for pid in &booting {
                        let _ = sys::kill(*pid, libc::SIGKILL);
                    }
                    return;
                }
            }
        }
        self.reload = Some(Reload {
            generation,
            queue,
            booting,
        });
    }

    /// Every worker of the new generation is ready: switch to it and let the
    /// old generation drain.
    fn finish_reload(&mut self) {
        let Some(reload) = self.reload.take() else { return };
        let old = self.generation;
        self.generation = reload.generation;
        self.pool.switch(reload.queue);
        for w in self.workers.values_mut().filter(|w| w.generation < reload.generation) {
            // They serve what is already queued for them, then see the old
            // queue close and exit.
            w.state = State::Draining;
        }
        self.quick_deaths = 0;
        tracing::info!(
            "reload complete: generation {} serving, generation {old} draining",
            self.generation
        );
    }

    fn abort_reload(&mut self, why: &str) {
        let Some(reload) = self.reload.take() else { return };
        for pid in &reload.booting {
            let _ = sys::kill(*pid, libc::SIGKILL);
        }
        for w in self.workers.values_mut().filter(|w| w.generation == reload.generation) {
            w.state = State::Draining;
        }
        tracing::error!("reload failed: {why}; generation {} keeps serving", self.generation);
    }

    fn watch_files(&self) {
        let mut roots = vec![std::env::current_dir().unwrap_or_else(|_| ".".into())];
        roots.extend(self.config.app.pythonpath.iter().cloned());
        let events = self.events_tx.clone();
        tracing::info!("--reload: watching Python files under {}", roots[0].display());
        tokio::spawn(watch::watch(roots, move |path| {
            events
                .send(Event::Reload(format!("{} changed", path.display())))
                .is_ok()
        }));
    }

    /// Fails requests whose worker has been silent past `--timeout`, dumps
    /// that worker's Python stack (SIGABRT, caught by faulthandler) and
    /// kills it.
    fn reap_hung(&mut self) {
        let Some(timeout) = self.config.timeout else { return };
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

    /// Every worker as an operator sees it.
    pub fn status(&self) -> Vec<WorkerStatus> {
        let busy = self.pool.busy();
        let mut all: Vec<_> = self
            .workers
            .iter()
            .map(|(&pid, w)| WorkerStatus {
                pid,
                generation: w.generation,
                state: w.state,
                served: w.link.served(),
                rss_bytes: sys::resident_bytes(pid).unwrap_or(0),
                current: busy.get(&pid).cloned(),
            })
            .collect();
        all.sort_by_key(|w| w.pid);
        all
    }

    /// Closes the queue so idle workers exit, asks busy ones to finish
    /// (SIGTERM), and kills whatever is left after `grace`.
    async fn stop_workers(&mut self, grace: Duration) {
        self.stopping = true;
        self.reload = None;
        self.pool.close();
        for pid in self.workers.keys() {
            let _ = sys::kill(*pid, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace.max(Duration::from_millis(500));
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Exited { pid, .. })) => {
                    self.workers.remove(&pid);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for status in self.status() {
            tracing::warn!("worker {} did not stop; killing it", status.pid);
            let _ = sys::kill(status.pid, libc::SIGKILL);
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
