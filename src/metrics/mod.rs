//! Prometheus metrics: what tandem counts, and the listener that serves
//! them as text (`--metrics-bind`, path `/metrics`).
//!
//! `registry` owns the counters, gauges and histograms (relaxed atomics, so
//! recording costs a few uncontended adds on the request path) and their
//! text exposition; `server` answers scrapes. The places that count call
//! the small recording functions on [`METRICS`]; what a gauge means at
//! scrape time (queue depth, workers by state) is read from the pool and
//! the supervisor's last published snapshot, never computed per request.

mod registry;
mod server;

pub use registry::{Metrics, RestartReason, RouteKind, WorkerCounts, METRICS};
pub use server::{bind, serve, MetricsListener};
