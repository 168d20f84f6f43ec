//! On-the-fly gzip (`--static-compress`) for text files that have no
//! precompressed sibling, and the memory cache that keeps each result so a
//! file is compressed once per version.
//!
//! Only gzip: every client accepts it, and flate2's pure-Rust backend costs
//! little to build. Brotli and zstd are served when precompressed siblings
//! exist (`encoding`), which needs no codec at all. The cache is keyed by
//! the file's resolved path, length and modification time, so a changed
//! file is compressed again; it holds at most `--static-compress-cache`
//! bytes and forgets the oldest entries first. Which files qualify
//! (type, size floor) is `lookup`'s decision.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

/// Files larger than this are never compressed on the fly (the whole file
/// and its compressed form are held in memory while compressing).
pub const MAX_INPUT: u64 = 16 * 1024 * 1024;

/// One version of one file.
pub type Key = (PathBuf, u64, SystemTime);

/// Compressed files by version; `None` records "compression doesn't pay".
pub struct GzipCache {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Option<Bytes>>,
    order: VecDeque<Key>,
    size: usize,
}

impl GzipCache {
    pub fn new(limit: usize) -> GzipCache {
        GzipCache {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// `Some(None)`: known not to shrink; `None`: not cached.
    pub fn get(&self, key: &Key) -> Option<Option<Bytes>> {
        self.inner.lock().ok()?.map.get(key).cloned()
    }

    pub fn insert(&self, key: Key, value: Option<Bytes>) {
        let cost = value.as_ref().map_or(0, Bytes::len);
        if cost > self.limit {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.map.contains_key(&key) {
            return;
        }
        while inner.size + cost > self.limit {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(Some(gone)) = inner.map.remove(&old) {
                inner.size -= gone.len();
            }
        }
        inner.size += cost;
        inner.order.push_back(key.clone());
        inner.map.insert(key, value);
    }
}

/// Gzips `data`; `None` when the result would not be smaller.
pub fn gzip(data: &[u8]) -> io::Result<Option<Bytes>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), flate2::Compression::new(6));
    encoder.write_all(data)?;
    let out = encoder.finish()?;
    Ok((out.len() < data.len()).then(|| Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn key(name: &str) -> Key {
        (PathBuf::from(name), 1, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn gzip_round_trips_and_skips_incompressible() {
        let text = "body { color: red; }\n".repeat(100);
        let packed = gzip(text.as_bytes()).unwrap().expect("text shrinks");
        let mut back = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        assert_eq!(gzip(b"x").unwrap(), None);
    }

    #[test]
    fn cache_forgets_oldest_beyond_its_limit() {
        let cache = GzipCache::new(10);
        cache.insert(key("a"), Some(Bytes::from_static(b"aaaa")));
        cache.insert(key("b"), Some(Bytes::from_static(b"bbbb")));
        cache.insert(key("n"), None);
        assert!(cache.get(&key("a")).is_some());
        cache.insert(key("c"), Some(Bytes::from_static(b"cccc")));
        assert_eq!(cache.get(&key("a")), None);
        assert_eq!(cache.get(&key("b")), Some(Some(Bytes::from_static(b"bbbb"))));
        assert_eq!(cache.get(&key("c")), Some(Some(Bytes::from_static(b"cccc"))));
        cache.insert(key("huge"), Some(Bytes::from(vec![0; 11])));
        assert_eq!(cache.get(&key("huge")), None);
        let other_version = (PathBuf::from("b"), 2, SystemTime::UNIX_EPOCH);
        assert_eq!(cache.get(&other_version), None);
    }
}
