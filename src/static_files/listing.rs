//! Directory listings for `--static-autoindex` (nginx's `autoindex on`): an
//! HTML page naming the directory's files and subdirectories, with their
//! sizes and modification times.
//!
//! Off by default. When on, a listing shows only what the static route
//! would serve: no dotfiles unless `--static-dotfiles`, no symlinks that
//! lead out of the root unless `--static-follow-symlinks`, and nothing but
//! regular files and directories. The directory is read through the
//! descriptor `lookup` already opened beneath the root, never by path, so
//! a rename between the check and the read cannot show another directory.
//! Reading a directory can take long, so [`Listing::render`] runs on the
//! blocking pool; which requests get here is `lookup`'s decision.

use std::fmt::Write as _;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use super::path::Root;
use crate::config::StaticOptions;

/// Entries beyond this are counted, not listed, so one huge directory
/// cannot make a response of unbounded size.
pub const MAX_ENTRIES: usize = 10_000;

/// Bytes of a link target left as they are; everything else is escaped.
const HREF_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A directory to list, opened beneath its static root.
pub struct Listing {
    dir: File,
    root: PathBuf,
    /// The directory is the static route's root itself (no `../` link).
    at_root: bool,
    dotfiles: bool,
    follow_symlinks: bool,
}

/// One line of the listing.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// The name's bytes, for the link.
    raw: Vec<u8>,
    /// The name as shown (invalid UTF-8 replaced).
    shown: String,
    is_dir: bool,
    len: u64,
    modified: Option<SystemTime>,
}

impl Listing {
    pub fn new(dir: File, root: &Root, rel: &Path, options: &StaticOptions) -> Listing {
        Listing {
            dir,
            root: root.path.clone(),
            at_root: rel.as_os_str().is_empty(),
            dotfiles: options.dotfiles,
            follow_symlinks: options.follow_symlinks,
        }
    }

    /// The HTML page for the directory at URL path `shown_path` (already
    /// percent-decoded). Blocking.
    pub fn render(&self, shown_path: &str) -> std::io::Result<Bytes> {
        let (entries, more) = self.entries()?;
        Ok(Bytes::from(page(shown_path, self.at_root, &entries, more)))
    }

    /// The entries worth listing, directories first, each group by name,
    /// and how many more there were beyond [`MAX_ENTRIES`].
    fn entries(&self) -> std::io::Result<(Vec<Entry>, usize)> {
        // The directory's own descriptor, seen as a path: reading it reads
        // exactly the directory `lookup` checked.
        let here = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        let mut entries = Vec::new();
        let mut more = 0;
        for item in std::fs::read_dir(&here)? {
            let Ok(item) = item else { continue };
            let name = item.file_name();
            if name.as_bytes().starts_with(b".") && !self.dotfiles {
                continue;
            }
            let Ok(kind) = item.file_type() else { continue };
            let meta = if kind.is_symlink() {
                if !self.follow_symlinks && !self.stays_inside(&item.path()) {
                    continue;
                }
                std::fs::metadata(item.path())
            } else {
                item.metadata()
            };
            let Ok(meta) = meta else { continue };
            if !meta.is_dir() && !meta.is_file() {
                continue;
            }
            if entries.len() == MAX_ENTRIES {
                more += 1;
                continue;
            }
            entries.push(Entry {
                raw: name.as_bytes().to_vec(),
                shown: name.to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                len: meta.len(),
                modified: meta.modified().ok(),
            });
        }
        entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.raw.cmp(&b.raw)));
        Ok((entries, more))
    }

    /// A symlink whose target, fully resolved, is under the root.
    fn stays_inside(&self, link: &Path) -> bool {
        std::fs::canonicalize(link).is_ok_and(|target| target.starts_with(&self.root))
    }
}

/// The page itself, in the shape of nginx's autoindex: one `<pre>` line
/// per entry with its name, modification time and size.
fn page(shown_path: &str, at_root: bool, entries: &[Entry], more: usize) -> String {
    let title = html_escape(shown_path);
    let mut out = String::with_capacity(256 + entries.len() * 120);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body>\n<h1>Index of {title}</h1><hr><pre>"
    );
    if !at_root {
        out.push_str("<a href=\"../\">../</a>\n");
    }
    for entry in entries {
        let slash = if entry.is_dir { "/" } else { "" };
        let href = percent_encoding::percent_encode(&entry.raw, HREF_KEEP);
        let shown = format!("{}{slash}", entry.shown);
        let pad = 50usize.saturating_sub(shown.chars().count()).max(1);
        let when = entry.modified.map(httpdate::fmt_http_date).unwrap_or_else(|| "-".into());
        let size = if entry.is_dir { "-".to_string() } else { entry.len.to_string() };
        let _ = writeln!(out, "<a href=\"{href}{slash}\">{}</a>{:pad$}{when} {size:>12}", html_escape(&shown), "");
    }
    if more > 0 {
        let _ = writeln!(out, "({more} more entries not shown)");
    }
    out.push_str("</pre><hr></body>\n</html>\n");
    out
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The request path as a listing shows it: percent-decoded.
pub fn shown_path(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::static_files::path::{open_beneath, Opened};

    fn listing_of(root: &Path, rel: &str, options: &StaticOptions) -> Listing {
        let root = Root::open(root);
        match open_beneath(&root, Path::new(rel), false) {
            Opened::Dir(dir) => Listing::new(dir, &root, Path::new(rel), options),
            other => panic!("{rel}: {other:?}"),
        }
    }

    #[test]
    fn lists_what_the_route_would_serve() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("b.txt"), "hello").unwrap();
        std::fs::write(root.join("a <&>.css"), "").unwrap();
        std::fs::write(root.join(".env"), "hidden").unwrap();
        std::fs::create_dir(root.join("zdir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("b.txt", root.join("alias")).unwrap();

        let options = StaticOptions::default();
        let (entries, more) = listing_of(&root, "", &options).entries().unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.shown.as_str()).collect();
        assert_eq!(names, ["zdir", "a <&>.css", "alias", "b.txt"]);
        assert_eq!(more, 0);
        assert_eq!(entries[3].len, 5);

        let html = String::from_utf8(listing_of(&root, "", &options).render("/s/").unwrap().to_vec()).unwrap();
        assert!(html.contains("<title>Index of /s/</title>"), "{html}");
        assert!(html.contains("<a href=\"zdir/\">zdir/</a>"), "{html}");
        assert!(html.contains("<a href=\"a%20%3C%26%3E.css\">a &lt;&amp;&gt;.css</a>"), "{html}");
        assert!(!html.contains("../") && !html.contains("secret") && !html.contains(".env"), "{html}");

        let sub = String::from_utf8(listing_of(&root, "zdir", &options).render("/s/zdir/").unwrap().to_vec()).unwrap();
        assert!(sub.contains("<a href=\"../\">../</a>"), "{sub}");

        let open = StaticOptions { dotfiles: true, follow_symlinks: true, ..StaticOptions::default() };
        let (entries, _) = listing_of(&root, "", &open).entries().unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.shown.as_str()).collect();
        assert_eq!(names, ["zdir", ".env", "a <&>.css", "alias", "b.txt", "out"]);
    }

    #[test]
    fn titles_are_escaped() {
        let html = page("/x/<script>/", true, &[], 0);
        assert!(html.contains("Index of /x/&lt;script&gt;/"), "{html}");
        assert!(page("/", true, &[], 3).contains("(3 more entries not shown)"));
    }
}
