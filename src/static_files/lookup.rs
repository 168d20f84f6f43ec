//! The file-system half of serving a file: find the file under the root
//! (directory index, or a listing, included), pick the representation to send (a
//! precompressed sibling the client accepts, a cached gzip, or the file
//! itself), and read it into memory when it is small.
//!
//! [`lookup`] makes blocking system calls (open, fstat, readlink, and one
//! read of at most [`SMALL_FILE`] bytes) and `serve` calls it on the
//! runtime thread, as nginx does with its default `aio off`: for files in
//! the page cache these take microseconds, while a trip through tokio's
//! blocking pool costs more than the work itself (measured: about 55 µs of
//! CPU per 10 KB request through the pool against 30 µs inline). A cold
//! read can stall one runtime thread for a disk access; what can take long
//! does not happen here: compressing a file ([`Pending::finish`]) and
//! reading large files (`front::segments_body`) run on the blocking pool.
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
use super::listing::Listing;
use super::path::{open_beneath, Opened, Refused, Root};
use crate::config::StaticOptions;

/// Files up to this size are read during the lookup and sent from memory.
pub const SMALL_FILE: u64 = 64 * 1024;

/// What a request under a static prefix names.
pub struct Wanted<'a> {
    pub root: &'a Root,
    /// From `path::segments`: safe to join to `root`.
    pub segments: Vec<String>,
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
}

/// A file to gzip on the fly before it can be answered.
pub struct Pending {
    name: String,
    file: File,
    meta: Box<std::fs::Metadata>,
    resolved: PathBuf,
    want_body: bool,
}

impl Pending {
    /// Compresses the file (and caches the result); the identity
    /// representation if gzip doesn't shrink it. Blocking, and CPU-heavy.
    pub fn finish(self, cache: &GzipCache) -> Found {
        let key = (self.resolved, self.meta.len(), mtime(&self.meta));
        let packed = match read_all(&self.file, self.meta.len()) {
            Ok(data) => compress::gzip(&data).unwrap_or(None),
            Err(_) => None,
        };
        cache.insert(key, packed.clone());
        match packed {
            Some(packed) => gzip_found(self.name, &self.meta, packed),
            None => found_file(self.name, None, true, self.file, &self.meta, self.want_body),
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

/// Finds what `wanted` names. Blocking, but brief (see the module comment).
pub fn lookup(wanted: Wanted<'_>, options: &StaticOptions, gzip_cache: Option<&GzipCache>) -> Lookup {
    let follow = options.follow_symlinks;
    let mut rel = PathBuf::from_iter(&wanted.segments);
    let mut name = wanted.segments.last().cloned().unwrap_or_default();
    let (file, meta) = match open_beneath(wanted.root, &rel, follow) {
        Opened::File(..) if wanted.trailing_slash => return Lookup::Missing,
        Opened::File(file, meta) => (file, meta),
        Opened::Dir(dir) => {
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
            match open_beneath(wanted.root, &index_rel, follow) {
                Opened::File(file, meta) => {
                    std::mem::swap(&mut rel, &mut index_rel);
                    name.clone_from(index);
                    (file, meta)
                }
                Opened::Refused(why) => return Lookup::Refused(why),
                Opened::Dir(_) | Opened::Missing => return listing(),
            }
        }
        Opened::Missing => return Lookup::Missing,
        Opened::Refused(why) => return Lookup::Refused(why),
    };

    // Siblings go through the same checks: one that is a symlink leading
    // out of the root counts as absent.
    let mut vary = false;
    for coding in Coding::PRECOMPRESSED {
        let mut sibling = rel.clone().into_os_string();
        sibling.push(coding.suffix());
        let Opened::File(file, meta) = open_beneath(wanted.root, Path::new(&sibling), follow) else {
            continue;
        };
        vary = true;
        if wanted.accepted.accepts(coding) {
            return Lookup::Found(found_file(name, Some(coding), vary, file, &meta, wanted.want_body));
        }
    }

    let len = meta.len();
    let compressible = gzip_cache.is_some()
        && (options.compress_min_size..=compress::MAX_INPUT).contains(&len)
        && content_type::is_compressible(&name);
    if let (true, Some(cache)) = (compressible, gzip_cache) {
        vary = true;
        if wanted.accepted.gzip {
            let resolved = wanted.root.path.join(&rel);
            match cache.get(&(resolved.clone(), len, mtime(&meta))) {
                Some(Some(packed)) => return Lookup::Found(gzip_found(name, &meta, packed)),
                Some(None) => {} // known not to shrink
                None => return Lookup::Compress(Pending { name, file, meta, resolved, want_body: wanted.want_body }),
            }
        }
    }
    Lookup::Found(found_file(name, None, vary, file, &meta, wanted.want_body))
}

fn found_file(
    name: String,
    coding: Option<Coding>,
    vary: bool,
    file: File,
    meta: &std::fs::Metadata,
    want_body: bool,
) -> Found {
    let validators = Validators::new(mtime(meta), meta.len(), coding.map(Coding::token));
    let small = (want_body && meta.len() <= SMALL_FILE).then(|| read_all(&file, meta.len())).and_then(Result::ok);
    let (len, content) = match small {
        Some(bytes) => (bytes.len() as u64, Content::Mem(bytes)),
        None => (meta.len(), Content::File(Arc::new(file))),
    };
    Found { name, coding, vary, validators, len, content }
}

fn gzip_found(name: String, meta: &std::fs::Metadata, packed: Bytes) -> Found {
    Found {
        name,
        coding: Some(Coding::Gzip),
        vary: true,
        validators: Validators::new(mtime(meta), meta.len(), Some("gzip")),
        len: packed.len() as u64,
        content: Content::Mem(packed),
    }
}

/// Reads up to `len` bytes from the start of `file` (fewer if it shrank).
fn read_all(file: &File, len: u64) -> std::io::Result<Bytes> {
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
