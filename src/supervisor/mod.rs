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
//!   generation keeps serving; every reload also has `front::Tls` read
//!   the certificate again;
//! - TTIN / TTOU add or remove a worker; TERM stops gracefully, INT and
//!   QUIT at once;
//! - USR2 hands the listening sockets to a new tandem and stops once it
//!   serves; the control socket asks for the same things as the signals
//!   (`ops` owns both, with the metrics listener, pid file and sd_notify).
//!
//! Worker state lives here ([`Supervisor::status`]); the dispatcher only
//! knows which worker holds which request. `run` is the master's life from
//! start to exit; `workers` starts, replaces and stops workers; `reload`,
//! `preload`, `lost`, `spawn`, `watch` and `ops` the rest named above.

mod lost;
mod ops;
mod preload;
mod reload;
mod run;
mod spawn;
mod watch;
mod workers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::Config;
use crate::dispatch::{Pool, Queue, WorkerLink};
use crate::front;

pub use ops::UPGRADE_FROM_ENV;
pub use run::run;
use workers::describe;

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
    Ready {
        pid: u32,
        version: u16,
    },
    Exited {
        pid: u32,
        status: Option<ExitStatus>,
    },
    Broken {
        pid: u32,
        why: String,
    },
    /// Look for requests a worker of `generation` read and died holding.
    Recover {
        generation: u64,
        died_at: u64,
    },
    /// A worker's reply socket closed (it exited or is exiting), and
    /// every frame it sent has been handled.
    LinkClosed {
        pid: u32,
        generation: u64,
    },
    Respawn,
    Reload(String),
    /// `--preload`: the template of `generation` has imported the app.
    TemplateReady {
        generation: u64,
    },
    TemplateExited {
        generation: u64,
        status: Option<ExitStatus>,
    },
    /// `--preload`: the template forked a worker for us.
    Forked {
        generation: u64,
        pid: u32,
    },
    /// The new master started by USR2 exited.
    SuccessorExited {
        pid: u32,
        status: Option<ExitStatus>,
    },
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
    /// Workers of the new generation that are ready so far.
    ready: usize,
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
    /// `--preload`: one template per generation that still has workers.
    templates: HashMap<u64, preload::Template>,
    /// `--preload`: reply sockets of workers asked for and not yet forked.
    pending_forks: HashMap<u64, VecDeque<OwnedFd>>,
    /// `--preload`: exits reported before the fork that made the worker.
    early_exits: HashMap<u32, Option<ExitStatus>>,
    /// Workers whose exit or end of replies has been seen, not yet both.
    endings: HashMap<u32, lost::Ending>,
    /// Workers that died young, in a row.
    quick_deaths: u32,
    stopping: bool,
    /// Workers killed for `--timeout`, until their exit is seen.
    timed_out: HashSet<u32>,
    ops: ops::Ops,
    /// `--certfile`: read again with every reload.
    tls: Option<Arc<front::Tls>>,
}
