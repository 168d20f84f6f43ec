//! Routes and upstream pools: the `[[route]]` and `[upstream.NAME]` tables
//! of the config file, what they resolve to, and their checks.
//!
//! A route maps a path prefix (and optionally a host) to one handler: a
//! static directory, the app, or an upstream pool. `--static PREFIX=DIR`
//! flags add static routes; the app, when there is one, answers what no
//! route takes. How requests are matched is the router's business, how
//! they are forwarded the proxy's.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file::FileConfig;
use super::{ConfigError, StaticMount};

/// One `[[route]]` table as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteEntry {
    /// URL path prefix, starting with '/'.
    pub prefix: String,
    /// Only requests for this host (the `Host` header, without port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// A static route clients can't request: reached only through
    /// `X-Accel-Redirect` or `X-Sendfile` from the app or an upstream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

/// How a pool picks a server for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The server with the fewest requests in flight (per unit of weight).
    #[default]
    LeastOutstanding,
    /// Each server in turn, as often as its weight says.
    RoundRobin,
}

fn default_connect_timeout() -> f64 {
    5.0
}
fn default_timeout() -> f64 {
    60.0
}
fn default_max_fails() -> u32 {
    3
}
fn default_fail_timeout() -> f64 {
    10.0
}
fn default_health_interval() -> f64 {
    5.0
}
fn default_keepalive() -> usize {
    32
}
fn default_keepalive_timeout() -> f64 {
    60.0
}

/// One `[upstream.NAME]` table as written. Times are in seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamEntry {
    /// `HOST:PORT`, `[IPV6]:PORT` or `unix:PATH`, each optionally followed
    /// by ` weight=N`.
    pub servers: Vec<String>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: f64,
    /// From the request sent to the response head.
    #[serde(default = "default_timeout")]
    pub response_timeout: f64,
    /// Longest silence while the response body arrives.
    #[serde(default = "default_timeout")]
    pub idle_timeout: f64,
    /// Consecutive failures that eject a server...
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// ...for this long.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: f64,
    /// Path to GET on every server every `health-interval`; a server that
    /// doesn't answer 2xx or 3xx is out until it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    #[serde(default = "default_health_interval")]
    pub health_interval: f64,
    /// Idle keep-alive connections kept per server.
    #[serde(default = "default_keepalive")]
    pub keepalive: usize,
    /// How long an idle keep-alive connection is kept.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: f64,
}

/// Where an upstream server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp(addr) => write!(f, "{addr}"),
            ServerAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub addr: ServerAddr,
    pub weight: u32,
}

/// An upstream pool, checked.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    pub servers: Vec<Server>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub health_check: Option<String>,
    pub health_interval: Duration,
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    /// The table as written, for `--print-config`.
    pub entry: UpstreamEntry,
}

/// What a route leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Static(StaticMount),
    App,
    /// Index into [`Config::upstreams`](super::Config::upstreams).
    Proxy(usize),
}

/// One route, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: String,
    /// Lowercase host name, no port.
    pub host: Option<String>,
    pub target: Target,
    pub internal: bool,
}

/// Parses one server: `ADDRESS [weight=N]`.
pub fn parse_server(text: &str) -> Result<Server, String> {
    let mut words = text.split_whitespace();
    let addr = words.next().ok_or("empty server address")?;
    let mut weight = 1;
    for word in words {
        match word.strip_prefix("weight=").map(str::parse::<u32>) {
            Some(Ok(w)) if (1..=1000).contains(&w) => weight = w,
            _ => return Err(format!("server '{text}': '{word}': expected weight=N, N from 1 to 1000")),
        }
    }
    let bad = |why: &str| format!("server '{addr}': {why}");
    let addr = if let Some(path) = addr.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad("empty socket path"));
        }
        ServerAddr::Unix(PathBuf::from(path))
    } else {
        let mut found = addr.to_socket_addrs().map_err(|e| bad(&format!("expected HOST:PORT or unix:PATH ({e})")))?;
        ServerAddr::Tcp(found.next().ok_or_else(|| bad("host resolves to no address"))?)
    };
    Ok(Server { addr, weight })
}

fn seconds(key: &str, value: f64) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("'{key}' must be a positive number of seconds"))
    }
}

impl UpstreamEntry {
    /// Checks the table and resolves its servers.
    pub fn resolve(&self, name: &str) -> Result<UpstreamSpec, String> {
        if self.servers.is_empty() {
            return Err("'servers' is empty".into());
        }
        let servers = self.servers.iter().map(|s| parse_server(s)).collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &self.health_check {
            if !path.starts_with('/') {
                return Err(format!("'health-check' must be a path starting with '/', not '{path}'"));
            }
        }
        if self.max_fails == 0 {
            return Err("'max-fails' must be at least 1".into());
        }
        Ok(UpstreamSpec {
            name: name.to_string(),
            servers,
            balance: self.balance,
            connect_timeout: seconds("connect-timeout", self.connect_timeout)?,
            response_timeout: seconds("response-timeout", self.response_timeout)?,
            idle_timeout: seconds("idle-timeout", self.idle_timeout)?,
            max_fails: self.max_fails,
            fail_timeout: seconds("fail-timeout", self.fail_timeout)?,
            health_check: self.health_check.clone(),
            health_interval: seconds("health-interval", self.health_interval)?,
            keepalive: self.keepalive,
            keepalive_timeout: seconds("keepalive-timeout", self.keepalive_timeout)?,
            entry: self.clone(),
        })
    }
}

impl RouteEntry {
    /// Checks the route; a relative static directory is taken from `base`.
    /// Returns it with the app it names, if any.
    pub fn resolve(&self, base: &Path, upstreams: &[UpstreamSpec]) -> Result<(RouteSpec, Option<String>), String> {
        let prefix = &self.prefix;
        if !prefix.starts_with('/') || prefix.contains("//") || prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(format!("prefix '{prefix}': must start with '/' and have no empty, '.' or '..' segment"));
        }
        let host = match &self.host {
            Some(h) if h.is_empty() || h.contains(['/', ' ']) => return Err(format!("host '{h}' is not a host name")),
            Some(h) => Some(h.to_ascii_lowercase()),
            None => None,
        };
        let targets = [self.static_dir.is_some(), self.app.is_some(), self.proxy.is_some()];
        if targets.iter().filter(|t| **t).count() != 1 {
            return Err("a route needs exactly one of 'static', 'app' or 'proxy'".into());
        }
        if self.internal && self.static_dir.is_none() {
            return Err("'internal' is for static routes".into());
        }
        let target = if let Some(dir) = &self.static_dir {
            if !prefix.ends_with('/') {
                return Err(format!("static prefix '{prefix}' must end with '/'"));
            }
            let root = base.join(dir);
            let root =
                std::fs::canonicalize(&root).map_err(|_| format!("static '{}': no such directory", dir.display()))?;
            if !root.is_dir() {
                return Err(format!("static '{}': not a directory", dir.display()));
            }
            Target::Static(StaticMount { prefix: prefix.clone(), root })
        } else if let Some(name) = &self.proxy {
            let index = upstreams.iter().position(|u| &u.name == name);
            let index = index.ok_or_else(|| format!("proxy '{name}': no [upstream.{name}] table"))?;
            Target::Proxy(index)
        } else {
            Target::App
        };
        Ok((RouteSpec { prefix: prefix.clone(), host, target, internal: self.internal }, self.app.clone()))
    }
}

/// Refuses two routes with the same host and prefix.
pub fn check_unique(routes: &[RouteSpec]) -> Result<(), String> {
    for (i, route) in routes.iter().enumerate() {
        if routes[..i].iter().any(|r| r.prefix == route.prefix && r.host == route.host) {
            let host = route.host.as_deref().map(|h| format!(" for host '{h}'")).unwrap_or_default();
            return Err(format!("route prefix '{}'{host} given twice", route.prefix));
        }
    }
    Ok(())
}

/// The file's routes and upstream pools, checked, and the app its routes
/// name. Relative static directories are taken from the file's directory.
pub type Tables = (Vec<RouteSpec>, Vec<UpstreamSpec>, Option<String>);

pub fn from_file(file: &FileConfig) -> Result<Tables, ConfigError> {
    let at = |line: usize, what: &str, why: String| ConfigError(format!("{}:{line}: {what}: {why}", file.name));
    let mut upstreams = Vec::new();
    for (line, name, entry) in &file.upstreams {
        upstreams.push(entry.resolve(name).map_err(|why| at(*line, &format!("[upstream.{name}]"), why))?);
    }
    let base = std::path::Path::new(&file.name).parent().map(PathBuf::from).unwrap_or_default();
    let base = std::fs::canonicalize(if base.as_os_str().is_empty() { ".".into() } else { base })
        .map_err(|e| ConfigError(format!("{}: {e}", file.name)))?;
    let mut routes = Vec::new();
    let mut app: Option<String> = None;
    for (line, entry) in &file.routes {
        let what = format!("[[route]] prefix '{}'", entry.prefix);
        let (route, route_app) = entry.resolve(&base, &upstreams).map_err(|why| at(*line, &what, why))?;
        if let Some(name) = route_app {
            match &app {
                Some(other) if *other != name => {
                    return Err(at(*line, &what, format!("a second app '{name}' (only one app, '{other}', for now)")))
                }
                _ => app = Some(name),
            }
        }
        routes.push(route);
        check_unique(&routes).map_err(|why| at(*line, &what, why))?;
    }
    Ok((routes, upstreams, app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        let s = parse_server("127.0.0.1:8001 weight=3").unwrap();
        assert_eq!((s.addr, s.weight), (ServerAddr::Tcp("127.0.0.1:8001".parse().unwrap()), 3));
        assert_eq!(parse_server("[::1]:80").unwrap().addr, ServerAddr::Tcp("[::1]:80".parse().unwrap()));
        assert_eq!(parse_server("unix:/run/a.sock").unwrap().addr, ServerAddr::Unix("/run/a.sock".into()));
        for bad in ["", "unix:", "nohost", "1.2.3.4:1 weight=0", "1.2.3.4:1 heavy"] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    fn entry(text: &str) -> UpstreamEntry {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn upstream_defaults_and_checks() {
        let u = entry("servers = [\"127.0.0.1:1\"]").resolve("a").unwrap();
        assert_eq!(u.balance, Balance::LeastOutstanding);
        assert_eq!((u.connect_timeout, u.max_fails), (Duration::from_secs(5), 3));
        assert!(entry("servers = []").resolve("a").is_err());
        assert!(entry("servers = [\"127.0.0.1:1\"]\nhealth-check = \"x\"").resolve("a").is_err());
        assert!(entry("servers = [\"127.0.0.1:1\"]\nconnect-timeout = 0").resolve("a").is_err());
        let u = entry("servers = [\"127.0.0.1:1\"]\nbalance = \"round-robin\"\nresponse-timeout = 0.5").resolve("a");
        assert_eq!(u.unwrap().response_timeout, Duration::from_millis(500));
    }

    #[test]
    fn routes_need_one_target() {
        let ups = [entry("servers = [\"127.0.0.1:1\"]").resolve("apps").unwrap()];
        let route = |text: &str| toml::from_str::<RouteEntry>(text).unwrap().resolve(Path::new("/"), &ups);
        assert_eq!(route("prefix = \"/\"\nproxy = \"apps\"").unwrap().0.target, Target::Proxy(0));
        assert!(route("prefix = \"/\"\nproxy = \"nope\"").unwrap_err().contains("[upstream.nope]"));
        assert!(route("prefix = \"/\"").unwrap_err().contains("exactly one"));
        assert!(route("prefix = \"/\"\napp = \"a\"\nproxy = \"apps\"").unwrap_err().contains("exactly one"));
        assert!(route("prefix = \"/s/\"\nstatic = \"/no/such\"").unwrap_err().contains("no such directory"));
        assert!(route("prefix = \"x\"\napp = \"a\"").is_err());
        assert!(route("prefix = \"/\"\napp = \"a\"\ninternal = true").is_err());
        let (spec, app) = route("prefix = \"/api/\"\nhost = \"Example.COM\"\napp = \"a:b\"").unwrap();
        assert_eq!((spec.host.as_deref(), app.as_deref()), (Some("example.com"), Some("a:b")));
    }
}
