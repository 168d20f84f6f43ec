//! What the static route remembers about the file system between requests
//! (`--static-cache`, nginx's `open_file_cache`): the bytes of small files,
//! and which names do not exist (the `.br`/`.zst`/`.gz` siblings most files
//! don't have).
//!
//! Every entry is checked against the file system on every use, with one
//! `stat` instead of the `open`s it saves:
//! - a remembered file is used only while its path still leads to the same
//!   inode with the same size, mtime and ctime. It was first opened through
//!   `path::open_beneath`, with every check; the same inode is the same file,
//!   so the cache never serves anything the checks would refuse.
//! - a remembered absence is used only while the directory that should hold
//!   the name is unchanged (same inode, mtime and ctime): creating, renaming
//!   or removing a name in a directory changes its mtime. One lookup stats
//!   each directory once ([`DirStamps`]), however many siblings it probes.
//!
//! File-system timestamps advance in ticks of a few milliseconds, so a file
//! changed twice within a tick can keep its mtime. Anything changed less
//! than [`SETTLE`] ago is therefore not remembered (git's "racily clean"
//! rule): it is served from the file system until it has settled.
//!
//! The cache holds at most `--static-cache` bytes (file contents and names)
//! and forgets the oldest entries first. What to do with a hit is
//! `lookup`'s business.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::path::Root;

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

    /// Changed within [`SETTLE`] of `now` (or in the future): not yet safe
    /// to remember.
    fn unsettled(&self, now: SystemTime) -> bool {
        let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let newest = self.mtime.0.max(self.ctime.0);
        now - newest < SETTLE.as_secs() as i64 + 1
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

/// The `stat` of each directory one lookup has looked at (usually one).
#[derive(Default)]
pub struct DirStamps {
    seen: Vec<(PathBuf, Option<Stamp>)>,
}

impl DirStamps {
    fn of(&mut self, root: &Root, dir: &Path) -> Option<Stamp> {
        if let Some((_, stamp)) = self.seen.iter().find(|(d, _)| d == dir) {
            return *stamp;
        }
        let stamp = stat(root, dir).filter(|(_, is_dir)| *is_dir).map(|(stamp, _)| stamp);
        self.seen.push((dir.to_path_buf(), stamp));
        stamp
    }
}

/// The cache shared by every static route.
pub struct FileCache {
    limit: usize,
    /// Largest file held.
    max_file: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<PathBuf, Entry>,
    order: VecDeque<PathBuf>,
    size: usize,
}

impl FileCache {
    pub fn new(limit: usize, max_file: u64) -> FileCache {
        FileCache { limit, max_file, inner: Mutex::new(Inner::default()) }
    }

    /// What is known about `path` (the root joined with the safe relative
    /// path), checked against the file system now.
    /// Counted in the metrics as a cache hit or miss.
    pub fn probe(&self, root: &Root, path: &Path, dirs: &mut DirStamps) -> Probe {
        let probe = self.probe_uncounted(root, path, dirs);
        crate::metrics::METRICS.file_cache(!matches!(probe, Probe::Unknown));
        probe
    }

    fn probe_uncounted(&self, root: &Root, path: &Path, dirs: &mut DirStamps) -> Probe {
        let entry = match self.inner.lock() {
            Ok(inner) => match inner.map.get(path) {
                Some(Entry::File(file)) => Entry::File(Arc::clone(file)),
                Some(Entry::Missing { dir, dir_stamp }) => Entry::Missing { dir: dir.clone(), dir_stamp: *dir_stamp },
                None => return Probe::Unknown,
            },
            Err(_) => return Probe::Unknown,
        };
        match entry {
            Entry::File(file) => match stat(root, path) {
                Some((stamp, _)) if stamp == file.stamp => Probe::File(file),
                _ => Probe::Unknown,
            },
            Entry::Missing { dir, dir_stamp } => match dirs.of(root, &dir) {
                Some(now) if now == dir_stamp => Probe::Missing,
                _ => Probe::Unknown,
            },
        }
    }

    /// Reads and remembers a small, settled file just opened safely at
    /// `path`; `None` if it is not worth holding (too big, or just changed).
    pub fn remember_file(&self, path: &Path, file: &File, meta: &Metadata) -> Option<Arc<CachedFile>> {
        let stamp = Stamp::of(meta);
        if meta.len() > self.max_file || stamp.unsettled(SystemTime::now()) {
            return None;
        }
        let bytes = super::lookup::read_all(file, meta.len()).ok()?;
        // A file that changed while being read is served but not kept.
        if bytes.len() as u64 != meta.len() || file.metadata().ok().map(|m| Stamp::of(&m)) != Some(stamp) {
            return None;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let cached = Arc::new(CachedFile { bytes, mtime, stamp });
        self.insert(path.to_path_buf(), Entry::File(Arc::clone(&cached)));
        Some(cached)
    }

    /// Remembers that `path` does not exist, if its directory has settled.
    /// Only a name that is truly absent: not a dangling symlink (its target
    /// may appear elsewhere) nor a FIFO or socket.
    pub fn remember_missing(&self, root: &Root, path: &Path, dirs: &mut DirStamps) {
        if !matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            return;
        }
        let Some(dir) = path.parent() else { return };
        let Some(dir_stamp) = dirs.of(root, dir) else { return };
        if dir_stamp.unsettled(SystemTime::now()) {
            return;
        }
        self.insert(path.to_path_buf(), Entry::Missing { dir: dir.to_path_buf(), dir_stamp });
    }

    fn insert(&self, path: PathBuf, entry: Entry) {
        let cost = cost_of_entry(&path, &entry);
        if cost > self.limit {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        if let Some(old) = inner.map.remove(&path) {
            // A stale entry being replaced: its place in `order` stays, and
            // is skipped when it comes up.
            inner.size -= cost_of_entry(&path, &old);
        } else {
            inner.order.push_back(path.clone());
        }
        while inner.size + cost > self.limit {
            let Some(oldest) = inner.order.pop_front() else { break };
            if oldest == path {
                inner.order.push_back(oldest);
                continue;
            }
            if let Some(gone) = inner.map.remove(&oldest) {
                inner.size -= cost_of_entry(&oldest, &gone);
            }
        }
        inner.size += cost;
        inner.map.insert(path, entry);
    }
}

fn cost_of_entry(path: &Path, entry: &Entry) -> usize {
    let extra = match entry {
        Entry::File(file) => file.bytes.len(),
        Entry::Missing { dir, .. } => dir.as_os_str().len(),
    };
    ENTRY_OVERHEAD + path.as_os_str().len() + extra
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap();
        (dir, path)
    }

    #[test]
    fn files_are_remembered_until_they_change() {
        let (_dir, root) = settled_dir();
        let r = Root::open(&root);
        let path = root.join("a.css");
        std::fs::write(&path, "one").unwrap();
        let cache = FileCache::new(1 << 20, 1024);
        let mut dirs = DirStamps::default();
        let file = File::open(&path).unwrap();
        // Just written: ctime is now, so it is not remembered yet.
        assert!(cache.remember_file(&path, &file, &file.metadata().unwrap()).is_none());
        assert!(matches!(cache.probe(&r, &path, &mut dirs), Probe::Unknown));

        // ctime can't be set back to make it settle: insert it as
        // remember_file would have a few seconds later.
        let meta = file.metadata().unwrap();
        let cached = Arc::new(CachedFile {
            bytes: Bytes::from_static(b"one"),
            mtime: meta.modified().unwrap(),
            stamp: Stamp::of(&meta),
        });
        cache.insert(path.clone(), Entry::File(cached));
        assert!(matches!(cache.probe(&r, &path, &mut dirs), Probe::File(f) if &f.bytes[..] == b"one"));

        std::fs::write(&path, "two!").unwrap();
        assert!(matches!(cache.probe(&r, &path, &mut dirs), Probe::Unknown));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(cache.probe(&r, &path, &mut dirs), Probe::Unknown));
    }

    #[test]
    fn absences_last_until_the_directory_changes() {
        let (_dir, root) = settled_dir();
        let r = Root::open(&root);
        let cache = FileCache::new(1 << 20, 1024);
        let gone = root.join("a.css.br");

        // A directory changed just now is not trusted yet.
        cache.remember_missing(&r, &gone, &mut DirStamps::default());
        assert!(matches!(cache.probe(&r, &gone, &mut DirStamps::default()), Probe::Unknown));

        let dir_stamp = DirStamps::default().of(&r, &root).unwrap();
        cache.insert(gone.clone(), Entry::Missing { dir: root.clone(), dir_stamp });
        assert!(matches!(cache.probe(&r, &gone, &mut DirStamps::default()), Probe::Missing));

        std::fs::write(&gone, "now it exists").unwrap();
        assert!(matches!(cache.probe(&r, &gone, &mut DirStamps::default()), Probe::Unknown));
    }

    #[test]
    fn oldest_entries_go_first() {
        let (_dir, root) = settled_dir();
        let r = Root::open(&root);
        let stamp = DirStamps::default().of(&r, &root).unwrap();
        let one = cost_of_entry(&root.join("a"), &Entry::Missing { dir: root.clone(), dir_stamp: stamp });
        let cache = FileCache::new(2 * one, 1024);
        for name in ["a", "b", "c"] {
            cache.insert(root.join(name), Entry::Missing { dir: root.clone(), dir_stamp: stamp });
        }
        let mut dirs = DirStamps::default();
        assert!(matches!(cache.probe(&r, &root.join("a"), &mut dirs), Probe::Unknown));
        assert!(matches!(cache.probe(&r, &root.join("b"), &mut dirs), Probe::Missing));
        assert!(matches!(cache.probe(&r, &root.join("c"), &mut dirs), Probe::Missing));
        assert!(cache.inner.lock().unwrap().size <= 2 * one);
    }
}
