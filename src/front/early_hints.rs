//! `103 Early Hints`: headers the app sends through
//! `environ['wsgi.early_hints']` go to the client ahead of the response, so
//! a browser can start fetching the stylesheets and scripts they name while
//! the app is still working.
//!
//! Each request's connection lends its handler an [`EarlyHints`]
//! (`handler::Lent`), and the handler sends through it whatever hints
//! arrive before the response head:
//! - over HTTP/1.1, an [`Interim`]: the bytes of a `103` response that the
//!   connection writes (through its `guard`) while the handler works, and
//!   never after the final head;
//! - over HTTP/2, the stream's informational `HEADERS` frame (`h2`).
//!
//! HTTP/1.0 requests carry none: a server must not send a 1xx response to
//! an HTTP/1.0 client (RFC 9110, 15.2).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};

/// Where a request's early hints go.
pub trait HintSink: Send + Sync {
    /// Sends one `103` response with `headers` now.
    fn send(&self, headers: &[(Bytes, Bytes)]);
    /// Whether hints wait for the connection to take them.
    fn waiting(&self) -> bool {
        false
    }
    /// The response head is ready: hints not on their way yet are dropped,
    /// since a `103` must never follow it.
    fn seal(&self) {}
    /// Hints may be sent from another task (a proxied upstream's
    /// connection): wake `waker`'s task when they are.
    fn wake_on_send(&self, _waker: &Waker) {}
}

/// A request's way to send early hints (a request extension).
#[derive(Clone)]
pub struct EarlyHints(Arc<dyn HintSink>);

impl EarlyHints {
    pub fn new(sink: Arc<dyn HintSink>) -> EarlyHints {
        EarlyHints(sink)
    }

    pub fn send(&self, headers: &[(Bytes, Bytes)]) {
        self.0.send(headers);
    }

    /// Hints will come from another task while this one waits.
    pub async fn expect_from_elsewhere(&self) {
        poll_fn(|cx| {
            self.0.wake_on_send(cx.waker());
            Poll::Ready(())
        })
        .await
    }

    /// Seals the request when dropped, however the handler leaves it.
    pub fn sealed_on_drop(&self) -> SealOnDrop<'_> {
        SealOnDrop(self)
    }

    /// The response head is ready. Hints that came with it still go first
    /// if the connection can take them now (over HTTP/1.1, after one yield
    /// the connection flushes them); the rest are dropped.
    pub async fn finish(&self) {
        if self.0.waiting() {
            tokio::task::yield_now().await;
        }
        self.0.seal();
    }
}

/// Seals its request's hints when dropped ([`EarlyHints::sealed_on_drop`]).
pub struct SealOnDrop<'a>(&'a EarlyHints);

impl Drop for SealOnDrop<'_> {
    fn drop(&mut self) {
        self.0 .0.seal();
    }
}

/// An HTTP/1.1 connection's `103` responses not yet written; shared by the
/// connection's requests (one at a time, as `http1` serves them) and its
/// guarded socket.
#[derive(Default)]
pub struct Interim {
    /// Something is queued or being written: the socket's fast path checks
    /// this before taking the lock.
    pending: AtomicBool,
    state: Mutex<InterimState>,
}

#[derive(Default)]
pub struct InterimState {
    /// Responses waiting for a point where everything before them has
    /// been written.
    queued: BytesMut,
    /// Responses being written: they go before anything written next.
    pub writing: BytesMut,
    /// The connection's task, when hints come from another one.
    waker: Option<Waker>,
}

impl Interim {
    pub fn new() -> Arc<Interim> {
        Arc::new(Interim::default())
    }

    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The state, locked. `at_flush`: everything before has been written,
    /// so queued responses may start.
    pub fn lock(&self, at_flush: bool) -> MutexGuard<'_, InterimState> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if at_flush && !state.queued.is_empty() {
            let queued = state.queued.split();
            state.writing.unsplit(queued);
        }
        state
    }

    /// Called with the lock held once writing has made progress.
    pub fn settle(&self, state: &InterimState) {
        let pending = !state.queued.is_empty() || !state.writing.is_empty();
        self.pending.store(pending, Ordering::Release);
    }
}

impl Interim {
    /// Queues a `103` with `headers`, unless the request they belong to is
    /// `sealed` (checked under the lock that `seal` takes).
    fn push(&self, sealed: &AtomicBool, headers: &[(Bytes, Bytes)]) {
        let mut state = self.lock(false);
        if sealed.load(Ordering::Acquire) {
            return;
        }
        state.queued.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\n");
        for (name, value) in headers.iter().filter(|(name, _)| !is_connection_field(name)) {
            state.queued.extend_from_slice(name);
            state.queued.extend_from_slice(b": ");
            state.queued.extend_from_slice(value);
            state.queued.extend_from_slice(b"\r\n");
        }
        state.queued.extend_from_slice(b"\r\n");
        self.settle(&state);
        let waker = state.waker.clone();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Seals a request: its queued hints are dropped, and so is any it
    /// sends later.
    fn seal(&self, sealed: &AtomicBool) {
        if sealed.load(Ordering::Acquire) {
            // Sealed before (it is, once more, when the handler lets go).
            return;
        }
        let mut state = self.lock(false);
        sealed.store(true, Ordering::Release);
        if !state.queued.is_empty() {
            tracing::debug!("early hints dropped: the response head was ready before they could be sent");
            state.queued.clear();
        }
        self.settle(&state);
    }
}

/// Fields about the connection itself, which HTTP/2 forbids (RFC 9113,
/// 8.2.2) and a 103 must not carry on either protocol.
pub const CONNECTION_FIELDS: [&str; 6] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"];

/// Whether a 103 must leave `name` out: a connection field, or
/// `Content-Length`, which would describe a body a 103 never has.
fn is_connection_field(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length")
        || CONNECTION_FIELDS.iter().any(|field| name.eq_ignore_ascii_case(field.as_bytes()))
}

/// One HTTP/1.1 request's way to its connection's [`Interim`]. Sealed once
/// its response head is ready or it failed: hints that come after (from
/// an upstream that answers late, say) are dropped, never written ahead of
/// the next request's response.
pub struct RequestInterim {
    interim: Arc<Interim>,
    sealed: AtomicBool,
}

impl RequestInterim {
    pub fn new(interim: &Arc<Interim>) -> Arc<RequestInterim> {
        Arc::new(RequestInterim { interim: Arc::clone(interim), sealed: AtomicBool::new(false) })
    }
}

impl HintSink for RequestInterim {
    fn send(&self, headers: &[(Bytes, Bytes)]) {
        self.interim.push(&self.sealed, headers);
    }

    fn waiting(&self) -> bool {
        self.interim.pending() && !self.interim.lock(false).queued.is_empty()
    }

    fn wake_on_send(&self, waker: &Waker) {
        let mut state = self.interim.lock(false);
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
    }

    fn seal(&self) {
        if !self.sealed.load(Ordering::Acquire) {
            self.interim.seal(&self.sealed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Vec<(Bytes, Bytes)> {
        vec![(Bytes::from_static(b"Link"), Bytes::from_static(b"</app.css>; rel=preload; as=style"))]
    }

    #[test]
    fn interim_waits_for_a_flush_point() {
        let interim = Interim::new();
        let request = RequestInterim::new(&interim);
        assert!(!interim.pending());
        request.send(&link());
        assert!(interim.pending() && request.waiting());
        assert!(interim.lock(false).writing.is_empty());
        let state = interim.lock(true);
        assert_eq!(&state.writing[..], b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n");
    }

    #[test]
    fn seal_drops_what_has_not_started() {
        let interim = Interim::new();
        let request = RequestInterim::new(&interim);
        request.send(&link());
        request.seal();
        assert!(!interim.pending());
        assert!(interim.lock(true).writing.is_empty());
        // What had started writing stays, to be finished first.
        let next = RequestInterim::new(&interim);
        next.send(&link());
        drop(interim.lock(true));
        next.seal();
        assert!(interim.pending());
    }

    #[test]
    fn connection_fields_stay_out_of_a_103() {
        let interim = Interim::new();
        let request = RequestInterim::new(&interim);
        let mut headers = link();
        headers.push((Bytes::from_static(b"Connection"), Bytes::from_static(b"close")));
        headers.push((Bytes::from_static(b"Content-Length"), Bytes::from_static(b"5")));
        request.send(&headers);
        let state = interim.lock(true);
        assert_eq!(&state.writing[..], b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n");
    }

    #[test]
    fn a_sealed_request_sends_nothing_more() {
        let interim = Interim::new();
        let request = RequestInterim::new(&interim);
        request.seal();
        request.send(&link());
        assert!(!interim.pending());
        // The next request on the connection is not affected.
        let next = RequestInterim::new(&interim);
        next.send(&link());
        assert!(interim.pending());
    }

    #[test]
    fn dropping_the_guard_seals() {
        let interim = Interim::new();
        let request = RequestInterim::new(&interim);
        let hints = EarlyHints::new(Arc::clone(&request) as Arc<dyn HintSink>);
        request.send(&link());
        drop(hints.sealed_on_drop());
        assert!(!interim.pending());
    }
}
