//! Static files, served the way nginx serves them: GET and HEAD, validators
//! and conditional requests, byte ranges, precompressed siblings and
//! optional on-the-fly gzip, cache lifetimes from hashed names, an optional
//! index file or an opt-in directory listing, and no way out of the root.
//!
//! One file per concern: `path` (safety), `lookup` (finding the file and
//! its representation, blocking), `conditional` (ETag, Last-Modified,
//! If-*), `range` (Range, multipart), `content_type`, `encoding`
//! (Accept-Encoding, precompressed siblings), `compress` (on-the-fly gzip
//! and its cache), `cache_control`, `listing` (`--static-autoindex`),
//! `file_cache` (small files and absent names, `--static-cache`), and `serve`, which reads a request's
//! path through all of them top to bottom. Which requests come here is the
//! router's decision; the connection is the front's.

mod cache_control;
mod compress;
mod conditional;
mod content_type;
mod encoding;
mod file_cache;
mod listing;
mod lookup;
mod notices;
mod path;
mod range;
mod serve;

pub use serve::{Served, StaticFiles};
