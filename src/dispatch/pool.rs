//! The pool's request queue and its table of pending requests.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::queue::{Job, Queue, Refused};
use super::DispatchError;
use crate::wire::{self, Frame, Message, RequestHead, ResponseHead};

/// Replies buffered between a worker's reply reader and the request that
/// waits for them. Small: a full channel is what holds a streaming worker
/// back when its client is slow.
const REPLY_CHANNEL: usize = 16;

/// The replies for one request that one read from a worker's socket
/// brought: delivered together, so the front sees a response that arrived
/// whole as whole (and is woken once for it).
pub type Replies = Vec<Reply>;

/// What the app said, in order: any `Hints`, one `Head`, then body pieces,
/// then `End`; or `Failed` at any point.
#[derive(Debug)]
pub enum Reply {
    /// Headers for a `103 Early Hints` response.
    Hints(Vec<(Bytes, Bytes)>),
    /// The response head, and the pid of the worker that sent it.
    Head {
        head: ResponseHead,
        worker: u32,
    },
    Body(Bytes),
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    End,
    Failed(DispatchError),
}

/// One live worker process as the dispatcher sees it.
#[derive(Debug)]
pub struct WorkerLink {
    pub pid: u32,
    pub generation: u64,
    /// Milliseconds since the pool started at which the worker last sent a
    /// frame; a busy worker silent for longer than the timeout is hung.
    last_seen: AtomicU64,
    /// Requests it has finished.
    served: AtomicU64,
}

impl WorkerLink {
    pub fn new(pid: u32, generation: u64, pool: &Pool) -> WorkerLink {
        let link = WorkerLink { pid, generation, last_seen: AtomicU64::new(0), served: AtomicU64::new(0) };
        link.seen(pool);
        link
    }

    /// Requests this worker has finished.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(super) fn finished_one(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn seen(&self, pool: &Pool) {
        self.last_seen.store(pool.now_ms(), Ordering::Relaxed);
    }
}

struct Pending {
    replies: mpsc::Sender<Replies>,
    /// Method and path, for log lines about this request.
    label: String,
    worker: Option<(Arc<WorkerLink>, u64)>,
    /// The generation whose queue it was put in, and when (ms).
    generation: u64,
    queued_at: u64,
    /// The frame, kept until a worker says `Took`, to queue it again if the
    /// worker that read it died first. `None` when the body travels as a
    /// descriptor (which went with the dead worker).
    frame: Option<Bytes>,
    /// Its method may be repeated without changing the outcome (RFC 9110).
    idempotent: bool,
}

/// One app's workers, seen from the front: a FIFO queue in, replies out.
///
/// Requests go into the current generation's [`Queue`]; a reload builds the
/// next generation's queue, boots its workers on it and then [`switch`]es,
/// which lets the old generation drain and exit.
///
/// [`switch`]: Pool::switch
pub struct Pool {
    current: RwLock<Option<Arc<Queue>>>,
    refused: mpsc::UnboundedSender<Refused>,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Each generation's queue, while it is alive.
    queues: Mutex<HashMap<u64, std::sync::Weak<Queue>>>,
    /// The highest request id each generation's workers have taken: the
    /// queue is FIFO, so every request queued before it has been read.
    max_taken: Mutex<HashMap<u64, u64>>,
    /// Requests submitted but not yet taken by a worker.
    waiting: AtomicUsize,
    backlog: usize,
    next_id: AtomicU64,
    epoch: Instant,
}

impl Pool {
    /// Creates the pool with the first generation's queue. Must be called
    /// inside the runtime.
    pub fn new(backlog: usize) -> std::io::Result<Arc<Pool>> {
        let (refused, mut refusals) = mpsc::unbounded_channel::<Refused>();
        let first = Arc::new(Queue::new(1, refused.clone())?);
        let first_weak = Arc::downgrade(&first);
        let pool = Arc::new(Pool {
            current: RwLock::new(Some(first)),
            refused,
            pending: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::from([(1, first_weak)])),
            max_taken: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            backlog,
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            while let Some((id, err)) = refusals.recv().await {
                tracing::error!("could not queue request for workers: {err}");
                match weak.upgrade() {
                    Some(pool) => pool.fail(id, DispatchError::Internal(err.to_string())),
                    None => return,
                }
            }
        });
        Ok(pool)
    }

    /// The queue new requests go to (`None` once the pool is closed).
    pub fn current(&self) -> Option<Arc<Queue>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A queue for the next generation of workers; requests go to it only
    /// after [`Pool::switch`].
    pub fn next_queue(&self, generation: u64) -> std::io::Result<Arc<Queue>> {
        let queue = Arc::new(Queue::new(generation, self.refused.clone())?);
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|_, q| q.strong_count() > 0);
        queues.insert(generation, Arc::downgrade(&queue));
        Ok(queue)
    }

    /// Sends new requests to `queue` from now on. The old queue closes once
    /// requests already handed to it are in its socket, so its workers serve
    /// what is queued there and then see end-of-file.
    pub fn switch(&self, queue: Arc<Queue>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(queue);
    }

    /// Stops taking requests; every generation drains and its workers exit.
    pub fn close(&self) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Queues a request. The body descriptor, if any, is handed to the
    /// worker with it.
    pub fn submit(
        self: &Arc<Self>,
        label: String,
        head: RequestHead,
        body: Option<OwnedFd>,
    ) -> Result<Call, DispatchError> {
        // A place in the backlog is taken in one step: checked first and
        // counted later, two requests on two front threads could both see
        // the last free place, and --backlog would not hold.
        let backlog = self.backlog;
        let taken = self.waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < backlog).then_some(n + 1));
        if let Err(waiting) = taken {
            return Err(DispatchError::QueueFull(waiting));
        }
        let Some(queue) = self.current() else {
            self.one_less_waiting();
            return Err(DispatchError::Closed);
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let idempotent = matches!(head.method.as_ref(), b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE");
        let mut buf = BytesMut::with_capacity(512);
        if let Err(e) = wire::encode(&Frame::new(id, Message::Request(Box::new(head))), &mut buf) {
            self.one_less_waiting();
            return Err(DispatchError::Internal(e.to_string()));
        }
        let (tx, rx) = mpsc::channel(REPLY_CHANNEL);
        let frame = buf.freeze();
        let pending = Pending {
            replies: tx,
            label,
            worker: None,
            generation: queue.generation,
            queued_at: self.now_ms(),
            frame: body.is_none().then(|| frame.clone()),
            idempotent,
        };
        self.lock().insert(id, pending);
        if let Err((_, e)) = queue.send(Job { id, frame, body }) {
            self.fail(id, DispatchError::Internal(e.to_string()));
            return Err(DispatchError::Internal(format!("queueing request: {e}")));
        }
        Ok(Call { id, replies: rx, arrived: VecDeque::new(), pool: Arc::clone(self) })
    }

    /// Requests submitted and not yet taken by a worker (the queue depth).
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Requests pending (queued or running).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// What each busy worker is working on, and for how long.
    pub fn busy(&self) -> HashMap<u32, (String, Duration)> {
        let now = self.now_ms();
        self.lock()
            .values()
            .filter_map(|p| {
                let (worker, took_at) = p.worker.as_ref()?;
                Some((worker.pid, (p.label.clone(), Duration::from_millis(now.saturating_sub(*took_at)))))
            })
            .collect()
    }

    /// Records that `worker` took request `id`; returns where its replies go.
    pub(super) fn took(&self, id: u64, worker: &Arc<WorkerLink>) -> Option<mpsc::Sender<Replies>> {
        self.one_less_waiting();
        let now = self.now_ms();
        let mut pending = self.lock();
        {
            let mut max = self.max_taken.lock().unwrap_or_else(|e| e.into_inner());
            let top = max.entry(worker.generation).or_insert(0);
            *top = (*top).max(id);
        }
        let entry = pending.get_mut(&id)?;
        if entry.worker.is_some() {
            // Queued again after its first reader was thought lost, and that
            // reader answered after all: the first one keeps the client.
            tracing::warn!("request {id} taken twice (by worker {} too)", worker.pid);
            return None;
        }
        crate::metrics::METRICS.queue_wait(Duration::from_millis(now.saturating_sub(entry.queued_at)));
        entry.worker = Some((Arc::clone(worker), now));
        entry.frame = None;
        Some(entry.replies.clone())
    }

    /// Milliseconds since the pool started, the clock of [`Pool::recover`].
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// After a worker of `generation` died at `died_at`: finds requests it
    /// read from the queue but never acknowledged (it died between the two,
    /// so the app never saw them) and queues them again, or fails them with
    /// 502 if their body went with it. `gone`: no worker of that generation
    /// is left to read its queue, so nothing still in it will be read.
    /// `certain`: no live worker can have read them, so they are queued
    /// again whatever their method; otherwise only idempotent ones are, the
    /// rest get 502. Returns (requeued, failed).
    pub fn recover(&self, generation: u64, died_at: u64, gone: bool, certain: bool) -> (usize, usize) {
        let queue = self.queues.lock().unwrap_or_else(|e| e.into_inner()).get(&generation).and_then(|q| q.upgrade());
        let drained = gone || queue.as_ref().is_none_or(|q| q.drained());
        let max_taken = self.max_taken.lock().unwrap_or_else(|e| e.into_inner()).get(&generation).copied().unwrap_or(0);
        let lost: Vec<u64> = self
            .lock()
            .iter()
            .filter(|(id, p)| {
                p.worker.is_none()
                    && p.generation == generation
                    && (gone || p.queued_at <= died_at)
                    && (drained || **id < max_taken)
            })
            .map(|(id, _)| *id)
            .collect();
        let (mut requeued, mut failed) = (0, 0);
        for id in lost {
            let target = self.current();
            let resend = {
                let mut pending = self.lock();
                let Some(p) = pending.get_mut(&id) else { continue };
                match (&p.frame, &target) {
                    (Some(frame), Some(queue)) if certain || p.idempotent => {
                        p.generation = queue.generation;
                        p.queued_at = self.now_ms();
                        Some(frame.clone())
                    }
                    _ => None,
                }
            };
            match (resend, target) {
                (Some(frame), Some(queue)) => match queue.send(Job { id, frame, body: None }) {
                    Ok(()) => requeued += 1,
                    Err((_, e)) => {
                        self.fail(id, DispatchError::Internal(e.to_string()));
                        failed += 1;
                    }
                },
                _ => {
                    let why = "read by a worker that died before acknowledging it".to_string();
                    self.fail(id, DispatchError::WorkerDied { pid: 0, why });
                    failed += 1;
                }
            }
        }
        (requeued, failed)
    }

    /// Forgets request `id` (answered, failed or abandoned by its client).
    pub(super) fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Workers busy on a request and silent for longer than `timeout`, with
    /// the label of that request. Each such request is failed with 504 here;
    /// killing the worker is the caller's business.
    pub fn reap_hung(&self, timeout: Duration) -> Vec<(u32, String)> {
        let now = self.now_ms();
        let limit = timeout.as_millis() as u64;
        let mut hung = Vec::new();
        let mut pending = self.lock();
        pending.retain(|_, p| {
            let Some((worker, took_at)) = &p.worker else {
                return true;
            };
            let last = worker.last_seen.load(Ordering::Relaxed).max(*took_at);
            if now.saturating_sub(last) <= limit {
                return true;
            }
            let _ = p
                .replies
                .try_send(vec![Reply::Failed(DispatchError::Timeout { pid: worker.pid, secs: timeout.as_secs() })]);
            hung.push((worker.pid, p.label.clone()));
            false
        });
        hung
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        // A panic elsewhere while holding the lock leaves the map usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Never below zero, whatever a misbehaving worker says.
    fn one_less_waiting(&self) {
        let _ = self.waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    fn fail(&self, id: u64, err: DispatchError) {
        self.one_less_waiting();
        if let Some(p) = self.lock().remove(&id) {
            let _ = p.replies.try_send(vec![Reply::Failed(err)]);
        }
    }
}

/// The front's handle on one submitted request.
pub struct Call {
    id: u64,
    replies: mpsc::Receiver<Replies>,
    /// Replies received and not yet taken.
    arrived: VecDeque<Reply>,
    pool: Arc<Pool>,
}

impl Call {
    /// The next reply; `Failed` if the dispatcher lost track of the request.
    pub async fn next(&mut self) -> Reply {
        loop {
            if let Some(reply) = self.arrived.pop_front() {
                return reply;
            }
            match self.replies.recv().await {
                Some(replies) => self.arrived.extend(replies),
                None => return Reply::Failed(DispatchError::Internal("reply channel closed".into())),
            }
        }
    }

    /// The next reply if one is already here.
    pub fn try_next(&mut self) -> Option<Reply> {
        while self.arrived.is_empty() {
            self.arrived.extend(self.replies.try_recv().ok()?);
        }
        self.arrived.pop_front()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Whatever the worker still sends for this request is discarded.
        self.pool.forget(self.id);
    }
}
