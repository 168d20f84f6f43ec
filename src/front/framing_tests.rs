//! Unit tests of [`super::Framing`] on plain byte slices.

use super::*;

const LIMITS: Limits = Limits { request_line: 64, fields: 4, field_size: 48, max_body: 100 };

/// Feeds `input` whole, then again split at every position (and byte by
/// byte); every way must let the same bytes through and end the same way.
fn run(input: &[u8]) -> (Vec<u8>, Result<(), Reject>, Phase, u64) {
    let whole = run_split(input, &[]);
    for at in 0..=input.len() {
        assert_eq!(run_split(input, &[at]), whole, "split at {at}");
    }
    let every: Vec<usize> = (0..=input.len()).collect();
    assert_eq!(run_split(input, &every), whole, "byte by byte");
    whole
}

fn run_split(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<(), Reject>, Phase, u64) {
    let mut framing = Framing::new(LIMITS);
    let mut out = BytesMut::new();
    let mut start = 0;
    let mut result = Ok(());
    for &end in cuts.iter().chain([input.len()].iter()) {
        if end < start {
            continue;
        }
        result = framing.feed(&input[start..end], &mut out);
        start = end;
        if result.is_err() {
            break;
        }
    }
    (out.to_vec(), result, framing.phase(), framing.messages())
}

fn accepted(input: &[u8]) -> u64 {
    let (out, result, phase, messages) = run(input);
    assert_eq!(result, Ok(()), "{:?}", String::from_utf8_lossy(input));
    assert_eq!(out, input, "every byte passes");
    assert_eq!(phase, Phase::Idle);
    messages
}

fn refused(input: &[u8]) -> Reject {
    let (_, result, _, _) = run(input);
    result.expect_err(&String::from_utf8_lossy(input))
}

#[test]
fn valid_requests_pass_unchanged() {
    assert_eq!(accepted(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1);
    assert_eq!(accepted(b"GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n"), 1);
    assert_eq!(accepted(b"GET / HTTP/1.0\r\n\r\n"), 1);
    assert_eq!(accepted(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"), 1);
    assert_eq!(accepted(b"POST / HTTP/1.1\r\nHost: a\r\nX-V: \t caf\xe9 \r\n\r\n"), 1);
    let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n\
        5\r\nhello\r\nA;x=y\r\n0123456789\r\n1 ;e\r\n!\r\n0\r\nX-T: 1\r\n\r\n";
    assert_eq!(accepted(chunked), 1);
    let two = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nxGET /3 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(accepted(two), 3);
}

#[test]
fn empty_lines_before_a_request_are_skipped() {
    let (out, result, _, messages) = run(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((result, messages), (Ok(()), 1));
    assert_eq!(out, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn a_head_is_held_until_complete() {
    let mut framing = Framing::new(LIMITS);
    let mut out = BytesMut::new();
    framing.feed(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(framing.phase(), Phase::Head);
    framing.feed(b"Content-Length: 2\r\n\r\nh", &mut out).unwrap();
    assert_eq!(framing.phase(), Phase::Body);
    assert!(out.ends_with(b"\r\n\r\nh"));
}

#[test]
fn ambiguous_framing_is_refused() {
    let bad = |extra: &[u8]| {
        let mut req = b"POST / HTTP/1.1\r\nHost: a\r\n".to_vec();
        req.extend_from_slice(extra);
        req.extend_from_slice(b"\r\n0\r\n\r\n");
        refused(&req)
    };
    for extra in [
        &b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"[..],
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Content-Length: 3\r\nContent-Length: 3\r\n",
        b"Content-Length: 3, 3\r\n",
        b"Content-Length: +3\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Content-Length:\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding:\x0bchunked\r\n",
        b"Host: b\r\n",
    ] {
        assert!(matches!(bad(extra), Reject::Malformed(_)), "{:?}", String::from_utf8_lossy(extra));
    }
    assert!(matches!(refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), Reject::Malformed(_)));
    assert!(matches!(refused(b"GET / HTTP/1.1\r\n\r\n"), Reject::Malformed(_)));
}

#[test]
fn bad_bytes_in_a_head_are_refused() {
    for req in [
        &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo\x00st: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\xe9: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / http/1.1\r\nHost: a\r\n\r\n",
        b"GET /\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(matches!(refused(req), Reject::Malformed(_)), "{:?}", String::from_utf8_lossy(req));
    }
    assert_eq!(refused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Reject::Version);
    assert_eq!(refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Reject::Version);
}

#[test]
fn limits_give_414_and_431() {
    let long_target = [b"GET /".as_slice(), &[b'a'; 60], b" HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
    assert_eq!(refused(&long_target), Reject::LineTooLong(64));
    assert_eq!(refused(&long_target[..70]), Reject::LineTooLong(64), "before the line ends");
    let at_limit = [b"GET /".as_slice(), &[b'a'; 50], b" HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
    assert_eq!(accepted(&at_limit), 1);
    let field = [b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(), &[b'v'; 50], b"\r\n\r\n"].concat();
    assert_eq!(refused(&field), Reject::FieldTooLarge(48));
    let fields = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
    assert_eq!(refused(fields), Reject::TooManyFields(4));
    assert_eq!(Reject::LineTooLong(1).status(), StatusCode::URI_TOO_LONG);
    assert_eq!(Reject::TooManyFields(1).status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn bad_chunked_framing_is_refused_in_the_body() {
    let chunked = |body: &[u8]| {
        let req = [b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(), body].concat();
        let (_, result, phase, _) = run(&req);
        assert_eq!(phase, Phase::Body, "{:?}", String::from_utf8_lossy(body));
        result.expect_err(&String::from_utf8_lossy(body))
    };
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",
        b"5;a\nhello\r\n0\r\n\r\n",
        b"5;a\x00\r\nhello\r\n0\r\n\r\n",
        b"0\n\n",
        b"0\r\nX : 1\r\n\r\n",
        b"0\r\nX: \x00\r\n\r\n",
        b"0\r\n\n",
    ] {
        assert!(matches!(chunked(body), Reject::Malformed(_)), "{:?}", String::from_utf8_lossy(body));
    }
    assert_eq!(chunked(b"FFFFFFFF\r\nhello"), Reject::BodyTooLarge(100));
    assert_eq!(chunked(&[b"40\r\n".as_slice(), &[b'a'; 64], b"\r\n40\r\n"].concat()), Reject::BodyTooLarge(100));
}

#[test]
fn the_tchar_table_is_rfc_9110s_set() {
    for b in 0..=255u8 {
        let listed = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        assert_eq!(is_tchar(b), listed, "byte {b:#04x}");
    }
}
