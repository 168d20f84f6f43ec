//! Conditional requests (RFC 9110 §13): the validators of a file (a strong
//! `ETag` and `Last-Modified`) and what `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since` and `If-Range` make of them.
//!
//! Pure functions of header values and validators; reading the file's
//! metadata is `lookup`'s job and parsing `Range` is `range`'s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
use http::{HeaderMap, HeaderValue};

/// What identifies one version of one representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// A strong entity tag, quotes included.
    pub etag: String,
    /// Modification time, truncated to the second (HTTP dates have no finer unit).
    pub last_modified: SystemTime,
}

impl Validators {
    /// Validators from a file's modification time and length. `coding` tells
    /// apart representations of one file (a `.br` sibling, a gzip made on
    /// the fly), whose bytes differ.
    pub fn new(mtime: SystemTime, len: u64, coding: Option<&str>) -> Validators {
        let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
        let etag = match coding {
            Some(c) => format!("\"{:x}.{:x}-{len:x}-{c}\"", since.as_secs(), since.subsec_nanos()),
            None => format!("\"{:x}.{:x}-{len:x}\"", since.as_secs(), since.subsec_nanos()),
        };
        Validators {
            etag,
            last_modified: UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        }
    }

    pub fn last_modified_header(&self) -> String {
        httpdate::fmt_http_date(self.last_modified)
    }
}

/// The outcome of a request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Send the representation (or the requested ranges of it).
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: the client asked for a version that is not this one.
    Failed,
}

/// Evaluates the preconditions of a GET or HEAD in RFC 9110 §13.2.2 order.
pub fn evaluate(headers: &HeaderMap, v: &Validators) -> Precondition {
    if let Some(value) = headers.get(IF_MATCH) {
        if !tag_list_matches(value, &v.etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(date) = header_date(headers.get(IF_UNMODIFIED_SINCE)) {
        if v.last_modified > date {
            return Precondition::Failed;
        }
    }
    if let Some(value) = headers.get(IF_NONE_MATCH) {
        if tag_list_matches(value, &v.etag, false) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = header_date(headers.get(IF_MODIFIED_SINCE)) {
        if v.last_modified <= date {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether an `If-Range` value still names this representation, so the
/// `Range` may be honoured: an entity tag must match strongly, a date must
/// equal `Last-Modified` exactly.
pub fn if_range_matches(value: &HeaderValue, v: &Validators) -> bool {
    let Ok(text) = value.to_str() else { return false };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        return parse_tags(text).is_some_and(|tags| tags.len() == 1 && !tags[0].0 && tags[0].1 == v.etag);
    }
    httpdate::parse_http_date(text).is_ok_and(|date| date == v.last_modified)
}

fn header_date(value: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(value?.to_str().ok()?.trim()).ok()
}

/// `*` or a list of entity tags; `strong` asks for RFC 9110's strong
/// comparison (a weak tag never matches), otherwise the weak one.
fn tag_list_matches(value: &HeaderValue, etag: &str, strong: bool) -> bool {
    let Ok(text) = value.to_str() else { return false };
    if text.trim() == "*" {
        return true;
    }
    parse_tags(text).is_some_and(|tags| tags.iter().any(|(weak, tag)| !(strong && *weak) && *tag == etag))
}

/// Parses `"a", W/"b"` into (weak, quoted tag) pairs; `None` if malformed.
fn parse_tags(text: &str) -> Option<Vec<(bool, &str)>> {
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let body = after.strip_prefix('"')?;
        let end = body.find('"')?;
        tags.push((weak, &after[..end + 2]));
        rest = &body[end + 1..];
        if !(rest.is_empty() || rest.starts_with([' ', '\t', ','])) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Validators {
        Validators::new(UNIX_EPOCH + Duration::new(1_700_000_000, 123), 42, None)
    }

    fn headers(pairs: &[(http::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const LM: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

    #[test]
    fn validators_shape() {
        let v = v();
        assert_eq!(v.etag, "\"6553f100.7b-2a\"");
        assert_eq!(v.last_modified_header(), LM);
        let br = Validators::new(UNIX_EPOCH + Duration::new(1_700_000_000, 123), 42, Some("br"));
        assert_ne!(br.etag, v.etag);
        assert!(br.etag.starts_with('"') && br.etag.ends_with('"'));
    }

    #[test]
    fn none_match_and_modified_since() {
        let v = v();
        let etag = v.etag.clone();
        let cases: &[(&[(http::header::HeaderName, &str)], Precondition)] = &[
            (&[], Precondition::Proceed),
            (&[(IF_NONE_MATCH, &etag)], Precondition::NotModified),
            (&[(IF_NONE_MATCH, &format!("W/{etag}"))], Precondition::NotModified),
            (&[(IF_NONE_MATCH, &format!("\"x\", {etag}"))], Precondition::NotModified),
            (&[(IF_NONE_MATCH, "*")], Precondition::NotModified),
            (&[(IF_NONE_MATCH, "\"other\"")], Precondition::Proceed),
            (&[(IF_NONE_MATCH, "garbage")], Precondition::Proceed),
            (&[(IF_MODIFIED_SINCE, LM)], Precondition::NotModified),
            (
                &[(IF_MODIFIED_SINCE, "Wed, 15 Nov 2023 00:00:00 GMT")],
                Precondition::NotModified,
            ),
            (
                &[(IF_MODIFIED_SINCE, "Tue, 14 Nov 2023 22:13:19 GMT")],
                Precondition::Proceed,
            ),
            (&[(IF_MODIFIED_SINCE, "not a date")], Precondition::Proceed),
            // If-None-Match wins over If-Modified-Since.
            (
                &[(IF_NONE_MATCH, "\"other\""), (IF_MODIFIED_SINCE, LM)],
                Precondition::Proceed,
            ),
            (&[(IF_MATCH, &etag)], Precondition::Proceed),
            (&[(IF_MATCH, "*")], Precondition::Proceed),
            (&[(IF_MATCH, "\"other\"")], Precondition::Failed),
            (&[(IF_MATCH, &format!("W/{etag}"))], Precondition::Failed),
            (
                &[(IF_UNMODIFIED_SINCE, "Tue, 14 Nov 2023 22:13:19 GMT")],
                Precondition::Failed,
            ),
            (&[(IF_UNMODIFIED_SINCE, LM)], Precondition::Proceed),
        ];
        for (pairs, want) in cases {
            assert_eq!(evaluate(&headers(pairs), &v), *want, "{pairs:?}");
        }
    }

    #[test]
    fn if_range() {
        let v = v();
        let ok = |s: &str| if_range_matches(&HeaderValue::from_str(s).unwrap(), &v);
        assert!(ok(&v.etag));
        assert!(!ok(&format!("W/{}", v.etag)));
        assert!(!ok("\"other\""));
        assert!(ok(LM));
        assert!(!ok("Wed, 15 Nov 2023 00:00:00 GMT"));
        assert!(!ok("junk"));
    }

    #[test]
    fn tag_lists() {
        assert_eq!(
            parse_tags(" \"a\" ,W/\"b\",\"\"").unwrap(),
            vec![(false, "\"a\""), (true, "\"b\""), (false, "\"\"")]
        );
        assert!(parse_tags("\"a").is_none());
        assert!(parse_tags("\"a\"x").is_none());
        assert!(parse_tags("a").is_none());
    }
}
