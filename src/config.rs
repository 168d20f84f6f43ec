//! The one typed configuration: command-line flags, the config file
//! (`--config tandem.toml`) and the environment variables gunicorn users
//! expect, parsed and validated once, at start-up.
//!
//! Nothing else in tandem reads flags, files or the environment for
//! settings; every subsystem takes what it needs from [`Config`]. `args`
//! merges the command line with the file, `file` reads the TOML, `routes`
//! owns the route and upstream tables, `statics` the `--static*` flags.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

mod args;
mod file;
mod ops;
mod protocols;
mod routes;
mod statics;

pub use ops::{ControlSocket, OpsOptions, INHERITED_FDS_ENV, INHERITED_METRICS_FD_ENV};
use protocols::ProtocolArgs;
pub use protocols::{Http2Settings, TlsFiles};
pub use routes::{Balance, RouteSpec, Server, ServerAddr, Target, UpstreamEntry, UpstreamSpec};
use statics::StaticArgs;
pub use statics::{parse_static, StaticMount, StaticOptions};

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// An already-open listening socket inherited as descriptor N.
    Fd(i32),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(addr) => write!(f, "{addr}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

/// What the WSGI app is and how to import it.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// `module:callable` as the user wrote it (`module` alone means
    /// `module:application`).
    pub target: String,
    /// Directories put in front of `sys.path` in workers.
    pub pythonpath: Vec<PathBuf>,
    /// The Python interpreter that started tandem; workers run on it.
    pub python: PathBuf,
}

/// Everything tandem runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The app; its `target` is empty when tandem runs without one (a front
    /// node: static and proxy routes only, no workers).
    pub app: AppSpec,
    pub binds: Vec<Bind>,
    /// Worker processes; 0 without an app.
    pub workers: usize,
    /// Requests waiting for a worker before new ones get 503.
    pub backlog: usize,
    /// Largest request body accepted (413 above it).
    pub max_request_body: u64,
    /// Request bodies above this are spilled to a temp file.
    pub request_spill: usize,
    /// Response bytes held in memory per request before spilling to disk.
    pub response_buffer: usize,
    /// A request busier than this gets a 504 and its worker is killed.
    /// `None` disables the limit.
    pub timeout: Option<Duration>,
    /// How long a graceful stop waits for in-flight requests.
    pub graceful_timeout: Duration,
    /// Mount point of the app (`SCRIPT_NAME`).
    pub root_path: String,
    /// Environment set for the workers (`-e KEY=VALUE`).
    pub env: Vec<(String, String)>,
    pub chdir: Option<PathBuf>,
    pub log_level: tracing::Level,
    /// Where the access log goes (`--access-logfile`); `None`: no access log.
    pub access_log: Option<crate::front::AccessLogTarget>,
    pub access_log_format: crate::front::AccessLogFormat,
    /// The front's event loops, one thread each (`front::loops`).
    pub front_threads: usize,
    /// Requests each worker holds at once, one per Python thread.
    pub threads: usize,
    /// A worker retires after this many requests (plus up to
    /// `max_requests_jitter`); 0 never.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// A worker retires once its resident memory passes this (bytes); 0 never.
    pub max_worker_memory: u64,
    /// Reload workers when the app's Python files change.
    pub reload: bool,
    /// Import the app once in a template process and fork workers from it.
    pub preload: bool,
    /// Limits and timeouts the front applies to clients.
    pub client: ClientLimits,
    /// Peers whose X-Forwarded-For/-Proto/-Host (or Forwarded) set
    /// REMOTE_ADDR, wsgi.url_scheme and the Host the app sees.
    pub forwarded_allow_ips: crate::front::TrustedProxies,
    /// Static routes (`--static`), in the order given.
    pub statics: Vec<StaticMount>,
    pub static_options: StaticOptions,
    /// Metrics, control socket and pid file.
    pub ops: OpsOptions,
    /// Routes of the config file's `[[route]]` tables, in file order.
    pub routes: Vec<RouteSpec>,
    /// Upstream pools (`[upstream.NAME]`), by name order.
    pub upstreams: Vec<UpstreamSpec>,
    /// Every connection opens with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
    /// `--certfile`/`--keyfile`: every listener speaks TLS.
    pub tls: Option<TlsFiles>,
    pub http2: Http2Settings,
}

/// What the front tolerates from clients: the size of request heads, how
/// long it waits on a silent client, and how many clients it serves at once.
/// Defaults follow nginx (timeouts) and gunicorn (head limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Longest request line in bytes, without CRLF (414 above it).
    pub request_line: usize,
    /// Most header fields in a request head, or trailer fields (431 above it).
    pub request_fields: usize,
    /// Longest header field line in bytes, name and value (431 above it).
    pub request_field_size: usize,
    /// Longest time to receive a whole request head: from accept for a
    /// connection's first request, from the head's first byte after that.
    pub header_timeout: Duration,
    /// Longest silence while a request body is arriving (408 after it).
    pub body_timeout: Duration,
    /// Longest silence between requests on a kept-alive connection. `None`:
    /// no keep-alive, every connection closes after one response.
    pub keepalive_timeout: Option<Duration>,
    /// Longest stall while writing a response to a client.
    pub send_timeout: Duration,
    /// Connections served at once; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
}

impl ClientLimits {
    /// Refuses values that make no sense or that the front can't honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |flag: &str, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError(format!("--{flag} {value}: must be from {min} to {max}")))
            }
        };
        // The http crate's URI type refuses targets of 65535 bytes or more.
        range("limit-request-line", self.request_line, 64, 65_534)?;
        range("limit-request-fields", self.request_fields, 1, 10_000)?;
        range("limit-request-field-size", self.request_field_size, 64, 65_534)?;
        range("max-connections", self.max_connections, 1, 1 << 20)?;
        for (flag, value) in [
            ("header-timeout", self.header_timeout),
            ("body-timeout", self.body_timeout),
            ("send-timeout", self.send_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("--{flag} must be at least 1 second")));
            }
        }
        Ok(())
    }
}

const ABOUT: &str = "Serve a Python WSGI application: a Rust front (HTTP, buffering) \
and a supervised pool of Python worker processes, in one command.";

/// tandem's command line. Flags mirror gunicorn's where gunicorn has them.
#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version,
    about = ABOUT,
    override_usage = "tandem [OPTIONS] APP_MODULE\n       tandem --config FILE [OPTIONS] [APP_MODULE]",
    after_help = "APP_MODULE is 'module:callable' or 'module' (then 'module:application'), \
e.g. 'mysite.wsgi' or 'hello:app'. With --config, it may come from the file (an 'app' key or \
a route's 'app'), and a file whose routes have no app runs tandem without workers, as a front \
for static files and upstream servers. Every long flag is also a key of the config file; \
flags given on the command line override the file.\n\nSignals: HUP reloads (new workers import the code \
again and take over once all are ready; if the new code fails to import, the old workers keep \
serving; with --certfile, the certificate and key are read again for new connections); TTIN/TTOU add/remove a worker; USR1 reopens the access log; TERM stops gracefully (in-flight requests finish, up to \
--graceful-timeout); INT and QUIT stop at once; USR2 starts a new tandem (the same command, the \
binary now on disk) on the same listening sockets and stops this one gracefully once it serves.\n\n\
Subcommands: 'tandem ctl status|reload|stop|workers +N|-N' and 'tandem top' talk to a running \
tandem over its --control-socket (see 'tandem ctl --help').\n\nExit codes: 2 bad command line, 4 the app \
failed to import, 3 workers failed to boot, 1 other start-up errors."
)]
struct Cli {
    /// The WSGI application, as MODULE:CALLABLE or MODULE.
    #[arg(value_name = "APP_MODULE")]
    app: Option<String>,

    /// Read settings, routes and upstream pools from this TOML file (see
    /// docs/config.md). Flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    config: Option<String>,

    /// Check the configuration, then exit: 0 if it is valid, else 2 with the
    /// error on one line.
    #[arg(long)]
    check_config: bool,

    /// Print the resolved configuration as a config file, then exit.
    #[arg(long)]
    print_config: bool,

    /// Socket to bind: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N. Repeatable.
    /// Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    bind: Vec<String>,

    /// Number of worker processes. Default: $WEB_CONCURRENCY, else the number
    /// of CPU cores. The front absorbs slow clients and reads every request in
    /// full before a worker sees it, so a worker is busy only while the app
    /// runs: one per core keeps the CPUs busy; add more if the app mostly
    /// waits on a database or other services.
    #[arg(short = 'w', long = "workers", value_name = "INT")]
    workers: Option<usize>,

    /// Requests that may wait for a free worker; beyond this, new requests get 503.
    #[arg(long, value_name = "INT", default_value_t = 2048)]
    backlog: usize,

    /// Largest request body in bytes; a larger one gets 413 before it is read.
    #[arg(long, value_name = "BYTES", default_value_t = 100 * 1024 * 1024)]
    max_request_body: u64,

    /// Workers silent for more than this many seconds on a request are killed
    /// and the request gets 504. 0 disables the limit.
    #[arg(short = 't', long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    /// On TERM, how long to wait for in-flight requests before stopping anyway.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    graceful_timeout: u64,

    /// Threads per worker: each worker serves this many requests at once
    /// (like gunicorn's gthread workers). The dispatcher counts a worker as
    /// this many slots.
    #[arg(long, value_name = "INT", default_value_t = 1)]
    threads: usize,

    /// Retire a worker after it has served this many requests (it finishes
    /// the current one first; a new worker takes its place). 0 disables.
    #[arg(long, value_name = "INT", default_value_t = 0)]
    max_requests: u64,

    /// Add a random 0..=N to each worker's --max-requests, so workers don't
    /// all retire at once.
    #[arg(long, value_name = "INT", default_value_t = 0)]
    max_requests_jitter: u64,

    /// Retire a worker whose resident memory grows past this many megabytes,
    /// after the request that took it there. 0 disables.
    #[arg(long, value_name = "MB", default_value_t = 0)]
    max_worker_memory: u64,

    /// Import the app once, in a template process, and fork workers from it:
    /// they share its memory copy-on-write and a replacement starts in
    /// milliseconds. HUP starts a new template, so it still loads new code.
    #[arg(long)]
    preload: bool,

    /// Development: reload the workers when a Python file under the app's
    /// directory (or --pythonpath) changes.
    #[arg(long)]
    reload: bool,

    /// Switch to this directory before loading the app.
    #[arg(long, value_name = "DIR")]
    chdir: Option<PathBuf>,

    /// Comma-separated directories to add to the Python path.
    #[arg(long, value_name = "DIRS")]
    pythonpath: Option<String>,

    /// Set an environment variable for the app. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,

    /// The path the app is mounted at (WSGI SCRIPT_NAME), e.g. /api.
    #[arg(long, value_name = "PATH", env = "SCRIPT_NAME", default_value = "")]
    root_path: String,

    /// Log level: debug, info, warning, error or critical.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,

    /// Write an access log line per request to FILE ('-' for stdout): nginx's
    /// "combined" format followed by the request time in seconds and the pid
    /// of the worker that answered. Reopened on USR1. Relative to --chdir.
    #[arg(long, value_name = "FILE")]
    access_logfile: Option<String>,

    /// Access log line format: 'combined' (nginx's, plus request time and
    /// worker pid) or 'json' (one object per line).
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "combined")]
    access_log_format: crate::front::AccessLogFormat,

    /// The front's event loops, one thread each (nginx's worker_processes).
    /// Default: the number of CPU cores.
    #[arg(long, value_name = "INT", hide = true)]
    front_threads: Option<usize>,

    /// Longest request line in bytes; a longer one gets 414.
    #[arg(long, value_name = "BYTES", default_value_t = 8190)]
    limit_request_line: usize,

    /// Most header fields in a request; more get 431.
    #[arg(long, value_name = "INT", default_value_t = 100)]
    limit_request_fields: usize,

    /// Longest header field (name and value) in bytes; a longer one gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = 8190)]
    limit_request_field_size: usize,

    /// Seconds a client has to send a whole request head (for the first
    /// request, counted from connecting); then the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    header_timeout: u64,

    /// Seconds a request body may stall between reads; then 408.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    body_timeout: u64,

    /// Seconds an idle kept-alive connection stays open waiting for the next
    /// request. 0 disables keep-alive.
    #[arg(long, value_name = "SECONDS", default_value_t = 75)]
    keepalive_timeout: u64,

    /// Seconds a response may stall because the client doesn't read; then the
    /// connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    send_timeout: u64,

    /// Client connections served at once; further ones wait in the listen
    /// backlog until one closes.
    #[arg(long, value_name = "INT", default_value_t = 10_000)]
    max_connections: usize,

    /// Proxies trusted to set the client address, scheme and host
    /// (X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, or Forwarded):
    /// comma-separated addresses or CIDR blocks, or '*'. Clients on a unix
    /// socket are always trusted.
    #[arg(long, value_name = "ADDRS", env = "FORWARDED_ALLOW_IPS", default_value = "127.0.0.1,::1")]
    forwarded_allow_ips: String,
    #[command(flatten)]
    statics: StaticArgs,
    #[command(flatten)]
    ops: ops::OpsArgs,
    #[command(flatten)]
    protocols: ProtocolArgs,
}

/// A command line that can't be run, with a message that says why in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// What the command line asks for.
pub enum Invocation {
    Run(Box<Config>),
    /// `--help` or `--version`: print this to stdout and exit 0.
    Print(String),
}

impl Config {
    /// Parses `args` (without the program name) and the `--config` file
    /// they name. `python` is the interpreter running tandem.
    pub fn from_args(args: Vec<String>, python: PathBuf) -> Result<Invocation, ConfigError> {
        args::from_args(args, python)
    }

    /// Whether tandem runs an app (and so workers) at all.
    pub fn has_app(&self) -> bool {
        !self.app.target.is_empty()
    }
}

impl Cli {
    fn into_config(self, python: PathBuf, file: Option<&file::FileConfig>) -> Result<Config, ConfigError> {
        let err = |msg: String| Err(ConfigError(msg));
        let binds = if let Some(inherited) = ops::inherited_binds()? {
            inherited
        } else if self.bind.is_empty() {
            match std::env::var("PORT") {
                Ok(port) if !port.is_empty() => vec![parse_bind(&format!("0.0.0.0:{port}"))?],
                _ => vec![parse_bind("127.0.0.1:8000")?],
            }
        } else {
            self.bind.iter().map(|b| parse_bind(b)).collect::<Result<_, _>>()?
        };
        let base = match &self.chdir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| ConfigError(format!("current directory: {e}")))?,
        };
        let (routes, upstreams, route_app) = match file {
            Some(file) => routes::from_file(file)?,
            None => (Vec::new(), Vec::new(), None),
        };
        let app = match self.app.or(route_app) {
            Some(app) => {
                if app.is_empty() || app.starts_with(':') || app.ends_with(':') {
                    return err(format!("invalid APP_MODULE '{app}': expected MODULE or MODULE:CALLABLE"));
                }
                app
            }
            None if file.is_some_and(|f| !f.routes.is_empty()) => String::new(),
            None => return err("no APP_MODULE given, and no --config file with routes (see 'tandem --help')".into()),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = match self.workers {
            Some(n) => n,
            None => match std::env::var("WEB_CONCURRENCY") {
                Ok(v) => v.parse().map_err(|_| ConfigError(format!("WEB_CONCURRENCY={v} is not a number")))?,
                Err(_) => cores,
            },
        };
        if workers == 0 && !app.is_empty() {
            return err("--workers must be at least 1".into());
        }
        let workers = if app.is_empty() { 0 } else { workers };
        if self.threads == 0 {
            return err("--threads must be at least 1".into());
        }
        let env = self
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(ConfigError(format!("invalid --env '{kv}': expected KEY=VALUE"))),
            })
            .collect::<Result<_, _>>()?;
        let log_level = match self.log_level.to_ascii_lowercase().as_str() {
            "debug" => tracing::Level::DEBUG,
            "info" => tracing::Level::INFO,
            "warning" | "warn" => tracing::Level::WARN,
            "error" | "critical" => tracing::Level::ERROR,
            other => {
                return err(format!("invalid --log-level '{other}': expected debug, info, warning, error or critical"))
            }
        };
        let root_path = self.root_path.trim_end_matches('/').to_string();
        if !root_path.is_empty() && !root_path.starts_with('/') {
            return err(format!("invalid --root-path '{}': must start with '/'", self.root_path));
        }
        if let Some(dir) = &self.chdir {
            if !dir.is_dir() {
                return err(format!("--chdir {}: no such directory", dir.display()));
            }
        }
        let access_log = match self.access_logfile.as_deref() {
            None => None,
            Some("-") => Some(crate::front::AccessLogTarget::Stdout),
            Some("") => return err("invalid --access-logfile '': expected a file name or '-'".into()),
            Some(path) => Some(crate::front::AccessLogTarget::File(base.join(path))),
        };
        let (statics, static_options) = self.statics.into_config(&base)?;
        let protocols = self.protocols.into_config(&base)?;
        let pythonpath =
            self.pythonpath.iter().flat_map(|p| p.split(',')).filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        let client = ClientLimits {
            request_line: self.limit_request_line,
            request_fields: self.limit_request_fields,
            request_field_size: self.limit_request_field_size,
            header_timeout: Duration::from_secs(self.header_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            keepalive_timeout: (self.keepalive_timeout > 0).then(|| Duration::from_secs(self.keepalive_timeout)),
            send_timeout: Duration::from_secs(self.send_timeout),
            max_connections: self.max_connections,
        };
        client.validate()?;
        let forwarded_allow_ips = crate::front::TrustedProxies::parse(&self.forwarded_allow_ips)
            .map_err(|why| ConfigError(format!("invalid --forwarded-allow-ips: {why}")))?;
        let config = Config {
            app: AppSpec { target: app, pythonpath, python },
            binds,
            workers,
            backlog: self.backlog.max(1),
            max_request_body: self.max_request_body,
            request_spill: 1024 * 1024,
            response_buffer: 1024 * 1024,
            timeout: (self.timeout > 0).then(|| Duration::from_secs(self.timeout)),
            graceful_timeout: Duration::from_secs(self.graceful_timeout),
            root_path,
            env,
            chdir: self.chdir,
            log_level,
            access_log,
            access_log_format: self.access_log_format,
            front_threads: self.front_threads.unwrap_or(cores).max(1),
            threads: self.threads,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            max_worker_memory: self.max_worker_memory.saturating_mul(1024 * 1024),
            reload: self.reload,
            preload: self.preload,
            client,
            forwarded_allow_ips,
            statics,
            static_options,
            ops: self.ops.into_options()?,
            routes,
            upstreams,
            proxy_protocol: protocols.proxy_protocol,
            tls: protocols.tls,
            http2: protocols.http2,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Checks what the types can't (the static routes, see
    /// [`statics::validate`], and that they don't clash with the file's).
    pub fn validate(&self) -> Result<(), ConfigError> {
        statics::validate(&self.statics, &self.static_options)?;
        for mount in &self.statics {
            if self.routes.iter().any(|r| r.host.is_none() && r.prefix == mount.prefix) {
                return Err(ConfigError(format!("--static prefix '{}' is also a [[route]] prefix", mount.prefix)));
            }
        }
        Ok(())
    }

    /// Every static directory served: `--static` flags and static routes.
    pub fn static_mounts(&self) -> Vec<StaticMount> {
        let routes = self.routes.iter().filter_map(|r| match &r.target {
            Target::Static(mount) => Some(mount.clone()),
            _ => None,
        });
        self.statics.iter().cloned().chain(routes).collect()
    }
}

/// Parses one `--bind` value.
pub fn parse_bind(text: &str) -> Result<Bind, ConfigError> {
    let bad = |why: &str| ConfigError(format!("invalid bind address '{text}': {why}"));
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad("empty socket path"));
        }
        return Ok(Bind::Unix(PathBuf::from(path)));
    }
    if let Some(fd) = text.strip_prefix("fd://") {
        let fd: i32 = fd.parse().map_err(|_| bad("expected fd://N"))?;
        if fd < 0 {
            return Err(bad("negative descriptor"));
        }
        return Ok(Bind::Fd(fd));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Bind::Tcp(addr));
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT, unix:PATH or fd://N"))?;
    let port: u16 = port.parse().map_err(|_| bad("port must be a number from 0 to 65535"))?;
    if host.is_empty() {
        return Ok(Bind::Tcp(SocketAddr::from(([0, 0, 0, 0], port))));
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(|| bad("unclosed '[' in IPv6 address"))?,
        None if host.contains(':') => return Err(bad("IPv6 addresses go in brackets, like [::1]:8000")),
        None if host.contains(']') => return Err(bad("stray ']'")),
        None => host,
    };
    let mut addrs = (host, port).to_socket_addrs().map_err(|e| bad(&format!("cannot resolve host: {e}")))?;
    addrs.next().map(Bind::Tcp).ok_or_else(|| bad("host resolves to no address"))
}

/// Parses a command line that must run (tests of this module and its children).
#[cfg(test)]
fn parse_for_test(args: &[&str]) -> Result<Config, ConfigError> {
    match Config::from_args(args.iter().map(|s| s.to_string()).collect(), "python3".into())? {
        Invocation::Run(config) => Ok(*config),
        Invocation::Print(_) => panic!("expected a config"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::parse_for_test as parse;

    #[test]
    fn bind_forms() {
        assert_eq!(parse_bind("127.0.0.1:80").unwrap(), Bind::Tcp("127.0.0.1:80".parse().unwrap()));
        assert_eq!(parse_bind("[::1]:0").unwrap(), Bind::Tcp("[::1]:0".parse().unwrap()));
        assert_eq!(parse_bind("unix:/run/x.sock").unwrap(), Bind::Unix("/run/x.sock".into()));
        assert_eq!(parse_bind("fd://3").unwrap(), Bind::Fd(3));
        assert_eq!(parse_bind(":8080").unwrap(), Bind::Tcp("0.0.0.0:8080".parse().unwrap()));
        assert!(matches!(parse_bind("localhost:9000").unwrap(), Bind::Tcp(a) if a.port() == 9000));
    }

    #[test]
    fn bad_binds_name_the_problem() {
        for bad in ["nope", "1.2.3.4:99999", "unix:", "fd://x", "host:port", "[::1:0", "[::1:80", "::1:80", "a]:1"] {
            let msg = parse_bind(bad).unwrap_err().to_string();
            assert!(msg.contains(bad), "{msg}");
        }
    }

    #[test]
    fn flags_become_config() {
        let c = parse(&[
            "-w",
            "3",
            "-b",
            "unix:/tmp/a",
            "-b",
            "[::1]:0",
            "-e",
            "A=b=c",
            "--root-path",
            "/api/",
            "hello:app",
        ])
        .unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.binds.len(), 2);
        assert_eq!(c.env, vec![("A".to_string(), "b=c".to_string())]);
        assert_eq!(c.root_path, "/api");
        assert_eq!(c.app.target, "hello:app");
        assert_eq!(c.timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn errors_are_one_line() {
        for args in [&["--bogus", "x"][..], &["-w", "zero", "x"], &["-w", "0", "x"], &["--env", "NOEQ", "x"], &[]] {
            let msg = parse(args).unwrap_err().to_string();
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }

    #[test]
    fn client_limits_have_defaults_and_bounds() {
        let c = parse(&["x"]).unwrap().client;
        assert_eq!((c.request_line, c.request_fields, c.request_field_size), (8190, 100, 8190));
        assert_eq!(c.keepalive_timeout, Some(Duration::from_secs(75)));
        assert_eq!(c.header_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, 10_000);
        let c = parse(&["--keepalive-timeout", "0", "--max-connections", "2", "x"]).unwrap().client;
        assert_eq!((c.keepalive_timeout, c.max_connections), (None, 2));
        for bad in [
            &["--limit-request-line", "70000", "x"][..],
            &["--limit-request-fields", "0", "x"],
            &["--limit-request-field-size", "10", "x"],
            &["--header-timeout", "0", "x"],
            &["--max-connections", "0", "x"],
        ] {
            let msg = parse(bad).unwrap_err().to_string();
            assert!(msg.contains(bad[0]), "{msg}");
        }
    }

    #[test]
    fn help_mentions_the_worker_default() {
        let args = vec!["--help".to_string()];
        match Config::from_args(args, "python3".into()).unwrap() {
            Invocation::Print(text) => assert!(text.contains("WEB_CONCURRENCY")),
            Invocation::Run(_) => panic!("--help must print"),
        }
    }
}
