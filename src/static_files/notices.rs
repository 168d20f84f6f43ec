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
//!
//! Only entries reached without a symlink are kept this way (a symlink's
//! target could change where no watch sees it), and only on local file
//! systems (see `sys::inotify`); everything else keeps the `stat` check.
//! The kernel queues a notice before the change's system call returns, so
//! reading the queue at the start of a lookup sees every change made before
//! the lookup began: the cache stays exactly as fresh as with `stat`. (The
//! queue is read outside the cache's lock; `file_cache` makes sure a
//! lookup never trusts the entries while another thread holds notices it
//! has read but not yet applied.)
//!
//! A notice for a name removes that name's entry. Anything that could
//! change a whole subtree (a watched directory renamed, deleted or changed
//! itself, or the queue overflowing) forgets everything: entries and
//! watches. Deploys are rare; the cache fills again from the next requests.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys::inotify::{self, Inotify, Notice};

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

/// What a watch descriptor stands for.
#[derive(Debug)]
enum Watched {
    Dir(PathBuf),
    /// The cached paths that lead to this file (more than one for hard links).
    File(Vec<PathBuf>),
}

/// What the notices read so far say the cache must drop.
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
    inotify: Option<Arc<Inotify>>,
    dirs: HashMap<PathBuf, i32>,
    watched: HashMap<i32, Watched>,
    /// Counts the notices that changed something, so a caller can tell
    /// whether any arrived while it read a file (see [`Ticket`]).
    generation: u64,
}

/// Taken before a file is opened, with its directories watched; the entry
/// read after it may be kept by notices only if no change arrived between.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
}

impl Notices {
    pub fn new() -> Notices {
        let inotify = Inotify::new().map_err(|e| tracing::debug!("static cache: no inotify ({e}); using stat")).ok();
        Notices { inotify: inotify.map(Arc::new), dirs: HashMap::new(), watched: HashMap::new(), generation: 0 }
    }

    /// The notice queue, which [`Notices::apply`]'s caller reads without
    /// holding the cache's lock.
    pub fn queue(&self) -> Option<Arc<Inotify>> {
        self.inotify.clone()
    }

    /// What the notices just read (or the read's failure) say the cache
    /// must drop.
    pub fn apply(&mut self, read: io::Result<Vec<Notice>>) -> Changed {
        let notices = match read {
            Ok(notices) => notices,
            Err(e) => {
                tracing::warn!("static cache: reading change notices failed ({e}); starting afresh");
                return self.forget_all();
            }
        };
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
                    if let (0, Some(inotify)) = (notice.mask & libc::IN_IGNORED, &self.inotify) {
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
            if !inotify::on_local_file_system(&through_fd).unwrap_or(false) {
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
        // The watches are in place: a symlink that appears from now on is
        // a notice, and one already there is caught here.
        let way = if exists { rel } else { rel_dir };
        inotify::reached_without_symlinks(root_fd, way).then_some(Ticket { generation: self.generation })
    }

    /// Watches the open `file`, cached as `path`, if nothing changed since
    /// `ticket`; its watch descriptor, which the entry must give back to
    /// [`Notices::forget`] when it goes.
    pub fn watch_file(&mut self, ticket: Ticket, path: &Path, file: &File) -> Option<i32> {
        if ticket.generation != self.generation {
            return None;
        }
        let inotify = self.inotify.as_ref()?;
        let wd = inotify.watch(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())), FILE_MASK).ok()?;
        match self.watched.entry(wd).or_insert_with(|| Watched::File(Vec::new())) {
            Watched::File(paths) => {
                if !paths.iter().any(|p| p == path) {
                    paths.push(path.to_path_buf());
                }
                Some(wd)
            }
            Watched::Dir(_) => None,
        }
    }

    /// Whether an absence seen after `ticket` may be kept by notices.
    pub fn still(&self, ticket: Ticket) -> bool {
        self.inotify.is_some() && ticket.generation == self.generation
    }

    /// An entry kept by the file watch `wd` is gone.
    pub fn forget(&mut self, wd: i32, path: &Path) {
        let Some(Watched::File(paths)) = self.watched.get_mut(&wd) else { return };
        paths.retain(|p| p != path);
        if paths.is_empty() {
            self.watched.remove(&wd);
            if let Some(inotify) = &self.inotify {
                inotify.unwatch(wd);
            }
        }
    }

    /// Drops every watch and says so. Their last notices, still queued,
    /// name watches no longer known, and are ignored.
    fn forget_all(&mut self) -> Changed {
        if let Some(inotify) = &self.inotify {
            for &wd in self.watched.keys() {
                inotify.unwatch(wd);
            }
        }
        self.dirs.clear();
        self.watched.clear();
        self.generation += 1;
        Changed::Everything
    }

    /// Watches held: directories and files.
    pub fn count(&self) -> usize {
        self.watched.len()
    }
}
