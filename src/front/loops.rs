//! The front's event loops: one single-threaded tokio runtime per front
//! thread (`--front-threads`), as nginx runs one event loop per worker
//! process. A client connection lives its whole life on the loop it was
//! handed to, so its reads, writes, timers and the upstream connections it
//! opens wake no other thread; the work-stealing runtime moved tasks
//! between threads and woke idle ones, about 15% of the front's CPU on a
//! proxied request.
//!
//! The accept loops (on the supervisor's runtime) hand each new connection
//! to the loop with the fewest open ones. Loops run until the accept loops
//! end (tandem is stopping) and their last connection has finished.
//!
//! All streams of one HTTP/2 connection run on its loop: a load balancer
//! that multiplexes everything over a few connections keeps as few cores
//! busy.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// What a loop runs: a closure that starts a task on it, and the place it
/// holds on the loop.
type Job = (Box<dyn FnOnce(Assigned) + Send>, Assigned);

thread_local! {
    /// Which loop this thread runs (1-based); 0 off the loops.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The loop this thread runs (1-based), or 0 on any other thread: lets a
/// pool hand out only connections that live on the caller's own loop.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// The front's loops.
pub struct Loops {
    loops: Vec<Loop>,
}

struct Loop {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections handed to it and not yet finished.
    open: Arc<AtomicUsize>,
}

/// A connection's place on its loop, counted until dropped.
pub struct Assigned(Arc<AtomicUsize>);

impl Drop for Assigned {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Loops {
    /// Starts `count` loops, each on a thread of its own.
    pub fn start(count: usize) -> std::io::Result<Loops> {
        let mut loops = Vec::with_capacity(count);
        let count = count.max(1);
        for index in 1..=count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // One pool of 512 blocking threads at most, as before the
                // loops, shared out among them.
                .max_blocking_threads((512 / count).max(8))
                .thread_name("tandem-blocking")
                .build()?;
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            let open = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&open);
            std::thread::Builder::new().name("tandem-front".into()).spawn(move || {
                CURRENT.with(|c| c.set(index));
                runtime.block_on(async move {
                    tokio::spawn(keep_the_timer_awake());
                    while let Some((job, assigned)) = queue.recv().await {
                        job(assigned);
                    }
                    // The front is gone: let the last connections finish.
                    while counted.load(Ordering::Relaxed) > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                });
            })?;
            loops.push(Loop { jobs, open });
        }
        Ok(Loops { loops })
    }

    /// Runs `job` on the loop with the fewest open connections; it gets
    /// the connection's [`Assigned`] place to hold until the connection ends.
    /// `job` runs inside that loop's runtime, so what it spawns and the
    /// sockets it registers belong to that loop.
    pub fn hand_off(&self, job: impl FnOnce(Assigned) + Send + 'static) {
        let mut job: Box<dyn FnOnce(Assigned) + Send> = Box::new(job);
        let mut order: Vec<&Loop> = self.loops.iter().collect();
        order.sort_by_key(|l| l.open.load(Ordering::Relaxed));
        for next in order {
            // Counted from now, so the next hand-off sees it.
            next.open.fetch_add(1, Ordering::Relaxed);
            let assigned = Assigned(Arc::clone(&next.open));
            match next.jobs.send((job, assigned)) {
                Ok(()) => return,
                // A loop that has ended (it never should) gets no more.
                Err(mpsc::error::SendError((back, _))) => {
                    tracing::error!("a front event loop has stopped; handing the connection to another");
                    job = back;
                }
            }
        }
    }
}

/// How often a loop's timer wakes it at the least.
const TIMER_PACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a deadline at most [`TIMER_PACE`] away on this loop's timer.
///
/// tokio's timer wakes its loop through the loop's eventfd (a `write`, and
/// one more turn of the loop) whenever a timer is set to fire before the
/// loop's next planned wake-up, even when it is set from the loop itself.
/// Every proxied request sets one (the upstream's response timeout, 60 s)
/// that is earlier than the connection's keep-alive timeout (75 s), the
/// one the loop slept on: one extra system call and one extra turn per
/// request. With a wake-up planned at most a second ahead, timeouts of a
/// second or more (all of tandem's) never come first. The price is one
/// wake-up a second on an idle loop.
async fn keep_the_timer_awake() {
    let mut tick = tokio::time::interval(TIMER_PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc as std_mpsc;

    #[test]
    fn connections_go_to_the_least_busy_loop_and_run_there() {
        let loops = Loops::start(2).unwrap();
        let (seen, rx) = std_mpsc::channel();
        let mut held = Vec::new();
        for _ in 0..4 {
            let seen = seen.clone();
            loops.hand_off(move |assigned| {
                let on = current();
                // A task spawned here runs on the same loop.
                tokio::spawn(async move { seen.send((on, current(), assigned)).unwrap() });
            });
            held.push(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap());
        }
        let mut on: Vec<_> = held.iter().map(|(loop_ran, task_ran, _)| (*loop_ran, *task_ran)).collect();
        on.sort();
        assert_eq!(on, [(1, 1), (1, 1), (2, 2), (2, 2)], "two each, tasks on their own loop");
        assert_eq!(current(), 0);

        // Finished connections no longer count: the next one goes where they were.
        held.retain(|(loop_ran, _, _)| *loop_ran == 2);
        assert_eq!(loops.loops[0].open.load(Ordering::Relaxed), 0);
        let seen2 = seen.clone();
        loops.hand_off(move |assigned| seen2.send((current(), current(), assigned)).unwrap());
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap().0, 1);
    }
}
