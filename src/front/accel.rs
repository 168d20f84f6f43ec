//! `X-Accel-Redirect` and `X-Sendfile`: a response from the app or an
//! upstream that names a file for the front to send instead of its body,
//! so protected downloads cost no Python worker (nginx's internal
//! redirect, Apache's and lighttpd's X-Sendfile).
//!
//! `X-Accel-Redirect: /protected/a.pdf` names a URL path under an internal
//! static route (`internal = true`, which clients can't request);
//! `X-Sendfile: /srv/files/a.pdf` names a file path under the directory of
//! an internal static route. Either way the file is served by
//! `static_files::serve` as a GET for it (HEAD stays HEAD), with the
//! client's conditional and Range headers, and with the original response's
//! Content-Disposition, Cache-Control, Expires, Set-Cookie and
//! Content-Language; its Content-Type only where the file's name gives none.
//!
//! A tandem with no internal route (an app node behind a front) leaves the
//! headers alone, for the front to act on.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::handler::{error_response, Front};
use super::response::ResponseBody;
use crate::static_files::Served;

/// Bytes of a file path that must be escaped to read as a URL path.
const PATH_ESCAPES: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');

const KEPT: [HeaderName; 5] =
    [header::CONTENT_DISPOSITION, header::CACHE_CONTROL, header::EXPIRES, header::SET_COOKIE, header::CONTENT_LANGUAGE];

/// Where a response sends the client instead.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect {
    /// `X-Accel-Redirect`: a URL path.
    Location(String),
    /// `X-Sendfile`: a file path.
    File(String),
}

/// The redirect a response's headers ask for, if any.
pub fn target(headers: &HeaderMap) -> Option<Redirect> {
    if headers.is_empty() {
        return None;
    }
    let value =
        |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    if let Some(location) = value(HeaderName::from_static("x-accel-redirect")) {
        let path = location.split('?').next().unwrap_or(location);
        return Some(Redirect::Location(path.to_string()));
    }
    value(HeaderName::from_static("x-sendfile")).map(|file| Redirect::File(file.to_string()))
}

/// Serves the file `redirect` names, for the client request `parts`;
/// `original` is the app's or upstream's response head.
pub async fn serve(
    front: &Front,
    redirect: Redirect,
    parts: &http::request::Parts,
    original: &HeaderMap,
    label: &str,
) -> Response<ResponseBody> {
    let found = match &redirect {
        Redirect::Location(path) => front.router.internal(path).map(|(mount, rest)| (mount, rest.to_string())),
        Redirect::File(file) => front
            .router
            .internal_file(file)
            .map(|(mount, rest)| (mount, utf8_percent_encode(&rest, PATH_ESCAPES).to_string())),
    };
    let Some((mount, rest)) = found else {
        tracing::error!("{label}: 404, {redirect:?} is under no internal static route");
        return error_response(StatusCode::NOT_FOUND);
    };
    let method = if parts.method == Method::HEAD { Method::HEAD } else { Method::GET };
    let mut request = Request::builder().method(method).uri(parts.uri.clone()).version(parts.version);
    if let Some(headers) = request.headers_mut() {
        for (name, value) in &parts.headers {
            headers.append(name.clone(), value.clone());
        }
    }
    let Ok(request) = request.body(()) else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let (file_parts, ()) = request.into_parts();
    let mut response = match front.statics.serve(mount, &rest, &file_parts, label).await {
        Served::Response(response) => response,
        Served::FallThrough => {
            tracing::info!("{label}: 404, {redirect:?}: no such file");
            return error_response(StatusCode::NOT_FOUND);
        }
    };
    let headers = response.headers_mut();
    for name in KEPT {
        for value in original.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let generic = headers.get(header::CONTENT_TYPE).is_some_and(|t| t == "application/octet-stream");
    if let (true, Some(kind)) = (generic, original.get(header::CONTENT_TYPE)) {
        headers.insert(header::CONTENT_TYPE, kind.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_the_target() {
        let mut h = HeaderMap::new();
        assert_eq!(target(&h), None);
        h.insert("x-sendfile", "/srv/a b.pdf".parse().unwrap());
        assert_eq!(target(&h), Some(Redirect::File("/srv/a b.pdf".into())));
        h.insert("x-accel-redirect", "/protected/a.pdf?x=1".parse().unwrap());
        assert_eq!(target(&h), Some(Redirect::Location("/protected/a.pdf".into())));
        assert_eq!(utf8_percent_encode("a b%.pdf", PATH_ESCAPES).to_string(), "a%20b%25.pdf");
    }
}
