//! Encoding and decoding of [`Frame`]s on plain byte buffers.
//!
//! The decoder never trusts a length: each is checked against what is left
//! of the frame and against the protocol limits before it is used, and a
//! frame must be consumed exactly by its payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    BodyRef, Frame, Message, RequestHead, ResponseHead, Scheme, FRAME_HEADER, LEN_PREFIX, MAX_FRAME, MAX_HEADERS,
};

/// A frame that breaks the protocol. The peer that sent it is not to be
/// trusted any further: the connection to it is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame shorter than its header")]
    Short,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    #[error("{0} header fields exceed the limit of {MAX_HEADERS}")]
    TooManyHeaders(usize),
    #[error("invalid value for {0}")]
    Invalid(&'static str),
}

const KIND_READY: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_TOOK: u8 = 3;
const KIND_RESPONSE_HEAD: u8 = 4;
const KIND_BODY: u8 = 5;
const KIND_FILE: u8 = 6;
const KIND_END: u8 = 7;
const KIND_ERROR: u8 = 8;
const KIND_HINTS: u8 = 9;

/// Appends `frame` to `out`. Fails only if the frame would exceed the limits
/// the decoder enforces, so whatever encodes also decodes.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), WireError> {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(kind_of(&frame.message));
    out.put_u64_le(frame.id);
    match &frame.message {
        Message::Ready { version, pid } => {
            out.put_u16_le(*version);
            out.put_u32_le(*pid);
        }
        Message::Request(head) => encode_request(head, out)?,
        Message::Took | Message::End => {}
        Message::ResponseHead(head) => {
            out.put_u16_le(head.status);
            put_bytes(out, &head.reason);
            put_headers(out, &head.headers)?;
        }
        Message::Body(data) => out.put_slice(data),
        Message::File { offset, len } => {
            out.put_u64_le(*offset);
            out.put_u64_le(*len);
        }
        Message::Error(text) => out.put_slice(text.as_bytes()),
        Message::Hints(headers) => put_headers(out, headers)?,
    }
    let len = out.len() - start - LEN_PREFIX;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(WireError::TooLarge(len));
    }
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Takes one complete frame off the front of `buf`. `Ok(None)` means more
/// bytes are needed; `buf` is left untouched then.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    if len < FRAME_HEADER {
        return Err(WireError::Short);
    }
    if buf.len() < LEN_PREFIX + len {
        buf.reserve(LEN_PREFIX + len - buf.len());
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    let mut frame = buf.split_to(len).freeze();
    let kind = frame.get_u8();
    let id = frame.get_u64_le();
    let message = decode_message(kind, &mut frame)?;
    if frame.has_remaining() {
        return Err(WireError::Trailing(frame.remaining()));
    }
    Ok(Some(Frame { id, message }))
}

fn kind_of(message: &Message) -> u8 {
    match message {
        Message::Ready { .. } => KIND_READY,
        Message::Request(_) => KIND_REQUEST,
        Message::Took => KIND_TOOK,
        Message::ResponseHead(_) => KIND_RESPONSE_HEAD,
        Message::Body(_) => KIND_BODY,
        Message::File { .. } => KIND_FILE,
        Message::End => KIND_END,
        Message::Error(_) => KIND_ERROR,
        Message::Hints(_) => KIND_HINTS,
    }
}

fn decode_message(kind: u8, p: &mut Bytes) -> Result<Message, WireError> {
    Ok(match kind {
        KIND_READY => Message::Ready { version: get_u16(p, "ready version")?, pid: get_u32(p, "ready pid")? },
        KIND_REQUEST => Message::Request(Box::new(decode_request(p)?)),
        KIND_TOOK => Message::Took,
        KIND_RESPONSE_HEAD => Message::ResponseHead(ResponseHead {
            status: get_u16(p, "status")?,
            reason: get_bytes(p, "reason")?,
            headers: get_headers(p)?,
        }),
        KIND_BODY => Message::Body(p.split_to(p.len())),
        KIND_FILE => Message::File { offset: get_u64(p, "file offset")?, len: get_u64(p, "file length")? },
        KIND_END => Message::End,
        KIND_ERROR => {
            let text = p.split_to(p.len());
            Message::Error(String::from_utf8_lossy(&text).into_owned())
        }
        KIND_HINTS => Message::Hints(get_headers(p)?),
        other => return Err(WireError::UnknownKind(other)),
    })
}

fn encode_request(head: &RequestHead, out: &mut BytesMut) -> Result<(), WireError> {
    put_bytes(out, &head.method);
    put_bytes(out, &head.path);
    put_bytes(out, &head.query);
    out.put_u8(head.version);
    out.put_u8(match head.scheme {
        Scheme::Http => 0,
        Scheme::Https => 1,
    });
    put_bytes(out, &head.remote_addr);
    out.put_u16_le(head.remote_port);
    put_bytes(out, &head.server_name);
    out.put_u16_le(head.server_port);
    put_bytes(out, &head.script_name);
    put_headers(out, &head.headers)?;
    match &head.body {
        BodyRef::Inline(data) => {
            out.put_u8(0);
            put_bytes(out, data);
        }
        BodyRef::Fd { len } => {
            out.put_u8(1);
            out.put_u64_le(*len);
        }
    }
    Ok(())
}

fn decode_request(p: &mut Bytes) -> Result<RequestHead, WireError> {
    let method = get_bytes(p, "method")?;
    let path = get_bytes(p, "path")?;
    let query = get_bytes(p, "query")?;
    let version = get_u8(p, "version")?;
    if !matches!(version, 9 | 10 | 11 | 20 | 30) {
        return Err(WireError::Invalid("version"));
    }
    let scheme = match get_u8(p, "scheme")? {
        0 => Scheme::Http,
        1 => Scheme::Https,
        _ => return Err(WireError::Invalid("scheme")),
    };
    let remote_addr = get_bytes(p, "remote address")?;
    let remote_port = get_u16(p, "remote port")?;
    let server_name = get_bytes(p, "server name")?;
    let server_port = get_u16(p, "server port")?;
    let script_name = get_bytes(p, "script name")?;
    let headers = get_headers(p)?;
    let body = match get_u8(p, "body kind")? {
        0 => BodyRef::Inline(get_bytes(p, "body")?),
        1 => BodyRef::Fd { len: get_u64(p, "body length")? },
        _ => return Err(WireError::Invalid("body kind")),
    };
    Ok(RequestHead {
        method,
        path,
        query,
        version,
        scheme,
        remote_addr,
        remote_port,
        server_name,
        server_port,
        script_name,
        headers,
        body,
    })
}

fn put_bytes(out: &mut BytesMut, data: &[u8]) {
    // Frames are capped at MAX_FRAME (< 4 GiB), so a u32 length always fits;
    // an oversized field makes the whole frame fail the check in `encode`.
    out.put_u32_le(data.len() as u32);
    out.put_slice(data);
}

fn put_headers(out: &mut BytesMut, headers: &[(Bytes, Bytes)]) -> Result<(), WireError> {
    if headers.len() > MAX_HEADERS {
        return Err(WireError::TooManyHeaders(headers.len()));
    }
    out.put_u16_le(headers.len() as u16);
    for (name, value) in headers {
        put_bytes(out, name);
        put_bytes(out, value);
    }
    Ok(())
}

fn get_headers(p: &mut Bytes) -> Result<Vec<(Bytes, Bytes)>, WireError> {
    let count = get_u16(p, "header count")? as usize;
    if count > MAX_HEADERS {
        return Err(WireError::TooManyHeaders(count));
    }
    // Each header needs at least 8 bytes of lengths; don't trust `count`
    // further than the payload can back it.
    if count * 8 > p.remaining() {
        return Err(WireError::Truncated("headers"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = get_bytes(p, "header name")?;
        let value = get_bytes(p, "header value")?;
        headers.push((name, value));
    }
    Ok(headers)
}

fn get_bytes(p: &mut Bytes, what: &'static str) -> Result<Bytes, WireError> {
    let len = get_u32(p, what)? as usize;
    if len > p.remaining() {
        return Err(WireError::Truncated(what));
    }
    Ok(p.split_to(len))
}

fn get_u8(p: &mut Bytes, what: &'static str) -> Result<u8, WireError> {
    p.try_get_u8().map_err(|_| WireError::Truncated(what))
}

fn get_u16(p: &mut Bytes, what: &'static str) -> Result<u16, WireError> {
    p.try_get_u16_le().map_err(|_| WireError::Truncated(what))
}

fn get_u32(p: &mut Bytes, what: &'static str) -> Result<u32, WireError> {
    p.try_get_u32_le().map_err(|_| WireError::Truncated(what))
}

fn get_u64(p: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    p.try_get_u64_le().map_err(|_| WireError::Truncated(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_request() -> RequestHead {
        RequestHead {
            method: Bytes::from_static(b"POST"),
            path: Bytes::from_static(b"/caf%C3%A9/x"),
            query: Bytes::from_static(b"a=1&b=%20"),
            version: 11,
            scheme: Scheme::Https,
            remote_addr: Bytes::from_static(b"127.0.0.1"),
            remote_port: 54321,
            server_name: Bytes::from_static(b"example.com"),
            server_port: 443,
            script_name: Bytes::new(),
            headers: vec![
                (Bytes::from_static(b"host"), Bytes::from_static(b"example.com")),
                (Bytes::from_static(b"x-a"), Bytes::from_static(b"1")),
            ],
            body: BodyRef::Inline(Bytes::from_static(b"hello")),
        }
    }

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf).unwrap();
        let decoded = decode(&mut buf).unwrap().unwrap();
        assert_eq!(decoded, frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Frame::new(0, Message::Ready { version: 1, pid: 42 }));
        round_trip(Frame::new(7, Message::Request(Box::new(sample_request()))));
        round_trip(Frame::new(7, Message::Took));
        round_trip(Frame::new(
            7,
            Message::ResponseHead(ResponseHead {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                headers: vec![(Bytes::from_static(b"Content-Type"), Bytes::from_static(b"text/plain"))],
            }),
        ));
        round_trip(Frame::new(7, Message::Body(Bytes::from_static(b"abc"))));
        round_trip(Frame::new(7, Message::File { offset: 10, len: 1 << 40 }));
        round_trip(Frame::new(7, Message::End));
        round_trip(Frame::new(7, Message::Error("boom".into())));
        round_trip(Frame::new(
            7,
            Message::Hints(vec![(Bytes::from_static(b"Link"), Bytes::from_static(b"</app.css>; rel=preload"))]),
        ));
    }

    #[test]
    fn partial_input_waits_for_more() {
        let mut whole = BytesMut::new();
        encode(&Frame::new(3, Message::Body(Bytes::from_static(b"xyz"))), &mut whole).unwrap();
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut part), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn two_frames_in_one_buffer_decode_in_order() {
        let mut buf = BytesMut::new();
        encode(&Frame::new(1, Message::Took), &mut buf).unwrap();
        encode(&Frame::new(1, Message::End), &mut buf).unwrap();
        assert_eq!(decode(&mut buf).unwrap().unwrap().message, Message::Took);
        assert_eq!(decode(&mut buf).unwrap().unwrap().message, Message::End);
        assert_eq!(decode(&mut buf), Ok(None));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0x7f, KIND_BODY][..]);
        assert_eq!(decode(&mut buf), Err(WireError::TooLarge(0x7fff_ffff)));
    }

    #[test]
    fn length_shorter_than_header_is_refused() {
        let mut buf = BytesMut::from(&[3, 0, 0, 0, KIND_END, 0, 0][..]);
        assert_eq!(decode(&mut buf), Err(WireError::Short));
    }

    #[test]
    fn unknown_kind_is_refused() {
        let mut buf = BytesMut::from(&[9, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf), Err(WireError::UnknownKind(200)));
    }

    #[test]
    fn field_length_past_the_frame_is_refused() {
        let mut buf = BytesMut::new();
        encode(&Frame::new(1, Message::Request(Box::new(sample_request()))), &mut buf).unwrap();
        // Corrupt the method length (first payload field) to claim 1000 bytes.
        let at = LEN_PREFIX + FRAME_HEADER;
        buf[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(decode(&mut buf), Err(WireError::Truncated("method")));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut buf = BytesMut::new();
        encode(&Frame::new(1, Message::Took), &mut buf).unwrap();
        buf[0] += 2;
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(decode(&mut buf), Err(WireError::Trailing(2)));
    }

    #[test]
    fn header_count_larger_than_payload_is_refused() {
        let mut buf = BytesMut::new();
        encode(
            &Frame::new(1, Message::ResponseHead(ResponseHead { status: 200, reason: Bytes::new(), headers: vec![] })),
            &mut buf,
        )
        .unwrap();
        let count_at = buf.len() - 2;
        buf[count_at..].copy_from_slice(&300u16.to_le_bytes());
        assert_eq!(decode(&mut buf), Err(WireError::Truncated("headers")));
    }

    #[test]
    fn encoding_an_oversized_frame_fails_and_leaves_the_buffer_as_it_was() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let big = Bytes::from(vec![0u8; MAX_FRAME + 1]);
        assert!(matches!(encode(&Frame::new(1, Message::Body(big)), &mut buf), Err(WireError::TooLarge(_))));
        assert_eq!(&buf[..], b"keep");
    }

    fn bytes_strategy(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    prop_compose! {
        fn request_strategy()(
            method in bytes_strategy(10),
            path in bytes_strategy(64),
            query in bytes_strategy(32),
            version in prop::sample::select(vec![10u8, 11, 20]),
            https in any::<bool>(),
            remote_port in any::<u16>(),
            server_port in any::<u16>(),
            headers in proptest::collection::vec((bytes_strategy(16), bytes_strategy(32)), 0..8),
            body in bytes_strategy(64),
            fd_len in proptest::option::of(any::<u64>()),
        ) -> RequestHead {
            RequestHead {
                method, path, query, version,
                scheme: if https { Scheme::Https } else { Scheme::Http },
                remote_addr: Bytes::from_static(b"::1"),
                remote_port,
                server_name: Bytes::from_static(b"localhost"),
                server_port,
                script_name: Bytes::new(),
                headers,
                body: match fd_len { Some(len) => BodyRef::Fd { len }, None => BodyRef::Inline(body) },
            }
        }
    }

    proptest! {
        #[test]
        fn any_request_round_trips(id in any::<u64>(), head in request_strategy()) {
            round_trip(Frame::new(id, Message::Request(Box::new(head))));
        }

        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            // Keep decoding until it needs more input or reports an error.
            while let Ok(Some(_)) = decode(&mut buf) {}
        }

        #[test]
        fn decoder_never_panics_on_corrupted_frames(
            head in request_strategy(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut buf = BytesMut::new();
            encode(&Frame::new(1, Message::Request(Box::new(head))), &mut buf).unwrap();
            for (at, byte) in flips {
                let i = at.index(buf.len());
                buf[i] = byte;
            }
            while let Ok(Some(_)) = decode(&mut buf) {}
        }
    }
}
