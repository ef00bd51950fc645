//! Progress and error lines on standard error, one line per event, each with a UTC timestamp
//! and the program name; panics too, as such a line.
//!
//! Two formats ([`Format`], the setting `log_format`): `text`, for people and the journal, puts
//! an error's DETAIL and HINT on its own line (`... ERROR: message DETAIL:  ... HINT:  ...`);
//! `json` writes one JSON object per line, with the fields `time`, `level`, `program`,
//! `message`, and where they apply `detail`, `hint`, `slave`, `attempt` and `retry_in_seconds`,
//! for log shippers and journald's structured fields.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);
/// The slave the process serves, once its configuration is read: a field of JSON lines.
static SLAVE: Mutex<Option<String>> = Mutex::new(None);

/// Sets the format of the lines that follow and the slave they are about; the configuration
/// decides both, and a reload may change them.
pub fn configure(format: Format, slave: &str) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
    *SLAVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(slave.to_string());
}

/// A retry note: which attempt failed, and how long until the next.
struct Retry {
    attempt: u32,
    seconds: u64,
}

fn line(level: &str, message: &str, retry: Option<Retry>) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let program = std::env::args().next().unwrap_or_default();
    let program =
        std::path::Path::new(&program).file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let (message, detail, hint) = parts(message);
    let text = if JSON.load(Ordering::Relaxed) {
        let mut fields = serde_json::Map::new();
        fields.insert("time".into(), now.into());
        fields.insert("level".into(), level.into());
        fields.insert("program".into(), program.into());
        fields.insert("message".into(), message.into());
        if let Some(detail) = detail {
            fields.insert("detail".into(), detail.into());
        }
        if let Some(hint) = hint {
            fields.insert("hint".into(), hint.into());
        }
        if let Some(slave) = SLAVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone() {
            fields.insert("slave".into(), slave.into());
        }
        if let Some(retry) = retry {
            fields.insert("attempt".into(), retry.attempt.into());
            fields.insert("retry_in_seconds".into(), retry.seconds.into());
        }
        serde_json::Value::Object(fields).to_string()
    } else {
        let mut text = format!("{now} {program} {level}: {}", message.replace('\n', " "));
        for (label, part) in [("DETAIL", detail), ("HINT", hint)] {
            if let Some(part) = part {
                text.push_str(&format!(" {label}:  {}", part.replace('\n', " ")));
            }
        }
        if let Some(Retry { attempt, seconds }) = retry {
            text.push_str(&format!(" (attempt {attempt}; retrying in {seconds}s)"));
        }
        text
    };
    eprintln!("{text}");
}

/// An error's text split into its message, DETAIL and HINT, as [`crate::Error`] and the
/// database write them: on lines of their own starting `DETAIL:  ` and `HINT:  `.
fn parts(text: &str) -> (String, Option<String>, Option<String>) {
    let (mut message, mut detail, mut hint) = (Vec::new(), None, None);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("DETAIL:  ") {
            detail = Some(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("HINT:  ") {
            hint = Some(rest.to_string());
        } else {
            message.push(line);
        }
    }
    (message.join("\n"), detail, hint)
}

pub fn info(message: &str) {
    line("LOG", message, None);
}

pub fn warning(message: &str) {
    line("WARNING", message, None);
}

pub fn error(message: &str) {
    line("ERROR", message, None);
}

/// A failure that `run` or `watch` retries: the error, which attempt failed, and the pause
/// before the next, as one line.
pub fn retrying(message: &str, attempt: u32, seconds: u64) {
    line("ERROR", message, Some(Retry { attempt, seconds }));
}

/// The first line of a long-running command (`run`, `watch`): which version serves which slave,
/// with which configuration file, and what it reads and writes (`serves`), so that a journal
/// shows what an instance was doing without its configuration at hand.
pub fn startup(version: &str, configuration: &std::path::Path, slave_name: &str, serves: &str) {
    info(&format!(
        "starting version {version} for slave \"{slave_name}\" with configuration \"{}\": {serves}",
        configuration.display()
    ));
}

/// Reports a panic, which is a bug, as one error line with a hint, and never with a backtrace
/// whatever `RUST_BACKTRACE` says: operators and alert commands read these lines.
pub fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let cause = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        error(&format!(
            "internal error{location}: {cause}\nHINT:  This is a bug in dbmirror, not a fault of the configuration or of the files; please report it with this message."
        ));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_splits_into_message_detail_and_hint() {
        assert_eq!(
            parts("could not apply\nline 2\nDETAIL:  Key (id)=(1).\nHINT:  Repair it."),
            ("could not apply\nline 2".to_string(), Some("Key (id)=(1).".to_string()), Some("Repair it.".to_string()))
        );
        assert_eq!(parts("plain"), ("plain".to_string(), None, None));
    }
}
