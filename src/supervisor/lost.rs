//! Requests a worker read from its generation's queue and died holding
//! before it said `Took` (a crash, kill -9 or the OOM killer in the few
//! microseconds between the two). The app never saw them, so they can be
//! queued again; the only question is which requests those are, since the
//! queue can't say who read what.
//!
//! A worker's death is looked at once both its exit status and the end of
//! its reply stream are in (so every `Took` it sent has been counted). A
//! clean exit (code 0: retired or drained) reads nothing it doesn't answer,
//! so there is nothing to look for. Otherwise, if no other worker of the
//! generation is alive, every read and unacknowledged request was the dead
//! worker's: all are queued again at once. If other workers may have read
//! requests they have not acknowledged yet, the supervisor waits a moment
//! for their `Took`s; what is still unacknowledged then is queued again if
//! its method is idempotent, and answered 502 otherwise, so a POST never
//! runs twice.

use std::collections::VecDeque;
use std::process::ExitStatus;
use std::time::Duration;

use super::{Event, Supervisor};

/// How long other workers get to acknowledge what they read.
const GRACE: Duration = Duration::from_secs(1);

/// What is known so far about a worker's end.
#[derive(Default)]
pub(super) struct Ending {
    /// Its reply stream has been read to the end.
    link_closed: bool,
    /// How it exited, once known (`Some(None)`: it exited, status unknown).
    status: Option<Option<ExitStatus>>,
    /// When to start its replacement, if it gets one.
    replace_after: Option<Duration>,
}

impl Supervisor {
    /// The worker's reply stream has ended and every frame was handled.
    pub(super) fn link_ended(&mut self, pid: u32, generation: u64) {
        let ending = self.endings.entry(pid).or_default();
        ending.link_closed = true;
        self.maybe_look(pid, generation);
    }

    /// The worker's process is gone; `replace_after` says when to start
    /// its replacement (`None`: it gets none).
    pub(super) fn process_ended(
        &mut self,
        pid: u32,
        generation: u64,
        status: Option<ExitStatus>,
        replace_after: Option<Duration>,
    ) {
        let ending = self.endings.entry(pid).or_default();
        ending.status = Some(status);
        ending.replace_after = replace_after;
        self.maybe_look(pid, generation);
    }

    fn maybe_look(&mut self, pid: u32, generation: u64) {
        let complete = self.endings.get(&pid).is_some_and(|e| e.link_closed && e.status.is_some());
        if !complete {
            return;
        }
        let Some(Ending { status: Some(status), replace_after, .. }) = self.endings.remove(&pid) else { return };
        if !self.stopping && status.is_none_or(|s| s.code() != Some(0)) {
            self.look_for_lost(pid, generation);
        }
        if let Some(delay) = replace_after {
            self.replace(delay);
        }
    }

    fn look_for_lost(&mut self, pid: u32, generation: u64) {
        let died_at = self.pool.now_ms();
        let others = self.workers.iter().any(|(&p, w)| p != pid && w.generation == generation)
            || self.pending_forks.get(&generation).is_some_and(|q: &VecDeque<_>| !q.is_empty());
        if others {
            self.later(GRACE, Event::Recover { generation, died_at });
        } else {
            self.recover(generation, died_at, true);
        }
    }

    /// Queues again (or fails) what a dead worker of `generation` read and
    /// never acknowledged. `certain`: no other worker could have read them.
    pub(super) fn recover(&mut self, generation: u64, died_at: u64, certain: bool) {
        let gone = generation != self.generation
            && self.reload.as_ref().is_none_or(|r| r.generation != generation)
            && !self.workers.values().any(|w| w.generation == generation);
        let (requeued, failed) = self.pool.recover(generation, died_at, gone, certain || gone);
        if requeued + failed > 0 {
            tracing::warn!(
                "{} requests read by a worker that died before acknowledging them: {requeued} queued again, {failed} answered 502",
                requeued + failed
            );
        }
    }
}
