//! Serving one request under a static prefix, top to bottom:
//!
//! ```text
//! method (405 unless GET/HEAD) → path::segments (400/404 if refused)
//!   → lookup (404 or fall through if missing, 301 to add a '/'; gzip and
//!     directory listings on the blocking pool)
//!   → preconditions (304, 412) → Range and If-Range (206, multipart 206, 416)
//!   → headers (type, length, validators, cache, coding, Vary) → body
//! ```
//!
//! Bodies: files up to `lookup::SMALL_FILE` are read during the lookup (on
//! the runtime thread; `lookup` says why) and sent from memory; larger ones
//! are read in 256 KiB `pread`s as the client takes them
//! (`front::segments_body`: from the page cache on the runtime thread, from
//! the disk on the blocking pool), so memory per response stays bounded
//! whatever the file size. On a
//! plain HTTP/1.1 connection the pieces go out with `sendfile(2)` instead
//! (`front::sendfile`). Everything about the connection itself is the
//! front's.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::cache_control;
use super::compress::GzipCache;
use super::conditional::{self, Precondition};
use super::content_type;
use super::encoding::Accepted;
use super::file_cache::FileCache;
use super::listing::{self, Listing};
use super::lookup::{self, Content, Found, Lookup, Wanted};
use super::path::{self, Root};
use super::range::{self, ByteRange, Piece, Ranges};
use crate::config::{StaticMount, StaticOptions};
use crate::front::{error_response, segments_body, ResponseBody, Segment};

/// The static-file handler shared by every connection.
pub struct StaticFiles {
    /// Each route's root, by directory.
    roots: HashMap<std::path::PathBuf, Arc<Root>>,
    options: Arc<StaticOptions>,
    gzip_cache: Option<Arc<GzipCache>>,
    file_cache: Option<Arc<FileCache>>,
}

/// What became of a request under a static prefix.
pub enum Served {
    Response(Response<ResponseBody>),
    /// Not a file here, and `--static-fallthrough` is on: the app answers.
    FallThrough,
}

impl StaticFiles {
    pub fn new(mounts: &[StaticMount], options: StaticOptions) -> StaticFiles {
        let roots = mounts.iter().map(|m| (m.root.clone(), Arc::new(Root::open(&m.root)))).collect();
        let gzip_cache = options.compress.then(|| Arc::new(GzipCache::new(options.compress_cache)));
        let file_cache = (options.cache > 0).then(|| Arc::new(FileCache::new(options.cache, lookup::SMALL_FILE)));
        StaticFiles { roots, options: Arc::new(options), gzip_cache, file_cache }
    }

    /// Answers a request for `rest` (the raw path after `mount.prefix`).
    pub async fn serve(&self, mount: &StaticMount, rest: &str, parts: &http::request::Parts, label: &str) -> Served {
        let fallthrough = self.options.fallthrough;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            if fallthrough {
                return Served::FallThrough;
            }
            let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED);
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Served::Response(response);
        }
        let segments = match path::segments(rest, self.options.dotfiles) {
            Ok(segments) => segments,
            Err(why) => return refuse(label, why),
        };

        let Some(root) = self.roots.get(&mount.root) else {
            tracing::error!("{label}: 500, no root for {}", mount.prefix);
            return Served::Response(error_response(StatusCode::INTERNAL_SERVER_ERROR));
        };
        let trailing_slash = rest.is_empty() || rest.ends_with('/');
        let accepted = Accepted::from_header(parts.headers.get(header::ACCEPT_ENCODING));
        let want_body = parts.method == Method::GET;
        let wanted = Wanted { root, segments: &segments, trailing_slash, accepted, want_body };
        let (gzip_cache, file_cache) = (self.gzip_cache.as_deref(), self.file_cache.as_deref());
        let mut answer = lookup::lookup(wanted, &self.options, gzip_cache, file_cache, file_cache.is_none());
        if let Lookup::WouldBlock = answer {
            // The file system must be asked: off the event loop.
            let (root, options) = (Arc::clone(root), Arc::clone(&self.options));
            let (gzip_cache, file_cache) = (self.gzip_cache.clone(), self.file_cache.clone());
            let blocking = tokio::task::spawn_blocking(move || {
                let wanted = Wanted { root: &root, segments: &segments, trailing_slash, accepted, want_body };
                lookup::lookup(wanted, &options, gzip_cache.as_deref(), file_cache.as_deref(), true)
            });
            answer = match blocking.await {
                Ok(answer) => answer,
                Err(err) => {
                    tracing::error!("{label}: 500, looking the file up failed: {err}");
                    return Served::Response(error_response(StatusCode::INTERNAL_SERVER_ERROR));
                }
            };
        }
        let found = match answer {
            Lookup::Found(found) => found,
            // Only a lookup that may not block says so.
            Lookup::WouldBlock => return Served::Response(error_response(StatusCode::INTERNAL_SERVER_ERROR)),
            Lookup::Missing if fallthrough => return Served::FallThrough,
            Lookup::Missing => {
                tracing::debug!("{label}: 404, no such file");
                return Served::Response(error_response(StatusCode::NOT_FOUND));
            }
            Lookup::Refused(why) => return refuse(label, why),
            Lookup::AddSlash => return Served::Response(add_slash(parts)),
            Lookup::Listing(listing) => return Served::Response(list(listing, parts, label).await),
            Lookup::Compress(pending) => {
                let Some(cache) = self.gzip_cache.clone() else {
                    return Served::Response(error_response(StatusCode::INTERNAL_SERVER_ERROR));
                };
                match tokio::task::spawn_blocking(move || pending.finish(&cache)).await {
                    Ok(found) => found,
                    Err(err) => {
                        tracing::error!("{label}: 500, compressing failed: {err}");
                        return Served::Response(error_response(StatusCode::INTERNAL_SERVER_ERROR));
                    }
                }
            }
        };
        Served::Response(self.respond(found, parts, label))
    }

    /// The response for a found representation: preconditions, ranges, headers, body.
    fn respond(&self, found: Found, parts: &http::request::Parts, label: &str) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::empty());
        let headers = response.headers_mut();
        let v = &found.validators;
        if let Ok(etag) = HeaderValue::from_str(&v.etag) {
            headers.insert(header::ETAG, etag);
        }
        if let Ok(date) = HeaderValue::from_str(&v.last_modified_header()) {
            headers.insert(header::LAST_MODIFIED, date);
        }
        headers.insert(header::CACHE_CONTROL, cache_control::for_name(&found.name, self.options.max_age));
        if found.vary {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }

        match conditional::evaluate(&parts.headers, v) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                return response;
            }
            Precondition::Failed => return error_response(StatusCode::PRECONDITION_FAILED),
        }

        let content_type = content_type::for_name(&found.name);
        let headers = response.headers_mut();
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(coding) = found.coding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        }
        let ranges = match parts.headers.get(header::RANGE) {
            Some(value) if parts.method == Method::GET => {
                let current = match parts.headers.get(header::IF_RANGE) {
                    Some(if_range) => conditional::if_range_matches(if_range, v),
                    None => true,
                };
                if current {
                    range::parse(value.as_bytes(), found.len)
                } else {
                    Ranges::Whole
                }
            }
            _ => Ranges::Whole,
        };

        let (pieces, length) = match ranges {
            Ranges::Unsatisfiable => {
                let mut refused = error_response(StatusCode::RANGE_NOT_SATISFIABLE);
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", found.len)) {
                    refused.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return refused;
            }
            Ranges::Whole => {
                headers.insert(header::CONTENT_TYPE, content_type);
                let whole = (found.len > 0).then(|| Piece::Range(ByteRange { first: 0, last: found.len - 1 }));
                (whole.into_iter().collect(), found.len)
            }
            Ranges::Some(list) if list.len() == 1 => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, content_type);
                if let Ok(value) = HeaderValue::from_str(&list[0].content_range(found.len)) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
                (vec![Piece::Range(list[0])], list[0].len())
            }
            Ranges::Some(list) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let boundary = boundary();
                let inner_type = content_type.to_str().unwrap_or("application/octet-stream");
                let (pieces, length) = range::multipart(&list, found.len, inner_type, &boundary);
                if let Ok(value) = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}")) {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                (pieces, length)
            }
        };
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if parts.method == Method::GET {
            *response.body_mut() = body(found.content, pieces, label);
        }
        response
    }
}

/// The bytes of `pieces`, from memory or streamed from the file.
fn body(content: Content, pieces: Vec<Piece>, label: &str) -> ResponseBody {
    match content {
        Content::Mem(data) => {
            let slice = |p: &Piece| match p {
                Piece::Text(text) => text.clone(),
                Piece::Range(r) => data.slice(r.first as usize..=r.last as usize),
            };
            match pieces.as_slice() {
                [] => ResponseBody::empty(),
                [one] => ResponseBody::Full(Some(slice(one))),
                many => {
                    let mut all = BytesMut::new();
                    for p in many {
                        all.extend_from_slice(&slice(p));
                    }
                    ResponseBody::Full(Some(all.freeze()))
                }
            }
        }
        Content::File(file) => {
            let segments = pieces
                .into_iter()
                .map(|p| match p {
                    Piece::Text(text) => Segment::Mem(text),
                    Piece::Range(r) => Segment::File { file: Arc::clone(&file), offset: r.first, len: r.len() },
                })
                .collect();
            segments_body(segments, label.to_string())
        }
    }
}

/// A directory listing (`--static-autoindex`), read on the blocking pool.
async fn list(listing: Listing, parts: &http::request::Parts, label: &str) -> Response<ResponseBody> {
    let shown = listing::shown_path(parts.uri.path());
    let html = match tokio::task::spawn_blocking(move || listing.render(&shown)).await {
        Ok(Ok(html)) => html,
        Ok(Err(err)) => {
            tracing::error!("{label}: 500, cannot read the directory: {err}");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR);
        }
        Err(err) => {
            tracing::error!("{label}: 500, listing failed: {err}");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let mut response = Response::new(ResponseBody::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(html.len()));
    if parts.method == Method::GET {
        *response.body_mut() = ResponseBody::Full(Some(html));
    }
    response
}

fn refuse(label: &str, why: path::Refused) -> Served {
    let status = why.status();
    tracing::info!("{label}: {}, refused: {why}", status.as_u16());
    Served::Response(error_response(status))
}

/// 301 to the same path with a '/' added (query kept).
fn add_slash(parts: &http::request::Parts) -> Response<ResponseBody> {
    let location = match parts.uri.query() {
        Some(q) => format!("{}/?{q}", parts.uri.path()),
        None => format!("{}/", parts.uri.path()),
    };
    let mut response = error_response(StatusCode::MOVED_PERMANENTLY);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A multipart boundary that no file is likely to contain.
fn boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x7461_6e64_656d);
    format!("tandem-{:016x}", hasher.finish())
}
