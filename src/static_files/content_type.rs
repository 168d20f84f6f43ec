//! `Content-Type` for a file name, from its extension (mime_guess's table),
//! with `charset=utf-8` on text types; and which types are worth
//! compressing. Choosing a precompressed variant is `encoding`'s job; the
//! type is always the one of the name the client asked for (`app.css`, not
//! `app.css.br`).

use http::HeaderValue;

/// Types that are text without being `text/*`.
const TEXT_LIKE: &[&str] = &[
    "application/javascript",
    "application/json",
    "application/manifest+json",
    "application/xml",
    "application/rss+xml",
    "application/atom+xml",
];

/// The `Content-Type` value for a file called `name`.
pub fn for_name(name: &str) -> HeaderValue {
    let mime = mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream");
    if is_text(mime) {
        HeaderValue::from_str(&format!("{mime}; charset=utf-8"))
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
    } else {
        HeaderValue::from_str(mime).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
    }
}

fn is_text(mime: &str) -> bool {
    mime.starts_with("text/") || TEXT_LIKE.contains(&mime)
}

/// Whether a file called `name` is text that compresses well (on-the-fly
/// compression only touches these).
pub fn is_compressible(name: &str) -> bool {
    let mime = mime_guess::from_path(name).first_raw().unwrap_or("");
    is_text(mime) || mime == "image/svg+xml"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_web_types() {
        let cases = [
            ("app.css", "text/css; charset=utf-8"),
            ("app.0123456789ab.js", "text/javascript; charset=utf-8"),
            ("index.html", "text/html; charset=utf-8"),
            ("data.json", "application/json; charset=utf-8"),
            ("logo.svg", "image/svg+xml"),
            ("photo.JPG", "image/jpeg"),
            ("font.woff2", "font/woff2"),
            ("app.wasm", "application/wasm"),
            ("archive.tar.gz", "application/gzip"),
            ("README", "application/octet-stream"),
            ("weird.zzzunknown", "application/octet-stream"),
        ];
        for (name, want) in cases {
            assert_eq!(for_name(name), want, "{name}");
        }
    }

    #[test]
    fn compressible_is_text() {
        assert!(is_compressible("a.css"));
        assert!(is_compressible("a.js"));
        assert!(is_compressible("a.svg"));
        assert!(is_compressible("a.json"));
        assert!(!is_compressible("a.png"));
        assert!(!is_compressible("a.woff2"));
        assert!(!is_compressible("a.gz"));
    }
}
