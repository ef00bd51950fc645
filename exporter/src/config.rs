//! The exporter's configuration file (TOML), read and checked before anything else happens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dbmirror_spool::SigningKey;
use serde::Deserialize;

use dbmirror_cli::configuration::{self, Range};
use dbmirror_cli::conninfo::Connection;
use dbmirror_cli::log;
use dbmirror_cli::metrics::DEFAULT_METRICS_INTERVAL;

use crate::error::Error;

/// Transactions assigned, written and recorded per round trip, unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Seconds `run` sleeps when there is nothing to export, unless configured.
pub const DEFAULT_SLEEP_INTERVAL: f64 = 10.0;
/// `sleep_interval` must leave the loop some rest, and look for work at least daily.
const SLEEP_RANGE: Range = Range { least: configuration::SHORTEST_PAUSE, most: configuration::DAY };
/// Largest `batch_size`: a batch's numbers are assigned in one master transaction, its files
/// are written and synced together and listed in one manifest (about 130 bytes a file), so a
/// far larger batch only makes a crash redo more and a manifest harder to carry.
pub const MAX_BATCH_SIZE: usize = 100_000;

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    slave_name: String,
    /// Absent or empty: libpq's defaults and `PG*` variables.
    #[serde(default)]
    master: String,
    transaction_file_directory: Option<PathBuf>,
    slave: Option<String>,
    compression: Option<String>,
    sleep_interval: Option<f64>,
    alert_command: Option<String>,
    batch_size: Option<usize>,
    signing_key: Option<PathBuf>,
    log_format: Option<log::Format>,
    metrics_file: Option<PathBuf>,
    metrics_interval: Option<f64>,
    sync_method: Option<String>,
}

/// How the files of a batch are made durable before they get their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMethod {
    /// Each file fsynced (on a few threads while the next ones are written): costs about the
    /// same wherever the outbox is.
    #[default]
    Fsync,
    /// One `syncfs(2)` of the outbox's file system per batch: much cheaper on a file system of
    /// the outbox's own, and as durable; where busy files share the file system, it writes
    /// theirs too. The name and the trade-off are PostgreSQL's `recovery_init_sync_method`.
    Syncfs,
}

/// Where exported transactions go.
#[derive(Debug)]
pub enum Output {
    /// One file per transaction in this directory (the seed's file mode).
    Files { directory: PathBuf, compress: bool, signing_key: Option<Box<SigningKey>> },
    /// Straight into the slave database (the seed's direct mode).
    Direct { slave: Box<Connection> },
}

/// A checked configuration.
#[derive(Debug)]
pub struct Config {
    pub slave_name: String,
    pub master: Connection,
    /// `master` as written, for PostgreSQL's own client programs (pg_dump).
    pub master_conninfo: String,
    pub output: Output,
    pub sleep_interval: Duration,
    pub alert_command: Option<String>,
    pub batch_size: usize,
    /// How log lines are written: `text` (the default) or `json`.
    pub log_format: log::Format,
    /// Where `run` writes its Prometheus metrics (a node_exporter textfile), if anywhere.
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: Duration,
    /// How a batch's files are made durable (file mode).
    pub sync_method: SyncMethod,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, Error> {
        configuration::load(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        let raw: RawConfig = configuration::from_toml(text)?;
        configuration::slave_name(&raw.slave_name)?;
        let master = configuration::connection("master", &raw.master)?;
        let compress = match raw.compression.as_deref() {
            None | Some("none") => false,
            Some("zstd") => true,
            Some(other) => {
                return Err(Error::config(format!("compression must be \"none\" or \"zstd\", not \"{other}\"")))
            }
        };
        let sync_method = match raw.sync_method.as_deref() {
            None | Some("fsync") => SyncMethod::Fsync,
            Some("syncfs") => SyncMethod::Syncfs,
            Some(other) => {
                return Err(Error::config(format!("sync_method must be \"fsync\" or \"syncfs\", not \"{other}\"")))
            }
        };
        let output = match (raw.transaction_file_directory, raw.slave) {
            (Some(directory), None) => {
                if !directory.is_dir() {
                    return Err(Error::config(format!(
                        "transaction_file_directory \"{}\" is not a directory",
                        directory.display()
                    ))
                    .with_hint("Create it first; the exporter does not create directories."));
                }
                Output::Files {
                    directory,
                    compress,
                    signing_key: raw
                        .signing_key
                        .as_deref()
                        .map(|path| SigningKey::load(path).map(Box::new))
                        .transpose()
                        .map_err(|e| Error::config(e.to_string()))?,
                }
            }
            (None, Some(slave)) => {
                if raw.signing_key.is_some() {
                    return Err(Error::config(
                        "signing_key signs manifests of files, it does not apply to direct mode",
                    ));
                }
                if raw.compression.is_some() {
                    return Err(Error::config("compression applies to files, not to direct mode"));
                }
                if raw.sync_method.is_some() {
                    return Err(Error::config("sync_method applies to files, not to direct mode"));
                }
                Output::Direct { slave: Box::new(configuration::connection("slave", &slave)?) }
            }
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "set either transaction_file_directory (file mode) or slave (direct mode), not both",
                ))
            }
            (None, None) => {
                return Err(Error::config("set transaction_file_directory (file mode) or slave (direct mode)"))
            }
        };
        let batch_size = raw.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(Error::config(format!("batch_size must be from 1 to {MAX_BATCH_SIZE}, not {batch_size}")));
        }
        Ok(Self {
            slave_name: raw.slave_name,
            master,
            master_conninfo: raw.master.clone(),
            output,
            sleep_interval: configuration::seconds(
                "sleep_interval",
                raw.sleep_interval,
                DEFAULT_SLEEP_INTERVAL,
                SLEEP_RANGE,
            )?,
            alert_command: match raw.alert_command {
                Some(command) if command.contains('\0') => {
                    return Err(Error::config("alert_command must not contain a NUL character"))
                }
                command => command.filter(|c| !c.trim().is_empty()),
            },
            batch_size,
            log_format: raw.log_format.unwrap_or_default(),
            metrics_file: raw.metrics_file,
            metrics_interval: configuration::seconds(
                "metrics_interval",
                raw.metrics_interval,
                DEFAULT_METRICS_INTERVAL,
                SLEEP_RANGE,
            )?,
            sync_method,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> String {
        std::env::temp_dir().display().to_string()
    }

    #[test]
    fn reads_a_file_mode_configuration() {
        let config = Config::parse(&format!(
            "slave_name = \"backup_system\"\nmaster = \"host=/tmp dbname=shop\"\ntransaction_file_directory = \"{}\"\n\
             compression = \"zstd\"\nsleep_interval = 2.5\nalert_command = \"sendmail ops\"\n",
            dir()
        ))
        .unwrap();
        assert_eq!(config.slave_name, "backup_system");
        assert!(matches!(config.output, Output::Files { compress: true, .. }));
        assert_eq!(config.sleep_interval, Duration::from_millis(2500));
        assert_eq!(config.alert_command.as_deref(), Some("sendmail ops"));
        assert_eq!(config.batch_size, DEFAULT_BATCH_SIZE);
    }

    #[test]
    fn reads_a_direct_mode_configuration() {
        let config =
            Config::parse("slave_name = \"s\"\nmaster = \"postgresql://u@h/db\"\nslave = \"host=/tmp dbname=copy\"\n")
                .unwrap();
        assert!(matches!(config.output, Output::Direct { .. }));
    }

    #[test]
    fn refuses_bad_configurations_with_a_clear_message() {
        let d = dir();
        let cases = [
            ("master = \"host=x\"\n".to_string(), "missing field `slave_name`"),
            (format!("slave_name = \"\"\nmaster = \"host=x\"\ntransaction_file_directory = \"{d}\"\n"), "slave_name must not be empty"),
            ("slave_name = \"s\"\nmaster = \"host=x\"\n".to_string(), "set transaction_file_directory"),
            (format!("slave_name = \"s\"\nmaster = \"host=x\"\ntransaction_file_directory = \"{d}\"\nslave = \"host=y\"\n"), "not both"),
            (format!("slave_name = \"s\"\nmaster = \"host=x\"\ntransaction_file_directory = \"{d}\"\ncompression = \"gzip\"\n"), "compression must be"),
            (format!("slave_name = \"s\"\nmaster = \"host=x\"\ntransaction_file_directory = \"{d}\"\nsync_method = \"fdatasync\"\n"), "sync_method must be"),
            ("slave_name = \"s\"\nmaster = \"host=x\"\nslave = \"host=y\"\nsync_method = \"syncfs\"\n".to_string(), "sync_method applies to files"),
            ("slave_name = \"s\"\nmaster = \"host=x\"\ntransaction_file_directory = \"/nonexistent/dir\"\n".to_string(), "is not a directory"),
            (format!("slave_name = \"s\"\nmaster = \"host=x\"\ntransaction_file_directory = \"{d}\"\nsleep_interval = -1\n"), "sleep_interval"),
            (format!("slave_name = \"s\"\nmaster = \"host=x\"\ntransaction_file_directory = \"{d}\"\ncolour = 1\n"), "unknown field `colour`"),
            (format!("slave_name = \"s\"\nmaster = \"port=notanumber\"\ntransaction_file_directory = \"{d}\"\n"), "master is not a valid connection string"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    /// Regression test: huge durations panicked (a `Duration` cannot hold them) and a huge
    /// batch_size reached the master as a negative LIMIT. Every value is checked, and a bad
    /// one is a configuration error that names it.
    #[test]
    fn extreme_values_are_refused_with_a_message_never_a_panic() {
        let d = dir();
        let base = format!("slave_name = \"s\"\nmaster = \"host=/tmp\"\ntransaction_file_directory = \"{d}\"\n");
        let cases = [
            ("sleep_interval = 1e30", "sleep_interval must be a number of seconds from 0.01 to 86400, not 1e30"),
            ("sleep_interval = nan", "sleep_interval must be a number of seconds"),
            ("sleep_interval = 0", "sleep_interval must be a number of seconds"),
            ("sleep_interval = 1e-300", "sleep_interval must be a number of seconds"),
            ("batch_size = 0", "batch_size must be from 1 to 100000, not 0"),
            ("batch_size = 9223372036854775807", "batch_size must be from 1 to 100000"),
            ("batch_size = -1", "invalid value"),
            ("batch_size = 1e3", "invalid type"),
            ("signing_key = \"/dev/zero\"", "is not a dbmirror-ed25519-secret key file"),
            ("alert_command = \"mail\\u0000x\"", "alert_command must not contain a NUL"),
        ];
        for (extra, expected) in cases {
            let err = Config::parse(&format!("{base}{extra}\n")).expect_err(extra);
            assert_eq!(err.kind(), crate::error::Kind::Config, "{extra}");
            assert!(err.to_string().contains(expected), "{extra}: {err:?} should contain {expected:?}");
        }
        assert_eq!(Config::parse(&format!("{base}batch_size = 100000\n")).unwrap().batch_size, MAX_BATCH_SIZE);
        // Whatever the value of whatever key: a result, never a panic.
        let values = [
            "1e30",
            "-1e30",
            "nan",
            "inf",
            "0",
            "-0.0",
            "5e-324",
            "9223372036854775807",
            "-9223372036854775808",
            "\"\"",
            "\"\\u0000\"",
            "\"/dev/zero\"",
            "[]",
            "{}",
            "true",
        ];
        for key in [
            "slave_name",
            "master",
            "transaction_file_directory",
            "slave",
            "compression",
            "sleep_interval",
            "alert_command",
            "batch_size",
            "signing_key",
            "log_format",
            "metrics_file",
            "metrics_interval",
            "sync_method",
        ] {
            for value in values {
                let text: String =
                    base.lines().filter(|l| !l.starts_with(&format!("{key} ="))).map(|l| format!("{l}\n")).collect();
                let _ = Config::parse(&format!("{text}{key} = {value}\n"));
            }
        }
    }
}
