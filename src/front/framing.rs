//! The strict reading of HTTP/1.1 request framing: which bytes may reach
//! the connection loop (`http1`) at all.
//!
//! Where parsers are lenient, two of them can disagree about where a
//! request ends (request smuggling): a bare LF as a line ending,
//! `Content-Length` together with `Transfer-Encoding`, `Transfer-Encoding:
//! gzip, chunked`, repeated framing fields, whitespace after a chunk size.
//! [`Framing`] allows none of it, and enforces the per-line limits (414,
//! 431). It follows every request on a connection byte by byte: it holds a
//! request head until it is complete and valid, then lets it through with
//! the body that follows, checking the chunked framing on the way. The
//! first byte it can't vouch for ends the connection's input with a
//! [`Reject`] that knows its status.
//!
//! Only framing and syntax are checked here; `http1` builds the request
//! from what passes (so its parser never sees a head this one refused),
//! and what a request means is the handler's business. Sockets and timers
//! are `guard`'s.

use bytes::BytesMut;
use http::StatusCode;

/// The head limits [`Framing`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
    /// Largest body; a chunked body whose chunk sizes add up beyond it is
    /// refused as soon as the size line arrives (a `Content-Length` beyond
    /// it is the handler's to refuse, before it reads the body).
    pub max_body: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("request line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("more than {0} header fields")]
    TooManyFields(usize),
    #[error("header field longer than {0} bytes")]
    FieldTooLarge(usize),
    #[error("chunked body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("HTTP version not supported")]
    Version,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::LineTooLong(_) => StatusCode::URI_TOO_LONG,
            Reject::TooManyFields(_) | Reject::FieldTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Reject::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Where on the connection the input stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests, nothing of the next one received.
    Idle,
    /// Part of a request head received.
    Head,
    /// Inside a request body.
    Body,
}

/// Longest chunk-size line (size, extensions) accepted.
const CHUNK_LINE_MAX: usize = 4096;
/// At most this many hex digits in a chunk size (16 fill a u64).
const CHUNK_DIGITS_MAX: usize = 16;

#[derive(Debug)]
enum State {
    Head,
    /// `Content-Length` bytes still to come.
    Fixed(u64),
    /// Reading a chunk size: its value, digits so far, line length so far.
    Size {
        size: u64,
        digits: usize,
        len: usize,
    },
    /// After the size: whitespace, then only `;` may follow.
    SizeSpace {
        size: u64,
        len: usize,
    },
    /// Inside chunk extensions, up to CR.
    Ext {
        size: u64,
        len: usize,
    },
    /// Saw the CR ending a size line.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// In the trailer section; trailer lines are held in `line` until whole.
    Trailers,
}

/// Follows the requests on one connection; see the module doc.
#[derive(Debug)]
pub struct Framing {
    limits: Limits,
    state: State,
    /// The head (or trailer line) held back until it is whole.
    line: Vec<u8>,
    /// Start of the line being read within `line` (for heads).
    line_start: usize,
    /// Empty lines skipped before a request line.
    skipped: usize,
    fields: usize,
    head: HeadFacts,
    body_total: u64,
    messages: u64,
}

/// What the framing depends on, gathered while reading a head.
#[derive(Debug, Default)]
struct HeadFacts {
    has_request_line: bool,
    http10: bool,
    content_length: Option<u64>,
    chunked: bool,
    host: bool,
}

impl Framing {
    pub fn new(limits: Limits) -> Framing {
        Framing {
            limits,
            state: State::Head,
            line: Vec::new(),
            line_start: 0,
            skipped: 0,
            fields: 0,
            head: HeadFacts::default(),
            body_total: 0,
            messages: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Head if self.line.is_empty() && self.skipped == 0 => Phase::Idle,
            State::Head => Phase::Head,
            _ => Phase::Body,
        }
    }

    /// Requests read completely so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Reads `input`, appending to `out` every byte that may go on to the loop.
    /// After an error, `phase()` tells where it was found; feed no more.
    pub fn feed(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), Reject> {
        while !input.is_empty() {
            let used = match self.state {
                State::Head => self.head_bytes(input, out)?,
                State::Fixed(left) => {
                    let n = usize::try_from(left).map_or(input.len(), |l| l.min(input.len()));
                    out.extend_from_slice(&input[..n]);
                    self.state = match left - n as u64 {
                        0 => self.message_done(),
                        rest => State::Fixed(rest),
                    };
                    n
                }
                State::Data(left) => {
                    let n = usize::try_from(left).map_or(input.len(), |l| l.min(input.len()));
                    out.extend_from_slice(&input[..n]);
                    self.state = match left - n as u64 {
                        0 => State::DataCr,
                        rest => State::Data(rest),
                    };
                    n
                }
                State::Trailers => self.trailer_bytes(input, out)?,
                _ => {
                    self.chunk_byte(input[0])?;
                    out.extend_from_slice(&input[..1]);
                    1
                }
            };
            input = &input[used..];
        }
        Ok(())
    }

    fn message_done(&mut self) -> State {
        self.messages += 1;
        State::Head
    }

    /// Takes head bytes up to the end of the head; returns how many it used.
    fn head_bytes(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, Reject> {
        let Some(lf) = memchr::memchr(b'\n', input) else {
            self.line.extend_from_slice(input);
            self.check_partial_line()?;
            return Ok(input.len());
        };
        self.line.extend_from_slice(&input[..=lf]);
        let line = &self.line[self.line_start..];
        let content = line_content(line)?;
        if content.is_empty() {
            if !self.head.has_request_line {
                // RFC 9112 §2.2: empty lines before a request line are ignored.
                self.skipped += line.len();
                self.line.clear();
                if self.skipped > self.limits.request_line {
                    return Err(Reject::Malformed("empty lines before the request line"));
                }
                return Ok(lf + 1);
            }
            self.end_of_head()?;
            out.extend_from_slice(&self.line);
            self.reset_head();
            return Ok(lf + 1);
        }
        if !self.head.has_request_line {
            if content.len() > self.limits.request_line {
                return Err(Reject::LineTooLong(self.limits.request_line));
            }
            self.head.http10 = request_line(content)?;
            self.head.has_request_line = true;
        } else {
            self.fields += 1;
            if self.fields > self.limits.fields {
                return Err(Reject::TooManyFields(self.limits.fields));
            }
            if content.len() > self.limits.field_size {
                return Err(Reject::FieldTooLarge(self.limits.field_size));
            }
            let (name, value) = field_line(content)?;
            note_field(&mut self.head, name, value)?;
        }
        self.line_start = self.line.len();
        Ok(lf + 1)
    }

    /// Refuses a line that is already too long before its end arrives.
    fn check_partial_line(&self) -> Result<(), Reject> {
        // +1: the CR of the CRLF may already be there.
        let len = self.line.len() - self.line_start;
        if !self.head.has_request_line && len > self.limits.request_line + 1 {
            return Err(Reject::LineTooLong(self.limits.request_line));
        }
        if self.head.has_request_line && len > self.limits.field_size + 1 {
            return Err(Reject::FieldTooLarge(self.limits.field_size));
        }
        Ok(())
    }

    fn end_of_head(&mut self) -> Result<(), Reject> {
        let head = &self.head;
        if !head.http10 && !head.host {
            return Err(Reject::Malformed("HTTP/1.1 request without Host"));
        }
        if head.chunked && head.http10 {
            return Err(Reject::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if head.chunked && head.content_length.is_some() {
            return Err(Reject::Malformed("both Content-Length and Transfer-Encoding"));
        }
        self.state = if head.chunked {
            self.body_total = 0;
            State::Size { size: 0, digits: 0, len: 0 }
        } else {
            match head.content_length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => {
                    self.messages += 1;
                    State::Head
                }
            }
        };
        Ok(())
    }

    fn reset_head(&mut self) {
        self.line.clear();
        if self.line.capacity() > 16 * 1024 {
            self.line = Vec::new();
        }
        self.line_start = 0;
        self.skipped = 0;
        self.fields = 0;
        self.head = HeadFacts::default();
    }

    /// One byte of chunked framing outside chunk data and trailers.
    fn chunk_byte(&mut self, b: u8) -> Result<(), Reject> {
        let bad = |why| Err(Reject::Malformed(why));
        self.state = match self.state {
            State::Size { size, digits, len } => match (b, hex(b)) {
                (_, Some(d)) => {
                    if digits == CHUNK_DIGITS_MAX {
                        return bad("chunk size overflows");
                    }
                    State::Size { size: (size << 4) | d, digits: digits + 1, len: len + 1 }
                }
                _ if digits == 0 => return bad("invalid chunk size"),
                (b' ' | b'\t', _) => State::SizeSpace { size, len: len + 1 },
                (b';', _) => State::Ext { size, len: len + 1 },
                (b'\r', _) => State::SizeLf { size },
                _ => return bad("invalid chunk size"),
            },
            State::SizeSpace { size, len } => match b {
                b' ' | b'\t' if len < CHUNK_LINE_MAX => State::SizeSpace { size, len: len + 1 },
                b';' => State::Ext { size, len: len + 1 },
                _ => return bad("whitespace after a chunk size"),
            },
            State::Ext { size, len } => match b {
                b'\r' => State::SizeLf { size },
                _ if len >= CHUNK_LINE_MAX => return bad("chunk extensions too long"),
                b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Ext { size, len: len + 1 },
                _ => return bad("invalid byte in chunk extensions"),
            },
            State::SizeLf { size } => {
                if b != b'\n' {
                    return bad("chunk size line not ended by CRLF");
                }
                self.body_total = self.body_total.saturating_add(size);
                if self.body_total > self.limits.max_body {
                    return Err(Reject::BodyTooLarge(self.limits.max_body));
                }
                if size == 0 {
                    State::Trailers
                } else {
                    State::Data(size)
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0, len: 0 },
            State::DataCr | State::DataLf => return bad("chunk data not followed by CRLF"),
            State::Head | State::Fixed(_) | State::Data(_) | State::Trailers => {
                return bad("internal: chunk byte outside chunk framing")
            }
        };
        Ok(())
    }

    /// Takes trailer bytes, a whole line at a time; returns how many it used.
    fn trailer_bytes(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, Reject> {
        let Some(lf) = memchr::memchr(b'\n', input) else {
            self.line.extend_from_slice(input);
            if self.line.len() > self.limits.field_size + 1 {
                return Err(Reject::FieldTooLarge(self.limits.field_size));
            }
            return Ok(input.len());
        };
        self.line.extend_from_slice(&input[..=lf]);
        let content = line_content(&self.line)?;
        if content.is_empty() {
            out.extend_from_slice(&self.line);
            self.reset_head();
            self.state = self.message_done();
            return Ok(lf + 1);
        }
        self.fields += 1;
        if self.fields > self.limits.fields {
            return Err(Reject::TooManyFields(self.limits.fields));
        }
        if content.len() > self.limits.field_size {
            return Err(Reject::FieldTooLarge(self.limits.field_size));
        }
        field_line(content)?;
        out.extend_from_slice(&self.line);
        self.line.clear();
        Ok(lf + 1)
    }
}

/// A line (ending in LF) without its CRLF; refuses bare LF and stray CR.
fn line_content(line: &[u8]) -> Result<&[u8], Reject> {
    let content = match line {
        [rest @ .., b'\r', b'\n'] => rest,
        _ => return Err(Reject::Malformed("line not ended by CRLF")),
    };
    if memchr::memchr(b'\r', content).is_some() {
        return Err(Reject::Malformed("bare CR"));
    }
    Ok(content)
}

/// Checks `METHOD SP TARGET SP HTTP/1.x`; returns whether it is HTTP/1.0.
fn request_line(line: &[u8]) -> Result<bool, Reject> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Reject::Malformed("request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Reject::Malformed("invalid method"));
    }
    // Bytes above 0x7f are left for the URI parser to judge; controls, spaces and DEL never pass.
    if target.is_empty() || !target.iter().all(|&b| b > 0x20 && b != 0x7f) {
        return Err(Reject::Malformed("invalid request target"));
    }
    match version {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            Err(Reject::Version)
        }
        _ => Err(Reject::Malformed("invalid HTTP version")),
    }
}

/// Splits `name: value`, refusing what RFC 9110/9112 don't allow: no name,
/// whitespace before the colon, obsolete line folding, control bytes.
fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Reject> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Reject::Malformed("obsolete line folding"));
    }
    let colon = memchr::memchr(b':', line).ok_or(Reject::Malformed("header field without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() {
        return Err(Reject::Malformed("empty header name"));
    }
    if !name.iter().all(|&b| is_tchar(b)) {
        return Err(Reject::Malformed("invalid byte in header name (or whitespace before the colon)"));
    }
    // Folded without stopping early, so that it compiles to vector code.
    if !value.iter().fold(true, |ok, &b| ok & (b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)) {
        return Err(Reject::Malformed("invalid byte in header value"));
    }
    Ok((name, value.trim_ascii()))
}

/// Records the fields that decide the framing, refusing ambiguous ones.
fn note_field(head: &mut HeadFacts, name: &[u8], value: &[u8]) -> Result<(), Reject> {
    if name.eq_ignore_ascii_case(b"content-length") {
        if head.content_length.is_some() {
            return Err(Reject::Malformed("more than one Content-Length"));
        }
        head.content_length = Some(parse_length(value).ok_or(Reject::Malformed("invalid Content-Length"))?);
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        if head.chunked {
            return Err(Reject::Malformed("more than one Transfer-Encoding"));
        }
        if !value.eq_ignore_ascii_case(b"chunked") {
            return Err(Reject::Malformed("Transfer-Encoding other than chunked"));
        }
        head.chunked = true;
    } else if name.eq_ignore_ascii_case(b"host") {
        if head.host {
            return Err(Reject::Malformed("more than one Host"));
        }
        head.host = true;
    }
    Ok(())
}

/// 1*DIGIT, without sign, list or overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// RFC 9110 §5.6.2's `tchar`, as a table.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'..=b'`' | b'|' | b'~');
        b += 1;
    }
    table
};

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
