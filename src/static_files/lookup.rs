//! The file-system half of serving a file: find the file under the root
//! (directory index, or a listing, included), pick the representation to send (a
//! precompressed sibling the client accepts, a cached gzip, or the file
//! itself), and read it into memory when it is small.
//!
//! [`lookup`] makes blocking system calls (open, fstat, readlink, and one
//! read of at most [`SMALL_FILE`] bytes) unless it may not block. `serve`
//! first calls it on the event loop without blocking: the file cache
//! answers most requests with no system call at all. Only when the file
//! system must be asked does the lookup run again on the blocking pool, so
//! a cold disk or a slow network file system never stalls the loop's other
//! connections; the trip costs more than the work for a file in the page
//! cache (about 55 µs of CPU against 30 µs inline for 10 KB), which is why
//! it is not taken for every request. With the cache off (`--static-cache
//! 0`), lookups run on the loop, as nginx's do with its default `aio off`.
//! Compressing a file ([`Pending::finish`]) and reading large files from the
//! disk rather than the page cache (`front::segments_body`) always run on
//! the blocking pool.
//!
//! Path safety is `path`'s; turning a [`Found`] into a response (ranges,
//! preconditions, headers) is `serve`'s.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::compress::{self, GzipCache};
use super::conditional::Validators;
use super::content_type;
use super::encoding::{Accepted, Coding};
use super::file_cache::{CachedFile, FileCache, Probe, Visit};
use super::listing::Listing;
use super::path::{open_beneath, Opened, Refused, Root};
use crate::config::StaticOptions;

/// Files up to this size are read during the lookup and sent from memory.
pub const SMALL_FILE: u64 = 64 * 1024;

/// What a request under a static prefix names.
pub struct Wanted<'a> {
    pub root: &'a Root,
    /// From `path::segments`: safe to join to `root`.
    pub segments: &'a [String],
    /// The request path ends with '/' (or is the prefix itself).
    pub trailing_slash: bool,
    pub accepted: Accepted,
    /// GET (not HEAD): small files are worth reading now.
    pub want_body: bool,
}

/// The outcome of a lookup.
pub enum Lookup {
    Found(Found),
    /// No such file (or a directory without an index): 404, or the app
    /// with `--static-fallthrough`.
    Missing,
    Refused(Refused),
    /// A directory named without its trailing slash while an index file is
    /// configured: redirect, so relative links in the index resolve.
    AddSlash,
    /// A gzip the cache doesn't have yet: finish on the blocking pool.
    Compress(Pending),
    /// A directory without an index file, and `--static-autoindex` is on:
    /// list it on the blocking pool.
    Listing(Listing),
    /// The cache can't answer and this lookup may not block: look again
    /// where it may.
    WouldBlock,
}

/// A file to gzip on the fly before it can be answered.
pub struct Pending {
    name: String,
    source: Source,
    resolved: PathBuf,
    want_body: bool,
}

impl Pending {
    /// Compresses the file (and caches the result); the identity
    /// representation if gzip doesn't shrink it. Blocking, and CPU-heavy.
    pub fn finish(self, cache: &GzipCache) -> Found {
        let (len, modified) = (self.source.len(), self.source.mtime());
        let data = match &self.source {
            Source::Cached(cached) => Ok(cached.bytes.clone()),
            Source::Open(file, _) => read_all(file, len),
        };
        let packed = data.map_or(None, |data| compress::gzip(&data).unwrap_or(None));
        cache.insert((self.resolved, len, modified), packed.clone());
        match packed {
            Some(packed) => gzip_found(self.name, len, modified, packed),
            None => found_file(self.name, None, true, self.source, self.want_body),
        }
    }
}

/// A regular file found under the root: open, or held by the file cache.
enum Source {
    Open(File, Box<std::fs::Metadata>),
    Cached(Arc<CachedFile>),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Open(_, meta) => meta.len(),
            Source::Cached(cached) => cached.len(),
        }
    }

    fn mtime(&self) -> SystemTime {
        match self {
            Source::Open(_, meta) => mtime(meta),
            Source::Cached(cached) => cached.mtime,
        }
    }
}

/// What a name under the root is.
enum Entry {
    File(Source),
    Dir(File),
    Missing,
    Refused(Refused),
    /// Only the file system can tell, and this lookup may not wait for it.
    WouldBlock,
}

/// Opens names under one root for one lookup, through the file cache when
/// there is one.
struct Opener<'a> {
    root: &'a Root,
    follow: bool,
    cache: Option<&'a FileCache>,
    visit: Visit,
    may_block: bool,
}

impl Opener<'_> {
    fn open(&mut self, rel: &Path) -> Entry {
        let Some(cache) = self.cache else {
            if !self.may_block {
                return Entry::WouldBlock;
            }
            return match open_beneath(self.root, rel, self.follow) {
                Opened::File(file, meta) => Entry::File(Source::Open(file, meta)),
                Opened::Dir(dir) => Entry::Dir(dir),
                Opened::Missing => Entry::Missing,
                Opened::Refused(why) => Entry::Refused(why),
            };
        };
        let path = self.root.path.join(rel);
        match cache.probe(self.root, &path, &mut self.visit) {
            Probe::File(cached) => return Entry::File(Source::Cached(cached)),
            Probe::Missing => return Entry::Missing,
            Probe::Unknown if !self.may_block => return Entry::WouldBlock,
            Probe::Unknown => {}
        }
        match open_beneath(self.root, rel, self.follow) {
            Opened::File(file, meta) => match cache.remember_file(self.root, &path, &file, &meta) {
                Some(cached) => Entry::File(Source::Cached(cached)),
                None => Entry::File(Source::Open(file, meta)),
            },
            Opened::Dir(dir) => Entry::Dir(dir),
            Opened::Missing => {
                cache.remember_missing(self.root, &path, &mut self.visit);
                Entry::Missing
            }
            Opened::Refused(why) => Entry::Refused(why),
        }
    }
}

/// The representation chosen for a found file.
pub struct Found {
    /// The file name the client asked for (the index name for a
    /// directory): it decides the type and the cache lifetime.
    pub name: String,
    pub coding: Option<Coding>,
    /// Other representations exist, so responses carry `Vary: Accept-Encoding`.
    pub vary: bool,
    pub validators: Validators,
    pub len: u64,
    pub content: Content,
}

/// Where a representation's bytes are.
pub enum Content {
    Mem(Bytes),
    File(Arc<File>),
}

/// Finds what `wanted` names; where the file system must be asked and it
/// `may_block` is false, [`Lookup::WouldBlock`] instead.
pub fn lookup(
    wanted: Wanted<'_>,
    options: &StaticOptions,
    gzip_cache: Option<&GzipCache>,
    file_cache: Option<&FileCache>,
    may_block: bool,
) -> Lookup {
    let mut opener = Opener {
        root: wanted.root,
        follow: options.follow_symlinks,
        cache: file_cache,
        visit: Visit::default(),
        may_block,
    };
    let mut rel = PathBuf::from_iter(wanted.segments);
    let mut name = wanted.segments.last().cloned().unwrap_or_default();
    let source = match opener.open(&rel) {
        Entry::File(_) if wanted.trailing_slash => return Lookup::Missing,
        Entry::File(source) => source,
        Entry::Dir(dir) => {
            if options.index.is_none() && !options.autoindex {
                return Lookup::Missing;
            }
            if !wanted.trailing_slash {
                return Lookup::AddSlash;
            }
            let listing = || match options.autoindex {
                true => Lookup::Listing(Listing::new(dir, wanted.root, &rel, options)),
                false => Lookup::Missing,
            };
            let Some(index) = &options.index else {
                return listing();
            };
            let mut index_rel = rel.join(index);
            match opener.open(&index_rel) {
                Entry::File(source) => {
                    std::mem::swap(&mut rel, &mut index_rel);
                    name.clone_from(index);
                    source
                }
                Entry::Refused(why) => return Lookup::Refused(why),
                Entry::Dir(_) | Entry::Missing => return listing(),
                Entry::WouldBlock => return Lookup::WouldBlock,
            }
        }
        Entry::Missing => return Lookup::Missing,
        Entry::Refused(why) => return Lookup::Refused(why),
        Entry::WouldBlock => return Lookup::WouldBlock,
    };

    // Siblings go through the same checks: one that is a symlink leading
    // out of the root counts as absent.
    let mut vary = false;
    for coding in Coding::PRECOMPRESSED {
        let mut sibling = rel.clone().into_os_string();
        sibling.push(coding.suffix());
        let sibling = match opener.open(Path::new(&sibling)) {
            Entry::File(sibling) => sibling,
            Entry::WouldBlock => return Lookup::WouldBlock,
            _ => continue,
        };
        vary = true;
        if wanted.accepted.accepts(coding) {
            return Lookup::Found(found_file(name, Some(coding), vary, sibling, wanted.want_body));
        }
    }

    let (len, modified) = (source.len(), source.mtime());
    let compressible = gzip_cache.is_some()
        && (options.compress_min_size..=compress::MAX_INPUT).contains(&len)
        && content_type::is_compressible(&name);
    if let (true, Some(cache)) = (compressible, gzip_cache) {
        vary = true;
        if wanted.accepted.gzip {
            let resolved = wanted.root.path.join(&rel);
            match cache.get(&(resolved.clone(), len, modified)) {
                Some(Some(packed)) => {
                    crate::metrics::METRICS.gzip_cache(true);
                    return Lookup::Found(gzip_found(name, len, modified, packed));
                }
                Some(None) => {} // known not to shrink
                None => {
                    crate::metrics::METRICS.gzip_cache(false);
                    return Lookup::Compress(Pending { name, source, resolved, want_body: wanted.want_body });
                }
            }
        }
    }
    Lookup::Found(found_file(name, None, vary, source, wanted.want_body))
}

fn found_file(name: String, coding: Option<Coding>, vary: bool, source: Source, want_body: bool) -> Found {
    let validators = Validators::new(source.mtime(), source.len(), coding.map(Coding::token));
    let (len, content) = match source {
        Source::Cached(cached) => (cached.len(), Content::Mem(cached.bytes.clone())),
        Source::Open(file, meta) => {
            let small =
                (want_body && meta.len() <= SMALL_FILE).then(|| read_all(&file, meta.len())).and_then(Result::ok);
            match small {
                Some(bytes) => (bytes.len() as u64, Content::Mem(bytes)),
                None => (meta.len(), Content::File(Arc::new(file))),
            }
        }
    };
    Found { name, coding, vary, validators, len, content }
}

fn gzip_found(name: String, len: u64, modified: SystemTime, packed: Bytes) -> Found {
    Found {
        name,
        coding: Some(Coding::Gzip),
        vary: true,
        validators: Validators::new(modified, len, Some("gzip")),
        len: packed.len() as u64,
        content: Content::Mem(packed),
    }
}

/// Reads up to `len` bytes from the start of `file` (fewer if it shrank).
pub(super) fn read_all(file: &File, len: u64) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

fn mtime(meta: &std::fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or_else(|_| {
        let secs = u64::try_from(meta.mtime()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    })
}
