//! Which handler answers a request: a pure function of the request's host
//! and path, with no I/O.
//!
//! The table is built once from [`Config`]: one static route per `--static
//! PREFIX=DIR`, the config file's `[[route]]` tables, and the app (when
//! there is one) as the default route; without an app, a request no route
//! takes is 404. Routes for the request's host are tried before routes for
//! any host, as nginx picks the server block before the location; within
//! each, the longest matching prefix wins. A client's request that lands on
//! an internal route is 404 (as nginx's `internal` locations): they are
//! reached only through [`Router::internal`], for `X-Accel-Redirect`.
//!
//! Prefixes are compared with the raw (still percent-encoded) path, byte for
//! byte: `/st%61tic/x` is not under `/static/`, so it goes to the app, which
//! sees exactly what the client sent. Making the rest of the path safe to
//! join to a directory is `static_files::path`'s job, not the router's.

use crate::config::{Config, RouteSpec, StaticMount, Target};

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A file under `mount.root`; `rest` is the raw path after the prefix
    /// (no leading '/').
    Static { mount: &'a StaticMount, rest: &'a str },
    /// An upstream pool (index into `Config::upstreams`).
    Proxy(usize),
    /// The app's worker pool.
    App,
    /// No route (tandem runs without an app), or an internal one.
    NotFound,
}

/// The route table.
#[derive(Debug, Default)]
pub struct Router {
    /// Longest prefix first, so the first match is the longest.
    routes: Vec<RouteSpec>,
    has_app: bool,
    /// Some route is for one host only.
    by_host: bool,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let statics = config.statics.iter().map(|m| RouteSpec {
            prefix: m.prefix.clone(),
            host: None,
            target: Target::Static(m.clone()),
            internal: false,
        });
        Router::from_routes(statics.chain(config.routes.iter().cloned()).collect(), config.has_app())
    }

    pub fn from_routes(mut routes: Vec<RouteSpec>, has_app: bool) -> Router {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let by_host = routes.iter().any(|r| r.host.is_some());
        Router { routes, has_app, by_host }
    }

    /// Whether a request's host can change its route: when no route names
    /// one, [`Router::route`] needs no host.
    pub fn by_host(&self) -> bool {
        self.by_host
    }

    /// The route for a client's request: `host` is the `Host` header's name
    /// (lowercase, no port), `path` is `uri.path()`, without the query.
    pub fn route<'a>(&'a self, host: Option<&str>, path: &'a str) -> Route<'a> {
        let for_host = self.routes.iter().filter(|r| host.is_some() && r.host.as_deref() == host);
        let for_any = self.routes.iter().filter(|r| r.host.is_none());
        for route in for_host.chain(for_any) {
            if let Some(rest) = path.strip_prefix(route.prefix.as_str()) {
                return match &route.target {
                    _ if route.internal => Route::NotFound,
                    Target::Static(mount) => Route::Static { mount, rest },
                    Target::Proxy(i) => Route::Proxy(*i),
                    Target::App => Route::App,
                };
            }
        }
        if self.has_app {
            Route::App
        } else {
            Route::NotFound
        }
    }

    /// Whether any route is internal: without one, `X-Accel-Redirect` passes
    /// through untouched, for a front further up to act on.
    pub fn has_internal(&self) -> bool {
        self.routes.iter().any(|r| r.internal)
    }

    /// The internal static location a path names (`X-Accel-Redirect`).
    pub fn internal<'a>(&'a self, path: &'a str) -> Option<(&'a StaticMount, &'a str)> {
        self.routes.iter().filter(|r| r.internal).find_map(|r| match &r.target {
            Target::Static(mount) => path.strip_prefix(r.prefix.as_str()).map(|rest| (mount, rest)),
            _ => None,
        })
    }

    /// The internal static location holding a file (`X-Sendfile`), with the
    /// file's path under it.
    pub fn internal_file(&self, file: &str) -> Option<(&StaticMount, String)> {
        self.routes.iter().filter(|r| r.internal).find_map(|r| match &r.target {
            Target::Static(mount) => {
                let root = mount.root.to_str()?;
                let rest = file.strip_prefix(root)?.strip_prefix('/')?;
                Some((mount, rest.to_string()))
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, host: Option<&str>, target: Target) -> RouteSpec {
        RouteSpec { prefix: prefix.into(), host: host.map(Into::into), target, internal: false }
    }

    fn mount(prefix: &str, root: &str) -> RouteSpec {
        route(prefix, None, Target::Static(StaticMount { prefix: prefix.into(), root: root.into() }))
    }

    fn static_router(mounts: Vec<RouteSpec>) -> Router {
        Router::from_routes(mounts, true)
    }

    fn root_of<'a>(router: &'a Router, path: &'a str) -> Option<(&'a str, &'a str)> {
        match router.route(None, path) {
            Route::Static { mount, rest } => Some((mount.root.to_str().unwrap(), rest)),
            _ => None,
        }
    }

    #[test]
    fn app_is_the_default_route() {
        let router = static_router(vec![]);
        assert_eq!(router.route(None, "/"), Route::App);
        assert_eq!(router.route(None, "/static/app.css"), Route::App);
        assert_eq!(Router::from_routes(vec![], false).route(None, "/"), Route::NotFound);
    }

    #[test]
    fn prefix_match_gives_the_rest() {
        let router = static_router(vec![mount("/static/", "/s"), mount("/media/", "/m")]);
        assert_eq!(root_of(&router, "/static/css/app.css"), Some(("/s", "css/app.css")));
        assert_eq!(root_of(&router, "/media/a.png"), Some(("/m", "a.png")));
        assert_eq!(root_of(&router, "/static/"), Some(("/s", "")));
    }

    #[test]
    fn near_misses_go_to_the_app() {
        let router = static_router(vec![mount("/static/", "/s")]);
        for path in ["/static", "/staticfoo/x", "/Static/x", "/st%61tic/x", "/x/static/y", ""] {
            assert_eq!(router.route(None, path), Route::App, "{path}");
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let mounts = [mount("/static/", "/s"), mount("/static/big/", "/b"), mount("/", "/root")];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let router = static_router(order.map(|i| mounts[i].clone()).to_vec());
            assert_eq!(root_of(&router, "/static/big/x.bin"), Some(("/b", "x.bin")));
            assert_eq!(root_of(&router, "/static/bigger"), Some(("/s", "bigger")));
            assert_eq!(root_of(&router, "/static/a.css"), Some(("/s", "a.css")));
            assert_eq!(root_of(&router, "/other"), Some(("/root", "other")));
        }
    }

    #[test]
    fn host_routes_come_first_and_proxies_route() {
        let router = Router::from_routes(
            vec![route("/", None, Target::App), route("/", Some("api.test"), Target::Proxy(0)), mount("/s/", "/s")],
            false,
        );
        assert_eq!(router.route(Some("api.test"), "/s/x"), Route::Proxy(0));
        assert_eq!(router.route(Some("www.test"), "/x"), Route::App);
        assert!(matches!(router.route(Some("www.test"), "/s/x"), Route::Static { .. }));
        assert_eq!(router.route(None, "/x"), Route::App);
    }

    #[test]
    fn internal_routes_are_hidden_from_clients() {
        let mut protected = mount("/protected/", "/files");
        protected.internal = true;
        let router = Router::from_routes(vec![protected], true);
        assert_eq!(router.route(None, "/protected/a.pdf"), Route::NotFound);
        assert_eq!(router.route(None, "/protected"), Route::App);
        assert_eq!(router.internal("/protected/a.pdf").map(|(_, rest)| rest), Some("a.pdf"));
        assert_eq!(router.internal_file("/files/d/a.pdf").map(|(_, rest)| rest), Some("d/a.pdf".to_string()));
        assert!(router.internal_file("/filesx/a.pdf").is_none());
        assert!(router.internal("/other").is_none());
    }
}
