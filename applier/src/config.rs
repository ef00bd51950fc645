//! The applier's configuration file (TOML), read and checked before anything else happens.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use dbmirror_replay::grammar::DdlPolicy;
use dbmirror_spool::{PublicKey, ARCHIVE_DIR, QUARANTINE_DIR};
use serde::Deserialize;

use dbmirror_cli::configuration::{self, Range};
use dbmirror_cli::conninfo::Connection;
use dbmirror_cli::error::Error;
use dbmirror_cli::log;

use crate::retention::Retention;
use dbmirror_cli::metrics::DEFAULT_METRICS_INTERVAL;

/// Seconds a file must have been left alone before a checksum mismatch counts as damage rather
/// than a copy in progress, unless configured.
pub const DEFAULT_SETTLE_SECONDS: f64 = 60.0;
/// Seconds between rescans of the spool in `watch`, in case a file-system event was missed.
pub const DEFAULT_POLL_INTERVAL: f64 = 5.0;
/// `settle_seconds` may be zero (a mismatch is damage at once) and at most a day.
const SETTLE_RANGE: Range = Range { least: 0.0, most: configuration::DAY };
/// Longest `archive_keep_days`: a century; longer would only hide a misplaced unit.
const MAX_KEEP_DAYS: f64 = 36_500.0;
/// `poll_interval` (and `metrics_interval`) must leave the loop some rest, and come at least daily.
const POLL_RANGE: Range = Range { least: configuration::SHORTEST_PAUSE, most: configuration::DAY };

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    slave_name: String,
    /// Absent or empty: libpq's defaults and `PG*` variables.
    #[serde(default)]
    slave: String,
    spool: PathBuf,
    archive: Option<PathBuf>,
    quarantine: Option<PathBuf>,
    master: Option<String>,
    settle_seconds: Option<f64>,
    poll_interval: Option<f64>,
    public_key: Option<PathBuf>,
    ddl: Option<String>,
    log_format: Option<log::Format>,
    archive_keep_files: Option<u64>,
    archive_keep_days: Option<f64>,
    metrics_file: Option<PathBuf>,
    metrics_interval: Option<f64>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub slave_name: String,
    pub slave: Connection,
    /// The inbound spool.
    pub spool: PathBuf,
    /// Where applied files go.
    pub archive: PathBuf,
    /// Where files that must not be applied go, each with a `.reason` file beside it.
    pub quarantine: PathBuf,
    /// The master's system identifier, if pinned: files from any other master are refused
    /// even before the first one is applied.
    pub master: Option<u64>,
    pub settle: Duration,
    pub poll_interval: Duration,
    /// The exporter's public key: when set, only manifests it signed are used.
    pub public_key: Option<PublicKey>,
    /// What DDL files may carry. The slave sessions get it as `dbmirror.ddl` too (see
    /// [`Config::slave`]), so that the slave holds the DDL it runs to the same policy.
    pub ddl: DdlPolicy,
    /// How log lines are written: `text` (the default) or `json`.
    pub log_format: log::Format,
    /// How much of the archive to keep (`archive_keep_files`, `archive_keep_days`).
    pub retention: Retention,
    /// Where `watch` writes its Prometheus metrics (a node_exporter textfile), if anywhere.
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: Duration,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, Error> {
        configuration::load(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        let raw: RawConfig = configuration::from_toml(text)?;
        configuration::slave_name(&raw.slave_name)?;
        let mut slave = configuration::connection("slave", &raw.slave)?;
        let ddl = raw.ddl.as_deref().map_or(Ok(DdlPolicy::default()), str::parse).map_err(Error::config)?;
        session_setting(&mut slave, dbmirror_sql::DDL_SETTING, ddl.as_str());
        if !raw.spool.is_dir() {
            return Err(Error::config(format!("spool \"{}\" is not a directory", raw.spool.display()))
                .with_hint("Create the inbound spool directory first."));
        }
        let master = raw
            .master
            .map(|m| {
                m.parse::<u64>()
                    .map_err(|_| Error::config(format!("master must be a system identifier (a number), not \"{m}\"")))
            })
            .transpose()?;
        let archive = raw.archive.unwrap_or_else(|| raw.spool.join(ARCHIVE_DIR));
        let quarantine = raw.quarantine.unwrap_or_else(|| raw.spool.join(QUARANTINE_DIR));
        places(&raw.spool, &archive, &quarantine)?;
        Ok(Self {
            slave_name: raw.slave_name,
            slave,
            archive,
            quarantine,
            spool: raw.spool,
            master,
            settle: configuration::seconds("settle_seconds", raw.settle_seconds, DEFAULT_SETTLE_SECONDS, SETTLE_RANGE)?,
            poll_interval: configuration::seconds(
                "poll_interval",
                raw.poll_interval,
                DEFAULT_POLL_INTERVAL,
                POLL_RANGE,
            )?,
            public_key: raw
                .public_key
                .as_deref()
                .map(PublicKey::load)
                .transpose()
                .map_err(|e| Error::config(e.to_string()))?,
            ddl,
            log_format: raw.log_format.unwrap_or_default(),
            retention: Retention {
                keep_files: match raw.archive_keep_files {
                    Some(0) => {
                        return Err(Error::config("archive_keep_files must be at least 1")
                            .with_hint("Leave it out to keep every applied file."))
                    }
                    keep => keep,
                },
                keep_days: match raw.archive_keep_days {
                    // NaN fails the comparison too.
                    Some(days) if !(days > 0.0 && days <= MAX_KEEP_DAYS) => {
                        return Err(Error::config(format!(
                            "archive_keep_days must be a number of days above 0 and up to {MAX_KEEP_DAYS}, not {days:?}"
                        ))
                        .with_hint("Leave it out to keep applied files whatever their age."))
                    }
                    keep => keep,
                },
            },
            metrics_file: raw.metrics_file,
            metrics_interval: configuration::seconds(
                "metrics_interval",
                raw.metrics_interval,
                DEFAULT_METRICS_INTERVAL,
                POLL_RANGE,
            )?,
        })
    }
}

/// Adds `-c name=value` to the options the slave sessions start with, after any the connection
/// string gives (the last one counts).
pub fn session_setting(slave: &mut Connection, name: &str, value: &str) {
    let setting = format!("-c {name}={value}");
    let options = match slave.get("options") {
        Some(options) if !options.trim().is_empty() => format!("{options} {setting}"),
        _ => setting,
    };
    slave.set("options", &options);
}

/// Checks that archive and quarantine are (or can become) directories apart from the spool and
/// from each other: a file moved into the spool itself would be found there again, and applied
/// files must not mix with refused ones.
fn places(spool: &Path, archive: &Path, quarantine: &Path) -> Result<(), Error> {
    let spool_at = resolved("spool", spool)?;
    let archive_at = resolved("archive", archive)?;
    let quarantine_at = resolved("quarantine", quarantine)?;
    for (what, path, at) in [("archive", archive, &archive_at), ("quarantine", quarantine, &quarantine_at)] {
        if *at == spool_at {
            return Err(Error::config(format!(
                "{what} must not be the spool: \"{}\" is \"{}\"",
                path.display(),
                spool.display()
            ))
            .with_hint(format!("Leave {what} out (it defaults to {what}/ in the spool), or name another directory.")));
        }
    }
    if archive_at == quarantine_at {
        return Err(Error::config(format!(
            "archive and quarantine must be different directories: \"{}\" is \"{}\"",
            archive.display(),
            quarantine.display()
        ))
        .with_hint("Applied files and refused ones must not mix: leave one out, or name another directory."));
    }
    Ok(())
}

/// `path` made absolute, with symbolic links, `.` and `..` resolved as far as it exists; the
/// rest (directories the applier creates when it first moves a file there) is appended as
/// written. Fails unless what exists of it is a directory.
fn resolved(what: &str, path: &Path) -> Result<PathBuf, Error> {
    let unusable = |why: String| Error::config(format!("{what} \"{}\" {why}", path.display()));
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(unusable("is not a usable path: it contains a NUL character".to_string()));
    }
    let absolute = std::path::absolute(path).map_err(|e| unusable(format!("is not a usable path: {e}")))?;
    for existing in absolute.ancestors() {
        let Ok(base) = existing.canonicalize() else {
            continue;
        };
        if !base.is_dir() {
            return Err(unusable(if existing == absolute {
                "is not a directory".to_string()
            } else {
                format!("cannot be created: \"{}\" is not a directory", existing.display())
            }));
        }
        let mut resolved = base;
        for part in absolute.strip_prefix(existing).unwrap_or(Path::new("")).components() {
            match part {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => resolved.push(name),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return Ok(resolved);
    }
    Err(unusable("is not a usable path".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> String {
        std::env::temp_dir().display().to_string()
    }

    #[test]
    fn defaults_put_archive_and_quarantine_in_the_spool() {
        let config =
            Config::parse(&format!("slave_name = \"s\"\nslave = \"host=/tmp dbname=copy\"\nspool = \"{}\"\n", dir()))
                .unwrap();
        assert_eq!(config.archive, std::env::temp_dir().join("archive"));
        assert_eq!(config.quarantine, std::env::temp_dir().join("quarantine"));
        assert_eq!(config.settle, Duration::from_secs(60));
        assert_eq!(config.master, None);
        assert_eq!(config.ddl, DdlPolicy::Mirrored);
        assert_eq!(config.slave.get("options"), Some("-c dbmirror.ddl=mirrored"));
    }

    /// The slave sessions hold DDL to the policy the applier's grammar check applies, after
    /// whatever options the connection string gives.
    #[test]
    fn the_ddl_setting_goes_to_the_slave_sessions() {
        for (ddl, policy) in [("refuse", DdlPolicy::Refuse), ("mirrored", DdlPolicy::Mirrored), ("any", DdlPolicy::Any)]
        {
            let config = Config::parse(&format!(
                "slave_name = \"s\"\nslave = \"host=/tmp options='-c work_mem=1MB'\"\nspool = \"{}\"\nddl = \"{ddl}\"\n",
                dir()
            ))
            .unwrap();
            assert_eq!(config.ddl, policy);
            assert_eq!(config.slave.get("options"), Some(format!("-c work_mem=1MB -c dbmirror.ddl={ddl}").as_str()));
        }
    }

    #[test]
    fn refuses_bad_configurations_with_a_clear_message() {
        let d = dir();
        let cases = [
            (format!("slave = \"host=x\"\nspool = \"{d}\"\n"), "missing field `slave_name`"),
            ("slave_name = \"s\"\nslave = \"host=x\"\nspool = \"/nonexistent\"\n".to_string(), "is not a directory"),
            (format!("slave_name = \"s\"\nslave = \"port=x\"\nspool = \"{d}\"\n"), "slave is not a valid connection"),
            (
                format!("slave_name = \"s\"\nslave = \"host=x\"\nspool = \"{d}\"\nmaster = \"abc\"\n"),
                "master must be a system identifier",
            ),
            (
                format!("slave_name = \"s\"\nslave = \"host=x\"\nspool = \"{d}\"\nsettle_seconds = -1\n"),
                "settle_seconds must be a number of seconds",
            ),
            (format!("slave_name = \"s\"\nslave = \"host=x\"\nspool = \"{d}\"\nextra = 1\n"), "unknown field `extra`"),
            (
                format!("slave_name = \"s\"\nslave = \"host=x\"\nspool = \"{d}\"\nddl = \"none\"\n"),
                "ddl must be \"refuse\", \"mirrored\" or \"any\", not \"none\"",
            ),
            (format!("slave_name = \"s\"\nslave = \"host=x\"\nspool = \"{d}\"\nddl = true\n"), "invalid type: boolean"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    /// Regression test: `settle_seconds = 1e30` panicked (a `Duration` cannot hold it). Every
    /// value is checked, and a bad one is a configuration error that names it.
    #[test]
    fn extreme_values_are_refused_with_a_message_never_a_panic() {
        let d = dir();
        let base = format!("slave = \"host=/tmp\"\nspool = \"{d}\"\n");
        let cases = [
            ("settle_seconds = 1e30", "settle_seconds must be a number of seconds from 0 to 86400, not 1e30"),
            ("settle_seconds = inf", "settle_seconds must be a number of seconds"),
            ("settle_seconds = nan", "settle_seconds must be a number of seconds"),
            ("settle_seconds = -0.5", "settle_seconds must be a number of seconds"),
            ("settle_seconds = 86401", "settle_seconds must be a number of seconds"),
            ("settle_seconds = \"60\"", "invalid type: string"),
            ("settle_seconds = 99999999999999999999", "line 4, key \"settle_seconds\": number too large"),
            ("poll_interval = 0", "poll_interval must be a number of seconds from 0.01 to 86400"),
            ("poll_interval = 1e-300", "poll_interval must be a number of seconds"),
            ("poll_interval = 1.7976931348623157e308", "poll_interval must be a number of seconds"),
            ("poll_interval = -inf", "poll_interval must be a number of seconds"),
            ("metrics_interval = 0", "metrics_interval must be a number of seconds from 0.01 to 86400"),
            ("master = \"99999999999999999999\"", "master must be a system identifier"),
            ("master = \"-1\"", "master must be a system identifier"),
            ("master = \"\"", "master must be a system identifier"),
            ("public_key = \"/dev/zero\"", "is not a dbmirror-ed25519-public key file"),
            ("public_key = \"/nonexistent/key.pub\"", "could not read key file"),
            ("archive = \"\"", "archive"),
            ("archive_keep_files = 0", "archive_keep_files must be at least 1"),
            ("archive_keep_files = -1", "invalid value"),
            ("archive_keep_days = 0", "archive_keep_days must be a number of days above 0"),
            ("archive_keep_days = nan", "archive_keep_days must be a number of days"),
            ("archive_keep_days = 1e9", "archive_keep_days must be a number of days"),
            ("archive = \"a\\u0000b\"", "archive"),
            (
                "quarantine = \"/dev/null/q\"",
                "quarantine \"/dev/null/q\" cannot be created: \"/dev/null\" is not a directory",
            ),
        ];
        for (extra, expected) in cases {
            let text = format!("slave_name = \"s\"\n{base}{extra}\n");
            let err = Config::parse(&text).expect_err(extra);
            assert_eq!(err.kind(), dbmirror_cli::error::Kind::Config, "{extra}");
            assert!(err.to_string().contains(expected), "{extra}: {err:?} should contain {expected:?}");
        }
        for name in ["\"\"", "\"a\\u0000b\"", "\"a\\nb\"", &format!("\"{}\"", "x".repeat(1001)), "1", "[]"] {
            let text = format!("slave_name = {name}\n{base}");
            assert_eq!(Config::parse(&text).expect_err(name).kind(), dbmirror_cli::error::Kind::Config, "{name}");
        }
        // Whatever the value of whatever key: a result, never a panic.
        let values = [
            "1e30",
            "-1e30",
            "nan",
            "inf",
            "-inf",
            "0",
            "-0.0",
            "5e-324",
            "9223372036854775807",
            "-9223372036854775808",
            "\"\"",
            "\"\\u0000\"",
            "\"/dev/zero\"",
            "\"..\"",
            "[]",
            "{}",
            "true",
            "1979-05-27T07:32:00Z",
        ];
        for key in [
            "slave_name",
            "slave",
            "spool",
            "archive",
            "quarantine",
            "master",
            "settle_seconds",
            "poll_interval",
            "public_key",
            "ddl",
            "log_format",
            "archive_keep_files",
            "archive_keep_days",
            "metrics_file",
            "metrics_interval",
        ] {
            for value in values {
                let text = format!("slave_name = \"s\"\nslave = \"host=/tmp\"\nspool = \"{d}\"\n")
                    .lines()
                    .filter(|line| !line.starts_with(&format!("{key} =")))
                    .map(|line| format!("{line}\n"))
                    .collect::<String>();
                let _ = Config::parse(&format!("{text}{key} = {value}\n"));
            }
        }
    }

    #[test]
    fn archive_and_quarantine_must_be_apart_from_the_spool_and_each_other() {
        let spool = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let s = spool.path().display().to_string();
        let e = elsewhere.path().display().to_string();
        std::fs::write(spool.path().join("file"), "").unwrap();
        let parse = |extra: &str| {
            Config::parse(&format!("slave_name = \"s\"\nslave = \"host=/tmp\"\nspool = \"{s}\"\n{extra}\n"))
        };
        for (extra, expected) in [
            (format!("archive = \"{s}\""), "archive must not be the spool"),
            (format!("archive = \"{s}/./\""), "archive must not be the spool"),
            (format!("quarantine = \"{s}/archive/..\""), "quarantine must not be the spool"),
            (format!("archive = \"{e}/x\"\nquarantine = \"{e}/y/../x/\""), "archive and quarantine must be different"),
            (
                format!("archive = \"{s}/archive\"\nquarantine = \"{s}/archive\""),
                "archive and quarantine must be different",
            ),
            (format!("archive = \"{s}/file\""), "is not a directory"),
            (format!("archive = \"{s}/file/x\""), "cannot be created"),
        ] {
            let err = parse(&extra).expect_err(&extra).to_string();
            assert!(err.contains(expected), "{extra}: {err:?} should contain {expected:?}");
        }
        // Directories that do not exist yet are fine; the applier creates them.
        let config = parse(&format!("archive = \"{e}/a/b\"\nquarantine = \"{e}/q\"")).unwrap();
        assert_eq!(config.archive, elsewhere.path().join("a/b"));
        // A symbolic link to the spool is the spool.
        std::os::unix::fs::symlink(spool.path(), elsewhere.path().join("link")).unwrap();
        let err = parse(&format!("archive = \"{e}/link\"")).expect_err("a link to the spool").to_string();
        assert!(err.contains("archive must not be the spool"), "{err}");
    }
}
