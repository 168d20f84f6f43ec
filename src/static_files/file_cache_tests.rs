//! Tests of the file cache: the `stat` checks, and the change notices.

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
    let mut visit = Visit::default();
    let file = File::open(&path).unwrap();
    // Just written: ctime is now, so it is not remembered yet.
    assert!(cache.remember_file(&r, &path, &file, &file.metadata().unwrap()).is_none());
    assert!(matches!(cache.probe(&r, &path, &mut visit), Probe::Unknown));

    // ctime can't be set back to make it settle: insert it as
    // remember_file would have a few seconds later.
    let meta = file.metadata().unwrap();
    let cached = Arc::new(CachedFile {
        bytes: Bytes::from_static(b"one"),
        mtime: meta.modified().unwrap(),
        stamp: Stamp::of(&meta),
    });
    cache.insert(path.clone(), Entry::File(cached), None);
    assert!(matches!(cache.probe(&r, &path, &mut visit), Probe::File(f) if &f.bytes[..] == b"one"));

    std::fs::write(&path, "two!").unwrap();
    assert!(matches!(cache.probe(&r, &path, &mut visit), Probe::Unknown));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(cache.probe(&r, &path, &mut visit), Probe::Unknown));
}

#[test]
fn absences_last_until_the_directory_changes() {
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let cache = FileCache::new(1 << 20, 1024);
    let gone = root.join("a.css.br");

    // A directory changed just now is not trusted yet.
    cache.remember_missing(&r, &gone, &mut Visit::default());
    assert!(matches!(cache.probe(&r, &gone, &mut Visit::default()), Probe::Unknown));

    let dir_stamp = Visit::default().of(&r, &root).unwrap();
    cache.insert(gone.clone(), Entry::Missing { dir: root.clone(), dir_stamp }, None);
    assert!(matches!(cache.probe(&r, &gone, &mut Visit::default()), Probe::Missing));

    std::fs::write(&gone, "now it exists").unwrap();
    assert!(matches!(cache.probe(&r, &gone, &mut Visit::default()), Probe::Unknown));
}

#[test]
fn oldest_entries_go_first() {
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let stamp = Visit::default().of(&r, &root).unwrap();
    let one = cost_of_entry(&root.join("a"), &Entry::Missing { dir: root.clone(), dir_stamp: stamp });
    let cache = FileCache::new(2 * one, 1024);
    for name in ["a", "b", "c"] {
        cache.insert(root.join(name), Entry::Missing { dir: root.clone(), dir_stamp: stamp }, None);
    }
    let mut visit = Visit::default();
    assert!(matches!(cache.probe(&r, &root.join("a"), &mut visit), Probe::Unknown));
    assert!(matches!(cache.probe(&r, &root.join("b"), &mut visit), Probe::Missing));
    assert!(matches!(cache.probe(&r, &root.join("c"), &mut visit), Probe::Missing));
    assert!(cache.inner.lock().unwrap().size <= 2 * one);
}

// -- change notices -------------------------------------------------------------------------

use super::super::path::{open_beneath, Opened};

/// A cache that keeps files however recently they changed.
fn eager_cache() -> FileCache {
    FileCache { settle: Duration::ZERO, ..FileCache::new(1 << 20, 1024) }
}

/// What a lookup would get for `rel`: the bytes, or None if it is absent;
/// through the cache, which remembers what it opens.
fn fetch(cache: &FileCache, r: &Root, rel: &str) -> Option<Vec<u8>> {
    let path = r.path.join(rel);
    let mut visit = Visit::default();
    match cache.probe(r, &path, &mut visit) {
        Probe::File(file) => return Some(file.bytes.to_vec()),
        Probe::Missing => return None,
        Probe::Unknown => {}
    }
    match open_beneath(r, Path::new(rel), false) {
        Opened::File(file, meta) => {
            cache.remember_file(r, &path, &file, &meta);
            Some(std::fs::read(&path).unwrap())
        }
        Opened::Missing => {
            cache.remember_missing(r, &path, &mut visit);
            None
        }
        _ => panic!("{rel}: neither a file nor absent"),
    }
}

fn kept(cache: &FileCache, path: &Path) -> Option<Kept> {
    cache.inner.lock().unwrap().map.get(path).map(|slot| slot.kept)
}

/// Whether the cache still holds `path` once it has read its notices.
fn still_held(cache: &FileCache, r: &Root, path: &Path) -> bool {
    !matches!(cache.probe(r, path, &mut Visit::default()), Probe::Unknown)
}

#[test]
fn a_watched_file_goes_when_it_is_written_replaced_or_removed() {
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let cache = eager_cache();
    let path = root.join("a.css");
    std::fs::write(&path, "one").unwrap();
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"one");
    assert!(matches!(kept(&cache, &path), Some(Kept::ByNotices(Some(_)))));
    assert!(cache.inner.lock().unwrap().notices.count() >= 2, "the root and the file are watched");
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"one");

    std::fs::write(&path, "two").unwrap(); // in place, same size
    assert!(!still_held(&cache, &r, &path));
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"two");

    let new = root.join("a.css.new"); // an atomic deploy: write aside, rename over
    std::fs::write(&new, "six").unwrap();
    assert!(still_held(&cache, &r, &path), "a new name beside it changes nothing");
    std::fs::rename(&new, &path).unwrap();
    assert!(!still_held(&cache, &r, &path));
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"six");

    std::fs::remove_file(&path).unwrap();
    assert_eq!(fetch(&cache, &r, "a.css"), None);
}

#[test]
fn a_write_through_a_hard_link_elsewhere_is_seen() {
    let (_dir, root) = settled_dir();
    let (_other, elsewhere) = settled_dir();
    let r = Root::open(&root);
    let cache = eager_cache();
    let path = root.join("a.css");
    std::fs::write(&path, "one").unwrap();
    std::fs::hard_link(&path, elsewhere.join("link.css")).unwrap();
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"one");
    assert!(matches!(kept(&cache, &path), Some(Kept::ByNotices(Some(_)))));
    std::fs::write(elsewhere.join("link.css"), "two").unwrap();
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"two");
}

#[test]
fn an_absence_goes_when_the_name_appears() {
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let cache = eager_cache();
    let gone = root.join("a.css.br");
    assert_eq!(fetch(&cache, &r, "a.css.br"), None);
    assert_eq!(kept(&cache, &gone), Some(Kept::ByNotices(None)));
    assert_eq!(fetch(&cache, &r, "a.css.br"), None);
    std::fs::write(&gone, "br").unwrap();
    assert_eq!(fetch(&cache, &r, "a.css.br").unwrap(), b"br");
}

#[test]
fn a_directory_moved_on_the_way_forgets_everything() {
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let cache = eager_cache();
    std::fs::create_dir_all(root.join("css/deep")).unwrap();
    std::fs::write(root.join("css/deep/a.css"), "old").unwrap();
    std::fs::write(root.join("top.css"), "top").unwrap();
    assert_eq!(fetch(&cache, &r, "css/deep/a.css").unwrap(), b"old");
    assert_eq!(fetch(&cache, &r, "top.css").unwrap(), b"top");
    assert!(matches!(kept(&cache, &root.join("css/deep/a.css")), Some(Kept::ByNotices(Some(_)))));

    // The whole tree swapped for a new one: only the root sees the rename.
    std::fs::rename(root.join("css"), root.join("css.old")).unwrap();
    std::fs::create_dir_all(root.join("css/deep")).unwrap();
    std::fs::write(root.join("css/deep/a.css"), "new").unwrap();
    assert_eq!(fetch(&cache, &r, "css/deep/a.css").unwrap(), b"new");
    assert!(!still_held(&cache, &r, &root.join("top.css")), "everything was forgotten");
    assert_eq!(fetch(&cache, &r, "top.css").unwrap(), b"top");
}

#[test]
fn entries_reached_through_a_symlink_keep_the_stat_check() {
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let cache = eager_cache();
    std::fs::create_dir(root.join("real")).unwrap();
    std::fs::write(root.join("real/a.css"), "one").unwrap();
    std::os::unix::fs::symlink("real", root.join("link")).unwrap();
    std::os::unix::fs::symlink("real/a.css", root.join("b.css")).unwrap();
    assert_eq!(fetch(&cache, &r, "link/a.css").unwrap(), b"one");
    assert_eq!(fetch(&cache, &r, "b.css").unwrap(), b"one");
    assert_eq!(kept(&cache, &root.join("link/a.css")), Some(Kept::ByStat));
    assert_eq!(kept(&cache, &root.join("b.css")), Some(Kept::ByStat));
    // The linked directory was not watched under the link's name.
    std::fs::write(root.join("real/c.css"), "c").unwrap();
    assert_eq!(fetch(&cache, &r, "real/c.css").unwrap(), b"c");
    assert!(matches!(kept(&cache, &root.join("real/c.css")), Some(Kept::ByNotices(Some(_)))));
    assert_eq!(fetch(&cache, &r, "link/a.css").unwrap(), b"one");
    // The symlink's target is replaced where no watch on the link's way sees it.
    std::fs::write(root.join("real/a.new"), "two").unwrap();
    std::fs::rename(root.join("real/a.new"), root.join("real/a.css")).unwrap();
    assert_eq!(fetch(&cache, &r, "b.css").unwrap(), b"two");
    assert_eq!(fetch(&cache, &r, "link/a.css").unwrap(), b"two");
}

#[test]
fn a_watch_stays_while_any_entry_relies_on_it() {
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let cache = eager_cache();
    let path = root.join("a.css");
    std::fs::write(&path, "one").unwrap();
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"one");
    // Another lookup read the same file at the same time, claimed the same
    // watch, and gave it back (it saw the file change while reading).
    let file = File::open(&path).unwrap();
    let ticket = cache.ticket(&r, &path, true).unwrap();
    let claim = cache.inner.lock().unwrap().notices.watch_file(ticket, &path, &file);
    assert!(claim.is_some());
    cache.give_back(claim, &path);
    // The cached entry's own claim still holds the watch.
    std::fs::write(&path, "two").unwrap();
    assert!(!still_held(&cache, &r, &path));
    assert_eq!(fetch(&cache, &r, "a.css").unwrap(), b"two");
}

#[test]
fn a_lookup_that_may_not_block_is_answered_by_the_cache_or_not_at_all() {
    use super::super::lookup::{lookup, Lookup, Wanted};
    let (_dir, root) = settled_dir();
    let r = Root::open(&root);
    let cache = eager_cache();
    std::fs::write(root.join("a.css"), "body{}").unwrap();
    let options = crate::config::StaticOptions::default();
    let segments = vec!["a.css".to_string()];
    let look = |may_block| {
        let wanted = Wanted {
            root: &r,
            segments: &segments,
            trailing_slash: false,
            accepted: Default::default(),
            want_body: true,
        };
        lookup(wanted, &options, None, Some(&cache), may_block)
    };
    // Not cached yet: only the file system can tell.
    assert!(matches!(look(false), Lookup::WouldBlock));
    assert!(matches!(look(true), Lookup::Found(_)));
    // The file and its absent siblings are cached now.
    assert!(matches!(look(false), Lookup::Found(found) if found.len == 6));
    std::fs::write(root.join("a.css.gz"), "gz").unwrap();
    assert!(matches!(look(false), Lookup::WouldBlock), "the new sibling must be looked at");
}
