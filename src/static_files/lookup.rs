//! The blocking half of serving a file, run once per request on tokio's
//! blocking pool: find the file under the root (directory index included),
//! pick the representation to send (a precompressed sibling the client
//! accepts, a gzip made on the fly, or the file itself), and read it into
//! memory when it is small. One trip to the blocking pool per request keeps
//! small files cheap.
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
use super::path::{open_beneath, open_file, Opened, Refused};
use crate::config::StaticOptions;

/// Files up to this size are read during the lookup and sent from memory.
pub const SMALL_FILE: u64 = 64 * 1024;

/// What a request under a static prefix names.
pub struct Wanted {
    pub root: PathBuf,
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

/// Finds what `wanted` names. Blocking.
pub fn lookup(wanted: Wanted, options: &StaticOptions, gzip_cache: Option<&GzipCache>) -> Lookup {
    let follow = options.follow_symlinks;
    let mut path = wanted.root.clone();
    path.extend(&wanted.segments);
    let mut name = wanted.segments.last().cloned().unwrap_or_default();
    let (file, meta, resolved) = match open_beneath(&wanted.root, &path, follow) {
        Opened::File(..) if wanted.trailing_slash => return Lookup::Missing,
        Opened::File(file, meta, resolved) => (file, meta, resolved),
        Opened::Dir => {
            let Some(index) = &options.index else {
                return Lookup::Missing;
            };
            if !wanted.trailing_slash {
                return Lookup::AddSlash;
            }
            path.push(index);
            name.clone_from(index);
            match open_beneath(&wanted.root, &path, follow) {
                Opened::File(file, meta, resolved) => (file, meta, resolved),
                Opened::Refused(why) => return Lookup::Refused(why),
                Opened::Dir | Opened::Missing => return Lookup::Missing,
            }
        }
        Opened::Missing => return Lookup::Missing,
        Opened::Refused(why) => return Lookup::Refused(why),
    };

    let mut vary = false;
    for coding in Coding::PRECOMPRESSED {
        let mut sibling = resolved.clone().into_os_string();
        sibling.push(coding.suffix());
        let Ok(Some((file, meta))) = open_file(Path::new(&sibling), !follow) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
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
            if let Some(packed) = gzipped(cache, &file, &meta, resolved) {
                return Lookup::Found(Found {
                    name,
                    coding: Some(Coding::Gzip),
                    vary,
                    validators: Validators::new(mtime(&meta), len, Some("gzip")),
                    len: packed.len() as u64,
                    content: Content::Mem(packed),
                });
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
    let small = (want_body && meta.len() <= SMALL_FILE)
        .then(|| read_all(&file, meta.len()))
        .and_then(Result::ok);
    let (len, content) = match small {
        Some(bytes) => (bytes.len() as u64, Content::Mem(bytes)),
        None => (meta.len(), Content::File(Arc::new(file))),
    };
    Found {
        name,
        coding,
        vary,
        validators,
        len,
        content,
    }
}

/// The file's gzip from the cache, or made now and cached. `None`: gzip
/// doesn't shrink it, or it couldn't be read.
fn gzipped(cache: &GzipCache, file: &File, meta: &std::fs::Metadata, resolved: PathBuf) -> Option<Bytes> {
    let key = (resolved, meta.len(), mtime(meta));
    if let Some(known) = cache.get(&key) {
        return known;
    }
    let data = read_all(file, meta.len()).ok()?;
    let packed = compress::gzip(&data).ok()?;
    cache.insert(key, packed.clone());
    packed
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
