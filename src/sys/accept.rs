//! Accepting a connection as a plain non-blocking descriptor, with its
//! peer's address, in one system call (`accept4`): the front's event loop
//! that will serve it registers it once, rather than the accepting runtime
//! registering it and taking it out again.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Accepts one connection on `listener` (a listening stream socket),
/// non-blocking and close-on-exec. The address is the peer's for a TCP
/// connection, `None` for a unix one. `WouldBlock` when none is waiting.
pub fn accept(listener: &impl AsRawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for accept4 to write, and `len`
    // says how much room there is.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((fd, peer_address(&storage, len)))
}

/// The socket address accept4 wrote, if it is an IP one.
fn peer_address(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for any address.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn accepts_with_the_peer_address_and_without_blocking() {
        for host in ["127.0.0.1", "::1"] {
            let Ok(listener) = TcpListener::bind((host, 0)) else { continue };
            listener.set_nonblocking(true).unwrap();
            assert_eq!(accept(&listener).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (fd, peer) = accept(&listener).unwrap();
            assert_eq!(peer, Some(client.local_addr().unwrap()));
            let stream = std::net::TcpStream::from(fd);
            // Non-blocking: nothing to read yet.
            let mut buf = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut &stream, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn unix_peers_have_no_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (_, peer) = accept(&listener).unwrap();
        assert_eq!(peer, None);
    }
}
