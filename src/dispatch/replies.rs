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
        // A broken link still delivers what came before the break.
        let broken = loop {
            let frame = match wire::decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
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
                    // Replies gathered so far go first: this may be the
                    // same request taken again (see `Pool::took`), which
                    // must find the first one's replies delivered and it
                    // forgotten, as they were sent.
                    deliver(std::mem::take(&mut gathered), pool, link, running).await;
                    running.insert(id, pool.took(id, link));
                    continue;
                }
                Message::ResponseHead(head) => Reply::Head { head, worker: link.pid },
                Message::Body(data) => Reply::Body(data),
                Message::File { offset, len } => match fds.pop_front() {
                    Some(fd) => Reply::File { file: fd.into(), offset, len },
                    None => break Some("file frame without a descriptor".into()),
                },
                Message::Hints(headers) => Reply::Hints(headers),
                Message::End => Reply::End,
                Message::Error(text) => Reply::Failed(DispatchError::App(text)),
                Message::Request(_) => break Some("worker sent a request frame".into()),
            };
            let last = matches!(reply, Reply::End | Reply::Failed(_));
            if !running.contains_key(&id) {
                break Some(format!("reply for request {id} it never took"));
            }
            match gathered.iter_mut().find(|(of, _, done)| *of == id && !*done) {
                Some((_, replies, done)) => {
                    replies.push(reply);
                    *done = last;
                }
                None => gathered.push((id, vec![reply], last)),
            }
        };
        deliver(gathered, pool, link, running).await;
        if let Some(why) = broken {
            return LinkEnd::Broken(why);
        }
    }
}

/// Sends each request its gathered replies, in order, and forgets the
/// requests whose last reply is among them.
async fn deliver(
    gathered: Vec<(u64, Replies, bool)>,
    pool: &Pool,
    link: &Arc<WorkerLink>,
    running: &mut HashMap<u64, Option<mpsc::Sender<Replies>>>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::PairKind;
    use crate::wire::{BodyRef, Frame, RequestHead, ResponseHead, Scheme};
    use bytes::Bytes;

    fn request() -> RequestHead {
        RequestHead {
            method: Bytes::from_static(b"GET"),
            path: Bytes::from_static(b"/"),
            query: Bytes::new(),
            version: 11,
            scheme: Scheme::Http,
            remote_addr: Bytes::from_static(b"127.0.0.1"),
            remote_port: 1,
            server_name: Bytes::from_static(b"h"),
            server_port: 80,
            script_name: Bytes::new(),
            headers: Vec::new(),
            body: BodyRef::Inline(Bytes::new()),
        }
    }

    fn answer(id: u64, text: &'static [u8], out: &mut BytesMut) {
        let head = ResponseHead { status: 200, reason: Bytes::from_static(b"OK"), headers: Vec::new() };
        for message in
            [Message::Took, Message::ResponseHead(head), Message::Body(Bytes::from_static(text)), Message::End]
        {
            wire::encode(&Frame::new(id, message), out).unwrap();
        }
    }

    #[tokio::test]
    async fn a_request_taken_twice_keeps_the_first_answer_read_with_the_second() {
        let pool = Pool::new(16).unwrap();
        let mut call = pool.submit("GET /".into(), request(), None).unwrap();
        let id = 1;
        let link = Arc::new(WorkerLink::new(4242, 1, &pool));
        let (ours, theirs) = sys::socketpair(PairKind::SeqPacket).unwrap();
        let (ready, _) = oneshot::channel();
        let reader = tokio::spawn(read_replies(Arc::clone(&pool), link, ours, ready));
        // One read brings the whole answer, then the same request taken
        // again (it was queued twice) and answered again.
        let mut frames = BytesMut::new();
        wire::encode(&Frame::new(0, Message::Ready { version: wire::VERSION, pid: 4242 }), &mut frames).unwrap();
        answer(id, b"first", &mut frames);
        answer(id, b"second", &mut frames);
        sys::send_with_fd(&theirs, &[std::io::IoSlice::new(&frames)], None).unwrap();

        assert!(matches!(call.next().await, Reply::Head { head, .. } if head.status == 200));
        assert!(matches!(call.next().await, Reply::Body(body) if &body[..] == b"first"));
        assert!(matches!(call.next().await, Reply::End));
        drop(theirs);
        assert!(matches!(reader.await.unwrap(), LinkEnd::Closed));
    }

    /// --backlog holds when requests arrive on several front threads at
    /// once: no more than `backlog` wait, every other one is refused.
    #[tokio::test]
    async fn the_backlog_holds_under_concurrent_submits() {
        let (backlog, threads) = (3, 16);
        for _ in 0..20 {
            let pool = Pool::new(backlog).unwrap();
            let start = std::sync::Barrier::new(threads);
            let outcomes: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            match pool.submit("GET /".into(), request(), None) {
                                Ok(call) => {
                                    std::mem::forget(call);
                                    true
                                }
                                Err(DispatchError::QueueFull(_)) => false,
                                Err(e) => panic!("unexpected: {e}"),
                            }
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(outcomes.iter().filter(|&&queued| queued).count(), backlog);
            assert_eq!(pool.queued(), backlog);
        }
    }
}
