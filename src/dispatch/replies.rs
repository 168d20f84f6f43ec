//! Reading one worker's reply socket and routing each frame to the request
//! it belongs to.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use super::pool::{Pool, Replies, Reply, WorkerLink};
use super::DispatchError;
use crate::sys;
use crate::wire::{self, Message};

/// How a worker's reply stream ended.
#[derive(Debug)]
pub enum LinkEnd {
    /// The worker closed its socket (it exited, or is exiting).
    Closed,
    /// The worker broke the protocol; it is to be killed.
    Broken(String),
}

/// Reads the reply socket of the worker `link` until it closes. The first
/// frame must be `Ready`, reported through `ready`; every request the worker
/// took and did not finish gets a 502 when the socket closes.
pub async fn read_replies(
    pool: Arc<Pool>,
    link: Arc<WorkerLink>,
    socket: OwnedFd,
    ready: oneshot::Sender<u16>,
) -> LinkEnd {
    let mut running: HashMap<u64, Option<mpsc::Sender<Replies>>> = HashMap::new();
    let end = pump(&pool, &link, socket, ready, &mut running).await;
    let why = match &end {
        LinkEnd::Closed => "exited while handling the request".to_string(),
        LinkEnd::Broken(e) => format!("broke the wire protocol ({e})"),
    };
    for (id, replies) in running {
        if let Some(replies) = replies {
            let err = DispatchError::WorkerDied { pid: link.pid, why: why.clone() };
            let _ = replies.send(vec![Reply::Failed(err)]).await;
        }
        pool.forget(id);
    }
    end
}

async fn pump(
    pool: &Pool,
    link: &Arc<WorkerLink>,
    socket: OwnedFd,
    ready: oneshot::Sender<u16>,
    running: &mut HashMap<u64, Option<mpsc::Sender<Replies>>>,
) -> LinkEnd {
    let socket = match sys::async_fd(socket) {
        Ok(s) => s,
        Err(e) => return LinkEnd::Broken(e.to_string()),
    };
    let mut ready = Some(ready);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut received = Vec::new();
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = loop {
            let mut guard = match socket.readable().await {
                Ok(g) => g,
                Err(e) => return LinkEnd::Broken(e.to_string()),
            };
            match guard.try_io(|s| sys::recv_into(s, &mut buf, &mut received)) {
                Ok(Ok(n)) => break n,
                Ok(Err(e)) => return LinkEnd::Broken(e.to_string()),
                Err(_would_block) => continue,
            }
        };
        if n == 0 {
            return LinkEnd::Closed;
        }
        fds.extend(received.drain(..));
        link.seen(pool);
        // This read's replies, gathered per request and sent once it is
        // parsed: (id, replies, whether the last is the request's last).
        let mut gathered: Vec<(u64, Replies, bool)> = Vec::new();
        loop {
            let frame = match wire::decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return LinkEnd::Broken(e.to_string()),
            };
            let id = frame.id;
            let reply = match frame.message {
                Message::Ready { version, .. } => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(version);
                    }
                    continue;
                }
                Message::Took => {
                    running.insert(id, pool.took(id, link));
                    continue;
                }
                Message::ResponseHead(head) => Reply::Head { head, worker: link.pid },
                Message::Body(data) => Reply::Body(data),
                Message::File { offset, len } => match fds.pop_front() {
                    Some(fd) => Reply::File { file: fd.into(), offset, len },
                    None => return LinkEnd::Broken("file frame without a descriptor".into()),
                },
                Message::Hints(headers) => Reply::Hints(headers),
                Message::End => Reply::End,
                Message::Error(text) => Reply::Failed(DispatchError::App(text)),
                Message::Request(_) => return LinkEnd::Broken("worker sent a request frame".into()),
            };
            let last = matches!(reply, Reply::End | Reply::Failed(_));
            if !running.contains_key(&id) {
                return LinkEnd::Broken(format!("reply for request {id} it never took"));
            }
            match gathered.iter_mut().find(|(of, _, done)| *of == id && !*done) {
                Some((_, replies, done)) => {
                    replies.push(reply);
                    *done = last;
                }
                None => gathered.push((id, vec![reply], last)),
            }
        }
        for (id, replies, last) in gathered {
            let Some(slot) = running.get_mut(&id) else { continue };
            if let Some(tx) = slot {
                if tx.send(replies).await.is_err() {
                    // The client went away; drop the rest of this response.
                    *slot = None;
                }
            }
            if last {
                link.finished_one();
                running.remove(&id);
                pool.forget(id);
            }
        }
    }
}
