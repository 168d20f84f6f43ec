//! Which handler answers a request: a pure function of the request path
//! (and, once virtual hosts exist, the host), with no I/O.
//!
//! The table is built once from [`Config`](crate::config::Config): one
//! static route per `--static PREFIX=DIR`, and the app as the default
//! route. The longest matching prefix wins, as DESIGN.md's route rules say.
//! Prefixes are compared with the raw (still percent-encoded) path, byte for
//! byte: `/st%61tic/x` is not under `/static/`, so it goes to the app, which
//! sees exactly what the client sent. Making the rest of the path safe to
//! join to a directory is `static_files::path`'s job, not the router's.

use crate::config::StaticMount;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A file under `mount.root`; `rest` is the raw path after the prefix
    /// (no leading '/').
    Static { mount: &'a StaticMount, rest: &'a str },
    /// The app's worker pool.
    App,
}

/// The route table.
#[derive(Debug, Default)]
pub struct Router {
    /// Longest prefix first, so the first match is the longest.
    statics: Vec<StaticMount>,
}

impl Router {
    pub fn new(statics: &[StaticMount]) -> Router {
        let mut statics = statics.to_vec();
        statics.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Router { statics }
    }

    /// The route for a request path (`uri.path()`, without the query).
    pub fn route<'a>(&'a self, path: &'a str) -> Route<'a> {
        for mount in &self.statics {
            if let Some(rest) = path.strip_prefix(mount.prefix.as_str()) {
                return Route::Static { mount, rest };
            }
        }
        Route::App
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(prefix: &str, root: &str) -> StaticMount {
        StaticMount {
            prefix: prefix.into(),
            root: root.into(),
        }
    }

    fn root_of<'a>(router: &'a Router, path: &'a str) -> Option<(&'a str, &'a str)> {
        match router.route(path) {
            Route::Static { mount, rest } => Some((mount.root.to_str().unwrap(), rest)),
            Route::App => None,
        }
    }

    #[test]
    fn app_is_the_default_route() {
        let router = Router::new(&[]);
        assert_eq!(router.route("/"), Route::App);
        assert_eq!(router.route("/static/app.css"), Route::App);
    }

    #[test]
    fn prefix_match_gives_the_rest() {
        let router = Router::new(&[mount("/static/", "/s"), mount("/media/", "/m")]);
        assert_eq!(root_of(&router, "/static/css/app.css"), Some(("/s", "css/app.css")));
        assert_eq!(root_of(&router, "/media/a.png"), Some(("/m", "a.png")));
        assert_eq!(root_of(&router, "/static/"), Some(("/s", "")));
    }

    #[test]
    fn near_misses_go_to_the_app() {
        let router = Router::new(&[mount("/static/", "/s")]);
        for path in ["/static", "/staticfoo/x", "/Static/x", "/st%61tic/x", "/x/static/y", ""] {
            assert_eq!(router.route(path), Route::App, "{path}");
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let mounts = [
            mount("/static/", "/s"),
            mount("/static/big/", "/b"),
            mount("/", "/root"),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let router = Router::new(&order.map(|i| mounts[i].clone()));
            assert_eq!(root_of(&router, "/static/big/x.bin"), Some(("/b", "x.bin")));
            assert_eq!(root_of(&router, "/static/bigger"), Some(("/s", "bigger")));
            assert_eq!(root_of(&router, "/static/a.css"), Some(("/s", "a.css")));
            assert_eq!(root_of(&router, "/other"), Some(("/root", "other")));
        }
    }
}
