//! The workers' lives as the supervisor sees them: booting the first
//! generation, starting, registering and replacing workers (with back-off
//! for workers that die young), TTIN/TTOU, the `--timeout` reaper, the
//! status an operator sees, and stopping them all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{
    ops, spawn, Event, State, Supervisor, Worker, WorkerStatus, APP_LOAD_ERROR, DUMP_GRACE, QUICK_DEATH,
    WORKER_BOOT_ERROR,
};
use crate::config::Config;
use crate::dispatch::{self, LinkEnd, Pool, Queue, WorkerLink};
use crate::sys;

impl Supervisor {
    /// A supervisor with no workers yet, at generation 1.
    pub(super) fn new(config: Arc<Config>, pool: Arc<Pool>) -> Supervisor {
        let (events_tx, events) = mpsc::unbounded_channel();
        Supervisor {
            target: config.workers,
            config,
            pool,
            events_tx,
            events,
            workers: HashMap::new(),
            generation: 1,
            reload: None,
            templates: HashMap::new(),
            pending_forks: HashMap::new(),
            early_exits: HashMap::new(),
            endings: HashMap::new(),
            quick_deaths: 0,
            stopping: false,
            timed_out: HashSet::new(),
            ops: ops::Ops::default(),
            tls: None,
        }
    }

    /// Starts the first generation and waits until every worker has loaded
    /// the app. Returns an exit code if they can't.
    pub(super) async fn boot(&mut self) -> Option<i32> {
        if !self.config.has_app() {
            tracing::info!("no app: serving static and proxy routes only, without workers");
            return None;
        }
        if self.config.preload {
            if let Some(code) = self.boot_template().await {
                return Some(code);
            }
        }
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
                Event::Exited { pid, status } if self.workers.contains_key(&pid) => {
                    self.workers.remove(&pid);
                    return Some(self.boot_failure(&format!("worker {pid}"), status));
                }
                Event::TemplateExited { status, .. } => return Some(self.boot_failure("the template", status)),
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

    pub(super) fn boot_failure(&self, who: &str, status: Option<ExitStatus>) -> i32 {
        if status.and_then(|s| s.code()) == Some(APP_LOAD_ERROR) {
            tracing::error!("failed to load application '{}' (see the traceback above)", self.config.app.target);
            APP_LOAD_ERROR
        } else {
            tracing::error!("{who} failed to boot: {}", describe(status));
            WORKER_BOOT_ERROR
        }
    }

    /// Starts a worker of `queue`'s generation: a new process, or with
    /// `--preload` a fork of that generation's template.
    pub(super) fn spawn_worker(&mut self, queue: &Queue) -> std::io::Result<()> {
        if self.config.preload {
            return self.fork_worker(queue);
        }
        let (started, replies) = spawn::start(&self.config, queue.worker_end())?;
        let pid = started.pid;
        let events = self.events_tx.clone();
        let mut child = started.child;
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = events.send(Event::Exited { pid, status });
        });
        self.register(pid, queue.generation, replies);
        Ok(())
    }

    /// Starts watching a new worker: its replies and its readiness.
    pub(super) fn register(&mut self, pid: u32, generation: u64, replies: OwnedFd) {
        let link = Arc::new(WorkerLink::new(pid, generation, &self.pool));
        let (ready_tx, ready_rx) = oneshot::channel();
        let events = self.events_tx.clone();
        let (pool, reader_link) = (Arc::clone(&self.pool), Arc::clone(&link));
        tokio::spawn(async move {
            let end = dispatch::read_replies(pool, reader_link, replies, ready_tx).await;
            if let LinkEnd::Broken(why) = end {
                let _ = events.send(Event::Broken { pid, why });
            }
            // Either way nothing more will be read from this worker.
            let _ = events.send(Event::LinkClosed { pid, generation });
        });
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            if let Ok(version) = ready_rx.await {
                let _ = events.send(Event::Ready { pid, version });
            }
        });
        let worker = Worker { generation, state: State::Booting, started: Instant::now(), link };
        self.workers.insert(pid, worker);
        tracing::debug!("started worker {pid} (generation {generation})");
    }

    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::Ready { pid, version } => self.on_ready(pid, version),
            Event::Exited { pid, status } => self.on_exit(pid, status),
            Event::Broken { pid, why } => {
                tracing::error!("worker {pid} broke the wire protocol ({why}); killing it");
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            Event::LinkClosed { pid, generation } => {
                self.link_ended(pid, generation);
                self.on_link_closed(pid);
            }
            Event::Recover { generation, died_at } => self.recover(generation, died_at, false),
            Event::Respawn => self.fill(),
            Event::Reload(why) => self.start_reload(&why),
            Event::TemplateReady { generation } => self.on_template_ready(generation),
            Event::TemplateExited { generation, status } => self.on_template_exit(generation, status),
            Event::Forked { generation, pid } => self.on_forked(generation, pid),
            Event::SuccessorExited { pid, status } => self.on_successor_exit(pid, status),
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
        tracing::info!("worker {pid} ready in {} ms (generation {})", w.started.elapsed().as_millis(), w.generation);
        let generation = w.generation;
        let Some(reload) = &mut self.reload else { return };
        if reload.generation == generation {
            reload.ready += 1;
            if reload.ready >= self.target {
                self.finish_reload();
            }
        }
    }

    pub(super) fn on_exit(&mut self, pid: u32, status: Option<ExitStatus>) {
        let Some(worker) = self.workers.remove(&pid) else {
            self.note_early_exit(pid, status);
            return;
        };
        let replace_after = self.replacement_delay(pid, &worker, status);
        // The replacement starts once the dead worker's replies are all in
        // and its unacknowledged requests (if any) are queued again, so a
        // new worker can't be mistaken for one that read them.
        self.process_ended(pid, worker.generation, status, replace_after);
        self.retire_idle_templates();
    }

    /// Whether (and after how long) a worker that exited is replaced, with
    /// the log line that says why it exited.
    fn replacement_delay(&mut self, pid: u32, worker: &Worker, status: Option<ExitStatus>) -> Option<Duration> {
        if self.stopping {
            return None;
        }
        if let Some(reload) = &self.reload {
            if reload.generation == worker.generation && worker.state == State::Booting {
                let why = match status.and_then(|s| s.code()) {
                    Some(APP_LOAD_ERROR) => format!("the new code of '{}' failed to import", self.config.app.target),
                    _ => format!("a new worker exited while booting ({})", describe(status)),
                };
                self.abort_reload(&why);
                return None;
            }
        }
        if worker.state == State::Draining || worker.generation != self.generation {
            tracing::info!("worker {pid} (generation {}) has stopped", worker.generation);
            return None;
        }
        let code = status.and_then(|s| s.code());
        let retired = code == Some(0) && worker.state == State::Ready;
        self.count_restart(pid, retired, worker.link.served());
        if retired {
            tracing::info!("worker {pid} retired; starting a replacement");
            self.quick_deaths = 0;
        } else {
            if worker.state == State::Booting && code == Some(APP_LOAD_ERROR) {
                tracing::error!("worker {pid} could not load '{}'", self.config.app.target);
            } else {
                tracing::warn!("worker {pid} exited: {}", describe(status));
            }
            // Dying young without serving anything is what a crash loop
            // looks like; a worker that served and then was killed is not.
            let young = worker.started.elapsed() < QUICK_DEATH && worker.link.served() == 0;
            if worker.state == State::Booting || young {
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
        if !delay.is_zero() {
            tracing::warn!("replacing it in {} ms: workers keep dying", delay.as_millis());
        }
        Some(delay)
    }

    /// Starts the replacement of a worker that exited.
    pub(super) fn replace(&mut self, delay: Duration) {
        if delay.is_zero() {
            self.fill();
        } else {
            self.later(delay, Event::Respawn);
        }
    }

    pub(super) fn later(&self, delay: Duration, event: Event) {
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(event);
        });
    }

    /// Workers of the current generation that are not on their way out.
    fn live(&self) -> usize {
        let forking = self.pending_forks.get(&self.generation).map_or(0, VecDeque::len);
        let running =
            self.workers.values().filter(|w| w.generation == self.generation && w.state != State::Draining).count();
        forking + running
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

    pub(super) fn add_worker(&mut self, why: &str) {
        if !self.config.has_app() {
            tracing::info!("{why}: no app, no workers to add");
            return;
        }
        self.target += 1;
        tracing::info!("{why}: going to {} workers", self.target);
        self.fill();
    }

    pub(super) fn remove_worker(&mut self, why: &str) {
        if self.target <= 1 {
            tracing::info!("{why}: keeping the last worker");
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
            tracing::info!("{why}: going to {} workers; worker {pid} stops after its current request", self.target);
        }
    }

    /// Fails requests whose worker has been silent past `--timeout`, dumps
    /// that worker's Python stack (SIGABRT, caught by faulthandler) and
    /// kills it.
    pub(super) fn reap_hung(&mut self) {
        let Some(timeout) = self.config.timeout else { return };
        for (pid, label) in self.pool.reap_hung(timeout) {
            tracing::error!(
                "worker {pid} timed out after {}s on {label}: dumping its stack and killing it",
                timeout.as_secs()
            );
            self.timed_out.insert(pid);
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
    pub(super) async fn stop_workers(&mut self, grace: Duration) {
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
        for template in self.templates.values() {
            let _ = sys::kill(template.pid, libc::SIGKILL);
        }
        self.templates.clear();
    }
}

/// "exit code 1", "killed by signal 9 (SIGKILL)".
pub(super) fn describe(status: Option<ExitStatus>) -> String {
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::sync::Arc;
    use std::time::Instant;

    use super::super::{State, Supervisor, Worker};
    use super::describe;
    use crate::config::{Config, Invocation};
    use crate::dispatch::{Pool, WorkerLink};

    fn supervisor(pool: Arc<Pool>) -> Supervisor {
        let Ok(Invocation::Run(config)) = Config::from_args(vec!["app:app".into()], "python3".into()) else {
            panic!("a minimal command line must parse");
        };
        Supervisor::new(Arc::new(*config), pool)
    }

    #[test]
    fn status_reports_each_worker() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let pool = Pool::new(16).unwrap();
            let mut sup = supervisor(Arc::clone(&pool));
            // This test process stands in for a worker: its RSS is real.
            let me = std::process::id();
            let link = Arc::new(WorkerLink::new(me, 3, &pool));
            sup.workers.insert(me, Worker { generation: 3, state: State::Draining, started: Instant::now(), link });
            let status = sup.status();
            assert_eq!(status.len(), 1);
            let w = &status[0];
            assert_eq!((w.pid, w.generation, w.state, w.served), (me, 3, State::Draining, 0));
            assert!(w.rss_bytes > 0);
            assert!(w.current.is_none());
        });
    }

    #[test]
    fn exit_statuses_read_like_a_log_line() {
        assert_eq!(describe(Some(ExitStatus::from_raw(4 << 8))), "exit code 4");
        assert_eq!(describe(Some(ExitStatus::from_raw(9))), "killed by signal 9 (SIGKILL, e.g. the OOM killer)");
        assert_eq!(describe(None), "unknown status");
    }
}
