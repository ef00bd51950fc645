//! What both tools' TOML configuration files have in common: finding them (`--config FILE` or
//! `--name NAME`), reading them, and checking slave names, connection strings and durations,
//! with the same messages.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::conninfo::Connection;
use crate::error::{Error, Kind};
use crate::log;

/// Where `--name NAME` finds its configuration file, `NAME.toml`, unless [`CONFIG_DIR_VARIABLE`]
/// names another directory. The packages create it, and their systemd units name the file of
/// each instance this way (`dbmirror-export@NAME` runs `dbmirror-export --name NAME run`).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/dbmirror";

/// The environment variable that moves [`DEFAULT_CONFIG_DIR`]: for hosts that keep their
/// configuration elsewhere, and for tests, which cannot share `/etc`.
pub const CONFIG_DIR_VARIABLE: &str = "DBMIRROR_CONFIG_DIR";

/// Which configuration files a tool reads: the options both tools take for them. Both options
/// may be repeated, for `dbmirror-export once` and `run`, which serve several slaves of one
/// master in one process; every other command takes exactly one ([`Location::path`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Location {
    /// Configuration file (TOML); used instead of --name when both are given. `dbmirror-export
    /// once` and `run` take several (one per slave of the same master)
    #[arg(long, short, value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// Read the configuration file NAME.toml in /etc/dbmirror (or in $DBMIRROR_CONFIG_DIR).
    /// `dbmirror-export once` and `run` take several
    #[arg(long, short, value_name = "NAME")]
    pub name: Vec<String>,
}

impl Location {
    /// The configuration file's path: `--config FILE` as given, else `NAME.toml` in the
    /// configuration directory. Neither option, more than one configuration, or a name that is
    /// not a plain file name, is a configuration error that says what to pass.
    pub fn path(&self) -> Result<PathBuf, Error> {
        let mut paths = self.paths()?;
        if paths.len() > 1 {
            return Err(Error::config(format!("this command takes one configuration, not {}", paths.len())).with_hint(
                "Pass one --config FILE or --name NAME; only dbmirror-export once and run serve several slaves.",
            ));
        }
        Ok(paths.remove(0))
    }

    /// Whether more than one configuration is given (the `--config` files if any, else the
    /// `--name` ones).
    pub fn several(&self) -> bool {
        self.config.len() > 1 || (self.config.is_empty() && self.name.len() > 1)
    }

    /// Every configuration file's path, in the order given (at least one): the `--config`
    /// files if any, else the `--name` ones.
    pub fn paths(&self) -> Result<Vec<PathBuf>, Error> {
        self.resolve(std::env::var_os(CONFIG_DIR_VARIABLE))
    }

    /// [`paths`](Self::paths) with the value of [`CONFIG_DIR_VARIABLE`] given; an empty one
    /// counts as unset, as a directory named "" would mean the working directory by accident.
    fn resolve(&self, variable: Option<OsString>) -> Result<Vec<PathBuf>, Error> {
        if !self.config.is_empty() {
            return Ok(self.config.clone());
        }
        let dir =
            variable.filter(|dir| !dir.is_empty()).map_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR), PathBuf::from);
        if self.name.is_empty() {
            return Err(Error::config("no configuration file given").with_hint(format!(
                "Pass --name NAME to read \"{}\", or --config FILE.",
                dir.join("NAME.toml").display()
            )));
        }
        let mut paths = Vec::with_capacity(self.name.len());
        for name in &self.name {
            // The name becomes a file name in the directory: a path, a hidden file or a name
            // that leaves the directory (`..`) would read a file nobody meant to configure this.
            if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
                return Err(Error::config(format!("--name \"{name}\" is not a configuration name")).with_hint(format!(
                    "A name is the file name of a configuration in \"{}\" without .toml; pass a path with --config FILE.",
                    dir.display()
                )));
            }
            paths.push(dir.join(format!("{name}.toml")));
        }
        Ok(paths)
    }
}

/// Reads the configuration file at `path` and checks it with `parse`; errors name the file.
pub fn load<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, Error>) -> Result<T, Error> {
    let text = read(path)?;
    parse(&text).map_err(|e| e.context(&format!("configuration file \"{}\"", path.display())))
}

/// Reading the configuration file again on SIGHUP, for `run` and `watch`, which call
/// [`Reload::take`] between cycles, never within one: a batch or a file is done under the
/// configuration it started with.
///
/// A new configuration replaces the one in use only if it is valid and leaves the settings
/// named `fixed` as they were: those (the slave's name, the spool) name what the process holds
/// locks and state for, and change only with a restart. Otherwise the error is logged and the
/// process goes on with the configuration in use.
pub struct Reload {
    path: PathBuf,
    requested: Arc<AtomicBool>,
    /// The text of the configuration in use, to say which settings a reload changes.
    text: String,
    fixed: &'static [&'static str],
}

impl Reload {
    /// Starts from the configuration file at `path` as it is now; `requested` is the flag
    /// SIGHUP sets ([`crate::signals::reload_flag`]).
    pub fn new(path: &Path, requested: Arc<AtomicBool>, fixed: &'static [&'static str]) -> Result<Self, Error> {
        let text = read(path)?;
        Ok(Self { path: path.to_owned(), requested, text, fixed })
    }

    /// The flag SIGHUP sets, for pauses that should end early when a reload is asked for.
    pub fn requested(&self) -> &AtomicBool {
        &self.requested
    }

    /// If SIGHUP arrived since the last call: the configuration file read again and checked
    /// with `parse`, when it is valid and leaves the fixed settings alone; logs what changed,
    /// or why the configuration in use is kept.
    pub fn take<T>(&mut self, parse: impl FnOnce(&str) -> Result<T, Error>) -> Option<T> {
        if !self.requested.swap(false, Ordering::Relaxed) {
            return None;
        }
        self.reread(parse)
    }

    /// Reads the configuration file again now, whether or not SIGHUP arrived, as [`take`]
    /// does after one: for a process that serves several configurations from one SIGHUP flag,
    /// which takes the flag once and then rereads each file.
    ///
    /// [`take`]: Self::take
    pub fn reread<T>(&mut self, parse: impl FnOnce(&str) -> Result<T, Error>) -> Option<T> {
        let not_reloaded = |e: Error| {
            log::error(
                &e.context(&format!(
                    "configuration file \"{}\" was not reloaded, the configuration in use is kept",
                    self.path.display()
                ))
                .to_string(),
            );
            None
        };
        let text = match read(&self.path) {
            Ok(text) => text,
            Err(e) => return not_reloaded(e),
        };
        let config = match parse(&text) {
            Ok(config) => config,
            Err(e) => return not_reloaded(e),
        };
        let changed = changed_settings(&self.text, &text);
        if let Some(fixed) = changed.iter().find(|key| self.fixed.contains(&key.as_str())) {
            return not_reloaded(Error::config(format!("{fixed} cannot change while running")).with_hint(format!(
                "Restart to use the new {fixed}, or put the old value back; a reload changes any setting but {}.",
                self.fixed.join(", ")
            )));
        }
        log::info(&match changed.is_empty() {
            true => format!("reloaded configuration file \"{}\": no setting changed", self.path.display()),
            false => format!("reloaded configuration file \"{}\": changed {}", self.path.display(), changed.join(", ")),
        });
        self.text = text;
        Some(config)
    }
}

/// The names of the settings whose values differ between two configuration texts (set,
/// removed, or given another value), in name order; never their values, which may hold
/// passwords.
fn changed_settings(old: &str, new: &str) -> Vec<String> {
    let table = |text: &str| text.parse::<toml::Table>().unwrap_or_default();
    let (old, new) = (table(old), table(new));
    let mut keys: Vec<String> =
        old.keys().chain(new.keys()).filter(|key| old.get(*key) != new.get(*key)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::caused_by(Kind::Config, &format!("could not read configuration file \"{}\"", path.display()), e)
    })
}

/// Deserialises TOML, refusing unknown keys where the raw type says so. An error names the
/// line and, where the line sets one, the key, in the words of the file (`a number`, not
/// serde's `f64`), with a hint where one helps.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| toml_error(text, e.message(), e.span().map(|span| span.start)))
}

/// The error for `message` about the text at byte `start`, if known.
fn toml_error(text: &str, message: &str, start: Option<usize>) -> Error {
    let message = plain_types(message);
    let hint = if message.contains("unknown field") {
        Some("Check the spelling of the key; the message lists the keys this tool knows.".to_string())
    } else {
        None
    };
    let Some(start) = start.filter(|start| *start <= text.len() && text.is_char_boundary(*start)) else {
        let error = Error::config(message);
        return match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        };
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() + 1;
    let key = text[line_start..]
        .lines()
        .next()
        .and_then(|l| l.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty() && !key.starts_with('#'));
    let error = match key {
        Some(key) => Error::config(format!("line {line}, key \"{key}\": {message}")),
        None => Error::config(format!("line {line}: {message}")),
    };
    let hint = hint.or_else(|| {
        let key = key?;
        message.contains("expected a number").then(|| format!("Write the number without quotes, as in {key} = 10."))
    });
    match hint {
        Some(hint) => error.with_hint(hint),
        None => error,
    }
}

/// serde's message with Rust's type names in the words of the file: `expected f64` is
/// `expected a number`.
fn plain_types(message: &str) -> String {
    let mut plain = message.trim_end().to_string();
    for rust in ["f64", "usize", "u64", "u32", "i64"] {
        plain = plain.replace(&format!("expected {rust}"), "expected a number");
    }
    plain
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

/// A libpq connection string (`host=... dbname=...`) or URL (`postgresql://...`), resolved
/// with service files and `PG*` variables as libpq does (see [`Connection`]); empty means
/// libpq's defaults. `what` names the setting in errors.
pub fn connection(what: &str, text: &str) -> Result<Connection, Error> {
    Connection::resolve(what, text)
}

/// A connection as the logs show it: host, port, user and database as resolved, with libpq's
/// quoting, and never the password.
pub fn describe(connection: &Connection) -> String {
    let mut parts = Vec::new();
    for key in ["host", "hostaddr", "port", "user", "dbname", "service"] {
        if let Some(value) = connection.get(key) {
            parts.push(format!("{key}={}", conninfo_value(value)));
        }
    }
    parts.join(" ")
}

/// A value of a libpq connection string, quoted where libpq needs it.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        slave_name: String,
        sleep_interval: Option<f64>,
        batch_size: Option<usize>,
    }

    /// Prevents errors that name neither key nor line (`invalid type: string "10s", expected
    /// f64`): each names both, in the file's words, with a hint where one helps.
    #[test]
    fn toml_errors_name_the_line_and_the_key() {
        let err = from_toml::<Sample>("slave_name = \"s\"\n# a comment\nsleep_interval = \"10s\"\n").unwrap_err();
        assert_eq!(err.kind(), Kind::Config);
        assert_eq!(
            err.to_string(),
            "line 3, key \"sleep_interval\": invalid type: string \"10s\", expected a number\n\
             HINT:  Write the number without quotes, as in sleep_interval = 10."
        );
        let err = from_toml::<Sample>("slave_name = \"s\"\nbatch_size = 1.5\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 2, key \"batch_size\": invalid type: floating point `1.5`, expected a number"),
            "{err}"
        );
        let err = from_toml::<Sample>("slave_name = \"s\"\n\nsleep_intervall = 3\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 3, key \"sleep_intervall\": unknown field `sleep_intervall`, expected one of"),
            "{err}"
        );
        assert_eq!(err.hint(), Some("Check the spelling of the key; the message lists the keys this tool knows."));
        let err = from_toml::<Sample>("slave_name = \"s\"\nsleep_interval = \n").unwrap_err();
        assert!(err.to_string().starts_with("line 2, key \"sleep_interval\": "), "{err}");
        let err = from_toml::<Sample>("sleep_interval = 1\n").unwrap_err();
        assert!(err.to_string().contains("missing field `slave_name`"), "{err}");
        let err = from_toml::<Sample>("[table\n").unwrap_err();
        assert!(err.to_string().starts_with("line 1: "), "{err}");
    }

    #[test]
    fn a_reload_names_the_settings_it_changes_never_their_values() {
        let old = "slave_name = \"s\"\nmaster = \"password=old\"\nsleep_interval = 10\n";
        let new = "slave_name = \"s\"\n# a comment\nmaster = \"password=new\"\nbatch_size = 5\n";
        assert_eq!(changed_settings(old, new), ["batch_size", "master", "sleep_interval"]);
        assert!(changed_settings(old, old).is_empty());
    }

    /// SIGHUP is a reload only when asked for, and a file that does not parse, or changes a
    /// setting that needs a restart, leaves the configuration in use.
    #[test]
    fn a_reload_takes_a_valid_file_and_keeps_the_old_one_otherwise() {
        let dir = std::env::temp_dir().join(format!("dbmirror-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "slave_name = \"s\"\nsleep_interval = 10\n").unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let mut reload = Reload::new(&path, Arc::clone(&flag), &["slave_name"]).unwrap();
        let parse = |text: &str| from_toml::<toml::Table>(text);
        assert!(reload.take(parse).is_none(), "no SIGHUP, no reload");
        std::fs::write(&path, "slave_name = \"s\"\nsleep_interval = 2\n").unwrap();
        flag.store(true, Ordering::Relaxed);
        assert_eq!(reload.take(parse).unwrap()["sleep_interval"].as_integer(), Some(2));
        for bad in ["slave_name = \"s\"\nsleep_interval = \n", "slave_name = \"t\"\nsleep_interval = 2\n"] {
            std::fs::write(&path, bad).unwrap();
            flag.store(true, Ordering::Relaxed);
            assert!(reload.take(parse).is_none(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_configuration_file_is_found_by_path_or_by_name() {
        let location = |config: Option<&str>, name: Option<&str>| Location {
            config: config.map(PathBuf::from).into_iter().collect(),
            name: name.map(str::to_string).into_iter().collect(),
        };
        let path =
            |l: Location, variable: Option<&str>| l.resolve(variable.map(OsString::from)).map(|mut p| p.remove(0));
        assert_eq!(
            path(location(None, Some("backup_system")), None).unwrap(),
            Path::new("/etc/dbmirror/backup_system.toml")
        );
        assert_eq!(path(location(None, Some("b")), Some("/srv/conf")).unwrap(), Path::new("/srv/conf/b.toml"));
        assert_eq!(path(location(None, Some("b")), Some("")).unwrap(), Path::new("/etc/dbmirror/b.toml"));
        assert_eq!(path(location(None, Some("O'Brien 2")), None).unwrap(), Path::new("/etc/dbmirror/O'Brien 2.toml"));
        // --config wins: a command line that names a file reads that file.
        assert_eq!(path(location(Some("here.toml"), Some("b")), None).unwrap(), Path::new("here.toml"));
        assert_eq!(path(location(Some("/x/a.toml"), None), Some("/srv")).unwrap(), Path::new("/x/a.toml"));

        let err = path(location(None, None), Some("/srv/conf")).unwrap_err();
        assert_eq!(err.kind(), Kind::Config);
        assert!(err.to_string().starts_with("no configuration file given\n"), "{err}");
        assert_eq!(err.hint(), Some("Pass --name NAME to read \"/srv/conf/NAME.toml\", or --config FILE."));
        for bad in ["", ".", "..", ".hidden", "../etc/passwd", "a/b", "/abs", "a\0b"] {
            let err = path(location(None, Some(bad)), None).expect_err(bad);
            assert_eq!(err.kind(), Kind::Config, "{bad:?}");
            assert!(err.to_string().contains("is not a configuration name"), "{bad:?}: {err}");
            assert!(err.hint().is_some_and(|h| h.contains("--config FILE")), "{bad:?}");
        }
    }

    /// `dbmirror-export once` and `run` read several configurations, in the order given; every
    /// other command refuses more than one with a configuration error, never picks one.
    #[test]
    fn several_configurations_are_read_in_order_and_refused_where_one_is_expected() {
        let names = Location { config: Vec::new(), name: vec!["a".into(), "b".into()] };
        assert_eq!(names.resolve(Some("/srv".into())).unwrap(), [Path::new("/srv/a.toml"), Path::new("/srv/b.toml")]);
        let files = Location { config: vec!["x.toml".into(), "y.toml".into()], name: vec!["a".into()] };
        assert_eq!(files.paths().unwrap(), [Path::new("x.toml"), Path::new("y.toml")]);
        let err = files.path().unwrap_err();
        assert_eq!(err.kind(), Kind::Config);
        assert!(err.to_string().starts_with("this command takes one configuration, not 2\n"), "{err}");
        let bad = Location { config: Vec::new(), name: vec!["a".into(), "../b".into()] };
        assert!(bad.paths().unwrap_err().to_string().contains("\"../b\" is not a configuration name"));
    }

    #[test]
    fn connections_are_described_without_their_password() {
        let describe_text = |text: &str| describe(&connection("x", text).unwrap());
        assert_eq!(
            describe_text("host=/var/run/postgresql dbname=shop user=dbmirror password=secret"),
            "host=/var/run/postgresql user=dbmirror dbname=shop"
        );
        assert_eq!(
            describe_text("postgresql://u:secret@db1:5433,db2:5434/shop?sslmode=disable"),
            "host=db1,db2 port=5433,5434 user=u dbname=shop"
        );
        assert_eq!(describe_text("host=h dbname='my shop' user=o\\'b"), "host=h user='o\\'b' dbname='my shop'");
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
