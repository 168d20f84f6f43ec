//! The pool's request queue and its table of pending requests.

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::DispatchError;
use crate::sys::{self, PairKind};
use crate::wire::{self, Frame, Message, RequestHead, ResponseHead};

/// Replies buffered between a worker's reply reader and the request that
/// waits for them. Small: a full channel is what holds a streaming worker
/// back when its client is slow.
const REPLY_CHANNEL: usize = 16;

/// What the app said, in order: one `Head`, then body pieces, then `End`;
/// or `Failed` at any point.
#[derive(Debug)]
pub enum Reply {
    Head(ResponseHead),
    Body(Bytes),
    File { file: std::fs::File, offset: u64, len: u64 },
    End,
    Failed(DispatchError),
}

/// One live worker process as the dispatcher sees it.
#[derive(Debug)]
pub struct WorkerLink {
    pub pid: u32,
    /// Milliseconds since the pool started at which the worker last sent a
    /// frame; a busy worker silent for longer than the timeout is hung.
    last_seen: AtomicU64,
}

impl WorkerLink {
    pub fn new(pid: u32, pool: &Pool) -> WorkerLink {
        let link = WorkerLink {
            pid,
            last_seen: AtomicU64::new(0),
        };
        link.seen(pool);
        link
    }

    pub(super) fn seen(&self, pool: &Pool) {
        self.last_seen.store(pool.now_ms(), Ordering::Relaxed);
    }
}

struct Pending {
    replies: mpsc::Sender<Reply>,
    /// Method and path, for log lines about this request.
    label: String,
    worker: Option<(Arc<WorkerLink>, u64)>,
}

/// A request queued in the pool: the bytes of its frame and the body
/// descriptor that rides along.
struct Job {
    id: u64,
    frame: Bytes,
    body: Option<OwnedFd>,
}

/// One app's workers, seen from the front: a FIFO queue in, replies out.
pub struct Pool {
    /// The workers' end of the shared request socket; every worker process
    /// gets a copy.
    worker_end: OwnedFd,
    queue: mpsc::UnboundedSender<Job>,
    /// Jobs handed to the feeder task and not yet in the socket. While it
    /// is zero, `submit` writes to the socket itself and saves a task hop.
    queued_jobs: AtomicUsize,
    /// The front's end of the shared request socket (non-blocking).
    socket: Arc<AsyncFd<OwnedFd>>,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Requests submitted but not yet taken by a worker.
    waiting: AtomicUsize,
    backlog: usize,
    next_id: AtomicU64,
    epoch: Instant,
}

impl Pool {
    /// Creates the shared request socket and starts the task that feeds it.
    /// Must be called inside the runtime.
    pub fn new(backlog: usize) -> std::io::Result<Arc<Pool>> {
        let (front_end, worker_end) = sys::socketpair(PairKind::SeqPacket)?;
        // A deeper socket buffer lets more requests wait in the kernel, where
        // an idle worker picks them up without waking the front.
        let _ = sys::set_send_buffer(&front_end, 4 << 20);
        let socket = Arc::new(sys::async_fd(front_end)?);
        let (queue, jobs) = mpsc::unbounded_channel();
        let pool = Arc::new(Pool {
            worker_end,
            queue,
            queued_jobs: AtomicUsize::new(0),
            socket: Arc::clone(&socket),
            pending: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            backlog,
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
        });
        tokio::spawn(feed_queue(Arc::downgrade(&pool), socket, jobs));
        Ok(pool)
    }

    /// The descriptor a new worker reads requests from.
    pub fn worker_end(&self) -> &OwnedFd {
        &self.worker_end
    }

    /// Queues a request. The body descriptor, if any, is handed to the
    /// worker with it.
    pub fn submit(self: &Arc<Self>, head: RequestHead, body: Option<OwnedFd>) -> Result<Call, DispatchError> {
        let waiting = self.waiting.load(Ordering::Relaxed);
        if waiting >= self.backlog {
            return Err(DispatchError::QueueFull(waiting));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let label = format!(
            "{} {}",
            String::from_utf8_lossy(&head.method),
            String::from_utf8_lossy(&head.path)
        );
        let mut buf = BytesMut::with_capacity(512);
        wire::encode(&Frame::new(id, Message::Request(Box::new(head))), &mut buf)
            .map_err(|e| DispatchError::Internal(e.to_string()))?;
        let (tx, rx) = mpsc::channel(REPLY_CHANNEL);
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Pending {
                replies: tx,
                label,
                worker: None,
            },
        );
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let frame = buf.freeze();
        if self.queued_jobs.load(Ordering::Acquire) == 0 {
            let fd = body.as_ref().map(|f| f.as_raw_fd());
            match sys::send_with_fd(self.socket.get_ref(), &[IoSlice::new(&frame)], fd) {
                Ok(_) => {
                    return Ok(Call {
                        id,
                        replies: rx,
                        pool: Arc::clone(self),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.fail(id, DispatchError::Internal(e.to_string()));
                    return Err(DispatchError::Internal(format!("queueing request: {e}")));
                }
            }
        }
        self.queued_jobs.fetch_add(1, Ordering::AcqRel);
        let job = Job { id, frame, body };
        if self.queue.send(job).is_err() {
            self.forget(id);
            return Err(DispatchError::Internal("request queue closed".into()));
        }
        Ok(Call {
            id,
            replies: rx,
            pool: Arc::clone(self),
        })
    }

    /// Requests pending (queued or running).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Records that `worker` took request `id`; returns where its replies go.
    pub(super) fn took(&self, id: u64, worker: &Arc<WorkerLink>) -> Option<mpsc::Sender<Reply>> {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut pending = self.lock();
        let entry = pending.get_mut(&id)?;
        entry.worker = Some((Arc::clone(worker), now));
        Some(entry.replies.clone())
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
            let _ = p.replies.try_send(Reply::Failed(DispatchError::Timeout {
                pid: worker.pid,
                secs: timeout.as_secs(),
            }));
            hung.push((worker.pid, p.label.clone()));
            false
        });
        hung
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        // A panic elsewhere while holding the lock leaves the map usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn fail(&self, id: u64, err: DispatchError) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Some(p) = self.lock().remove(&id) {
            let _ = p.replies.try_send(Reply::Failed(err));
        }
    }
}

/// The front's handle on one submitted request.
pub struct Call {
    id: u64,
    replies: mpsc::Receiver<Reply>,
    pool: Arc<Pool>,
}

impl Call {
    /// The next reply; `Failed` if the dispatcher lost track of the request.
    pub async fn next(&mut self) -> Reply {
        match self.replies.recv().await {
            Some(reply) => reply,
            None => Reply::Failed(DispatchError::Internal("reply channel closed".into())),
        }
    }

    /// The next reply if one is already here.
    pub fn try_next(&mut self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Whatever the worker still sends for this request is discarded.
        self.pool.forget(self.id);
    }
}

/// Counts a job out of `queued_jobs` however the feeder finishes with it.
struct JobDone(std::sync::Weak<Pool>);

impl Drop for JobDone {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.queued_jobs.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Moves queued requests into the shared socket, in order, waiting when the
/// socket buffer is full.
async fn feed_queue(
    pool: std::sync::Weak<Pool>,
    socket: Arc<AsyncFd<OwnedFd>>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(job) = jobs.recv().await {
        let done = JobDone(pool.clone());
        let fd = job.body.as_ref().map(|f| f.as_raw_fd());
        let result = loop {
            let mut ready = match socket.writable().await {
                Ok(ready) => ready,
                Err(e) => break Err(e),
            };
            match ready.try_io(|s| sys::send_with_fd(s, &[IoSlice::new(&job.frame)], fd)) {
                Ok(result) => break result,
                Err(_would_block) => continue,
            }
        };
        if let Err(e) = result {
            tracing::error!("could not queue request for workers: {e}");
            if let Some(pool) = pool.upgrade() {
                pool.fail(job.id, DispatchError::Internal(e.to_string()));
            }
        }
        drop(done);
    }
}
