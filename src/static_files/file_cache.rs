//! What the static route remembers about the file system between requests
//! (`--static-cache`, nginx's `open_file_cache`): the bytes of small files,
//! and which names do not exist (the `.br`/`.zst`/`.gz` siblings most files
//! don't have).
//!
//! Every entry is known to be unchanged when it is used, in one of two ways.
//! Where change notices can be trusted (`notices`: a local file system, no
//! symlink on the way), the entry is dropped as soon as anything on its
//! path changes, and a use costs no system call beyond reading the notice
//! queue once per lookup. Elsewhere it is checked on every use with one
//! `stat` instead of the `open`s it saves:
//! - a remembered file is used only while its path still leads to the same
//!   inode with the same size, mtime and ctime. It was first opened through
//!   `path::open_beneath`, with every check; the same inode is the same file,
//!   so the cache never serves anything the checks would refuse.
//! - a remembered absence is used only while the directory that should hold
//!   the name is unchanged (same inode, mtime and ctime): creating, renaming
//!   or removing a name in a directory changes its mtime. One lookup stats
//!   each directory once ([`Visit`]), however many siblings it probes.
//!
//! File-system timestamps advance in ticks of a few milliseconds, so a file
//! changed twice within a tick can keep its mtime. Anything changed less
//! than [`SETTLE`] ago is therefore not remembered (git's "racily clean"
//! rule): it is served from the file system until it has settled.
//!
//! The cache holds at most `--static-cache` bytes (file contents and names)
//! and forgets the oldest entries first. What to do with a hit is
//! `lookup`'s business.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::notices::{Changed, Notices, Ticket};
use super::path::Root;
use crate::sys::inotify::Readiness;

/// Files and directories changed more recently than this are not remembered.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What an entry costs beyond its path and contents.
const ENTRY_OVERHEAD: usize = 96;

/// The identity and version of a file or directory, as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn from_stat(st: &crate::sys::FileStat) -> Stamp {
        Stamp { dev: st.dev, ino: st.ino, len: st.size, mtime: st.mtime, ctime: st.ctime }
    }

    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Changed within `settle` ([`SETTLE`]) of `now` (or in the future):
    /// not yet safe to remember.
    fn unsettled(&self, now: SystemTime, settle: Duration) -> bool {
        if settle.is_zero() {
            return false;
        }
        let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let newest = self.mtime.0.max(self.ctime.0);
        now - newest < settle.as_secs() as i64 + 1
    }
}

/// A small file held in memory.
#[derive(Debug)]
pub struct CachedFile {
    pub bytes: Bytes,
    pub mtime: SystemTime,
    stamp: Stamp,
}

impl CachedFile {
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[derive(Debug)]
enum Entry {
    File(Arc<CachedFile>),
    /// No such name in the directory `dir`, as of `dir_stamp`.
    Missing {
        dir: PathBuf,
        dir_stamp: Stamp,
    },
}

/// How an entry is known to be unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// A `stat` on every use.
    ByStat,
    /// Change notices: it is dropped when anything on its path changes.
    /// A file's own watch, given back when the entry goes.
    ByNotices(Option<i32>),
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    kept: Kept,
}

/// What the cache says about a path.
#[derive(Debug)]
pub enum Probe {
    /// The file, unchanged since it was read.
    File(Arc<CachedFile>),
    /// Still absent.
    Missing,
    /// Ask the file system.
    Unknown,
}

/// The stamp of `path` and whether it is a directory, following symlinks.
/// Under `root`, one `fstatat` from the root's descriptor, so the kernel
/// walks only the components below the root.
fn stat(root: &Root, path: &Path) -> Option<(Stamp, bool)> {
    if let (Some(dir), Ok(rel)) = (root.dir(), path.strip_prefix(&root.path)) {
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        return crate::sys::stat_at(dir, rel).ok().map(|st| (Stamp::from_stat(&st), st.is_dir));
    }
    std::fs::metadata(path).ok().map(|meta| (Stamp::of(&meta), meta.is_dir()))
}

/// What one lookup has already asked the file system: the change notices
/// (read once, at its first probe) and the `stat` of each directory it has
/// looked at (usually one).
#[derive(Default)]
pub struct Visit {
    notices_read: bool,
    seen: Vec<(PathBuf, Option<Stamp>)>,
}

impl Visit {
    fn of(&mut self, root: &Root, dir: &Path) -> Option<Stamp> {
        if let Some((_, stamp)) = self.seen.iter().find(|(d, _)| d == dir) {
            return *stamp;
        }
        let stamp = checked_stat(root, dir).filter(|(_, is_dir)| *is_dir).map(|(stamp, _)| stamp);
        self.seen.push((dir.to_path_buf(), stamp));
        stamp
    }
}

/// The cache shared by every static route.
pub struct FileCache {
    limit: usize,
    /// Largest file held.
    max_file: u64,
    /// [`SETTLE`]; zero in tests.
    settle: Duration,
    /// Whether change notices are waiting, asked without holding `inner`.
    ready: Option<Arc<Readiness>>,
    inner: Mutex<Inner>,
}

struct Inner {
    map: HashMap<PathBuf, Slot>,
    /// Oldest first; may hold paths since dropped (skipped, and compacted
    /// away when they outnumber the entries).
    order: VecDeque<PathBuf>,
    size: usize,
    notices: Notices,
}

impl FileCache {
    pub fn new(limit: usize, max_file: u64) -> FileCache {
        let notices = Notices::new();
        let ready = notices.readiness();
        let inner = Inner { map: HashMap::new(), order: VecDeque::new(), size: 0, notices };
        FileCache { limit, max_file, settle: SETTLE, ready, inner: Mutex::new(inner) }
    }

    /// What is known about `path` (the root joined with the safe relative
    /// path), checked against the file system now.
    /// Counted in the metrics as a cache hit or miss.
    pub fn probe(&self, root: &Root, path: &Path, visit: &mut Visit) -> Probe {
        let probe = self.probe_uncounted(root, path, visit);
        crate::metrics::METRICS.file_cache(!matches!(probe, Probe::Unknown));
        probe
    }

    fn probe_uncounted(&self, root: &Root, path: &Path, visit: &mut Visit) -> Probe {
        if !visit.notices_read {
            self.read_notices();
            visit.notices_read = true;
        }
        let entry = match self.inner.lock() {
            Ok(inner) => match inner.map.get(path) {
                None => return Probe::Unknown,
                Some(Slot { entry: Entry::File(file), kept: Kept::ByNotices(_) }) => {
                    return Probe::File(Arc::clone(file))
                }
                Some(Slot { entry: Entry::Missing { .. }, kept: Kept::ByNotices(_) }) => return Probe::Missing,
                Some(Slot { entry: Entry::File(file), .. }) => Entry::File(Arc::clone(file)),
                Some(Slot { entry: Entry::Missing { dir, dir_stamp }, .. }) => {
                    Entry::Missing { dir: dir.clone(), dir_stamp: *dir_stamp }
                }
            },
            Err(_) => return Probe::Unknown,
        };
        match entry {
            Entry::File(file) => match checked_stat(root, path) {
                Some((stamp, _)) if stamp == file.stamp => Probe::File(file),
                _ => Probe::Unknown,
            },
            Entry::Missing { dir, dir_stamp } => match visit.of(root, &dir) {
                Some(now) if now == dir_stamp => Probe::Missing,
                _ => Probe::Unknown,
            },
        }
    }

    /// Applies the change notices queued so far: asks (one `epoll_wait`,
    /// without the lock) whether any are waiting, and only if so reads and
    /// applies them under the lock. A notice another thread has read is
    /// applied before that thread lets go of the lock, and a lookup needs
    /// the lock to see any entry, so it never sees one that a notice queued
    /// before it began has condemned.
    fn read_notices(&self) {
        let Some(ready) = &self.ready else { return };
        let ready = ready.ready();
        if !matches!(ready, Ok(0)) {
            if let Ok(mut inner) = self.inner.lock() {
                inner.apply_notices(ready);
            }
        }
    }

    /// Reads and remembers a small, settled file just opened safely at
    /// `path`; `None` if it is not worth holding (too big, or just changed).
    pub fn remember_file(&self, root: &Root, path: &Path, file: &File, meta: &Metadata) -> Option<Arc<CachedFile>> {
        let stamp = Stamp::of(meta);
        if meta.len() > self.max_file || stamp.unsettled(SystemTime::now(), self.settle) {
            return None;
        }
        // Watched before the bytes are read, so a write after the read is a
        // notice; and the name must still lead to this file once the
        // directories are watched (it might have been replaced since the open).
        let ticket = self.ticket(root, path, true);
        let mut watch = ticket.and_then(|t| self.inner.lock().ok()?.notices.watch_file(t, path, file));
        if watch.is_some() && !stat(root, path).is_some_and(|(now, _)| now == stamp) {
            self.give_back(watch.take(), path);
        }
        let bytes = super::lookup::read_all(file, meta.len()).ok();
        // A file that changed while being read is served but not kept.
        let unchanged = file.metadata().ok().map(|m| Stamp::of(&m)) == Some(stamp);
        let Some(bytes) = bytes.filter(|b| b.len() as u64 == meta.len() && unchanged) else {
            self.give_back(watch, path);
            return None;
        };
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let cached = Arc::new(CachedFile { bytes, mtime, stamp });
        self.insert(
            path.to_path_buf(),
            Entry::File(Arc::clone(&cached)),
            ticket.zip(watch).map(|(t, wd)| (t, Some(wd))),
        );
        Some(cached)
    }

    /// Remembers that `path` does not exist, if its directory has settled.
    /// Only a name that is truly absent: not a dangling symlink (its target
    /// may appear elsewhere) nor a FIFO or socket.
    pub fn remember_missing(&self, root: &Root, path: &Path, visit: &mut Visit) {
        let absent = || matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if !absent() {
            return;
        }
        let Some(dir) = path.parent() else { return };
        let Some(dir_stamp) = visit.of(root, dir) else { return };
        if dir_stamp.unsettled(SystemTime::now(), self.settle) {
            return;
        }
        // Still absent once the directories are watched: a name created
        // from now on is a notice.
        let ticket = self.ticket(root, path, false);
        if ticket.is_some() && !absent() {
            return;
        }
        self.insert(
            path.to_path_buf(),
            Entry::Missing { dir: dir.to_path_buf(), dir_stamp },
            ticket.map(|t| (t, None)),
        );
    }

    fn give_back(&self, watch: Option<i32>, path: &Path) {
        if let (Some(wd), Ok(mut inner)) = (watch, self.inner.lock()) {
            inner.notices.forget(wd, path);
            crate::metrics::METRICS.static_cache_watches(inner.notices.count());
        }
    }

    /// A ticket for keeping `path` (under `root`, a file if it `exists`)
    /// by notices, with the directories on its way watched; `None` where
    /// notices can't be trusted.
    fn ticket(&self, root: &Root, path: &Path, exists: bool) -> Option<Ticket> {
        let rel = path.strip_prefix(&root.path).ok()?;
        self.inner.lock().ok()?.notices.ticket(root, rel, exists)
    }

    /// Holds `entry`, kept by notices if `by_notices` (its ticket and file
    /// watch) is still good once the queued notices are read, else by `stat`.
    fn insert(&self, path: PathBuf, entry: Entry, by_notices: Option<(Ticket, Option<i32>)>) {
        let cost = cost_of_entry(&path, &entry);
        let Ok(mut inner) = self.inner.lock() else { return };
        // Notices read (by any thread) since the ticket was taken have
        // moved the generation on; ones still queued will drop this entry.
        let kept = match by_notices {
            Some((ticket, watch)) if inner.notices.still(ticket) => Kept::ByNotices(watch),
            Some((_, Some(wd))) => {
                inner.notices.forget(wd, &path);
                Kept::ByStat
            }
            _ => Kept::ByStat,
        };
        // The old entry gives back its claim on its file watch.
        let replaced = inner.drop_entry(&path, true).is_some();
        if cost > self.limit {
            if let Kept::ByNotices(Some(wd)) = kept {
                inner.notices.forget(wd, &path);
            }
            return;
        }
        if !replaced {
            inner.order.push_back(path.clone());
        }
        while inner.size + cost > self.limit {
            let Some(oldest) = inner.order.pop_front() else { break };
            if oldest == path {
                inner.order.push_back(oldest);
                continue;
            }
            inner.drop_entry(&oldest, true);
        }
        inner.size += cost;
        inner.map.insert(path, Slot { entry, kept });
        inner.compact_order();
        crate::metrics::METRICS.static_cache_watches(inner.notices.count());
    }
}

impl Inner {
    /// Drops what the waiting change notices say changed.
    fn apply_notices(&mut self, ready: std::io::Result<u32>) {
        match self.notices.apply(ready) {
            Changed::Nothing => return,
            Changed::Paths(paths) => {
                for path in paths {
                    self.drop_entry(&path, true);
                }
            }
            Changed::Everything => {
                self.map.clear();
                self.order.clear();
                self.size = 0;
            }
        }
        crate::metrics::METRICS.static_cache_watches(self.notices.count());
    }

    /// Drops the entry at `path`, giving back its file watch if `unwatch`.
    fn drop_entry(&mut self, path: &Path, unwatch: bool) -> Option<Slot> {
        let slot = self.map.remove(path)?;
        self.size -= cost_of_entry(path, &slot.entry);
        if let (true, Kept::ByNotices(Some(wd))) = (unwatch, slot.kept) {
            self.notices.forget(wd, path);
        }
        Some(slot)
    }

    /// Drops the paths in `order` whose entries are gone, once they
    /// outnumber the entries.
    fn compact_order(&mut self) {
        if self.order.len() <= 2 * self.map.len() + 1024 {
            return;
        }
        let mut seen = HashSet::new();
        let map = &self.map;
        self.order.retain(|path| map.contains_key(path) && seen.insert(path.clone()));
    }
}

/// [`stat`], counted: the check that entries kept by notices don't need.
fn checked_stat(root: &Root, path: &Path) -> Option<(Stamp, bool)> {
    crate::metrics::METRICS.static_cache_stat();
    stat(root, path)
}

fn cost_of_entry(path: &Path, entry: &Entry) -> usize {
    let extra = match entry {
        Entry::File(file) => file.bytes.len(),
        Entry::Missing { dir, .. } => dir.as_os_str().len(),
    };
    ENTRY_OVERHEAD + path.as_os_str().len() + extra
}

#[cfg(test)]
#[path = "file_cache_tests.rs"]
mod tests;
