//! `Cache-Control` for a static file: a year and `immutable` for names that
//! carry a content hash, the configured max-age for the rest.
//!
//! A hashed name is Django's ManifestStaticFilesStorage pattern,
//! `name.0123456789ab.ext` (the first 12 hex digits of the MD5 of the
//! content before the last extension, or at the end when there is no
//! extension): such a URL can never change content, so caches may keep it
//! for good. Validators (ETag, Last-Modified) are `conditional`'s business.

use http::HeaderValue;

/// A year, the longest max-age caches are asked to honour.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The `Cache-Control` value for a file called `name`.
pub fn for_name(name: &str, max_age: u64) -> HeaderValue {
    if is_hashed(name) {
        HeaderValue::from_static(IMMUTABLE)
    } else {
        HeaderValue::from_str(&format!("public, max-age={max_age}")).unwrap_or(HeaderValue::from_static("no-cache"))
    }
}

/// Whether `name` (a file name, not a path) has a 12-hex-digit content
/// hash as its last or second-to-last dot-separated part, after a
/// non-empty stem.
pub fn is_hashed(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    let is_hash = |p: &str| p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match parts.len() {
        0 | 1 => false,
        2 => !parts[0].is_empty() && is_hash(parts[1]),
        n => {
            let stem_ok = |upto: usize| parts[..upto].iter().any(|p| !p.is_empty());
            (is_hash(parts[n - 2]) && !parts[n - 1].is_empty() && stem_ok(n - 2))
                || (is_hash(parts[n - 1]) && stem_ok(n - 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_manifest_names_are_hashed() {
        for name in [
            "app.0123456789ab.css",
            "jquery.min.5f2a9d7c3e1b.js",
            "logo.abcdef012345.svg",
            "LICENSE.0123456789ab",
            "app.0123456789ab.css",
        ] {
            assert!(is_hashed(name), "{name}");
        }
    }

    #[test]
    fn other_names_are_not() {
        for name in [
            "app.css",
            "app.0123456789a.css",   // 11 digits
            "app.0123456789abc.css", // 13 digits
            "app.0123456789AB.css",  // Django writes lowercase
            "app.0123456789ag.css",  // not hex
            "0123456789ab.css",      // no stem
            ".0123456789ab",
            "app.0123456789ab.",
            "app.0123456789ab.css.map.old",
            "",
        ] {
            assert!(!is_hashed(name), "{name}");
        }
    }

    #[test]
    fn header_values() {
        assert_eq!(for_name("a.0123456789ab.css", 60), IMMUTABLE);
        assert_eq!(for_name("a.css", 60), "public, max-age=60");
        assert_eq!(for_name("a.css", 0), "public, max-age=0");
    }
}
