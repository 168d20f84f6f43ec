//! `Range: bytes=...` (RFC 9110 §14): parsing against a representation's
//! length, and the layout of a `multipart/byteranges` body.
//!
//! Policy, as nginx's: a header that doesn't parse is ignored (the whole
//! file, 200); when no range is satisfiable the answer is 416; one range is
//! a plain 206; several are a `multipart/byteranges` 206 in the order
//! asked, unless together they cover more bytes than the file has
//! (overlapping or repeated ranges, a cheap amplification attack), or
//! there are more than [`MAX_RANGES`], in which case the whole file is sent.
//! Whether `If-Range` lets a range through is `conditional`'s call; reading
//! the bytes is `serve`'s.

use bytes::Bytes;

/// Most ranges answered as multipart; more get the whole file.
pub const MAX_RANGES: usize = 64;

/// An inclusive byte range, `first..=last`, within the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The `Content-Range` value for this range of a `total`-byte representation.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.first, self.last)
    }
}

/// What to send for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// The whole representation (no usable `Range`).
    Whole,
    /// 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
    /// 206: one range, or several as multipart.
    Some(Vec<ByteRange>),
}

/// Parses a `Range` header value against a representation of `len` bytes.
pub fn parse(value: &[u8], len: u64) -> Ranges {
    let Ok(text) = std::str::from_utf8(value) else {
        return Ranges::Whole;
    };
    let Some(specs) = text.trim().strip_prefix("bytes=") else {
        return Ranges::Whole;
    };
    let mut ranges = Vec::new();
    let mut any_spec = false;
    for spec in specs.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        any_spec = true;
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // Suffix: the last N bytes.
            let Some(n) = number(last) else { return Ranges::Whole };
            (n > 0 && len > 0).then(|| ByteRange {
                first: len.saturating_sub(n),
                last: len - 1,
            })
        } else {
            let Some(first) = number(first) else {
                return Ranges::Whole;
            };
            let last = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(l) if l >= first => l,
                    _ => return Ranges::Whole,
                }
            };
            (first < len).then(|| ByteRange {
                first,
                last: last.min(len - 1),
            })
        };
        ranges.extend(range);
    }
    if !any_spec {
        return Ranges::Whole;
    }
    if ranges.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let covered: u64 = ranges.iter().map(ByteRange::len).fold(0, u64::saturating_add);
    if ranges.len() > MAX_RANGES || (ranges.len() > 1 && covered > len) {
        return Ranges::Whole;
    }
    Ranges::Some(ranges)
}

fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One piece of a multipart body: literal bytes or a range of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Bytes),
    Range(ByteRange),
}

/// The body of a `multipart/byteranges` response: the pieces in order and
/// their total length (the response's `Content-Length`).
pub fn multipart(ranges: &[ByteRange], total: u64, content_type: &str, boundary: &str) -> (Vec<Piece>, u64) {
    let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut length = 0;
    for r in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            r.content_range(total)
        );
        length += head.len() as u64 + r.len();
        pieces.push(Piece::Text(Bytes::from(head)));
        pieces.push(Piece::Range(*r));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    length += tail.len() as u64;
    pieces.push(Piece::Text(Bytes::from(tail)));
    (pieces, length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange { first, last }
    }

    #[test]
    fn single_ranges() {
        let cases: &[(&str, Ranges)] = &[
            ("bytes=0-0", Ranges::Some(vec![r(0, 0)])),
            ("bytes=0-99", Ranges::Some(vec![r(0, 99)])),
            ("bytes=10-", Ranges::Some(vec![r(10, 99)])),
            ("bytes=90-1000", Ranges::Some(vec![r(90, 99)])),
            ("bytes=-10", Ranges::Some(vec![r(90, 99)])),
            ("bytes=-1000", Ranges::Some(vec![r(0, 99)])),
            ("bytes= 5 - 6 ", Ranges::Some(vec![r(5, 6)])),
            ("bytes=100-", Ranges::Unsatisfiable),
            ("bytes=100-200", Ranges::Unsatisfiable),
            ("bytes=-0", Ranges::Unsatisfiable),
            ("bytes=5-4", Ranges::Whole),
            ("bytes=a-b", Ranges::Whole),
            ("bytes=-", Ranges::Whole),
            ("bytes=1", Ranges::Whole),
            ("bytes=", Ranges::Whole),
            ("bytes=+1-2", Ranges::Whole),
            ("items=0-1", Ranges::Whole),
            ("bytes=99999999999999999999-", Ranges::Whole),
        ];
        for (header, want) in cases {
            assert_eq!(parse(header.as_bytes(), 100), *want, "{header}");
        }
    }

    #[test]
    fn empty_file_has_nothing_to_range() {
        assert_eq!(parse(b"bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(parse(b"bytes=-5", 0), Ranges::Unsatisfiable);
    }

    #[test]
    fn several_ranges() {
        assert_eq!(
            parse(b"bytes=0-9, 20-29,-5", 100),
            Ranges::Some(vec![r(0, 9), r(20, 29), r(95, 99)])
        );
        // Unsatisfiable members are dropped when another one is satisfiable.
        assert_eq!(parse(b"bytes=0-9,500-600", 100), Ranges::Some(vec![r(0, 9)]));
        // Covering more than the file: the whole file instead.
        assert_eq!(parse(b"bytes=0-99,0-99", 100), Ranges::Whole);
        assert_eq!(parse(b"bytes=0-60,40-99", 100), Ranges::Whole);
        let many = format!(
            "bytes={}",
            (0..65).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(",")
        );
        assert_eq!(parse(many.as_bytes(), 100), Ranges::Whole);
    }

    #[test]
    fn multipart_layout_adds_up() {
        let ranges = [r(0, 1), r(5, 9)];
        let (pieces, len) = multipart(&ranges, 10, "text/plain", "B");
        let mut text = Vec::new();
        let file = b"0123456789";
        for p in &pieces {
            match p {
                Piece::Text(t) => text.extend_from_slice(t),
                Piece::Range(r) => text.extend_from_slice(&file[r.first as usize..=r.last as usize]),
            }
        }
        assert_eq!(text.len() as u64, len);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
             \r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-9/10\r\n\r\n56789\
             \r\n--B--\r\n"
        );
    }
}
