//! The access log (`--access-logfile`): one line per request, written when
//! its response has been sent (or the client went away), in nginx's
//! "combined" format followed by the request time and the worker pid, or as
//! one JSON object per line (`--access-log-format json`).
//!
//! Lines are formatted on the connection's task and handed to one writer
//! thread through a bounded queue, so a slow disk never stalls a runtime
//! thread: when the queue is full the line is dropped and counted, and the
//! count is reported in the error log. `USR1` reopens the file, for log
//! rotation, as nginx and gunicorn do. What a request *did* is the
//! handler's business; this module only records it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header;

use super::handler::Peer;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stdout => write!(f, "-"),
            Target::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The shape of each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// nginx's "combined", then the request time in seconds and the worker pid.
    Combined,
    /// One JSON object per line.
    Json,
}

/// The running access log: a handle on the writer thread.
#[derive(Debug)]
pub struct AccessLog {
    format: Format,
    lines: SyncSender<Command>,
    dropped: Arc<AtomicU64>,
}

enum Command {
    Line(String),
    Reopen,
}

impl AccessLog {
    /// Opens the log (the file is created if needed and appended to) and
    /// starts its writer thread.
    pub fn start(target: Target, format: Format) -> std::io::Result<AccessLog> {
        let out = open(&target)?;
        let (lines, rx) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("tandem-access-log".into())
            .spawn(move || write_lines(target, out, rx, counter))?;
        Ok(AccessLog { format, lines, dropped })
    }

    /// Reopens the file (after rotation moved it away).
    pub fn reopen(&self) {
        let _ = self.lines.try_send(Command::Reopen);
    }

    /// Logs a request the front refused before it could read its head (a
    /// malformed or oversized request line or header): nginx logs these too.
    pub fn refusal(&self, peer: &Peer, status: u16, body_len: u64) {
        let entry = Entry {
            format: self.format,
            started: Instant::now(),
            at: SystemTime::now(),
            remote_addr: String::from_utf8_lossy(&peer.remote_addr).into_owned(),
            user: None,
            request: None,
            referer: None,
            user_agent: None,
            status,
            bytes: body_len,
            worker: None,
            lines: self.lines.clone(),
            dropped: Arc::clone(&self.dropped),
        };
        drop(entry);
    }

    /// The start of a request's line, written when the entry is dropped.
    pub fn entry(&self, parts: &http::request::Parts, peer: &Peer) -> Entry {
        Entry {
            format: self.format,
            started: Instant::now(),
            at: SystemTime::now(),
            remote_addr: String::from_utf8_lossy(&peer.remote_addr).into_owned(),
            user: remote_user(parts.headers.get(header::AUTHORIZATION)),
            request: Some(RequestLine {
                method: parts.method.to_string(),
                target: parts.uri.path_and_query().map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_string()),
                version: parts.version,
            }),
            referer: header_text(parts, header::REFERER),
            user_agent: header_text(parts, header::USER_AGENT),
            status: 0,
            bytes: 0,
            worker: None,
            lines: self.lines.clone(),
            dropped: Arc::clone(&self.dropped),
        }
    }
}

/// One request being logged: filled in as the response goes out, written
/// when dropped (the body finished, or the connection ended).
pub struct Entry {
    format: Format,
    started: Instant,
    at: SystemTime,
    remote_addr: String,
    user: Option<String>,
    /// `None` for a request refused before its head could be read.
    request: Option<RequestLine>,
    referer: Option<String>,
    user_agent: Option<String>,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// The worker that answered, for app requests.
    pub worker: Option<u32>,
    lines: SyncSender<Command>,
    dropped: Arc<AtomicU64>,
}

/// What a request asked for.
struct RequestLine {
    method: String,
    target: String,
    version: http::Version,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let line = match self.format {
            Format::Combined => self.combined(self.started.elapsed()),
            Format::Json => self.json(self.started.elapsed()),
        };
        if let Err(TrySendError::Full(_)) = self.lines.try_send(Command::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Entry {
    /// `addr - user [time] "request" status bytes "referer" "agent" seconds pid`
    fn combined(&self, took: Duration) -> String {
        let mut line = String::with_capacity(200);
        let _ = write!(
            line,
            "{} - {} [{}] \"",
            self.remote_addr,
            self.user.as_deref().map_or_else(|| "-".into(), escape),
            clf_time(self.at)
        );
        match &self.request {
            Some(r) => line.push_str(&escape(&format!("{} {} {:?}", r.method, r.target, r.version))),
            None => line.push('-'),
        }
        let _ = write!(
            line,
            "\" {} {} \"{}\" \"{}\" {}.{:03} {}",
            self.status,
            self.bytes,
            self.referer.as_deref().map_or_else(|| "-".into(), escape),
            self.user_agent.as_deref().map_or_else(|| "-".into(), escape),
            took.as_secs(),
            took.subsec_millis(),
            self.worker.map_or_else(|| "-".into(), |pid| pid.to_string()),
        );
        line
    }

    fn json(&self, took: Duration) -> String {
        let text = |s: &Option<String>| s.as_deref().map_or_else(|| "null".into(), json_string);
        let (method, target, protocol) = match &self.request {
            Some(r) => (json_string(&r.method), json_string(&r.target), json_string(&format!("{:?}", r.version))),
            None => ("null".into(), "null".into(), "null".into()),
        };
        format!(
            "{{\"time\":\"{}\",\"remote_addr\":{},\"remote_user\":{},\"method\":{},\"target\":{},\
             \"protocol\":{},\"status\":{},\"bytes_sent\":{},\"referer\":{},\"user_agent\":{},\
             \"request_time\":{}.{:06},\"worker_pid\":{}}}",
            iso_time(self.at),
            json_string(&self.remote_addr),
            text(&self.user),
            method,
            target,
            protocol,
            self.status,
            self.bytes,
            text(&self.referer),
            text(&self.user_agent),
            took.as_secs(),
            took.subsec_micros(),
            self.worker.map_or_else(|| "null".into(), |pid| pid.to_string()),
        )
    }
}

fn open(target: &Target) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
    })
}

/// The writer thread: buffers lines and flushes whenever the queue runs dry.
fn write_lines(target: Target, out: Box<dyn std::io::Write + Send>, rx: Receiver<Command>, dropped: Arc<AtomicU64>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut reported = 0;
    while let Ok(mut command) = rx.recv() {
        loop {
            match command {
                Command::Line(mut line) => {
                    line.push('\n');
                    if let Err(err) = out.write_all(line.as_bytes()) {
                        tracing::error!("access log: cannot write: {err}");
                    }
                }
                Command::Reopen => {
                    let _ = out.flush();
                    match open(&target) {
                        Ok(new) => {
                            out = std::io::BufWriter::with_capacity(64 * 1024, new);
                            tracing::info!("access log reopened");
                        }
                        Err(err) => tracing::error!("access log: cannot reopen, keeping the old file: {err}"),
                    }
                }
            }
            match rx.try_recv() {
                Ok(next) => command = next,
                Err(_) => break,
            }
        }
        let _ = out.flush();
        let now = dropped.load(Ordering::Relaxed);
        if now != reported {
            tracing::warn!("access log: {} lines dropped, the log could not keep up", now - reported);
            reported = now;
        }
    }
}

fn header_text(parts: &http::request::Parts, name: header::HeaderName) -> Option<String> {
    parts.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The user name of HTTP Basic authentication, as nginx's `$remote_user`.
fn remote_user(value: Option<&http::HeaderValue>) -> Option<String> {
    let value = value?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(token.trim())?;
    let user = decoded.split(|&b| b == b':').next()?;
    (!user.is_empty()).then(|| String::from_utf8_lossy(user).into_owned())
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in bytes {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// nginx's escaping of logged strings: `"`, `\` and bytes outside printable
/// ASCII become `\xHH`, so a client cannot forge a line or a field.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f.. => {
                let _ = write!(out, "\\x{b:02X}");
            }
            _ => out.push(b as char),
        }
    }
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Year, month, day, hour, minute, second of a UTC time.
fn civil(at: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
    // civil_from_days algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// `24/Nov/2026:06:15:23 +0000`, the common log format's time (in UTC).
fn clf_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s) = civil(at);
    format!("{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000", MONTHS[(mo - 1) as usize])
}

/// `2026-11-24T06:15:23Z`.
fn iso_time(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(at);
    format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(format: Format) -> (Entry, Receiver<Command>) {
        let (lines, rx) = mpsc::sync_channel(4);
        let req = http::Request::get("/a/b?q=1")
            .header("referer", "http://x/\"quoted\"")
            .header("user-agent", "curl/8.0")
            .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let peer = Peer {
            remote_addr: bytes::Bytes::from_static(b"10.1.2.3"),
            remote_port: 5555,
            local_name: bytes::Bytes::from_static(b"localhost"),
            local_port: 80,
            scheme: crate::wire::Scheme::Http,
        };
        let log = AccessLog { format, lines, dropped: Arc::new(AtomicU64::new(0)) };
        let mut e = log.entry(&parts, &peer);
        e.at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_500_923); // 2026-11-24 06:15:23 UTC
        e.status = 200;
        e.bytes = 1234;
        e.worker = Some(4242);
        (e, rx)
    }

    fn line(rx: &Receiver<Command>) -> String {
        match rx.try_recv() {
            Ok(Command::Line(line)) => line,
            _ => panic!("no line"),
        }
    }

    #[test]
    fn combined_line() {
        let (e, rx) = entry(Format::Combined);
        drop(e);
        let line = line(&rx);
        let expected = "10.1.2.3 - aladdin [24/Nov/2026:06:15:23 +0000] \"GET /a/b?q=1 HTTP/1.1\" 200 1234 \
                        \"http://x/\\x22quoted\\x22\" \"curl/8.0\" 0.";
        assert!(line.starts_with(expected), "{line}");
        assert!(line.ends_with(" 4242"), "{line}");
    }

    #[test]
    fn json_line() {
        let (e, rx) = entry(Format::Json);
        drop(e);
        let line = line(&rx);
        assert!(line.starts_with("{\"time\":\"2026-11-24T06:15:23Z\",\"remote_addr\":\"10.1.2.3\""), "{line}");
        assert!(line.contains("\"remote_user\":\"aladdin\""), "{line}");
        assert!(line.contains("\"referer\":\"http://x/\\\"quoted\\\"\""), "{line}");
        assert!(line.contains("\"status\":200,\"bytes_sent\":1234"), "{line}");
        assert!(line.ends_with("\"worker_pid\":4242}"), "{line}");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (e, rx) = entry(Format::Combined);
        let dropped = Arc::clone(&e.dropped);
        let lines = e.lines.clone();
        for _ in 0..4 {
            lines.try_send(Command::Reopen).unwrap();
        }
        drop(e);
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        drop(rx);
    }

    #[test]
    fn escaping_and_dates() {
        assert_eq!(escape("a\"b\\c\n\u{e9}"), "a\\x22b\\x5Cc\\x0A\\xC3\\xA9");
        assert_eq!(json_string("a\"\n\u{e9}"), "\"a\\\"\\u000a\u{e9}\"");
        assert_eq!(iso_time(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(remote_user(Some(&http::HeaderValue::from_static("Bearer abc"))), None);
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
    }
}
