//! What both tools' TOML configuration files have in common: reading them, and checking slave
//! names, connection strings and durations, with the same messages.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, Kind};

/// Reads the configuration file at `path` and checks it with `parse`; errors name the file.
pub fn load<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, Error>) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::caused_by(Kind::Config, &format!("could not read configuration file \"{}\"", path.display()), e)
    })?;
    parse(&text).map_err(|e| e.context(&format!("configuration file \"{}\"", path.display())))
}

/// Deserialises TOML, refusing unknown keys where the raw type says so. An error names the
/// line and, where the line sets one, the key.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| {
        let Some(start) = e.span().map(|span| span.start).filter(|start| *start < text.len()) else {
            return Error::config(e.message().to_string());
        };
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = text[..start].matches('\n').count() + 1;
        let key = text[line_start..].lines().next().and_then(|l| l.split_once('=')).map(|(key, _)| key.trim());
        match key {
            Some(key) if !key.is_empty() => Error::config(format!("{key} (line {line}): {}", e.message())),
            _ => Error::config(format!("line {line}: {}", e.message())),
        }
    })
}

/// Longest slave name accepted, in bytes. The name is written into every file's header as a
/// JSON string, and a header line must stay well within the 4,096 bytes a reader accepts.
pub const MAX_SLAVE_NAME_BYTES: usize = 1000;

/// A slave name must not be empty, nor hold control characters (a NUL cannot be stored in
/// PostgreSQL text at all), nor be longer than [`MAX_SLAVE_NAME_BYTES`].
pub fn slave_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::config("slave_name must not be empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::config("slave_name must not contain control characters"));
    }
    if name.len() > MAX_SLAVE_NAME_BYTES {
        return Err(Error::config(format!("slave_name must not be longer than {MAX_SLAVE_NAME_BYTES} bytes")));
    }
    Ok(())
}

/// A libpq connection string (`host=... dbname=...`) or URL (`postgresql://...`).
pub fn connection(what: &str, text: &str) -> Result<postgres::Config, Error> {
    text.parse::<postgres::Config>()
        .map_err(|e| Error::caused_by(Kind::Config, &format!("{what} is not a valid connection string or URL"), e))
}

/// The range a duration setting may take, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub least: f64,
    pub most: f64,
}

/// A day: the longest duration any setting takes. Longer ones would only hide a misplaced unit
/// (milliseconds written as seconds), and far longer ones do not fit a `Duration`.
pub const DAY: f64 = 86_400.0;

/// Durations shorter than this would make a loop spin: the shortest pause of any loop.
pub const SHORTEST_PAUSE: f64 = 0.01;

/// A number of seconds, `default` if absent, within `range`.
pub fn seconds(what: &str, value: Option<f64>, default: f64, range: Range) -> Result<Duration, Error> {
    let value = value.unwrap_or(default);
    // NaN fails both comparisons; infinities fail one.
    if !(value >= range.least && value <= range.most) {
        return Err(Error::config(format!(
            "{what} must be a number of seconds from {} to {}, not {value:?}",
            range.least, range.most
        )));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|e| Error::caused_by(Kind::Config, &format!("{what} is not a duration"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: Range = Range { least: SHORTEST_PAUSE, most: DAY };

    #[test]
    fn durations_out_of_range_are_refused_not_a_panic() {
        for value in [
            1e30,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -0.0,
            -1.0,
            0.0,
            1e-300,
            f64::MIN_POSITIVE,
            0.009,
            86_400.001,
        ] {
            let err = seconds("x", Some(value), 1.0, RANGE).expect_err(&value.to_string()).to_string();
            assert!(err.starts_with("x must be a number of seconds from 0.01 to 86400"), "{err}");
        }
        assert_eq!(seconds("x", Some(0.01), 1.0, RANGE).unwrap(), Duration::from_millis(10));
        assert_eq!(seconds("x", Some(86_400.0), 1.0, RANGE).unwrap(), Duration::from_secs(86_400));
        assert_eq!(seconds("x", None, 2.5, RANGE).unwrap(), Duration::from_millis(2500));
        assert_eq!(seconds("x", Some(0.0), 1.0, Range { least: 0.0, most: DAY }).unwrap(), Duration::ZERO);
    }

    #[test]
    fn slave_names_are_checked() {
        for bad in ["", "  ", "a\0b", "line\nbreak", &"x".repeat(MAX_SLAVE_NAME_BYTES + 1)] {
            assert!(slave_name(bad).is_err(), "{bad:?}");
        }
        for good in ["backup_system", "O'Brien \"ship\" 2", "ünï", &"x".repeat(MAX_SLAVE_NAME_BYTES)] {
            slave_name(good).unwrap();
        }
    }

    /// Connection strings are parsed without panicking whatever they hold; the server or the
    /// connection reports what parsing cannot know.
    #[test]
    fn extreme_connection_strings_are_refused_or_accepted_never_a_panic() {
        for text in [
            "",
            "=",
            "host",
            "port=99999999999999999999",
            "port=-1",
            "connect_timeout=99999999999999999999",
            "connect_timeout=9223372036854775807",
            "keepalives_idle=9223372036854775807",
            "host='unterminated",
            "postgresql://",
            "postgresql://[::1",
            "postgresql://h:99999999/db",
            "\0",
        ] {
            let _ = connection("slave", text);
        }
    }
}
