//! Generations of workers: HUP / `--reload` reloads, and the `--preload`
//! templates that fork each generation's workers. A reload also reads the
//! TLS certificate again (`front::Tls::reload`), for new connections.
//!
//! A reload boots a whole new generation on a new queue (with `--preload`,
//! a new template first, which imports the new code). Only when every new
//! worker is ready does the pool switch queues; the old queue then closes
//! and the old workers drain and exit. Any failure before that point (the
//! new code doesn't import, a new worker dies) calls the reload off and the
//! old generation never stops serving.

use std::collections::VecDeque;
use std::process::ExitStatus;
use std::sync::Arc;

use super::{describe, preload, watch, Event, Reload, State, Supervisor, APP_LOAD_ERROR};
use crate::dispatch::Queue;
use crate::sys;

impl Supervisor {
    /// Boots the next generation. Requests keep going to the current one
    /// until the new one is ready.
    pub(super) fn start_reload(&mut self, why: &str) {
        if self.stopping || !self.config.has_app() {
            return;
        }
        if let Some(tls) = &self.tls {
            tls.reload(why);
        }
        if let Some(reload) = &self.reload {
            tracing::info!("{why}: reload to generation {} already in progress", reload.generation);
            return;
        }
        let generation = self.generation.max(self.templates.keys().copied().max().unwrap_or(0)) + 1;
        let queue = match self.pool.next_queue(generation) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!("{why}: cannot reload: {e}");
                return;
            }
        };
        tracing::info!("{why}: reloading, booting {} workers of generation {generation}", self.target);
        crate::service::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading", sys::monotonic_micros()));
        self.reload = Some(Reload { generation, queue: Arc::clone(&queue), ready: 0 });
        if self.config.preload {
            // Workers are forked once the new template has imported the app.
            match preload::Template::start(&self.config, generation, &self.events_tx) {
                Ok(t) => {
                    self.templates.insert(generation, t);
                }
                Err(e) => self.abort_reload(&format!("cannot start a template: {e}")),
            }
            return;
        }
        for _ in 0..self.target {
            if let Err(e) = self.spawn_worker(&queue) {
                self.abort_reload(&format!("cannot start a worker: {e}"));
                return;
            }
        }
    }

    /// Every worker of the new generation is ready: switch to it and let the
    /// old generation drain.
    pub(super) fn finish_reload(&mut self) {
        let Some(reload) = self.reload.take() else { return };
        let old = self.generation;
        self.generation = reload.generation;
        self.pool.switch(reload.queue);
        let mut replaced = 0;
        for w in self.workers.values_mut().filter(|w| w.generation < reload.generation) {
            // They serve what is already queued for them, then see the old
            // queue close and exit.
            w.state = State::Draining;
            replaced += 1;
        }
        crate::metrics::METRICS.restart(crate::metrics::RestartReason::Reload, replaced);
        crate::service::notify(&format!("READY=1\nSTATUS=serving generation {}", self.generation));
        self.quick_deaths = 0;
        self.retire_idle_templates();
        tracing::info!("reload complete: generation {} serving, generation {old} draining", self.generation);
    }

    pub(super) fn abort_reload(&mut self, why: &str) {
        let Some(reload) = self.reload.take() else { return };
        for (pid, w) in self.workers.iter_mut().filter(|(_, w)| w.generation == reload.generation) {
            w.state = State::Draining;
            let _ = sys::kill(*pid, libc::SIGKILL);
        }
        if let Some(template) = self.templates.remove(&reload.generation) {
            let _ = sys::kill(template.pid, libc::SIGKILL);
        }
        tracing::error!("reload failed: {why}; generation {} keeps serving", self.generation);
        crate::service::notify(&format!("READY=1\nSTATUS=reload failed, generation {} serving", self.generation));
    }

    pub(super) fn watch_files(&self) {
        let mut roots = vec![std::env::current_dir().unwrap_or_else(|_| ".".into())];
        roots.extend(self.config.app.pythonpath.iter().cloned());
        let events = self.events_tx.clone();
        tracing::info!("--reload: watching Python files under {}", roots[0].display());
        tokio::spawn(watch::watch(roots, move |path| {
            events.send(Event::Reload(format!("{} changed", path.display()))).is_ok()
        }));
    }

    /// `--preload`: starts the first template and waits for it to import the app.
    pub(super) async fn boot_template(&mut self) -> Option<i32> {
        match preload::Template::start(&self.config, 1, &self.events_tx) {
            Ok(t) => self.templates.insert(1, t),
            Err(e) => {
                tracing::error!("cannot start the --preload template: {e}");
                return Some(super::WORKER_BOOT_ERROR);
            }
        };
        loop {
            match self.events.recv().await? {
                Event::TemplateReady { .. } => return None,
                Event::TemplateExited { status, .. } => return Some(self.boot_failure("the template", status)),
                other => self.on_event(other),
            }
        }
    }

    /// `--preload`: asks the generation's template for a worker; it joins
    /// the supervisor's view when the template says `forked`.
    pub(super) fn fork_worker(&mut self, queue: &Queue) -> std::io::Result<()> {
        let template = self
            .templates
            .get(&queue.generation)
            .ok_or_else(|| std::io::Error::other("no template for this generation"))?;
        let (front_end, worker_end) = sys::socketpair(sys::PairKind::Stream)?;
        template.fork(queue.worker_end(), &worker_end, super::spawn::max_requests(&self.config))?;
        self.pending_forks.entry(queue.generation).or_default().push_back(front_end);
        Ok(())
    }

    pub(super) fn on_forked(&mut self, generation: u64, pid: u32) {
        let Some(replies) = self.pending_forks.get_mut(&generation).and_then(VecDeque::pop_front) else {
            tracing::error!("template of generation {generation} forked {pid} unasked; killing it");
            let _ = sys::kill(pid, libc::SIGKILL);
            return;
        };
        self.register(pid, generation, replies);
        let called_off =
            generation > self.generation && self.reload.as_ref().is_none_or(|r| r.generation != generation);
        if called_off {
            let _ = sys::kill(pid, libc::SIGKILL);
            if let Some(w) = self.workers.get_mut(&pid) {
                w.state = State::Draining;
            }
        }
        if let Some(status) = self.early_exits.remove(&pid) {
            self.on_exit(pid, status);
        }
    }

    /// An exit reported for a pid we don't know yet: its `forked` report
    /// is still on the way.
    pub(super) fn note_early_exit(&mut self, pid: u32, status: Option<ExitStatus>) {
        if self.pending_forks.values().any(|q| !q.is_empty()) {
            self.early_exits.insert(pid, status);
        }
    }

    pub(super) fn on_template_ready(&mut self, generation: u64) {
        let Some(reload) = &self.reload else { return };
        if reload.generation != generation {
            return;
        }
        let queue = Arc::clone(&reload.queue);
        for _ in 0..self.target {
            if let Err(e) = self.fork_worker(&queue) {
                self.abort_reload(&format!("cannot fork a worker: {e}"));
                return;
            }
        }
    }

    pub(super) fn on_template_exit(&mut self, generation: u64, status: Option<ExitStatus>) {
        let known = self.templates.remove(&generation).is_some();
        self.pending_forks.remove(&generation);
        if self.stopping || !known {
            return;
        }
        if self.reload.as_ref().is_some_and(|r| r.generation == generation) {
            let why = match status.and_then(|s| s.code()) {
                Some(APP_LOAD_ERROR) => format!("the new code of '{}' failed to import", self.config.app.target),
                _ => format!("the new template exited ({})", describe(status)),
            };
            self.abort_reload(&why);
        } else if generation == self.generation {
            tracing::error!("the --preload template exited ({}); starting a new generation", describe(status));
            self.start_reload("template lost");
        }
    }

    /// A forked worker whose template is gone can't be reaped by us; its
    /// closed reply socket is the last we hear of it.
    pub(super) fn on_link_closed(&mut self, pid: u32) {
        let orphan =
            self.config.preload && self.workers.get(&pid).is_some_and(|w| !self.templates.contains_key(&w.generation));
        if orphan {
            self.on_exit(pid, None);
        }
    }

    /// Lets go of templates of past generations once their workers are gone
    /// (closing its control socket makes a template exit).
    pub(super) fn retire_idle_templates(&mut self) {
        let current = self.generation;
        let next = self.reload.as_ref().map(|r| r.generation);
        let workers = &self.workers;
        self.templates.retain(|&generation, _| {
            generation == current || Some(generation) == next || workers.values().any(|w| w.generation == generation)
        });
    }
}
