//! The control socket itself: binding it owner-only, reading request
//! lines, and passing each command to the supervisor with a channel for
//! its answer. Only clients of the same user (checked with `SO_PEERCRED`)
//! are served.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::protocol::{self, Command};
use crate::config::ControlSocket;

/// Longest request line accepted.
const MAX_LINE: usize = 4096;

/// A command on its way to the supervisor, and where its answer goes.
pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<Value>,
}

/// The bound control socket and the file it made.
pub struct ControlListener {
    /// Taken by [`serve`].
    listener: Option<UnixListener>,
    path: PathBuf,
    inode: u64,
}

impl ControlListener {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlListener {
    /// Removes the socket file, unless another process (a tandem this one
    /// upgraded to) has replaced it.
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The default place: `$XDG_RUNTIME_DIR/tandem-PID.sock`, else `/tmp`.
fn default_path() -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| d.is_dir());
    dir.unwrap_or_else(|| PathBuf::from("/tmp")).join(format!("tandem-{}.sock", std::process::id()))
}

/// Binds the control socket (`None` when it is off). `take_over`: a live
/// socket at the path belongs to the tandem this one is upgrading from and
/// may be replaced. Must be called inside the runtime.
pub fn bind(socket: &ControlSocket, take_over: bool) -> anyhow::Result<Option<ControlListener>> {
    let path = match socket {
        ControlSocket::Off => return Ok(None),
        ControlSocket::Default => default_path(),
        ControlSocket::Path(p) => p.clone(),
    };
    let bound = || -> anyhow::Result<ControlListener> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() && !take_over {
                bail!("another tandem answers on it (use --control-socket to choose another path)");
            }
            std::fs::remove_file(&path).context("removing the stale socket file")?;
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let inode = std::fs::metadata(&path)?.ino();
        Ok(ControlListener { listener: Some(listener), path: path.clone(), inode })
    };
    bound().with_context(|| format!("cannot open the control socket {}", path.display())).map(Some)
}

/// Serves control clients until `stop` turns true.
pub fn serve(listener: &mut ControlListener, commands: mpsc::Sender<Request>, mut stop: watch::Receiver<bool>) {
    let Some(listener) = listener.listener.take() else { return };
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stopped(&mut stop) => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(client(stream, commands.clone()));
        }
    });
}

/// Answers one client's requests, one line each, until it hangs up.
async fn client(stream: UnixStream, commands: mpsc::Sender<Request>) {
    if stream.peer_cred().map(|c| c.uid()).ok() != Some(crate::sys::uid()) {
        tracing::warn!("control socket: refused a client of another user");
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut lines).take(MAX_LINE as u64 + 1);
        match limited.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = if line.len() > MAX_LINE || !line.ends_with('\n') {
            json!({"ok": false, "error": format!("request line longer than {MAX_LINE} bytes")})
        } else {
            match protocol::parse(line.trim()) {
                Ok(command) => ask(&commands, command).await,
                Err(answer) => answer,
            }
        };
        let mut text = answer.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() || line.len() > MAX_LINE {
            return;
        }
    }
}

async fn ask(commands: &mpsc::Sender<Request>, command: Command) -> Value {
    let (reply, answer) = oneshot::channel();
    if commands.send(Request { command, reply }).await.is_err() {
        return json!({"ok": false, "error": "tandem is stopping"});
    }
    answer.await.unwrap_or_else(|_| json!({"ok": false, "error": "tandem is stopping"}))
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
