//! How tandem looks to a service manager: `sd_notify` messages (READY=1,
//! RELOADING=1, STOPPING=1, STATUS=…) sent as one datagram to
//! `$NOTIFY_SOCKET` when systemd (or anything speaking its protocol) set
//! it, and the `--pid` file. Socket activation (`LISTEN_FDS`) is read with
//! the rest of the configuration, in `config`.
//!
//! No libsystemd: the protocol is a single `sendto` on a unix datagram
//! socket, and a failure only ever costs a log line.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the service
/// manager, if there is one. Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    match send(Path::new(&socket), state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("sd_notify to {}: {e}", socket.to_string_lossy());
            false
        }
    }
}

fn send(socket: &Path, state: &str) -> io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's default for user services).
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        datagram.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        datagram.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

/// The `--pid` file while tandem runs.
pub struct PidFile {
    path: PathBuf,
    /// While a USR2 upgrade is under way the file is at `PATH.oldbin`.
    moved: bool,
}

impl PidFile {
    /// Writes this process's pid to `path` (atomically: a reader never sees
    /// a half-written file).
    pub fn create(path: &Path) -> io::Result<PidFile> {
        let tmp = path.with_extension("pid-tmp");
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, path)?;
        Ok(PidFile { path: path.to_path_buf(), moved: false })
    }

    fn oldbin(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".oldbin");
        PathBuf::from(name)
    }

    /// Moves the file aside to `PATH.oldbin`, for the new tandem to write `PATH`.
    pub fn move_aside(&mut self) {
        if !self.moved && std::fs::rename(&self.path, self.oldbin()).is_ok() {
            self.moved = true;
        }
    }

    /// Puts the file back after an upgrade that failed.
    pub fn restore(&mut self) {
        if self.moved && std::fs::rename(self.oldbin(), &self.path).is_ok() {
            self.moved = false;
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let current = if self.moved { self.oldbin() } else { self.path.clone() };
        // Only if it is still ours: a new tandem may have written its own.
        let ours = std::fs::read_to_string(&current).is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_sends_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(&path, "READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
    }

    #[test]
    fn pid_file_lives_and_moves_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pid");
        let mut pid = PidFile::create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        pid.move_aside();
        assert!(!path.exists() && dir.path().join("t.pid.oldbin").exists());
        pid.restore();
        assert!(path.exists());
        drop(pid);
        assert!(!path.exists());
    }
}
