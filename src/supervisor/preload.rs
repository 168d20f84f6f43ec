//! `--preload`: a template process per generation imports the app once and
//! forks workers from it, so they share its memory copy-on-write and a
//! replacement starts in milliseconds instead of a full import.
//!
//! The template is `tandem._worker --template`; the little control
//! protocol (ASCII records on a `SOCK_SEQPACKET` socket) is documented
//! there, in `run_template`. This module starts a template, turns what it
//! says into supervisor [`Event`]s, and asks it to fork. The workers it
//! forks are the template's children, so their exits reach the supervisor
//! as the template's `exited` reports.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::sync::mpsc;

use super::spawn;
use super::Event;
use crate::config::Config;
use crate::sys::{self, PairKind};

/// A running template process.
pub struct Template {
    pub pid: u32,
    control: OwnedFd,
}

impl Template {
    /// Starts the template of `generation`. It reports `TemplateReady` once
    /// the app is imported, or `TemplateExited` if it can't.
    pub fn start(config: &Config, generation: u64, events: &mpsc::UnboundedSender<Event>) -> std::io::Result<Template> {
        let (ours, theirs) = sys::socketpair(PairKind::SeqPacket)?;
        let started = spawn::start_template(config, &theirs)?;
        drop(theirs);
        let pid = started.pid;
        let reader = sys::dup(ours.as_raw_fd())?;
        let tx = events.clone();
        std::thread::Builder::new()
            .name(format!("tandem-template-{generation}"))
            .spawn(move || read_control(reader, generation, tx))?;
        let tx = events.clone();
        let mut child = started.child;
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = tx.send(Event::TemplateExited { generation, status });
        });
        Ok(Template { pid, control: ours })
    }

    /// Asks the template to fork a worker reading `requests` and replying
    /// on `replies`. The new pid arrives as `Event::Forked`.
    pub fn fork(&self, requests: &OwnedFd, replies: &OwnedFd, max_requests: u64) -> std::io::Result<()> {
        let message = format!("fork {max_requests}");
        sys::send_with_fds(
            &self.control,
            &[IoSlice::new(message.as_bytes())],
            &[requests.as_raw_fd(), replies.as_raw_fd()],
        )?;
        Ok(())
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        // Closing our end tells the template to stop forking; it exits once
        // its workers have.
        let _ = sys::shutdown(&self.control);
    }
}

/// Reads the template's reports until it closes the socket.
fn read_control(control: OwnedFd, generation: u64, events: mpsc::UnboundedSender<Event>) {
    let mut buf = [0u8; 256];
    loop {
        let n = match sys::recv_with_fds(&control, &mut buf, &mut Vec::new()) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let event = match parse(&buf[..n], generation) {
            Some(event) => event,
            None => {
                tracing::error!("template of generation {generation} said {:?}", String::from_utf8_lossy(&buf[..n]));
                continue;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

fn parse(message: &[u8], generation: u64) -> Option<Event> {
    let text = std::str::from_utf8(message).ok()?;
    let mut words = text.split_whitespace();
    match (words.next()?, words.next(), words.next()) {
        ("ready", None, None) => Some(Event::TemplateReady { generation }),
        ("forked", Some(pid), None) => Some(Event::Forked { generation, pid: pid.parse().ok()? }),
        ("exited", Some(pid), Some(status)) => {
            Some(Event::Exited { pid: pid.parse().ok()?, status: Some(ExitStatus::from_raw(status.parse().ok()?)) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        assert!(matches!(parse(b"ready", 3), Some(Event::TemplateReady { generation: 3 })));
        assert!(matches!(parse(b"forked 42", 3), Some(Event::Forked { generation: 3, pid: 42 })));
        match parse(b"exited 42 256", 1) {
            Some(Event::Exited { pid: 42, status: Some(s) }) => assert_eq!(s.code(), Some(1)),
            _ => panic!("exited did not parse"),
        }
        match parse(b"exited 7 9", 1) {
            Some(Event::Exited { pid: 7, status: Some(s) }) => assert_eq!(s.signal(), Some(9)),
            _ => panic!("exited did not parse"),
        }
        for bad in [&b"forked"[..], b"forked x", b"exited 1", b"hello", b"\xff", b"ready now"] {
            assert!(parse(bad, 1).is_none(), "{bad:?}");
        }
    }
}
