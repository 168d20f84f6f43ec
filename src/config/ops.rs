//! The operations part of the configuration: the `--metrics-bind`,
//! `--control-socket` and `--pid` flags, and the listening sockets a
//! process manager hands over (systemd socket activation's `LISTEN_FDS`,
//! or `TANDEM_FDS` from a tandem upgrading itself on USR2). What the
//! metrics, control socket and pid file do is `metrics`' and `control`'s
//! business.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{parse_bind, Bind, ConfigError};

/// Environment variable a tandem upgrading itself passes its listening
/// descriptors in: comma-separated descriptor numbers, in `--bind` order.
pub const INHERITED_FDS_ENV: &str = "TANDEM_FDS";
/// And the descriptor of its `--metrics-bind` listener.
pub const INHERITED_METRICS_FD_ENV: &str = "TANDEM_METRICS_FD";

/// Where the control socket goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSocket {
    /// `$XDG_RUNTIME_DIR/tandem-PID.sock`, else `/tmp/tandem-PID.sock`.
    Default,
    Path(PathBuf),
    /// `--control-socket none`.
    Off,
}

/// How tandem is watched and controlled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsOptions {
    /// Address of the Prometheus metrics listener; `None`: no metrics listener.
    pub metrics_bind: Option<SocketAddr>,
    /// The metrics listener inherited from the tandem this one upgrades.
    pub inherited_metrics_fd: Option<i32>,
    pub control_socket: ControlSocket,
    /// Written with the master's pid at start, removed at exit.
    pub pid_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(super) struct OpsArgs {
    /// Serve Prometheus metrics on this HOST:PORT, at /metrics (e.g.
    /// 127.0.0.1:9100). Off by default.
    #[arg(long, value_name = "ADDRESS")]
    metrics_bind: Option<String>,

    /// Unix socket for 'tandem ctl' and 'tandem top' (owner-only, mode 0600).
    /// Default: $XDG_RUNTIME_DIR/tandem-PID.sock, else /tmp/tandem-PID.sock;
    /// 'none' disables it.
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,

    /// Write the master's pid to this file at start (removed at exit; renamed
    /// to FILE.oldbin while a USR2 upgrade hands over to a new tandem).
    #[arg(long = "pid", value_name = "FILE")]
    pid_file: Option<PathBuf>,
}

impl OpsArgs {
    pub(super) fn into_options(self) -> Result<OpsOptions, ConfigError> {
        let metrics_bind = match self.metrics_bind.as_deref() {
            None => None,
            Some(text) => match parse_bind(text).map_err(|e| ConfigError(format!("--metrics-bind: {e}")))? {
                Bind::Tcp(addr) => Some(addr),
                _ => return Err(ConfigError(format!("invalid --metrics-bind '{text}': expected HOST:PORT"))),
            },
        };
        let control_socket = match self.control_socket {
            None => ControlSocket::Default,
            Some(p) if p.as_os_str() == "none" => ControlSocket::Off,
            Some(p) if p.as_os_str().is_empty() => return Err(ConfigError("--control-socket: empty path".into())),
            Some(p) => ControlSocket::Path(p),
        };
        let inherited_metrics_fd = std::env::var(INHERITED_METRICS_FD_ENV).ok().and_then(|fd| fd.parse().ok());
        std::env::remove_var(INHERITED_METRICS_FD_ENV);
        Ok(OpsOptions {
            metrics_bind,
            inherited_metrics_fd: inherited_metrics_fd.filter(|_| metrics_bind.is_some()),
            control_socket,
            pid_file: self.pid_file,
        })
    }
}

/// Listening sockets handed over by whoever started us, if any: `TANDEM_FDS`
/// (a tandem upgrading itself), else systemd's `LISTEN_FDS` when
/// `LISTEN_PID` is this process. Both variables are removed so workers
/// don't see them.
pub(super) fn inherited_binds() -> Result<Option<Vec<Bind>>, ConfigError> {
    if let Ok(list) = std::env::var(INHERITED_FDS_ENV) {
        std::env::remove_var(INHERITED_FDS_ENV);
        let fds = list
            .split(',')
            .map(|fd| fd.trim().parse::<i32>().ok().filter(|fd| *fd >= 0).map(Bind::Fd))
            .collect::<Option<Vec<_>>>()
            .filter(|fds| !fds.is_empty())
            .ok_or_else(|| ConfigError(format!("{INHERITED_FDS_ENV}={list}: expected descriptor numbers")))?;
        return Ok(Some(fds));
    }
    let (Ok(pid), Ok(count)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let count: i32 = count.trim().parse().map_err(|_| ConfigError(format!("LISTEN_FDS={count}: not a number")))?;
    if !(1..=1024).contains(&count) {
        return Err(ConfigError(format!("LISTEN_FDS={count}: expected 1 to 1024 sockets")));
    }
    // sd_listen_fds(3): they start at descriptor 3.
    Ok(Some((3..3 + count).map(Bind::Fd).collect()))
}

#[cfg(test)]
mod tests {
    use super::super::parse_for_test as parse;
    use super::*;

    #[test]
    fn ops_flags() {
        let c = parse(&["--metrics-bind", "127.0.0.1:9100", "--control-socket", "none", "--pid", "/run/t.pid", "x"])
            .unwrap()
            .ops;
        assert_eq!(c.metrics_bind, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.control_socket, ControlSocket::Off);
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/t.pid")));
        let c = parse(&["x"]).unwrap().ops;
        assert_eq!((c.metrics_bind, c.control_socket), (None, ControlSocket::Default));
        let msg = parse(&["--metrics-bind", "unix:/x", "x"]).unwrap_err().to_string();
        assert!(msg.contains("--metrics-bind"), "{msg}");
    }
}
