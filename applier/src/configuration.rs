//! What both tools' TOML configuration files have in common: reading them, and checking slave
//! names, connection strings and durations, with the same messages.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::Error;

/// Reads the configuration file at `path` and checks it with `parse`; errors name the file.
pub fn load<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, Error>) -> Result<T, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("could not read configuration file \"{}\": {e}", path.display())))?;
    parse(&text).map_err(|e| e.context(&format!("configuration file \"{}\"", path.display())))
}

/// Deserialises TOML, refusing unknown keys where the raw type says so.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| Error::config(e.message().to_string()))
}

/// A slave name must not be empty (it names the slave in dbmirror_MirrorHost and in files).
pub fn slave_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::config("slave_name must not be empty"));
    }
    Ok(())
}

/// A libpq connection string (`host=... dbname=...`) or URL (`postgresql://...`).
pub fn connection(what: &str, text: &str) -> Result<postgres::Config, Error> {
    text.parse::<postgres::Config>()
        .map_err(|e| Error::config(format!("{what} is not a valid connection string or URL: {e}")))
}

/// A number of seconds, `default` if absent; zero is allowed only if `allow_zero`.
pub fn seconds(what: &str, value: Option<f64>, default: f64, allow_zero: bool) -> Result<Duration, Error> {
    let value = value.unwrap_or(default);
    let ok = value.is_finite() && if allow_zero { value >= 0.0 } else { value > 0.0 };
    if !ok {
        let least = if allow_zero { "at least 0" } else { "more than 0" };
        return Err(Error::config(format!("{what} must be a number of seconds, {least}")));
    }
    Ok(Duration::from_secs_f64(value))
}
