//! One generation's request queue: the shared `SOCK_SEQPACKET` socket its
//! workers read from, and the task that feeds it when it is full.
//!
//! Dropping the last handle on a [`Queue`] closes the front's end once the
//! feeder has written everything it was given. Workers then read what is
//! left and get end-of-file: a generation drains and exits without losing a
//! queued request (how HUP reload and a graceful stop retire workers).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::sys::{self, PairKind};

/// A request on its way into the socket: its frame and the body descriptor
/// that rides along.
pub(super) struct Job {
    pub id: u64,
    pub frame: Bytes,
    pub body: Option<OwnedFd>,
}

/// A job the socket refused, for the pool to fail.
pub(super) type Refused = (u64, std::io::Error);

/// One generation's request queue.
pub struct Queue {
    pub generation: u64,
    /// The workers' end; every worker of this generation gets a copy.
    worker_end: OwnedFd,
    socket: Arc<AsyncFd<OwnedFd>>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Jobs handed to the feeder and not yet in the socket. While it is
    /// zero, `send` writes to the socket itself and saves a task hop.
    queued_jobs: Arc<AtomicUsize>,
}

impl Queue {
    /// Creates the socket pair and starts its feeder, which reports jobs it
    /// could not write on `refused`. Must be called inside the runtime.
    pub(super) fn new(generation: u64, refused: mpsc::UnboundedSender<Refused>) -> std::io::Result<Queue> {
        let (front_end, worker_end) = sys::socketpair(PairKind::SeqPacket)?;
        // A deeper buffer lets more requests wait in the kernel, where an
        // idle worker picks them up without waking the front.
        let _ = sys::set_send_buffer(&front_end, 4 << 20);
        let socket = Arc::new(sys::async_fd(front_end)?);
        let (jobs, rx) = mpsc::unbounded_channel();
        let queued_jobs = Arc::new(AtomicUsize::new(0));
        tokio::spawn(feed(Arc::clone(&socket), rx, Arc::clone(&queued_jobs), refused));
        Ok(Queue { generation, worker_end, socket, jobs, queued_jobs })
    }

    /// The descriptor a new worker of this generation reads requests from.
    pub fn worker_end(&self) -> &OwnedFd {
        &self.worker_end
    }

    /// Whether every request written to the socket has been read by some
    /// worker (and none wait in the feeder).
    pub fn drained(&self) -> bool {
        self.queued_jobs.load(Ordering::Acquire) == 0
            && sys::unread_sent_bytes(self.socket.get_ref()).map(|n| n == 0).unwrap_or(false)
    }

    /// Puts a job in the socket, or behind the jobs already waiting for room.
    pub(super) fn send(&self, job: Job) -> Result<(), Refused> {
        if self.queued_jobs.load(Ordering::Acquire) == 0 {
            let fd = job.body.as_ref().map(|f| f.as_raw_fd());
            match sys::send_with_fd(self.socket.get_ref(), &[IoSlice::new(&job.frame)], fd) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err((job.id, e)),
            }
        }
        self.queued_jobs.fetch_add(1, Ordering::AcqRel);
        let id = job.id;
        self.jobs.send(job).map_err(|_| {
            self.queued_jobs.fetch_sub(1, Ordering::AcqRel);
            (id, std::io::Error::other("request queue closed"))
        })
    }
}

/// Writes queued jobs into the socket in order, waiting when it is full.
/// Ends when the queue is dropped and every job is written.
async fn feed(
    socket: Arc<AsyncFd<OwnedFd>>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    queued_jobs: Arc<AtomicUsize>,
    refused: mpsc::UnboundedSender<Refused>,
) {
    while let Some(job) = jobs.recv().await {
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
        queued_jobs.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = result {
            let _ = refused.send((job.id, e));
        }
    }
}
