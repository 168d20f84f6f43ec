//! The metric values and their Prometheus text exposition (format 0.0.4).
//!
//! Everything is a relaxed atomic: a counter only ever grows, a gauge is
//! set by one owner, and a histogram is a fixed array of bucket counters
//! plus a sum in microseconds. A scrape reads the atomics one by one, so a
//! histogram's `_count` may trail its buckets by a request in flight; that
//! is the usual trade of lock-free metrics and harmless for rates.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// The one set of metrics of this process.
pub static METRICS: Metrics = Metrics::new();

/// Upper bounds of the latency buckets, in seconds (Prometheus' defaults).
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Which handler answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Static = 0,
    App = 1,
    Proxy = 2,
    /// Refused by the front's request reader before any route (a malformed
    /// request, or one over the head limits): counted, not timed.
    Refused = 3,
}

const ROUTES: [(RouteKind, &str); 4] = [
    (RouteKind::Static, "static"),
    (RouteKind::App, "app"),
    (RouteKind::Proxy, "proxy"),
    (RouteKind::Refused, "refused"),
];
/// The route kinds whose requests are timed.
const TIMED: usize = 3;
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a worker was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// Killed after `--timeout`.
    Timeout = 0,
    /// Exited or was killed unexpectedly.
    Crash = 1,
    /// Retired after `--max-requests`.
    MaxRequests = 2,
    /// Retired after `--max-worker-memory`.
    Memory = 3,
    /// Replaced by a new generation (HUP, `--reload`, `tandem ctl reload`).
    Reload = 4,
}

const REASONS: [&str; 5] = ["timeout", "crash", "max-requests", "memory", "reload"];

/// Workers by state, as the supervisor last saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    pub booting: u64,
    pub idle: u64,
    pub busy: u64,
    pub draining: u64,
}

/// A cumulative histogram of durations.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation in the first bucket it fits (buckets are
    /// made cumulative when rendered).
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(took.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (le, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}", bound(*le));
        }
        let count = self.count.load(Relaxed).max(cumulative);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything tandem counts.
pub struct Metrics {
    /// By route kind, then status class.
    requests: [[AtomicU64; 5]; ROUTES.len()],
    durations: [Histogram; TIMED],
    queue_wait: Histogram,
    restarts: [AtomicU64; 5],
    workers: [AtomicU64; 4],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    sendfile_bytes: AtomicU64,
    connections: AtomicI64,
    connections_total: AtomicU64,
    gzip_hits: AtomicU64,
    gzip_misses: AtomicU64,
    file_hits: AtomicU64,
    file_misses: AtomicU64,
    file_stats: AtomicU64,
    file_watches: AtomicU64,
    /// Upstream name → healthy, set by the proxy's health checks.
    upstreams: Mutex<BTreeMap<String, bool>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            requests: [const { [const { AtomicU64::new(0) }; 5] }; ROUTES.len()],
            durations: [const { Histogram::new() }; TIMED],
            queue_wait: Histogram::new(),
            restarts: [const { AtomicU64::new(0) }; 5],
            workers: [const { AtomicU64::new(0) }; 4],
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            sendfile_bytes: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            gzip_hits: AtomicU64::new(0),
            gzip_misses: AtomicU64::new(0),
            file_hits: AtomicU64::new(0),
            file_misses: AtomicU64::new(0),
            file_stats: AtomicU64::new(0),
            file_watches: AtomicU64::new(0),
            upstreams: Mutex::new(BTreeMap::new()),
        }
    }

    /// One answered request: its route, status and time to the response head.
    pub fn request(&self, route: RouteKind, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[route as usize][class].fetch_add(1, Relaxed);
        if let Some(histogram) = self.durations.get(route as usize) {
            histogram.observe(took);
        }
    }

    /// A request the front refused before routing it, with this status.
    pub fn refused(&self, status: u16) {
        self.request(RouteKind::Refused, status, Duration::ZERO);
    }

    /// How long a request waited in the queue before a worker took it.
    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited);
    }

    pub fn restart(&self, reason: RestartReason, workers: u64) {
        self.restarts[reason as usize].fetch_add(workers, Relaxed);
    }

    /// The supervisor's view of its workers, published after each change.
    pub fn set_workers(&self, counts: WorkerCounts) {
        for (slot, value) in self.workers.iter().zip([counts.booting, counts.idle, counts.busy, counts.draining]) {
            slot.store(value, Relaxed);
        }
    }

    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// `n` of the bytes sent went with `sendfile(2)` (also counted in `bytes_out`).
    pub fn sendfile_bytes(&self, n: usize) {
        self.sendfile_bytes.fetch_add(n as u64, Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }

    /// A static file's gzip was (`hit`) or wasn't yet in the cache.
    pub fn gzip_cache(&self, hit: bool) {
        let counter = if hit { &self.gzip_hits } else { &self.gzip_misses };
        counter.fetch_add(1, Relaxed);
    }

    /// `--static-cache` knew (`hit`) or didn't know what a name is.
    pub fn file_cache(&self, hit: bool) {
        let counter = if hit { &self.file_hits } else { &self.file_misses };
        counter.fetch_add(1, Relaxed);
    }

    /// `--static-cache` checked an entry (or a directory) with `stat`.
    pub fn static_cache_stat(&self) {
        self.file_stats.fetch_add(1, Relaxed);
    }

    /// `--static-cache` now holds `n` inotify watches.
    pub fn static_cache_watches(&self, n: usize) {
        self.file_watches.store(n as u64, Relaxed);
    }

    /// The hook for the proxy route's health checks: `upstream` (as named in
    /// the config) is up or down. Exposed as `tandem_upstream_up`.
    pub fn set_upstream_health(&self, upstream: &str, healthy: bool) {
        let mut map = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(upstream.to_string(), healthy);
    }

    /// Requests answered so far, over every route and status.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().map(|c| c.load(Relaxed)).sum()
    }

    /// The request duration histogram over every route, cumulative, as
    /// (upper bound, count) pairs ending with "+Inf" (for `tandem top`).
    pub fn latency_buckets(&self) -> Vec<(String, u64)> {
        let mut cumulative = 0;
        let mut out: Vec<(String, u64)> = BUCKETS
            .iter()
            .enumerate()
            .map(|(i, le)| {
                cumulative += self.durations.iter().map(|h| h.buckets[i].load(Relaxed)).sum::<u64>();
                (bound(*le), cumulative)
            })
            .collect();
        let count = self.durations.iter().map(|h| h.count.load(Relaxed)).sum::<u64>();
        out.push(("+Inf".into(), count.max(cumulative)));
        out
    }

    /// The exposition text; `queue_depth` and `in_flight` are read from the
    /// pool at scrape time.
    pub fn render(&self, queue_depth: usize, in_flight: usize) -> String {
        let mut out = String::with_capacity(8192);
        let o = &mut out;
        head(o, "tandem_requests_total", "counter", "Requests answered, by route kind and status class.");
        for (route, name) in ROUTES {
            for (class, code) in CLASSES.iter().enumerate() {
                let n = self.requests[route as usize][class].load(Relaxed);
                let _ = writeln!(o, "tandem_requests_total{{route=\"{name}\",code=\"{code}\"}} {n}");
            }
        }
        head(
            o,
            "tandem_request_duration_seconds",
            "histogram",
            "Time from a request's head arriving to its response head, by route kind.",
        );
        for (route, name) in &ROUTES[..TIMED] {
            self.durations[*route as usize].render(o, "tandem_request_duration_seconds", &format!("route=\"{name}\""));
        }
        head(o, "tandem_queue_depth", "gauge", "Requests waiting for a worker.");
        let _ = writeln!(o, "tandem_queue_depth {queue_depth}");
        head(o, "tandem_app_requests_in_flight", "gauge", "App requests queued or running in a worker.");
        let _ = writeln!(o, "tandem_app_requests_in_flight {in_flight}");
        head(o, "tandem_queue_wait_seconds", "histogram", "Time app requests waited in the queue for a worker.");
        self.queue_wait.render(o, "tandem_queue_wait_seconds", "");
        head(o, "tandem_workers", "gauge", "Worker processes, by state.");
        for (state, slot) in ["booting", "idle", "busy", "draining"].iter().zip(&self.workers) {
            let _ = writeln!(o, "tandem_workers{{state=\"{state}\"}} {}", slot.load(Relaxed));
        }
        head(o, "tandem_worker_restarts_total", "counter", "Workers replaced, by reason.");
        for (reason, slot) in REASONS.iter().zip(&self.restarts) {
            let _ = writeln!(o, "tandem_worker_restarts_total{{reason=\"{reason}\"}} {}", slot.load(Relaxed));
        }
        head(o, "tandem_received_bytes_total", "counter", "Bytes read from client connections.");
        let _ = writeln!(o, "tandem_received_bytes_total {}", self.bytes_in.load(Relaxed));
        head(o, "tandem_sent_bytes_total", "counter", "Bytes written to client connections.");
        let _ = writeln!(o, "tandem_sent_bytes_total {}", self.bytes_out.load(Relaxed));
        head(o, "tandem_sendfile_bytes_total", "counter", "Bytes of files sent to clients with sendfile(2).");
        let _ = writeln!(o, "tandem_sendfile_bytes_total {}", self.sendfile_bytes.load(Relaxed));
        head(o, "tandem_open_connections", "gauge", "Client connections open now.");
        let _ = writeln!(o, "tandem_open_connections {}", self.connections.load(Relaxed).max(0));
        head(o, "tandem_connections_total", "counter", "Client connections accepted.");
        let _ = writeln!(o, "tandem_connections_total {}", self.connections_total.load(Relaxed));
        head(
            o,
            "tandem_static_cache_hits_total",
            "counter",
            "Names (files and precompressed siblings) --static-cache answered for.",
        );
        let _ = writeln!(o, "tandem_static_cache_hits_total {}", self.file_hits.load(Relaxed));
        head(
            o,
            "tandem_static_cache_misses_total",
            "counter",
            "Names --static-cache had to ask the file system about.",
        );
        let _ = writeln!(o, "tandem_static_cache_misses_total {}", self.file_misses.load(Relaxed));
        head(
            o,
            "tandem_static_cache_stats_total",
            "counter",
            "stat calls --static-cache made to check entries that change notices could not cover.",
        );
        let _ = writeln!(o, "tandem_static_cache_stats_total {}", self.file_stats.load(Relaxed));
        head(
            o,
            "tandem_static_cache_watches",
            "gauge",
            "inotify watches --static-cache holds (directories and files).",
        );
        let _ = writeln!(o, "tandem_static_cache_watches {}", self.file_watches.load(Relaxed));
        head(o, "tandem_static_gzip_cache_hits_total", "counter", "Static gzip responses served from the cache.");
        let _ = writeln!(o, "tandem_static_gzip_cache_hits_total {}", self.gzip_hits.load(Relaxed));
        head(o, "tandem_static_gzip_cache_misses_total", "counter", "Static files gzipped on demand (cache misses).");
        let _ = writeln!(o, "tandem_static_gzip_cache_misses_total {}", self.gzip_misses.load(Relaxed));
        head(o, "tandem_upstream_up", "gauge", "Whether a proxy upstream passes its health checks (1) or not (0).");
        for (name, up) in self.upstreams.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "tandem_upstream_up{{upstream=\"{}\"}} {}", escape(name), u8::from(*up));
        }
        out
    }
}

/// A bucket bound as Prometheus' own clients write it ("0.005", "1.0").
fn bound(le: f64) -> String {
    if le.fract() == 0.0 {
        format!("{le:.1}")
    } else {
        le.to_string()
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_by_route_and_class() {
        let m = Metrics::new();
        m.request(RouteKind::App, 200, Duration::from_millis(3));
        m.request(RouteKind::App, 204, Duration::from_millis(30));
        m.request(RouteKind::Static, 404, Duration::from_secs(20));
        let text = m.render(2, 5);
        assert!(text.contains("tandem_requests_total{route=\"app\",code=\"2xx\"} 2\n"), "{text}");
        assert!(text.contains("tandem_requests_total{route=\"static\",code=\"4xx\"} 1\n"));
        assert!(text.contains("tandem_requests_total{route=\"proxy\",code=\"5xx\"} 0\n"));
        assert!(text.contains("tandem_queue_depth 2\n"));
        assert_eq!(m.requests_total(), 3);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.request(RouteKind::App, 200, Duration::from_millis(3));
        m.request(RouteKind::App, 200, Duration::from_millis(30));
        m.request(RouteKind::App, 200, Duration::from_secs(20));
        let text = m.render(0, 0);
        let app = "tandem_request_duration_seconds_bucket{route=\"app\",";
        assert!(text.contains(&format!("{app}le=\"0.005\"}} 1\n")), "{text}");
        assert!(text.contains(&format!("{app}le=\"0.05\"}} 2\n")));
        assert!(text.contains(&format!("{app}le=\"10.0\"}} 2\n")));
        assert!(text.contains(&format!("{app}le=\"+Inf\"}} 3\n")));
        assert!(text.contains("tandem_request_duration_seconds_count{route=\"app\"} 3\n"));
        assert!(text.contains("tandem_request_duration_seconds_sum{route=\"app\"} 20.033\n"));
        assert!(text.contains("tandem_queue_wait_seconds_bucket{le=\"+Inf\"} 0\n"));
    }

    #[test]
    fn upstream_names_are_escaped() {
        let m = Metrics::new();
        m.set_upstream_health("a\"b", false);
        assert!(m.render(0, 0).contains("tandem_upstream_up{upstream=\"a\\\"b\"} 0\n"));
    }
}
