//! The control protocol: one JSON object per line.
//!
//! Requests: `{"cmd": "status"}`, `{"cmd": "reload"}`, `{"cmd": "stop"}`,
//! `{"cmd": "workers", "delta": N}` (N may be negative). Every answer has
//! `"ok"`: true with the command's fields, or false with `"error"`.

use serde_json::{json, Value};

/// What a control client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The master's and every worker's state.
    Status,
    /// Start a new generation of workers (as HUP).
    Reload,
    /// Stop gracefully (as TERM).
    Stop,
    /// Add (positive) or remove (negative) workers (as TTIN/TTOU).
    Workers(i64),
}

/// Most workers one `workers` command may add or remove.
const MAX_DELTA: i64 = 1024;

/// Parses one request line; the error is the answer to send back.
pub fn parse(line: &str) -> Result<Command, Value> {
    let bad = |why: String| json!({"ok": false, "error": why});
    let value: Value = serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    let cmd = value.get("cmd").and_then(Value::as_str).ok_or_else(|| bad("missing \"cmd\"".into()))?;
    match cmd {
        "status" => Ok(Command::Status),
        "reload" => Ok(Command::Reload),
        "stop" => Ok(Command::Stop),
        "workers" => match value.get("delta").and_then(Value::as_i64) {
            Some(0) | None => Err(bad("\"workers\" needs a non-zero integer \"delta\"".into())),
            Some(d) if d.abs() > MAX_DELTA => Err(bad(format!("\"delta\" must be within ±{MAX_DELTA}"))),
            Some(d) => Ok(Command::Workers(d)),
        },
        other => Err(bad(format!("unknown command '{other}': expected status, reload, stop or workers"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse(r#"{"cmd":"status"}"#), Ok(Command::Status));
        assert_eq!(parse(r#"{"cmd":"workers","delta":-1}"#), Ok(Command::Workers(-1)));
        assert_eq!(parse(r#"{"cmd":"stop"}"#), Ok(Command::Stop));
    }

    #[test]
    fn bad_requests_say_why() {
        for (line, why) in [
            ("status", "not a JSON object"),
            (r#"{"cmd":"nope"}"#, "unknown command"),
            (r#"{"cmd":"workers"}"#, "delta"),
            (r#"{"cmd":"workers","delta":99999}"#, "within"),
            (r#"{}"#, "missing"),
        ] {
            let err = parse(line).unwrap_err();
            assert_eq!(err["ok"], false);
            assert!(err["error"].as_str().unwrap().contains(why), "{err}");
        }
    }
}
