//! The TOML config file (`--config tandem.toml`): read, checked and turned
//! into what the command line would say.
//!
//! Every top-level key is the long name of a command-line flag (`workers =
//! 4`, `max-requests = 1000`, `bind = ["127.0.0.1:8000"]`, `static-compress
//! = true`): it becomes `--workers=4` and so on, placed before the real
//! arguments and parsed by the same clap parser, so a flag added to the
//! command line has a key with no code here. The key `app` is the
//! APP_MODULE argument. The tables are `[[listen]]` (each `bind` becomes a
//! `--bind`), `[[route]]` and `[upstream.NAME]` (see `routes`). A flag given
//! on the command line replaces the file's key for it.
//!
//! What the values mean is the rest of `config`'s business; this module
//! only knows TOML, file positions and how keys map to flags.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::routes::{RouteEntry, UpstreamEntry};
use super::ConfigError;

/// One top-level key, as command-line arguments.
#[derive(Debug, Clone)]
pub struct FlagEntry {
    /// The key, which is the flag's long name (or `app`).
    pub key: String,
    pub line: usize,
    /// `--key=value` for each value (the bare value for `app`).
    pub args: Vec<String>,
}

/// A config file, parsed.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// The file's name as the user gave it, for messages.
    pub name: String,
    pub flags: Vec<FlagEntry>,
    /// `[[route]]` tables with their line numbers.
    pub routes: Vec<(usize, RouteEntry)>,
    /// `[upstream.NAME]` tables with their line numbers.
    pub upstreams: Vec<(usize, String, UpstreamEntry)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenEntry {
    bind: String,
}

/// The tables, read in a second pass with their own types; flag keys are
/// the first pass's business and ignored here.
#[derive(Debug, Deserialize)]
struct Tables {
    #[serde(default)]
    listen: Vec<Spanned<ListenEntry>>,
    #[serde(default)]
    route: Vec<Spanned<RouteEntry>>,
    #[serde(default)]
    upstream: BTreeMap<String, Spanned<UpstreamEntry>>,
}

const TABLES: [&str; 3] = ["listen", "route", "upstream"];

/// Reads and parses the file at `path`.
pub fn load(path: &str) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("--config {path}: {e}")))?;
    parse(path, &text)
}

/// Parses `text`, the contents of the file called `name`.
pub fn parse(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    let at = |span: Option<std::ops::Range<usize>>| Position { name, text, span };
    let top: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| at(e.span()).error(e.message()))?;
    let tables: Tables = toml::from_str(text).map_err(|e| at(e.span()).error(e.message()))?;

    let mut file = FileConfig { name: name.to_string(), ..FileConfig::default() };
    for (key, value) in &top {
        let (k, pos) = (key.get_ref().as_str(), at(Some(key.span())));
        if TABLES.contains(&k) {
            continue;
        }
        let args = flag_args(k, value.get_ref()).map_err(|why| pos.key_error(k, &why))?;
        file.flags.push(FlagEntry { key: k.to_string(), line: pos.line(), args });
    }
    for listen in &tables.listen {
        let line = at(Some(listen.span())).line();
        file.flags.push(FlagEntry {
            key: "bind".into(),
            line,
            args: vec![format!("--bind={}", listen.get_ref().bind)],
        });
    }
    if top.keys().any(|k| k.get_ref() == "bind") && !tables.listen.is_empty() {
        let line = file.flags.iter().find(|f| f.key == "bind").map_or(1, |f| f.line);
        return Err(ConfigError(format!(
            "{name}:{line}: key 'bind': use either 'bind' or [[listen]] tables, not both"
        )));
    }
    for route in tables.route {
        file.routes.push((at(Some(route.span())).line(), route.into_inner()));
    }
    for (upstream_name, upstream) in tables.upstream {
        file.upstreams.push((at(Some(upstream.span())).line(), upstream_name, upstream.into_inner()));
    }
    Ok(file)
}

/// Command-line arguments for one top-level key.
fn flag_args(key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let one = |value: &toml::Value| -> Result<String, String> {
        match value {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            toml::Value::Array(_) | toml::Value::Table(_) => Err("expected a string, number or boolean".into()),
        }
    };
    if key == "app" {
        return Ok(vec![one(value)?]);
    }
    match value {
        toml::Value::Boolean(true) => Ok(vec![format!("--{key}")]),
        toml::Value::Boolean(false) => Ok(vec![]),
        toml::Value::Array(items) => items.iter().map(|v| one(v).map(|v| format!("--{key}={v}"))).collect(),
        toml::Value::Table(_) => Err(format!("'{key}' is a setting, not a table")),
        other => Ok(vec![format!("--{key}={}", one(other)?)]),
    }
}

/// A place in the file, for messages.
pub struct Position<'a> {
    pub name: &'a str,
    pub text: &'a str,
    pub span: Option<std::ops::Range<usize>>,
}

impl Position<'_> {
    /// The 1-based line the span starts on (1 without a span).
    pub fn line(&self) -> usize {
        let start = self.span.as_ref().map_or(0, |s| s.start).min(self.text.len());
        self.text.as_bytes()[..start].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// `file:line: message`, on one line.
    pub fn error(&self, message: &str) -> ConfigError {
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        ConfigError(format!("{}:{}: {message}", self.name, self.line()))
    }

    fn key_error(&self, key: &str, why: &str) -> ConfigError {
        self.error(&format!("key '{key}': {why}"))
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
                prev = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    };
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_flags() {
        let text =
            "workers = 4\nstatic-compress = true\npreload = false\nbind = [\"a:1\", \"b:2\"]\napp = \"hello:app\"\n";
        let file = parse("t.toml", text).unwrap();
        let args: Vec<_> = file.flags.iter().flat_map(|f| f.args.clone()).collect();
        assert_eq!(args, ["hello:app", "--bind=a:1", "--bind=b:2", "--static-compress", "--workers=4"]);
        assert_eq!(file.flags.iter().find(|f| f.key == "workers").unwrap().line, 1);
        assert_eq!(file.flags.iter().find(|f| f.key == "bind").unwrap().line, 4);
    }

    #[test]
    fn listen_tables_are_binds() {
        let file = parse("t.toml", "[[listen]]\nbind = \"a:1\"\n\n[[listen]]\nbind = \"unix:/x\"\n").unwrap();
        let args: Vec<_> = file.flags.iter().flat_map(|f| f.args.clone()).collect();
        assert_eq!(args, ["--bind=a:1", "--bind=unix:/x"]);
        assert_eq!(file.flags[1].line, 4);
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, want) in [
            ("workers = 4\nworkers = 5\n", "t.toml:2:"),
            ("a = 1\n[[listen]]\nbnd = \"x\"\n", "t.toml:3: unknown field `bnd`"),
            ("\n\nworkers = [[1]]\n", "t.toml:3: key 'workers'"),
            ("x = \n", "t.toml:1:"),
        ] {
            let msg = parse("t.toml", text).unwrap_err().to_string();
            assert!(msg.starts_with(want), "{text:?}: {msg}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(suggest("workres", ["workers", "bind", "timeout"]), Some("workers"));
        assert_eq!(suggest("zzz", ["workers", "bind"]), None);
    }
}
