//! The PROXY protocol (versions 1 and 2, as HAProxy specifies it): the
//! header a TCP load balancer sends first on each connection to say which
//! client it carries (`--proxy-protocol`).
//!
//! [`parse`] reads a header from bytes (no I/O, unit-tested on slices);
//! [`read`] reads one from a socket and returns the bytes that came after
//! it. The caller bounds the time and decides what the address means for
//! the connection (`conn`); TLS and HTTP come after, and are not looked at
//! here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature: twelve bytes no HTTP or TLS client starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the spec's 107).
const V1_MAX: usize = 107;
/// v2 address blocks (with TLVs) longer than this are refused.
const V2_MAX_BODY: usize = 4096;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client's address, or `None` when the header carries none (v1
    /// `UNKNOWN`, v2 `LOCAL` such as a balancer's health check, or an
    /// address family other than TCP over IPv4/IPv6): the connection's own
    /// peer stands.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// Why a connection's header is refused (the connection is then closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
    #[error("connection closed inside the PROXY protocol header")]
    Truncated,
}

/// The result of looking at the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A whole header, `len` bytes long.
    Done { header: Header, len: usize },
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let v1 = b"PROXY ";
    let prefix = buf.len().min(12);
    if buf[..prefix] == V2_SIGNATURE[..prefix] && !buf.is_empty() {
        return if buf.len() < 12 { Ok(Parsed::Incomplete) } else { parse_v2(buf) };
    }
    let prefix = buf.len().min(v1.len());
    if buf[..prefix] == v1[..prefix] && !buf.is_empty() {
        return parse_v1(buf);
    }
    if buf.is_empty() {
        Ok(Parsed::Incomplete)
    } else {
        Err(ProxyError::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1("no CRLF within 107 bytes"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err(ProxyError::V1("longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let header = match words.next() {
        Some("UNKNOWN") => Header { source: None, destination: None },
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = words.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(ProxyError::V1("expected source, destination and two ports"));
            };
            let ip = |text: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = text.parse().map_err(|_| ProxyError::V1("bad address"))?;
                match (family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(ProxyError::V1("address does not match the family")),
                }
            };
            let port = |text: &str| -> Result<u16, ProxyError> {
                if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProxyError::V1("bad port"));
                }
                text.parse().map_err(|_| ProxyError::V1("bad port"))
            };
            Header {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(ProxyError::V1("unknown protocol family")),
    };
    Ok(Parsed::Done { header, len })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if body_len > V2_MAX_BODY {
        return Err(ProxyError::V2("address block too long"));
    }
    let len = 16 + body_len;
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..len];
    let none = Header { source: None, destination: None };
    let header = match command {
        0x0 => none, // LOCAL: the balancer's own connection
        0x1 => match buf[13] {
            // TCP over IPv4
            0x11 => {
                let a = body.get(..12).ok_or(ProxyError::V2("IPv4 address block too short"))?;
                let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                Header {
                    source: Some(SocketAddr::new(ip(0), port(8))),
                    destination: Some(SocketAddr::new(ip(4), port(10))),
                }
            }
            // TCP over IPv6
            0x21 => {
                let a = body.get(..36).ok_or(ProxyError::V2("IPv6 address block too short"))?;
                let ip = |at: usize| {
                    let mut octets = [0; 16];
                    octets.copy_from_slice(&a[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                Header {
                    source: Some(SocketAddr::new(ip(0), port(32))),
                    destination: Some(SocketAddr::new(ip(16), port(34))),
                }
            }
            // UNSPEC, UDP, unix: nothing tandem can use as a client address.
            _ => none,
        },
        _ => return Err(ProxyError::V2("unknown command")),
    };
    Ok(Parsed::Done { header, len })
}

/// Reads the header that must open the connection; returns it and the
/// bytes read past it (the start of TLS or HTTP).
pub async fn read<S: AsyncRead + Unpin>(socket: &mut S) -> Result<(Header, Bytes), ProxyError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Parsed::Done { header, len } = parse(&buf)? {
            let rest = buf.split_off(len).freeze();
            return Ok((header, rest));
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(ProxyError::Truncated),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (Header, usize) {
        match parse(buf).unwrap() {
            Parsed::Done { header, len } => (header, len),
            Parsed::Incomplete => panic!("incomplete: {buf:?}"),
        }
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([0x20 | command, family]);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let (h, len) = done(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET /");
        assert_eq!(len, 43);
        assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.1:443".parse().unwrap()));
        let (h, _) = done(b"PROXY TCP6 2001:db8::1 ::1 8080 80\r\n");
        assert_eq!(h.source, Some("[2001:db8::1]:8080".parse().unwrap()));
        assert_eq!(done(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").0.source, None);
        assert_eq!(done(b"PROXY UNKNOWN\r\n").0.source, None);
    }

    #[test]
    fn v1_needs_more_until_crlf() {
        for partial in [&b"P"[..], b"PROXY", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"] {
            assert_eq!(parse(partial), Ok(Parsed::Incomplete), "{partial:?}");
        }
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        ] {
            assert!(parse(bad).is_err() || parse(&[bad, &[b'x'; 120][..]].concat()).is_err(), "{bad:?}");
        }
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Err(ProxyError::V1("no CRLF within 107 bytes")));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::Missing));
    }

    #[test]
    fn v2_addresses_and_local() {
        let body4 = [203, 0, 113, 7, 10, 0, 0, 1, 0xC8, 0x22, 0x01, 0xBB];
        let (h, len) = done(&[v2(1, 0x11, &body4), b"rest".to_vec()].concat());
        assert_eq!(len, 16 + 12);
        assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.1:443".parse().unwrap()));

        let mut body6 = Vec::new();
        body6.extend("2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend(Ipv6Addr::LOCALHOST.octets());
        body6.extend([0x1F, 0x90, 0, 80]);
        body6.extend([0x04, 0, 1, 0xAA]); // a TLV, skipped
        let (h, len) = done(&v2(1, 0x21, &body6));
        assert_eq!(len, 16 + 40);
        assert_eq!(h.source, Some("[2001:db8::7]:8080".parse().unwrap()));

        assert_eq!(done(&v2(0, 0x00, &[])).0.source, None);
        assert_eq!(done(&v2(1, 0x31, &[0; 216])).0.source, None); // unix
    }

    #[test]
    fn v2_refusals_and_partial_input() {
        let whole = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        for cut in 1..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }
        assert!(parse(&v2(1, 0x11, &[1, 2, 3])).is_err());
        assert!(parse(&v2(1, 0x21, &[0; 12])).is_err());
        assert!(parse(&v2(2, 0x11, &[0; 12])).is_err());
        let mut bad_version = whole.clone();
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xFF, 0xFF]);
        assert_eq!(parse(&huge), Err(ProxyError::V2("address block too long")));
    }

    #[tokio::test]
    async fn read_returns_what_follows() {
        let (mut client, mut server) = tokio::io::duplex(256);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 1.2.3.4 5.6.7.8 10 20\r\nGET").await.unwrap();
        let (h, rest) = read(&mut server).await.unwrap();
        assert_eq!(h.source, Some("1.2.3.4:10".parse().unwrap()));
        assert_eq!(&rest[..], b"GET");
        drop(client);
        let (mut client, mut server) = tokio::io::duplex(256);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4").await.unwrap();
        drop(client);
        assert_eq!(read(&mut server).await, Err(ProxyError::Truncated));
    }
}
