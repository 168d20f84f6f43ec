//! The few system calls the standard library and tokio don't wrap:
//! socket pairs of a chosen type, `sendmsg`/`recvmsg` with a file
//! descriptor riding along (`SCM_RIGHTS`), `memfd_create`, `openat2`
//! confined beneath a directory, and inotify (`inotify`).
//!
//! This is one of the two modules allowed `unsafe` (the other is the child
//! set-up in `supervisor::spawn`). Everything here is blocking or
//! non-blocking exactly as the descriptor is; callers choose.

pub mod accept;
pub mod connect;
pub mod inotify;

use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors accepted in one `recvmsg`. Peers send at most one per
/// message; a little room keeps a misbehaving peer from truncating silently.
const MAX_FDS: usize = 4;

/// The type of a socket pair.
#[derive(Debug, Clone, Copy)]
pub enum PairKind {
    /// Byte stream: per-worker reply channel.
    Stream,
    /// Reliable datagrams that keep message boundaries: the shared request
    /// queue every worker of a pool reads from.
    SeqPacket,
}

/// A connected pair of unix sockets, both close-on-exec.
pub fn socketpair(kind: PairKind) -> io::Result<(OwnedFd, OwnedFd)> {
    let ty = match kind {
        PairKind::Stream => libc::SOCK_STREAM,
        PairKind::SeqPacket => libc::SOCK_SEQPACKET,
    };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Switches `O_NONBLOCK` on or off.
pub fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we hold; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the socket's send buffer size (the kernel may cap it).
pub fn set_send_buffer(fd: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let value = bytes as libc::c_int;
    // SAFETY: `value` outlives the call and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `bufs` as one message (one record on a seqpacket socket), with
/// `pass` attached as `SCM_RIGHTS` if given. Never raises SIGPIPE.
pub fn send_with_fd(fd: &impl AsRawFd, bufs: &[IoSlice<'_>], pass: Option<RawFd>) -> io::Result<usize> {
    send_with_fds(fd, bufs, pass.as_slice())
}

/// Like [`send_with_fd`], with up to [`MAX_FDS`] descriptors attached.
pub fn send_with_fds(fd: &impl AsRawFd, bufs: &[IoSlice<'_>], pass: &[RawFd]) -> io::Result<usize> {
    if pass.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one message"));
    }
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    if !pass.is_empty() {
        let bytes = std::mem::size_of_val(pass) as u32;
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        debug_assert!(space <= mem::size_of_val(&control));
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `control`, large enough for one
        // cmsghdr carrying MAX_FDS descriptors, so CMSG_FIRSTHDR is non-null
        // and CMSG_DATA has room for `pass`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in pass.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *fd);
            }
        }
    }
    // SAFETY: `msg` points at `bufs` and `control`, both alive for the call;
    // IoSlice is ABI-compatible with iovec.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends `bufs` on a non-blocking stream socket. Never raises SIGPIPE.
pub fn send(fd: &impl AsRawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    send_flags(fd, bufs, 0)
}

/// Sends `bufs` on a stream socket with `MSG_MORE`: the kernel holds them
/// back for what follows (a file's bytes after a response head) rather
/// than sending a short segment. Never raises SIGPIPE.
pub fn send_more(fd: &impl AsRawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    send_flags(fd, bufs, libc::MSG_MORE)
}

fn send_flags(fd: &impl AsRawFd, bufs: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: `msg` points at `bufs`, alive for the call; IoSlice is
    // ABI-compatible with iovec.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `sendfile(2)`: up to `len` bytes of `file` from `offset` to the socket
/// `fd`, without passing through user space. 0 means `offset` is at or
/// past the file's end.
pub fn sendfile(fd: &impl AsRawFd, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
    let mut offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both descriptors are open for the call; `offset` is a valid
    // off_t the kernel updates.
    let n = unsafe { libc::sendfile(fd.as_raw_fd(), file.as_raw_fd(), &mut offset, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives into `buf`, appending any descriptors that came along to `fds`
/// (close-on-exec). Returns the bytes read; 0 means the peer closed.
/// On a seqpacket socket a message longer than `buf` is an error, not a
/// silent truncation.
pub fn recv_with_fds(fd: &impl AsRawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut control = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<RawFd>()) as u32) } as _;
    debug_assert!(msg.msg_controllen as usize <= mem::size_of_val(&control));
    // SAFETY: `msg` points at `iov` (which points at `buf`) and `control`,
    // all alive and writable for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG
    // macros walk only within it, and each SCM_RIGHTS payload is an array of
    // descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message truncated"));
    }
    Ok(n as usize)
}

/// [`recv_with_fds`] into the spare capacity of `buf`, growing its length
/// by the bytes received.
pub fn recv_into(fd: &impl AsRawFd, buf: &mut bytes::BytesMut, fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: the kernel only writes into this slice, and only the bytes it
    // reports written are exposed below; u8 has no invalid bit patterns.
    let spare = unsafe { &mut *(spare as *mut [mem::MaybeUninit<u8>] as *mut [u8]) };
    let n = recv_with_fds(fd, spare, fds)?;
    // SAFETY: recvmsg initialised the first `n` spare bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Takes ownership of an inherited descriptor after checking it is open.
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("descriptor {fd} is not open")));
    }
    // SAFETY: the descriptor is open and was handed to this process to own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec duplicate of `fd`.
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor or fails; no memory involved.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Lets descriptor `fd` survive `exec` (to be called in a forked child).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a plain integer descriptor; async-signal-safe.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers `fd` (non-blocking) with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    set_nonblocking(&fd, true)?;
    // SAFETY: an OwnedFd is open for its whole life and always reports the
    // same descriptor, which is what registration requires.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Registers a listening socket (made non-blocking) with the tokio
/// reactor, to wait for connections and accept them with [`accept::accept`].
pub fn async_listener<T: AsRawFd>(listener: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    set_nonblocking(&listener, true)?;
    // SAFETY: std's listeners own their descriptor for their whole life and
    // always report the same one, which is what registration requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

static STOP_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_stop(_: libc::c_int) {
    STOP_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGTERM set a flag (read with [`stop_requested`]) instead of
/// killing the process, and interrupt blocking calls (no `SA_RESTART`).
pub fn catch_stop_signal() -> io::Result<()> {
    // SAFETY: sigaction is zeroable plain data; the handler only stores to
    // an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = mem::zeroed();
        action.sa_sigaction = note_stop as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGTERM arrived since [`catch_stop_signal`].
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Bounds how long a blocking receive on `fd` waits.
pub fn set_recv_timeout(fd: &impl AsRawFd, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` outlives the call and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resident memory of process `pid` (or this process for 0), in bytes.
pub fn resident_bytes(pid: u32) -> io::Result<u64> {
    let path = if pid == 0 { "/proc/self/statm".to_string() } else { format!("/proc/{pid}/statm") };
    let statm = std::fs::read_to_string(path)?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable statm"))?;
    // SAFETY: sysconf takes and returns plain integers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Ok(pages * page)
}

/// Shuts both directions of a socket down, so its peer reads end-of-file
/// even while other descriptors of it stay open.
pub fn shutdown(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: shutdown takes plain integers.
    if unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes sent on `fd` that no receiver has read yet (`SIOCOUTQ`).
pub fn unread_sent_bytes(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int into `value`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut value) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.max(0) as usize)
}

/// Raises this process's soft limit on open files to `want` (at most the
/// hard limit) if it is lower; returns the soft limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on some targets only
pub fn raise_open_files_limit(want: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= want as libc::rlim_t {
        return Ok(limit.rlim_cur as u64);
    }
    let raised = libc::rlimit { rlim_cur: (want as libc::rlim_t).min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: setrlimit reads the rlimit we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(raised.rlim_cur as u64)
}

/// Sends signal `sig` to process `pid`.
pub fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to SIGKILL the calling process when its parent thread
/// dies (to be called in a forked child, before exec).
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with integer arguments; async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A listening socket inherited from whoever started tandem.
pub enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Takes ownership of descriptor `fd`, which must be an inherited listening
/// TCP or unix stream socket.
pub fn inherited_listener(fd: RawFd) -> io::Result<Inherited> {
    let get = |opt| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for getsockopt to write.
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut value as *mut libc::c_int).cast(), &mut len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    };
    let not_listening =
        || io::Error::new(io::ErrorKind::InvalidInput, format!("descriptor {fd} is not a listening socket"));
    let domain = get(libc::SO_DOMAIN).map_err(|_| not_listening())?;
    if get(libc::SO_ACCEPTCONN)? == 0 || get(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(not_listening());
    }
    // Inherited descriptors survive exec; workers must not hold the socket.
    // SAFETY: fcntl on a plain integer descriptor.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the checks above show `fd` is an open listening stream socket;
    // the user handed it to us with fd://N, so we now own it.
    unsafe {
        match domain {
            libc::AF_INET | libc::AF_INET6 => Ok(Inherited::Tcp(std::net::TcpListener::from_raw_fd(fd))),
            libc::AF_UNIX => Ok(Inherited::Unix(std::os::unix::net::UnixListener::from_raw_fd(fd))),
            _ => Err(not_listening()),
        }
    }
}

/// An anonymous in-memory file (for request bodies too large to travel in
/// a frame but too small to spill to disk).
pub fn memfd(name: &std::ffi::CStr) -> io::Result<std::fs::File> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that we now own.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// What `stat(2)` says of a file: its identity and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub is_dir: bool,
}

/// `fstatat(2)` of `path` relative to the directory `dir`, following
/// symlinks: the kernel walks only `path`'s own components. Like `stat`, it
/// does not confine the walk to `dir`.
pub fn stat_at(dir: &impl AsRawFd, path: &std::path::Path) -> io::Result<FileStat> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut st = mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is writable storage for one
    // `struct stat`, both alive for the call.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr(), st.as_mut_ptr(), 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so it filled in `st`.
    let st = unsafe { st.assume_init() };
    Ok(FileStat {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
        is_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
    })
}

/// Reads up to `buf.len()` bytes of `file` at `offset` only if they are
/// already in the page cache (`preadv2` with `RWF_NOWAIT`): never waits for
/// the disk, so it can run on an event-loop thread. `WouldBlock` when the
/// first byte is not cached; a short count when only the start is. Kernels
/// or file systems without `RWF_NOWAIT` answer `Unsupported`.
pub fn pread_cached(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `iov` describes `buf`, writable and alive for the call; the
    // descriptor is `file`'s, open for the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let err = io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::EAGAIN) => io::Error::from(io::ErrorKind::WouldBlock),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => io::Error::from(io::ErrorKind::Unsupported),
        _ => err,
    })
}

/// `struct open_how` of `openat2(2)` (libc's is `non_exhaustive`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` (relative) read-only beneath the directory `dir`, with
/// `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel
/// refuses (`EXDEV`) any resolution that would leave `dir`, through `..`,
/// an absolute path or a symlink, atomically, so no rename race can lead
/// outside. `extra_flags` are added to `O_RDONLY | O_CLOEXEC`. `ENOSYS`
/// before Linux 5.6.
pub fn open_beneath(dir: &impl AsRawFd, path: &std::path::Path, extra_flags: i32) -> io::Result<std::fs::File> {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | extra_flags;
    let fd = openat2(dir, path, flags, libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS)?;
    Ok(std::fs::File::from(fd))
}

/// `openat2(2)`: opens `path` relative to `dir` with `flags` and the
/// `resolve` restrictions.
fn openat2(dir: &impl AsRawFd, path: &std::path::Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let how = OpenHow { flags: flags as u64, mode: 0, resolve };
    // SAFETY: `path` is a NUL-terminated string and `how` a properly laid
    // out open_how, both alive for the call; the size passed is its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            mem::size_of::<OpenHow>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// This process's real user id.
pub fn uid() -> u32 {
    // SAFETY: getuid takes no arguments and cannot fail.
    unsafe { libc::getuid() }
}

/// `CLOCK_MONOTONIC` in microseconds (what sd_notify's MONOTONIC_USEC wants).
pub fn monotonic_micros() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn stat_at_agrees_with_std() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"12345").unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        let st = stat_at(&root, std::path::Path::new("d/f")).unwrap();
        let meta = std::fs::metadata(dir.path().join("d/f")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((st.dev, st.ino, st.size, st.is_dir), (meta.dev(), meta.ino(), 5, false));
        assert_eq!((st.mtime, st.ctime), ((meta.mtime(), meta.mtime_nsec()), (meta.ctime(), meta.ctime_nsec())));
        assert!(stat_at(&root, std::path::Path::new("d")).unwrap().is_dir);
        assert_eq!(stat_at(&root, std::path::Path::new("nope")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn pread_cached_reads_what_the_page_cache_holds() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let mut buf = [0u8; 4];
        match pread_cached(&file, &mut buf, 3) {
            Ok(n) => assert_eq!(&buf[..n], &b"3456"[..n]),
            Err(e) => assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Unsupported), "{e}"),
        }
        assert!(matches!(pread_cached(&file, &mut buf, 10), Ok(0) | Err(_)));
    }

    #[test]
    fn seqpacket_keeps_message_boundaries_and_passes_a_descriptor() {
        let (a, b) = socketpair(PairKind::SeqPacket).unwrap();
        let mut file = memfd(c"t").unwrap();
        file.write_all(b"payload").unwrap();
        file.rewind().unwrap();
        send_with_fd(&a, &[IoSlice::new(b"one")], Some(file.as_raw_fd())).unwrap();
        send_with_fd(&a, &[IoSlice::new(b"tw"), IoSlice::new(b"o")], None).unwrap();
        drop(file);

        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(fds.len(), 1);
        let mut got = String::new();
        std::fs::File::from(fds.pop().unwrap()).read_to_string(&mut got).unwrap();
        assert_eq!(got, "payload");

        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 3);
        assert_eq!(&buf[..3], b"two");
        assert!(fds.is_empty());
    }

    #[test]
    fn seqpacket_message_larger_than_buffer_is_an_error() {
        let (a, b) = socketpair(PairKind::SeqPacket).unwrap();
        send_with_fd(&a, &[IoSlice::new(&[7u8; 100])], None).unwrap();
        let mut buf = [0u8; 10];
        let err = recv_with_fds(&b, &mut buf, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn closed_peer_reads_as_zero() {
        let (a, b) = socketpair(PairKind::Stream).unwrap();
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut [0u8; 8], &mut Vec::new()).unwrap(), 0);
    }
}
