//! The file cache's change notices: inotify watches on the directories and
//! files it holds, so a held entry needs no `stat` to be known unchanged.
//!
//! What is watched, and why that is enough for an entry at `root/a/b/c.css`:
//! - `root`, `root/a` and `root/a/b`, for names created, deleted, moved or
//!   changed in attributes: any change to which inode a name on the way
//!   leads to shows in the directory holding that name.
//! - the file's own inode (through `/proc/self/fd/N`, so the very file that
//!   was read), for writes and attribute changes through any path,
//!   including hard links elsewhere.
//! - the mount table: a mount over a directory on the way changes what the
//!   path leads to without any inotify notice.
//!
//! Only entries reached without a symlink are kept this way (a symlink's
//! target could change where no watch sees it), only on local file systems
//! and in directories that are not case-folded (see `sys::inotify`), and
//! for at most [`MAX_DIRS`] directories; everything else keeps the `stat`
//! check. The kernel queues a notice before the change's system call
//! returns, so a lookup that starts by asking whether anything is queued
//! (one `epoll_wait` that never waits) sees every change made before it
//! began: the cache stays as fresh as with `stat`. What inotify never
//! reports is not seen: writes through a shared `mmap`, and changes made
//! beneath the file system's back (a ZFS rollback, an overlayfs lower
//! layer edited in place).
//!
//! A notice for a name removes that name's entry. Anything that could
//! change a whole subtree (a watched directory renamed, deleted or changed
//! itself, a mount, or the queue overflowing) forgets everything: entries
//! and watches. Deploys are rare; the cache fills again from the next
//! requests.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys::inotify::{self, Inotify, Readiness};

use super::path::Root;

/// What a directory watch reports: changes to the names inside it, and to
/// the directory itself.
const DIR_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// What a file watch reports: its bytes or attributes changing.
const FILE_MASK: u32 = libc::IN_MODIFY | libc::IN_ATTRIB;

/// Most directories watched. Directories are never unwatched one by one
/// (only all together), so this bounds what a crawl through a large tree
/// can pin; entries beyond it keep the `stat` check.
pub const MAX_DIRS: usize = 8192;

/// [`Readiness`] tags.
pub const QUEUE: u32 = 1;
pub const MOUNTS: u32 = 2;

/// What a watch descriptor stands for.
#[derive(Debug)]
enum Watched {
    Dir(PathBuf),
    /// One claim per entry (or entry being made) that relies on the watch:
    /// its cached path. Several for hard links, or for one path claimed by
    /// two lookups at once.
    File(Vec<PathBuf>),
}

/// What the notices say the cache must drop.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Nothing,
    /// These paths (each maybe not cached).
    Paths(Vec<PathBuf>),
    /// Everything: the entries, and with them every watch.
    Everything,
}

/// The watches, one inotify instance for every static root.
#[derive(Debug)]
pub struct Notices {
    /// None where inotify is unavailable: every entry is then `stat`-checked.
    inotify: Option<Inotify>,
    mounts: Option<File>,
    /// The inotify queue and the mount table, asked without the cache's lock.
    ready: Option<Arc<Readiness>>,
    dirs: HashMap<PathBuf, i32>,
    watched: HashMap<i32, Watched>,
    /// Counts the notices that changed something, so a caller can tell
    /// whether any arrived while it read a file (see [`Ticket`]).
    generation: u64,
}

/// Taken with the directories on a path watched, before its file is read;
/// the entry may be kept by notices only if no change was applied between.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
}

impl Notices {
    pub fn new() -> Notices {
        let mut notices = Notices {
            inotify: None,
            mounts: None,
            ready: None,
            dirs: HashMap::new(),
            watched: HashMap::new(),
            generation: 0,
        };
        let started = (|| {
            let ready = Readiness::new()?;
            let inotify = Inotify::new()?;
            let mounts = inotify::mount_table()?;
            ready.add(&inotify, QUEUE, libc::EPOLLIN as u32)?;
            ready.add(&mounts, MOUNTS, libc::EPOLLPRI as u32)?;
            Ok::<_, io::Error>((ready, inotify, mounts))
        })();
        match started {
            Ok((ready, inotify, mounts)) => {
                notices.ready = Some(Arc::new(ready));
                notices.inotify = Some(inotify);
                notices.mounts = Some(mounts);
            }
            Err(e) => tracing::debug!("static cache: no change notices ({e}); using stat"),
        }
        notices
    }

    /// Where to ask, without the cache's lock, whether anything is waiting
    /// ([`QUEUE`], [`MOUNTS`]) for [`Notices::apply`].
    pub fn readiness(&self) -> Option<Arc<Readiness>> {
        self.ready.clone()
    }

    /// Reads what `ready` (or the failure to ask) says is waiting: what the
    /// cache must drop.
    pub fn apply(&mut self, ready: io::Result<u32>) -> Changed {
        let tags = match ready {
            Ok(tags) => tags,
            Err(e) => {
                tracing::warn!("static cache: asking for change notices failed ({e}); starting afresh");
                return self.forget_all();
            }
        };
        if tags & MOUNTS != 0 {
            tracing::debug!("static cache: the mount table changed; starting afresh");
            return self.forget_all();
        }
        let Some(inotify) = &self.inotify else { return Changed::Nothing };
        let mut notices = Vec::new();
        if let Err(e) = inotify.read(&mut notices) {
            tracing::warn!("static cache: reading change notices failed ({e}); starting afresh");
            return self.forget_all();
        }
        let mut paths = Vec::new();
        let mut everything = false;
        for notice in notices {
            if notice.mask & libc::IN_Q_OVERFLOW != 0 {
                everything = true;
                continue;
            }
            match (self.watched.get(&notice.wd), notice.name) {
                (Some(Watched::Dir(dir)), Some(name)) => {
                    let path = dir.join(name);
                    // A watched directory (or a name on the way to one)
                    // changed: its whole subtree may now be elsewhere.
                    everything |= self.dirs.contains_key(&path);
                    paths.push(path);
                }
                (Some(Watched::Dir(_)), None) => everything = true,
                (Some(Watched::File(_)), _) => {
                    if let Some(Watched::File(held)) = self.watched.remove(&notice.wd) {
                        paths.extend(held);
                    }
                    if notice.mask & libc::IN_IGNORED == 0 {
                        inotify.unwatch(notice.wd);
                    }
                }
                // A watch already dropped: its last notices.
                (None, _) => {}
            }
        }
        if everything {
            return self.forget_all();
        }
        if paths.is_empty() {
            return Changed::Nothing;
        }
        self.generation += 1;
        Changed::Paths(paths)
    }

    /// Watches `root` and every directory from it down to the one holding
    /// `rel`, if all of them can be trusted to report their changes, and
    /// checks that no symlink lies on the way (to `rel` itself if it
    /// `exists`, else to its directory). `None`: an entry for `rel` must be
    /// `stat`-checked.
    pub fn ticket(&mut self, root: &Root, rel: &Path, exists: bool) -> Option<Ticket> {
        let inotify = self.inotify.as_ref()?;
        let root_fd = root.dir()?;
        let rel_dir = rel.parent()?;
        let way = if exists { rel } else { rel_dir };
        // Checked before the watches (a symlinked directory would be
        // watched under the link's name) and again after them (a symlink
        // that appeared in between).
        if !inotify::reached_without_symlinks(root_fd, way) {
            return None;
        }
        let mut logical = root.path.clone();
        let mut through_fd = PathBuf::from(format!("/proc/self/fd/{}", root_fd.as_raw_fd()));
        let steps = std::iter::once(None).chain(rel_dir.components().map(Some));
        for step in steps {
            if let Some(step) = step {
                logical.push(step);
                through_fd.push(step);
            }
            if self.dirs.contains_key(&logical) {
                continue;
            }
            let trusted = self.dirs.len() < MAX_DIRS
                && inotify::on_local_file_system(&through_fd).unwrap_or(false)
                && !inotify::case_folded(&through_fd).unwrap_or(true);
            if !trusted {
                return None;
            }
            let wd = inotify.watch(&through_fd, DIR_MASK).ok()?;
            if self.watched.contains_key(&wd) {
                // The same directory under another name (a bind mount):
                // one path per directory watch, so leave it to `stat`.
                return None;
            }
            self.watched.insert(wd, Watched::Dir(logical.clone()));
            self.dirs.insert(logical.clone(), wd);
        }
        inotify::reached_without_symlinks(root_fd, way).then_some(Ticket { generation: self.generation })
    }

    /// Watches the open `file`, cached as `path`, if nothing changed since
    /// `ticket` and its own file system can be trusted; the watch
    /// descriptor, a claim the entry must give back to [`Notices::forget`]
    /// when it goes.
    pub fn watch_file(&mut self, ticket: Ticket, path: &Path, file: &File) -> Option<i32> {
        if ticket.generation != self.generation {
            return None;
        }
        let inotify = self.inotify.as_ref()?;
        // The file itself may be a mount (a bind mount from NFS, say).
        let through_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if !inotify::on_local_file_system(&through_fd).unwrap_or(false) {
            return None;
        }
        let wd = inotify.watch(&through_fd, FILE_MASK).ok()?;
        match self.watched.entry(wd).or_insert_with(|| Watched::File(Vec::new())) {
            Watched::File(claims) => {
                claims.push(path.to_path_buf());
                Some(wd)
            }
            Watched::Dir(_) => None,
        }
    }

    /// Whether an entry made since `ticket` may be kept by notices.
    pub fn still(&self, ticket: Ticket) -> bool {
        self.inotify.is_some() && ticket.generation == self.generation
    }

    /// Gives back one claim on the file watch `wd` for `path`; the watch
    /// goes with its last claim.
    pub fn forget(&mut self, wd: i32, path: &Path) {
        let Some(Watched::File(claims)) = self.watched.get_mut(&wd) else { return };
        if let Some(at) = claims.iter().position(|p| p == path) {
            claims.swap_remove(at);
        }
        if claims.is_empty() {
            self.watched.remove(&wd);
            if let Some(inotify) = &self.inotify {
                inotify.unwatch(wd);
            }
        }
    }

    /// Drops every watch, by starting a fresh inotify instance (one system
    /// call, however many watches there were), and rereads the mount table.
    fn forget_all(&mut self) -> Changed {
        self.dirs.clear();
        self.watched.clear();
        self.generation += 1;
        if let Some(ready) = &self.ready {
            if let Some(old) = self.inotify.take() {
                ready.remove(&old);
            }
            if let Some(old) = self.mounts.take() {
                ready.remove(&old);
            }
            let fresh = (|| {
                let inotify = Inotify::new()?;
                let mounts = inotify::mount_table()?;
                ready.add(&inotify, QUEUE, libc::EPOLLIN as u32)?;
                ready.add(&mounts, MOUNTS, libc::EPOLLPRI as u32)?;
                Ok::<_, io::Error>((inotify, mounts))
            })();
            match fresh {
                Ok((inotify, mounts)) => {
                    self.inotify = Some(inotify);
                    self.mounts = Some(mounts);
                }
                Err(e) => tracing::warn!("static cache: no change notices ({e}); using stat from now on"),
            }
        }
        Changed::Everything
    }

    /// Watches held: directories and files.
    pub fn count(&self) -> usize {
        self.watched.len()
    }
}
