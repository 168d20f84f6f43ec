//! Putting the command line and the config file together: the file's keys
//! become arguments placed before the real ones (and dropped for flags the
//! command line gives), everything goes through the one clap parser, and
//! `--print-config` renders the result back as a config file.
//!
//! Errors that come from a file key name the file, line and key. What the
//! values mean is `config`'s business; TOML is `file`'s.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::file::{self, FileConfig, FlagEntry};
use super::{Cli, Config, ConfigError, Invocation, Target};

/// Keys that exist as flags but mean nothing in a file.
const NOT_IN_FILE: [&str; 5] = ["config", "check-config", "print-config", "help", "version"];

/// Parses `args` (without the program name), reading the `--config` file
/// they name, if any.
pub fn from_args(args: Vec<String>, python: std::path::PathBuf) -> Result<Invocation, ConfigError> {
    let cli_matches = match matches(&args)? {
        Parsed::Matches(m) => m,
        Parsed::Print(text) => return Ok(Invocation::Print(text)),
    };
    let file = match cli_matches.get_one::<String>("config") {
        Some(path) => Some(file::load(path)?),
        None => None,
    };
    let mut argv = Vec::new();
    let mut used: Vec<&FlagEntry> = Vec::new();
    if let Some(file) = &file {
        for flag in &file.flags {
            let id = flag_id(file, flag)?;
            if cli_matches.value_source(&id) == Some(ValueSource::CommandLine) {
                continue;
            }
            // Alone first, so that a bad value is blamed on its line.
            let alone = std::iter::once("tandem".to_string()).chain(flag.args.iter().cloned());
            if let Err(err) = Cli::command().try_get_matches_from(alone) {
                return Err(at_key(file, flag, &one_line(&err)));
            }
            argv.extend(flag.args.iter().cloned());
            used.push(flag);
        }
    }
    argv.extend(args);
    let matches = match matches(&argv)? {
        Parsed::Matches(m) => m,
        Parsed::Print(text) => return Ok(Invocation::Print(text)),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| ConfigError(one_line(&e)))?;
    let (check, print) = (cli.check_config, cli.print_config);
    let config = cli.into_config(python, file.as_ref()).map_err(|err| match &file {
        Some(file) => blame(file, &used, err),
        None => err,
    })?;
    if print {
        return Ok(Invocation::Print(render(&matches, &config)));
    }
    if check {
        return Ok(Invocation::Print(String::new()));
    }
    Ok(Invocation::Run(Box::new(config)))
}

enum Parsed {
    Matches(ArgMatches),
    Print(String),
}

fn matches(args: &[String]) -> Result<Parsed, ConfigError> {
    let argv = std::iter::once("tandem".to_string()).chain(args.iter().cloned());
    match Cli::command().try_get_matches_from(argv) {
        Ok(m) => Ok(Parsed::Matches(m)),
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return Ok(Parsed::Print(err.render().to_string()));
            }
            Err(ConfigError(format!("{} (see 'tandem --help')", one_line(&err))))
        }
    }
}

/// clap explains over several lines; keep the explanation (not the usage
/// and tips) on one line.
fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let explanation = text.split("\n\n").next().unwrap_or("invalid arguments");
    let joined = explanation.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.strip_prefix("error: ").unwrap_or(&joined).to_string()
}

/// The clap id of the flag a key names.
fn flag_id(file: &FileConfig, flag: &FlagEntry) -> Result<String, ConfigError> {
    if flag.key == "app" {
        return Ok("app".into());
    }
    let cmd = Cli::command();
    if NOT_IN_FILE.contains(&flag.key.as_str()) {
        return Err(at_key(file, flag, "not a setting for a config file"));
    }
    let found = cmd.get_arguments().find(|a| a.get_long() == Some(flag.key.as_str())).map(|a| a.get_id().to_string());
    match found {
        Some(id) => Ok(id),
        None => {
            let longs = cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| !NOT_IN_FILE.contains(l));
            let longs: Vec<&str> = longs.chain(["app", "listen", "route", "upstream"]).collect();
            let hint = match file::suggest(&flag.key, longs) {
                Some(s) => format!(" (did you mean '{s}'?)"),
                None => " (keys are the long flags of 'tandem --help')".into(),
            };
            Err(at_key(file, flag, &format!("no such setting{hint}")))
        }
    }
}

fn at_key(file: &FileConfig, flag: &FlagEntry, why: &str) -> ConfigError {
    ConfigError(format!("{}:{}: key '{}': {why}", file.name, flag.line, flag.key))
}

/// An error about a flag that came from the file names the file's line.
fn blame(file: &FileConfig, used: &[&FlagEntry], err: ConfigError) -> ConfigError {
    let msg = err.to_string();
    if msg.starts_with(&format!("{}:", file.name)) {
        return err;
    }
    for flag in used {
        let mentioned = msg.contains(&format!("--{} ", flag.key))
            || msg.contains(&format!("--{}:", flag.key))
            || msg.contains(&format!("--{}=", flag.key))
            || msg.contains(&format!("--{} must", flag.key))
            || msg.contains(&format!("'{}'", flag.args.join(" ").trim_start_matches("--").replace('=', " ")));
        let bind = flag.key == "bind" && msg.starts_with("invalid bind address");
        if mentioned || bind {
            return at_key(file, flag, &msg);
        }
    }
    err
}

/// The resolved configuration as a config file: every flag with the value
/// it ends up with, then the routes and upstream pools.
fn render(matches: &ArgMatches, config: &Config) -> String {
    let mut table = toml::Table::new();
    for arg in Cli::command().get_arguments() {
        let id = arg.get_id().as_str();
        let Some(key) = arg.get_long().or((id == "app").then_some("app")) else { continue };
        if NOT_IN_FILE.contains(&key) || matches.value_source(id).is_none() {
            continue;
        }
        let value = match arg.get_action() {
            ArgAction::SetTrue => toml::Value::Boolean(matches.get_flag(id)),
            ArgAction::Append => {
                let raw = matches.get_raw(id).into_iter().flatten();
                toml::Value::Array(raw.map(|v| scalar(&v.to_string_lossy())).collect())
            }
            _ => match matches.get_raw(id).and_then(|mut v| v.next()) {
                Some(v) => scalar(&v.to_string_lossy()),
                None => continue,
            },
        };
        table.insert(key.to_string(), value);
    }
    if !table.contains_key("workers") {
        table.insert("workers".into(), toml::Value::Integer(config.workers as i64));
    }
    if !config.routes.is_empty() {
        let routes = config.routes.iter().map(|r| {
            let mut t = toml::Table::new();
            t.insert("prefix".into(), r.prefix.clone().into());
            if let Some(host) = &r.host {
                t.insert("host".into(), host.clone().into());
            }
            match &r.target {
                Target::Static(m) => t.insert("static".into(), m.root.display().to_string().into()),
                Target::App => t.insert("app".into(), config.app.target.clone().into()),
                Target::Proxy(i) => t.insert("proxy".into(), config.upstreams[*i].name.clone().into()),
            };
            if r.internal {
                t.insert("internal".into(), true.into());
            }
            toml::Value::Table(t)
        });
        table.insert("route".into(), toml::Value::Array(routes.collect()));
    }
    if !config.upstreams.is_empty() {
        let mut ups = toml::Table::new();
        for u in &config.upstreams {
            if let Ok(toml::Value::Table(t)) = toml::Value::try_from(&u.entry) {
                ups.insert(u.name.clone(), toml::Value::Table(t));
            }
        }
        table.insert("upstream".into(), toml::Value::Table(ups));
    }
    toml::to_string(&table).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
}

fn scalar(text: &str) -> toml::Value {
    match text.parse::<i64>() {
        Ok(i) if i.to_string() == text => toml::Value::Integer(i),
        _ => toml::Value::String(text.to_string()),
    }
}
