//! Path safety: from the raw request path under a static prefix to a file
//! that is certainly inside the static root, or a refusal.
//!
//! Two steps. [`segments`] is pure: it splits the raw (percent-encoded)
//! path on '/', decodes each segment strictly and refuses anything that
//! could name another directory or confuse a file system: `..`, an encoded
//! '/' (`%2f`), a backslash, NUL, bytes that are not valid UTF-8 (which
//! includes overlong encodings such as `%c0%ae`), and dotfiles unless they
//! are allowed. Empty and `.` segments are dropped (nginx merges slashes and
//! resolves `.` too). What survives can be joined to the root without
//! leaving it lexically.
//!
//! [`open_beneath`] does the file-system half. Unless symlinks may lead
//! anywhere, it opens the path with `openat2(2)` and `RESOLVE_BENEATH`
//! relative to a descriptor of the root (`sys::open_beneath`): the kernel
//! refuses, atomically, any resolution that leaves the root, so no rename
//! race can lead outside. Where that answers "leaves the root" (which an
//! absolute symlink pointing back inside also does) or is unavailable
//! (kernels before 5.6, seccomp), the path is resolved in user space
//! (`realpath`), refused if the result is outside the root, and the result
//! opened with `O_NOFOLLOW`. The HTTP status of a refusal is decided here
//! too ([`Refused::status`]); what to send for a file that was found is
//! `serve`'s business.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use http::StatusCode;

/// Why a request path was refused. None of these ever falls through to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("malformed percent-encoding")]
    BadEscape,
    #[error("NUL byte in path")]
    Nul,
    #[error("encoded '/' in a path segment")]
    EncodedSlash,
    #[error("backslash in path")]
    Backslash,
    #[error("'..' segment")]
    DotDot,
    #[error("path is not valid UTF-8")]
    NotUtf8,
    #[error("hidden dotfile")]
    Dotfile,
    #[error("symlink leads outside the static root")]
    OutsideRoot,
}

impl Refused {
    /// 400 for a path no file name could ever match (as nginx answers for a
    /// broken escape or NUL), 404 for the rest: a refused file looks like a
    /// missing one.
    pub fn status(self) -> StatusCode {
        match self {
            Refused::BadEscape | Refused::Nul => StatusCode::BAD_REQUEST,
            _ => StatusCode::NOT_FOUND,
        }
    }
}

/// The decoded segments of `raw` (the path after the static prefix), safe
/// to join to a directory.
pub fn segments(raw: &str, dotfiles: bool) -> Result<Vec<String>, Refused> {
    let mut out = Vec::new();
    for piece in raw.split('/') {
        let bytes = decode(piece.as_bytes())?;
        if bytes.contains(&0) {
            return Err(Refused::Nul);
        }
        if bytes.contains(&b'/') {
            return Err(Refused::EncodedSlash);
        }
        if bytes.contains(&b'\\') {
            return Err(Refused::Backslash);
        }
        let segment = String::from_utf8(bytes).map_err(|_| Refused::NotUtf8)?;
        match segment.as_str() {
            "" | "." => continue,
            ".." => return Err(Refused::DotDot),
            s if s.starts_with('.') && !dotfiles => return Err(Refused::Dotfile),
            _ => out.push(segment),
        }
    }
    Ok(out)
}

/// Strict percent-decoding: a '%' must be followed by two hex digits.
fn decode(raw: &[u8]) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(Refused::BadEscape)?;
            let hi = hex_value(hex[0]).ok_or(Refused::BadEscape)?;
            let lo = hex_value(hex[1]).ok_or(Refused::BadEscape)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A static root: its resolved path, and a descriptor of the directory
/// for `openat2` (none if it couldn't be opened: the slower path then).
#[derive(Debug)]
pub struct Root {
    pub path: PathBuf,
    dir: Option<File>,
}

impl Root {
    /// The root's `O_PATH` descriptor, if it could be opened.
    pub fn dir(&self) -> Option<&File> {
        self.dir.as_ref()
    }

    /// `path` must already be resolved (config does that).
    pub fn open(path: &Path) -> Root {
        let dir = OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(path).ok();
        Root { path: path.to_path_buf(), dir }
    }
}

/// What [`open_beneath`] found.
#[derive(Debug)]
pub enum Opened {
    /// A regular file and its metadata.
    File(File, Box<Metadata>),
    /// A directory, opened for reading its entries.
    Dir(File),
    /// Nothing there, or nothing that can be served (a socket, a device).
    Missing,
    Refused(Refused),
}

/// Opens `rel` (a relative path built from [`segments`]) under `root` for
/// reading, refusing anything that resolves outside it unless
/// `follow_symlinks`. Blocking.
pub fn open_beneath(root: &Root, rel: &Path, follow_symlinks: bool) -> Opened {
    if follow_symlinks {
        return classify(open_file(&root.path.join(rel), false));
    }
    let Some(dir) = &root.dir else {
        return resolve_then_open(root, rel);
    };
    let rel_or_dot = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    match crate::sys::open_beneath(dir, rel_or_dot, libc::O_NONBLOCK) {
        Ok(file) => classify(file.metadata().map(|meta| Some((file, meta)))),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => Opened::Missing,
        // EXDEV: the path leaves the root, or goes through an absolute
        // symlink that may lead back in; ENOSYS, EPERM (seccomp), EAGAIN
        // (a rename race): decide the slow way.
        Err(_) => resolve_then_open(root, rel),
    }
}

/// Resolves `root/rel` in user space and opens the result if it is inside.
fn resolve_then_open(root: &Root, rel: &Path) -> Opened {
    match std::fs::canonicalize(root.path.join(rel)) {
        Ok(resolved) if resolved.starts_with(&root.path) => classify(open_file(&resolved, true)),
        Ok(_) => Opened::Refused(Refused::OutsideRoot),
        Err(_) => Opened::Missing,
    }
}

fn classify(opened: io::Result<Option<(File, Metadata)>>) -> Opened {
    match opened {
        Ok(Some((dir, meta))) if meta.is_dir() => Opened::Dir(dir),
        Ok(Some((file, meta))) if meta.is_file() => Opened::File(file, Box::new(meta)),
        Ok(_) | Err(_) => Opened::Missing,
    }
}

/// Opens `path` read-only without blocking on a FIFO; with `nofollow`, a
/// symlink as the last component counts as absent. `Ok(None)`: no such file.
fn open_file(path: &Path, nofollow: bool) -> io::Result<Option<(File, Metadata)>> {
    let mut flags = libc::O_NONBLOCK;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            Ok(Some((file, meta)))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> Vec<String> {
        segments(raw, false).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn plain_paths_decode() {
        assert_eq!(ok("css/app.css"), ["css", "app.css"]);
        assert_eq!(ok("a%20b/c%2Ed.txt"), ["a b", "c.d.txt"]);
        assert_eq!(ok("caf%C3%A9.txt"), ["café.txt"]);
        assert_eq!(ok("a//b/./c"), ["a", "b", "c"]);
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("x..y/z.."), ["x..y", "z.."]);
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, Refused)] = &[
            ("..", Refused::DotDot),
            ("a/../../etc/passwd", Refused::DotDot),
            ("%2e%2e/secret", Refused::DotDot),
            ("%2E%2E/secret", Refused::DotDot),
            (".%2e/secret", Refused::DotDot),
            ("a%2f..%2fsecret", Refused::EncodedSlash),
            ("a%2Fb", Refused::EncodedSlash),
            ("..%5csecret", Refused::Backslash),
            ("a\\b", Refused::Backslash),
            ("a%00.css", Refused::Nul),
            ("%c0%ae%c0%ae/secret", Refused::NotUtf8),
            ("%ff", Refused::NotUtf8),
            ("%e0%80%ae", Refused::NotUtf8),
            (".env", Refused::Dotfile),
            (".git/config", Refused::Dotfile),
            ("a/.hidden/b", Refused::Dotfile),
            ("%", Refused::BadEscape),
            ("%2", Refused::BadEscape),
            ("%zz", Refused::BadEscape),
            ("%%32%65", Refused::BadEscape),
        ];
        for (raw, want) in cases {
            assert_eq!(segments(raw, false), Err(*want), "{raw}");
        }
    }

    #[test]
    fn dotfiles_when_allowed_but_never_dotdot() {
        assert_eq!(segments(".well-known/x", true).unwrap(), [".well-known", "x"]);
        assert_eq!(segments("..", true), Err(Refused::DotDot));
        assert_eq!(segments("%2e%2e", true), Err(Refused::DotDot));
    }

    #[test]
    fn statuses() {
        assert_eq!(Refused::BadEscape.status(), StatusCode::BAD_REQUEST);
        assert_eq!(Refused::Nul.status(), StatusCode::BAD_REQUEST);
        assert_eq!(Refused::DotDot.status(), StatusCode::NOT_FOUND);
        assert_eq!(Refused::OutsideRoot.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn open_beneath_refuses_symlinks_out() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(root_dir.path()).unwrap();
        std::fs::write(path.join("in.txt"), "in").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), path.join("out")).unwrap();
        std::os::unix::fs::symlink("in.txt", path.join("alias")).unwrap();
        std::os::unix::fs::symlink(path.join("in.txt"), path.join("absolute-alias")).unwrap();
        std::os::unix::fs::symlink("../..", path.join("up")).unwrap();
        std::fs::create_dir(path.join("d")).unwrap();

        // With openat2, and with the user-space fallback.
        let roots = [Root::open(&path), Root { path: path.clone(), dir: None }];
        assert!(roots[0].dir.is_some());
        for root in roots {
            let open = |rel: &str, follow| open_beneath(&root, Path::new(rel), follow);
            for inside in ["in.txt", "alias", "absolute-alias", "d/../in.txt"] {
                assert!(matches!(open(inside, false), Opened::File(..)), "{inside}");
            }
            assert!(matches!(open("d", false), Opened::Dir(_)));
            assert!(matches!(open("", false), Opened::Dir(_)));
            assert!(matches!(open("nope", false), Opened::Missing));
            for outside in ["out", "up", "up/etc/passwd", ".."] {
                let got = open(outside, false);
                assert!(matches!(got, Opened::Refused(Refused::OutsideRoot)), "{outside}: {got:?}");
            }
            assert!(matches!(open("out", true), Opened::File(..)));
        }
    }
}
