//! The static-file part of the configuration: the `--static*` flags, the
//! routes and options they become, and their validation. What the options
//! do to a request is `static_files`' business.

use std::path::{Path, PathBuf};

use super::ConfigError;

const DEFAULT_MAX_AGE: u64 = 60;
const DEFAULT_COMPRESS_MIN_SIZE: u64 = 1024;
const DEFAULT_COMPRESS_CACHE: usize = 64 * 1024 * 1024;
const DEFAULT_FILE_CACHE: usize = 32 * 1024 * 1024;

/// One `--static PREFIX=DIR`: requests under `prefix` are files under `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMount {
    /// URL path prefix, starting and ending with '/' (`/static/`).
    pub prefix: String,
    /// The directory served, absolute and with symlinks resolved, so that
    /// "inside the root" can be checked against resolved file paths.
    pub root: PathBuf,
}

/// How every static route behaves (one set of options for all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticOptions {
    /// `Cache-Control: public, max-age=N` for files without a content hash
    /// in their name (hashed names always get a year and `immutable`).
    pub max_age: u64,
    /// File served for a request that names a directory (`index.html`);
    /// `None`: directories are 404.
    pub index: Option<String>,
    /// List a directory that has no index file (HTML, like nginx's
    /// `autoindex on`) instead of answering 404.
    pub autoindex: bool,
    /// Serve files and directories whose name starts with '.'.
    pub dotfiles: bool,
    /// Follow symlinks that lead outside the root.
    pub follow_symlinks: bool,
    /// A file missing under a static prefix (or a method other than GET and
    /// HEAD) goes to the app instead of 404 (405).
    pub fallthrough: bool,
    /// Gzip text files on the fly for clients that accept it, when no
    /// precompressed sibling exists.
    pub compress: bool,
    /// Files smaller than this are never compressed on the fly.
    pub compress_min_size: u64,
    /// Bytes of compressed files kept in memory.
    pub compress_cache: usize,
    /// Bytes of small files (and names known to be absent) kept in memory;
    /// 0 turns the cache off.
    pub cache: usize,
    /// Send files with `sendfile(2)` where the connection allows it.
    pub sendfile: bool,
}

impl Default for StaticOptions {
    fn default() -> StaticOptions {
        StaticOptions {
            max_age: DEFAULT_MAX_AGE,
            index: None,
            autoindex: false,
            dotfiles: false,
            follow_symlinks: false,
            fallthrough: false,
            compress: false,
            compress_min_size: DEFAULT_COMPRESS_MIN_SIZE,
            compress_cache: DEFAULT_COMPRESS_CACHE,
            cache: DEFAULT_FILE_CACHE,
            sendfile: true,
        }
    }
}

/// The `--static*` flags, flattened into tandem's command line.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Static files")]
pub(super) struct StaticArgs {
    /// Serve the files under DIR at URL prefix PREFIX (which starts and ends
    /// with '/'), e.g. --static /static/=staticfiles. Repeatable; the longest
    /// matching prefix wins and the app gets everything else. A relative DIR
    /// is relative to --chdir, if given.
    #[arg(long = "static", value_name = "PREFIX=DIR")]
    statics: Vec<String>,

    /// Cache-Control max-age in seconds for static files without a content
    /// hash in their name. Hashed names (app.0123456789ab.css, as Django's
    /// ManifestStaticFilesStorage writes them) always get a year and
    /// 'immutable'.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_MAX_AGE)]
    static_max_age: u64,

    /// File to serve for a request naming a directory, e.g. index.html.
    /// Default: none (directories are 404, or listed with --static-autoindex).
    #[arg(long, value_name = "NAME")]
    static_index: Option<String>,

    /// List the contents of a directory that has no index file, as an HTML
    /// page (like nginx's 'autoindex on'). Off by default: directories are 404.
    /// Listings show only what would be served (no dotfiles, no symlinks out).
    #[arg(long)]
    static_autoindex: bool,

    /// Serve files and directories whose names start with '.' (hidden, 404, by default).
    #[arg(long)]
    static_dotfiles: bool,

    /// Follow symlinks that point outside a static directory (refused, 404, by default).
    #[arg(long)]
    static_follow_symlinks: bool,

    /// Pass requests for missing static files (and methods other than GET and
    /// HEAD) to the app instead of answering 404 (405).
    #[arg(long)]
    static_fallthrough: bool,

    /// Gzip text files on the fly (CSS, JS, HTML, JSON, SVG...) for clients that
    /// accept it, when no precompressed .br/.zst/.gz sibling exists. Results
    /// are cached in memory.
    #[arg(long)]
    static_compress: bool,

    /// Smallest file compressed on the fly.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_COMPRESS_MIN_SIZE)]
    static_compress_min_size: u64,

    /// Memory for on-the-fly compressed files; the oldest entries go first.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_COMPRESS_CACHE)]
    static_compress_cache: usize,

    /// Memory for small static files (up to 64 KiB) and for names known to be
    /// absent, like nginx's open_file_cache. Changed files are served at once:
    /// on local file systems inotify reports every change, elsewhere (NFS,
    /// FUSE, paths through symlinks) each use is checked with one stat. 0
    /// turns it off.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_FILE_CACHE)]
    static_cache: usize,

    /// Read files into memory and write them out, instead of sending them
    /// with sendfile(2) (like nginx's 'sendfile off', for file systems where
    /// sendfile misbehaves). sendfile is used on plain HTTP/1.1 connections for
    /// files that are not in the small-file cache (static, X-Accel-Redirect and
    /// responses buffered to disk); TLS and HTTP/2 always read files.
    #[arg(long)]
    no_sendfile: bool,
}

impl StaticArgs {
    /// The routes and options; a relative DIR is taken from `base`.
    pub(super) fn into_config(self, base: &Path) -> Result<(Vec<StaticMount>, StaticOptions), ConfigError> {
        let mounts = self.statics.iter().map(|s| parse_static(s, base)).collect::<Result<_, _>>()?;
        let options = StaticOptions {
            max_age: self.static_max_age,
            index: self.static_index.filter(|name| !name.is_empty()),
            autoindex: self.static_autoindex,
            dotfiles: self.static_dotfiles,
            follow_symlinks: self.static_follow_symlinks,
            fallthrough: self.static_fallthrough,
            compress: self.static_compress,
            compress_min_size: self.static_compress_min_size,
            compress_cache: self.static_compress_cache,
            cache: self.static_cache,
            sendfile: !self.no_sendfile,
        };
        Ok((mounts, options))
    }
}

/// Static prefixes that start and end with '/', have no empty, '.' or '..'
/// segment and are not repeated; roots that are directories; an index name
/// that is a plain file name.
pub fn validate(mounts: &[StaticMount], options: &StaticOptions) -> Result<(), ConfigError> {
    let err = |msg: String| Err(ConfigError(msg));
    for (i, mount) in mounts.iter().enumerate() {
        let StaticMount { prefix, root } = mount;
        if !prefix.starts_with('/') || !prefix.ends_with('/') {
            return err(format!("invalid --static prefix '{prefix}': must start and end with '/'"));
        }
        if prefix.contains("//") || prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return err(format!("invalid --static prefix '{prefix}': empty, '.' or '..' segment"));
        }
        if mounts[..i].iter().any(|m| &m.prefix == prefix) {
            return err(format!("--static prefix '{prefix}' given twice"));
        }
        if !root.is_dir() {
            return err(format!("--static {prefix}={}: no such directory", root.display()));
        }
    }
    if let Some(index) = &options.index {
        if index.contains('/') || index == "." || index == ".." {
            return err(format!("invalid --static-index '{index}': expected a file name"));
        }
    }
    Ok(())
}

/// Parses one `--static PREFIX=DIR`; a relative DIR is taken from `base`.
/// The directory is resolved (symlinks and all) when it exists; `validate`
/// reports it when it doesn't.
pub fn parse_static(text: &str, base: &Path) -> Result<StaticMount, ConfigError> {
    let (prefix, dir) = match text.split_once('=') {
        Some((prefix, dir)) if !prefix.is_empty() && !dir.is_empty() => (prefix, dir),
        _ => return Err(ConfigError(format!("invalid --static '{text}': expected PREFIX=DIR"))),
    };
    let root = base.join(dir);
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    Ok(StaticMount { prefix: prefix.to_string(), root })
}

#[cfg(test)]
mod tests {
    use super::super::parse_for_test as parse;
    use super::*;

    #[test]
    fn static_flags_become_config() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let spec = format!("/static/={}", dir.path().display());
        let c = parse(&["--static", &spec, "--static-max-age", "5", "--static-compress", "x"]).unwrap();
        assert_eq!(c.statics, vec![StaticMount { prefix: "/static/".into(), root }]);
        assert_eq!(c.static_options.max_age, 5);
        assert!(c.static_options.compress && !c.static_options.dotfiles && !c.static_options.fallthrough);
        assert_eq!(parse(&["x"]).unwrap().static_options, StaticOptions::default());
    }

    #[test]
    fn relative_static_dirs_start_at_chdir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let chdir = dir.path().to_str().unwrap();
        let c = parse(&["--chdir", chdir, "--static", "/f/=files", "x"]).unwrap();
        assert_eq!(c.statics[0].root, std::fs::canonicalize(dir.path().join("files")).unwrap());
    }

    #[test]
    fn bad_static_flags() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        for (spec, why) in [
            ("nodir".to_string(), "expected PREFIX=DIR"),
            (format!("static/={d}"), "must start and end"),
            (format!("/static={d}"), "must start and end"),
            (format!("/a//b/={d}"), "'..' segment"),
            (format!("/a/../={d}"), "'..' segment"),
            ("/s/=/no/such/dir".to_string(), "no such directory"),
        ] {
            let msg = parse(&["--static", &spec, "x"]).unwrap_err().to_string();
            assert!(msg.contains(why), "{spec}: {msg}");
        }
        let spec = format!("/s/={d}");
        let msg = parse(&["--static", &spec, "--static", &spec, "x"]).unwrap_err().to_string();
        assert!(msg.contains("given twice"), "{msg}");
    }
}
