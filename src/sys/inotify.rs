//! `inotify(7)`, read without blocking; whether anything is waiting on it
//! or on the mount table, in one `epoll_wait` ([`Readiness`]); and the checks
//! that decide whether its notices can be trusted for a path: the file
//! system reports every change to it (a local one, not NFS or FUSE, whose
//! other clients change files silently), names are not case-folded (a
//! notice names one spelling), and no symlink lies on the way to it.

use std::ffi::{CString, OsString};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// One notice: the watch it came from, what happened, and the name inside
/// a watched directory it happened to (none for the watched object itself).
#[derive(Debug)]
pub struct Notice {
    pub wd: i32,
    pub mask: u32,
    pub name: Option<OsString>,
}

/// An inotify instance (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Inotify {
    fd: OwnedFd,
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An epoll set asked, without waiting, which of its descriptors are ready.
#[derive(Debug)]
pub struct Readiness {
    fd: OwnedFd,
}

impl Readiness {
    pub fn new() -> io::Result<Readiness> {
        // SAFETY: epoll_create1 takes only flags.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Readiness { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adds `fd`, reported as the bit `tag` when `events` (level-triggered)
    /// are pending on it.
    pub fn add(&self, fd: &impl AsRawFd, tag: u32, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: u64::from(tag) };
        // SAFETY: valid descriptors and an event structure alive for the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut event) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes `fd` (before it is closed).
    pub fn remove(&self, fd: &impl AsRawFd) {
        // SAFETY: valid descriptors; the event argument may be null for DEL.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd.as_raw_fd(), std::ptr::null_mut()) };
    }

    /// The tags of the descriptors ready now, or-ed together; 0 for none.
    /// One system call that never waits.
    pub fn ready(&self) -> io::Result<u32> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: `events` is writable storage for the 4 entries passed.
            let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), 4, 0) };
            if n >= 0 {
                return Ok(events[..n as usize].iter().fold(0, |tags, e| tags | e.u64 as u32));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// The mount table (`/proc/self/mountinfo`), which reports `EPOLLPRI` once
/// anything is mounted or unmounted after it was opened.
pub fn mount_table() -> io::Result<std::fs::File> {
    std::fs::File::open("/proc/self/mountinfo")
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes only flags.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Inotify { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Watches `path` (following symlinks, so `/proc/self/fd/N` names the
    /// open file itself) for `mask`; the watch descriptor, shared by every
    /// path that leads to the same inode.
    pub fn watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let path = c_path(path)?;
        // SAFETY: a valid descriptor and a NUL-terminated path alive for the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Drops a watch; its `IN_IGNORED` notice follows.
    pub fn unwatch(&self, wd: i32) {
        // SAFETY: plain integers; a stale `wd` only gets EINVAL.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Appends every notice queued so far to `out`: one `read` when there
    /// are none.
    pub fn read(&self, out: &mut Vec<Notice>) -> io::Result<()> {
        // Aligned for `inotify_event`; room for many notices per read.
        let mut buf = [0u64; 512];
        loop {
            // SAFETY: `buf` is writable for its whole size during the call.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), mem::size_of_val(&buf)) };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(err),
                };
            }
            // SAFETY: the kernel wrote `n` bytes into `buf`.
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            parse(bytes, out);
        }
    }
}

const HEAD: usize = mem::size_of::<libc::inotify_event>();

/// Splits what one `read` returned into notices.
fn parse(mut bytes: &[u8], out: &mut Vec<Notice>) {
    while bytes.len() >= HEAD {
        let field = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let (wd, mask, len) = (field(0) as i32, field(4), field(12) as usize);
        let Some(raw_name) = bytes.get(HEAD..HEAD + len) else { return };
        let name = raw_name.split(|&b| b == 0).next().filter(|n| !n.is_empty());
        out.push(Notice { wd, mask, name: name.map(|n| OsString::from_vec(n.to_vec())) });
        bytes = &bytes[HEAD + len..];
    }
}

/// `statfs` types whose changes all pass through this kernel, so inotify
/// sees them: ext2/3/4, XFS, Btrfs, tmpfs, ramfs, overlayfs, F2FS, ZFS.
const LOCAL_FILE_SYSTEMS: [i64; 8] =
    [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x8584_58f6, 0x794c_7630, 0xF2F5_2010, 0x2fc1_2fc1];

/// `FS_CASEFOLD_FL` of `FS_IOC_GETFLAGS`: a directory whose names match
/// whatever their case.
const FS_CASEFOLD_FL: libc::c_long = 0x4000_0000;

/// Whether the directory at `path` looks names up without regard to case.
pub fn case_folded(path: &Path) -> io::Result<bool> {
    let dir = std::fs::File::open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: a valid descriptor and a c_long for the kernel to fill in.
    if unsafe { libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        let err = io::Error::last_os_error();
        // File systems without these flags have no case-folding either.
        return match err.raw_os_error() {
            Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL) => Ok(false),
            _ => Err(err),
        };
    }
    Ok(flags & FS_CASEFOLD_FL != 0)
}

/// Whether `path` is on a file system whose every change inotify reports.
pub fn on_local_file_system(path: &Path) -> io::Result<bool> {
    let path = c_path(path)?;
    let mut st = mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a NUL-terminated path and storage for one `struct statfs`.
    if unsafe { libc::statfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded and filled `st` in.
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    let kind = unsafe { st.assume_init() }.f_type as i64;
    Ok(LOCAL_FILE_SYSTEMS.contains(&kind))
}

/// Whether `rel` resolves beneath `dir` without following any symlink
/// (`openat2` with `RESOLVE_NO_SYMLINKS`). False on kernels without it.
pub fn reached_without_symlinks(dir: &impl AsRawFd, rel: &Path) -> bool {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    super::openat2(dir, rel, libc::O_PATH | libc::O_CLOEXEC, resolve).is_ok()
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_what_changed_and_reading_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::new().unwrap();
        let mut out = Vec::new();
        inotify.read(&mut out).unwrap();
        assert!(out.is_empty());

        let wd = inotify.watch(dir.path(), libc::IN_CREATE | libc::IN_DELETE).unwrap();
        std::fs::write(dir.path().join("a-rather-long-name.css"), "x").unwrap();
        std::fs::remove_file(dir.path().join("a-rather-long-name.css")).unwrap();
        inotify.read(&mut out).unwrap();
        let seen: Vec<_> = out.iter().map(|n| (n.wd, n.mask & !libc::IN_ISDIR, n.name.clone())).collect();
        let name = Some(OsString::from("a-rather-long-name.css"));
        assert_eq!(seen, [(wd, libc::IN_CREATE, name.clone()), (wd, libc::IN_DELETE, name)]);
    }

    #[test]
    fn readiness_reports_which_descriptor_has_something() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::new().unwrap();
        let mounts = mount_table().unwrap();
        let ready = Readiness::new().unwrap();
        ready.add(&inotify, 1, libc::EPOLLIN as u32).unwrap();
        ready.add(&mounts, 2, libc::EPOLLPRI as u32).unwrap();
        assert_eq!(ready.ready().unwrap(), 0);
        inotify.watch(dir.path(), libc::IN_CREATE).unwrap();
        std::fs::write(dir.path().join("a"), "").unwrap();
        assert_eq!(ready.ready().unwrap(), 1);
        inotify.read(&mut Vec::new()).unwrap();
        assert_eq!(ready.ready().unwrap(), 0);
        assert!(!case_folded(dir.path()).unwrap());
    }

    #[test]
    fn symlinks_on_the_way_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/a.css"), "x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        assert!(reached_without_symlinks(&root, Path::new("real/a.css")));
        assert!(reached_without_symlinks(&root, Path::new("")));
        assert!(!reached_without_symlinks(&root, Path::new("link/a.css")));
        assert!(!reached_without_symlinks(&root, Path::new("real/missing.css")));
    }
}
