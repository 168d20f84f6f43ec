//! tandem's life from start to exit: bind, boot the workers, start the
//! front, answer signals and events until told to stop, then drain and
//! stop (the steps themselves are the other `supervisor` modules').

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch as watch_channel;

use super::{ops, Supervisor, TERM_GRACE};
use crate::config::Config;
use crate::dispatch::Pool;
use crate::front::{self, AccessLog, Front};
use crate::service;

struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    ttin: Signal,
    ttou: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU))?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Runs tandem until it is told to stop. Returns the process exit code.
pub async fn run(config: Arc<Config>) -> anyhow::Result<i32> {
    let start_dir = std::env::current_dir().context("reading the current directory")?;
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).with_context(|| format!("--chdir {}", dir.display()))?;
    }
    // Opened first: its files (pid, control socket) go when it is dropped.
    let mut ops = ops::Ops::open(&config, start_dir)?;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(front::Tls::load(files, &config.http2)?)),
        None => None,
    };
    let listeners = front::bind_all(&config.binds)?;
    let mut socket_files: Vec<_> = listeners.iter().filter_map(|l| l.owned_path().cloned()).collect();
    socket_files.extend(ops.taken_over_files(&listeners));
    let access_log = match &config.access_log {
        Some(target) => Some(
            AccessLog::start(target.clone(), config.access_log_format)
                .with_context(|| format!("cannot open the access log {target}"))?,
        ),
        None => None,
    };
    let pool = Pool::new(config.backlog).context("creating the request queue")?;
    ops.keep_listeners(&listeners);
    let mut sup = Supervisor::new(Arc::clone(&config), Arc::clone(&pool));
    sup.ops = ops;
    sup.tls = tls;
    let mut signals = Signals::new()?;

    let booted = tokio::select! {
        code = sup.boot() => code,
        _ = signals.term.recv() => Some(0),
        _ = signals.int.recv() => Some(0),
        _ = signals.quit.recv() => Some(0),
    };
    if let Some(code) = booted {
        sup.stop_workers(Duration::ZERO).await;
        remove_files(&socket_files);
        return Ok(code);
    }

    let (stop_tx, stop_rx) = watch_channel::channel(false);
    for listener in &listeners {
        let url = listener.url();
        let url = if sup.tls.is_some() { url.replacen("http://", "https://", 1) } else { url };
        tracing::info!("listening on {url}");
    }
    let front = Arc::new(Front::new(Arc::clone(&config), Arc::clone(&pool), access_log, sup.tls.clone()));
    if let Err(e) = front::serve(listeners, Arc::clone(&front), stop_rx.clone()) {
        sup.stop_workers(Duration::ZERO).await;
        remove_files(&socket_files);
        return Err(anyhow::Error::new(e).context("starting the front's event loops"));
    }
    sup.ops.serving(&pool, &stop_rx, sup.target);
    if config.reload {
        sup.watch_files();
    }

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let graceful = loop {
        tokio::select! {
            Some(event) = sup.events.recv() => sup.on_event(event),
            _ = tick.tick() => sup.reap_hung(),
            _ = signals.hup.recv() => sup.start_reload("HUP"),
            _ = signals.ttin.recv() => sup.add_worker("TTIN"),
            _ = signals.ttou.recv() => sup.remove_worker("TTOU"),
            _ = signals.usr1.recv() => front.reopen_logs(),
            _ = signals.usr2.recv() => sup.start_upgrade(),
            Some(request) = sup.ops.commands.recv() => if sup.on_control(request) { break true },
            _ = signals.term.recv() => break true,
            _ = signals.int.recv() => break false,
            _ = signals.quit.recv() => break false,
        }
        sup.publish();
    };

    service::notify("STOPPING=1");
    sup.stopping = true;
    let _ = stop_tx.send(true);
    let mut grace = TERM_GRACE;
    if graceful {
        tracing::info!("stopping: finishing in-flight requests (up to {}s)", config.graceful_timeout.as_secs());
        let deadline = tokio::time::Instant::now() + config.graceful_timeout;
        // Until every connection has finished its last response (idle ones
        // close at once), or no worker is left to finish the app's requests
        // (a TERM sent to the whole process group stops them too).
        while sup.pool.in_flight() > 0 || front.connections() > 0 || front.accepting() {
            if sup.pool.in_flight() > 0 && sup.config.has_app() && sup.workers.is_empty() {
                tracing::warn!("{} requests still in flight, and no worker left to finish them", sup.pool.in_flight());
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "{} requests and {} connections still in flight after --graceful-timeout",
                    sup.pool.in_flight(),
                    front.connections()
                );
                grace = Duration::ZERO;
                break;
            }
            tokio::select! {
                Some(event) = sup.events.recv() => sup.on_event(event),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = signals.int.recv() => { grace = Duration::ZERO; break }
                _ = signals.quit.recv() => { grace = Duration::ZERO; break }
            }
        }
    } else {
        tracing::info!("stopping now");
        grace = Duration::ZERO;
    }
    sup.stop_workers(grace).await;
    if sup.ops.handed_over() {
        tracing::info!("listening sockets stay open in the new tandem");
    } else {
        remove_files(&socket_files);
    }
    tracing::info!("stopped");
    Ok(0)
}

fn remove_files(paths: &[std::path::PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}
