//! One upstream pool: its servers, how the next one is picked, which are
//! out of service (passive and active health), and the idle keep-alive
//! connections to each.
//!
//! A server is *ejected* after `max-fails` failures in a row (connect
//! refused or timed out, reset, no response head in time) for
//! `fail-timeout`; then it gets requests again, and its first success
//! makes it whole. The active check (`health.rs`) marks a server *down*
//! until a check passes. Forwarding a request is `forward`'s business.
//!
//! An idle connection is kept for `keepalive-timeout` at most, and closed
//! within a second once its server has closed its end ([`Upstream::sweep`]),
//! so that the front holds no half-closed sockets.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::connect::Conn;
use crate::config::{Balance, ServerAddr, UpstreamSpec};

/// One server of a pool, and what the front knows of it.
pub struct Node {
    pub addr: ServerAddr,
    /// `upstream NAME server ADDR`, for messages.
    pub label: String,
    /// The address as a `Host` header, for requests that came without one.
    pub host: String,
    pub weight: u32,
    /// Requests sent to it and not yet answered in full.
    outstanding: AtomicUsize,
    /// Failures in a row.
    fails: AtomicU32,
    /// Ejected by failures until this many milliseconds after the pool's
    /// `epoch`; 0 when not ejected (so that picking a server in good
    /// health reads no clock and takes no lock).
    ejected_until: AtomicU64,
    /// Marked down by the active health check.
    down: AtomicBool,
    /// Idle keep-alive connections with the time each became idle, newest
    /// last, one list per front event loop (indexed by [`Conn::home`]), so
    /// loops don't contend for them.
    idle: Vec<Mutex<Vec<(Instant, Conn)>>>,
}

/// An upstream pool.
pub struct Upstream {
    pub spec: UpstreamSpec,
    pub nodes: Vec<Node>,
    /// Round-robin position, in units of weight.
    turn: AtomicUsize,
    /// What ejection times count from.
    epoch: Instant,
}

/// A request counted against a node until dropped.
pub struct InFlight {
    upstream: Arc<Upstream>,
    node: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.nodes[self.node].outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// A pool used from `loops` front event loops (1-based; 0 is any
    /// other thread).
    pub fn new(spec: UpstreamSpec, loops: usize) -> Upstream {
        let nodes = spec
            .servers
            .iter()
            .map(|s| Node {
                label: format!("upstream {} server {}", spec.name, s.addr),
                host: s.addr.to_string(),
                addr: s.addr.clone(),
                weight: s.weight,
                outstanding: AtomicUsize::new(0),
                fails: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                down: AtomicBool::new(false),
                idle: (0..=loops).map(|_| Mutex::new(Vec::new())).collect(),
            })
            .collect();
        Upstream { spec, nodes, turn: AtomicUsize::new(0), epoch: Instant::now() }
    }

    /// Picks a server for the next try, never one in `tried`. Servers in
    /// service come first; when none is, an ejected or down one is tried
    /// rather than failing at once (nginx does the same).
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = std::cell::OnceCell::new();
        let now = || *now.get_or_init(|| self.now());
        let in_service = |i: usize| self.nodes[i].in_service(now);
        let open = |i: &usize| !tried.contains(i);
        let any_healthy = (0..self.nodes.len()).filter(open).any(in_service);
        let candidate = |i: &usize| open(i) && (!any_healthy || in_service(*i));
        let count = (0..self.nodes.len()).filter(candidate).count();
        if count <= 1 {
            // Nothing to balance (a single server, or one left to try).
            return (0..self.nodes.len()).find(candidate);
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let n = self.nodes.len();
        match self.spec.balance {
            Balance::RoundRobin => {
                let total: usize = (0..n).filter(candidate).map(|i| self.nodes[i].weight as usize).sum();
                let mut at = turn % total.max(1);
                for i in (0..n).filter(candidate) {
                    let w = self.nodes[i].weight as usize;
                    if at < w {
                        return Some(i);
                    }
                    at -= w;
                }
                (0..n).rfind(candidate)
            }
            Balance::LeastOutstanding => {
                // Fewest in flight per unit of weight; ties go round in turn.
                (0..n).map(|k| (turn + k) % n).filter(candidate).min_by(|&a, &b| {
                    let (na, nb) = (&self.nodes[a], &self.nodes[b]);
                    let load_a = (na.outstanding.load(Ordering::Relaxed) as u64 + 1) * u64::from(nb.weight);
                    let load_b = (nb.outstanding.load(Ordering::Relaxed) as u64 + 1) * u64::from(na.weight);
                    load_a.cmp(&load_b)
                })
            }
        }
    }

    /// Milliseconds since the pool's epoch.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts a request against node `i` until the guard is dropped.
    pub fn start(self: &Arc<Self>, i: usize) -> InFlight {
        self.nodes[i].outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight { upstream: Arc::clone(self), node: i }
    }

    /// Node `i` answered: it is whole again.
    pub fn succeeded(&self, i: usize) {
        let node = &self.nodes[i];
        // Read first: a write on every request would bounce the node's
        // cache line between the front's threads.
        if node.fails.load(Ordering::Relaxed) > 0 && node.fails.swap(0, Ordering::Relaxed) > 0 {
            let was_ejected = node.ejected_until.swap(0, Ordering::Relaxed) != 0;
            if was_ejected {
                tracing::info!("upstream {} server {}: back in service", self.spec.name, node.addr);
            }
        }
    }

    /// Node `i` failed; eject it after `max-fails` in a row.
    pub fn failed(&self, i: usize) {
        let node = &self.nodes[i];
        let fails = node.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.spec.max_fails {
            let now = self.now();
            let until = (now + self.spec.fail_timeout.as_millis() as u64).max(1);
            let before = node.ejected_until.swap(until, Ordering::Relaxed);
            if before == 0 || before <= now {
                tracing::warn!(
                    "upstream {} server {}: out of service for {}s after {fails} failures in a row",
                    self.spec.name,
                    node.addr,
                    self.spec.fail_timeout.as_secs_f64()
                );
            }
            // Its idle connections are as suspect as the server.
            node.drop_idle();
        }
    }

    /// The active health check's verdict on node `i`.
    pub fn set_down(&self, i: usize, down: bool, why: &str) {
        let node = &self.nodes[i];
        let was = node.down.swap(down, Ordering::Relaxed);
        if down && !was {
            tracing::warn!(
                "upstream {} server {}: health check failed ({why}), out of service",
                self.spec.name,
                node.addr
            );
            node.drop_idle();
        } else if !down && was {
            node.fails.store(0, Ordering::Relaxed);
            node.ejected_until.store(0, Ordering::Relaxed);
            tracing::info!("upstream {} server {}: health check passed, back in service", self.spec.name, node.addr);
        }
    }

    /// An idle connection to node `i` that lives on the caller's own event
    /// loop, if one is still open: a request drives it without waking
    /// another thread. (Each loop keeps its own; one on another loop would
    /// cost two wake-ups per request for as long as it is reused.)
    pub fn idle_connection(&self, i: usize) -> Option<Conn> {
        let mut idle = self.nodes[i].idle.get(crate::front::loops::current())?.lock().ok()?;
        let now = Instant::now();
        while let Some((since, mut conn)) = idle.pop() {
            if now.duration_since(since) < self.spec.keepalive_timeout && conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose last response has been read in full:
    /// `keepalive` per loop, as nginx's is per worker process.
    pub fn release(&self, i: usize, conn: Conn) {
        if self.spec.keepalive == 0 {
            return;
        }
        let Some(slot) = self.nodes[i].idle.get(conn.home) else { return };
        if let Ok(mut idle) = slot.lock() {
            if idle.len() >= self.spec.keepalive {
                idle.remove(0);
            }
            idle.push((Instant::now(), conn));
        }
    }

    /// Closes the idle connections kept past `keepalive-timeout` and those
    /// whose server has closed its end.
    pub fn sweep(&self) {
        let timeout = self.spec.keepalive_timeout;
        for slot in self.nodes.iter().flat_map(|node| &node.idle) {
            if let Ok(mut idle) = slot.lock() {
                idle.retain_mut(|(since, conn)| since.elapsed() < timeout && conn.still_open());
            }
        }
    }

    /// How often [`sweep`](Self::sweep) runs.
    fn sweep_interval(&self) -> Duration {
        (self.spec.keepalive_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// Sweeps `pool`'s idle connections for as long as the pool is in use.
pub fn spawn_sweeper(pool: &Arc<Upstream>) {
    let pool = Arc::downgrade(pool);
    tokio::spawn(async move {
        let Some(every) = pool.upgrade().map(|p| p.sweep_interval()) else { return };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(pool) => pool.sweep(),
                None => return,
            }
        }
    });
}

impl Node {
    fn drop_idle(&self) {
        for slot in &self.idle {
            if let Ok(mut idle) = slot.lock() {
                idle.clear();
            }
        }
    }

    /// Whether the node takes requests; `now` (milliseconds since the
    /// pool's epoch) is read only for an ejected node.
    fn in_service(&self, now: impl FnOnce() -> u64) -> bool {
        if self.down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Server, UpstreamEntry};

    fn pool(balance: Balance, weights: &[u32]) -> Arc<Upstream> {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Server { addr: ServerAddr::Tcp(([127, 0, 0, 1], 9000 + i as u16).into()), weight })
            .collect();
        let text = "servers = [\"127.0.0.1:9000\"]\nmax-fails = 2";
        let mut entry = toml::from_str::<UpstreamEntry>(text).unwrap().resolve("t").unwrap();
        entry.servers = servers;
        entry.balance = balance;
        Arc::new(Upstream::new(entry, 1))
    }

    #[test]
    fn round_robin_follows_weights() {
        let up = pool(Balance::RoundRobin, &[1, 3]);
        let picks: Vec<usize> = (0..8).map(|_| up.pick(&[]).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 6);
        assert_eq!(up.pick(&[0, 1]), None);
        assert_eq!(up.pick(&[1]), Some(0));
    }

    #[test]
    fn least_outstanding_avoids_busy_servers() {
        let up = pool(Balance::LeastOutstanding, &[1, 1, 1]);
        let _a = up.start(0);
        let _b = up.start(1);
        assert_eq!(up.pick(&[]), Some(2));
        let _c = up.start(2);
        let _d = up.start(2);
        assert!(matches!(up.pick(&[]), Some(0 | 1)));
    }

    #[test]
    fn failures_eject_and_success_restores() {
        let up = pool(Balance::RoundRobin, &[1, 1]);
        up.failed(0);
        assert!(up.nodes[0].in_service(|| up.now()));
        up.failed(0);
        assert!(!up.nodes[0].in_service(|| up.now()));
        assert!((0..4).all(|_| up.pick(&[]) == Some(1)));
        // With every server out, one is still tried.
        up.set_down(1, true, "test");
        assert!(up.pick(&[]).is_some());
        up.set_down(1, false, "test");
        up.succeeded(0);
        assert!(up.nodes[0].in_service(|| up.now()));
    }
}
