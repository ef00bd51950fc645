//! The exporter's configuration file (TOML), read and checked before anything else happens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dbmirror_spool::SigningKey;
use serde::Deserialize;

use dbmirror_apply::configuration;

use crate::error::Error;

/// Transactions assigned, written and recorded per round trip, unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Seconds `run` sleeps when there is nothing to export, unless configured.
pub const DEFAULT_SLEEP_INTERVAL: f64 = 10.0;

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    slave_name: String,
    master: String,
    transaction_file_directory: Option<PathBuf>,
    slave: Option<String>,
    compression: Option<String>,
    sleep_interval: Option<f64>,
    alert_command: Option<String>,
    batch_size: Option<usize>,
    signing_key: Option<PathBuf>,
}

/// Where exported transactions go.
#[derive(Debug)]
pub enum Output {
    /// One file per transaction in this directory (the seed's file mode).
    Files { directory: PathBuf, compress: bool, signing_key: Option<Box<SigningKey>> },
    /// Straight into the slave database (the seed's direct mode).
    Direct { slave: Box<postgres::Config> },
}

/// A checked configuration.
#[derive(Debug)]
pub struct Config {
    pub slave_name: String,
    pub master: postgres::Config,
    pub output: Output,
    pub sleep_interval: Duration,
    pub alert_command: Option<String>,
    pub batch_size: usize,
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
        if batch_size == 0 {
            return Err(Error::config("batch_size must be at least 1"));
        }
        Ok(Self {
            slave_name: raw.slave_name,
            master,
            output,
            sleep_interval: configuration::seconds(
                "sleep_interval",
                raw.sleep_interval,
                DEFAULT_SLEEP_INTERVAL,
                false,
            )?,
            alert_command: raw.alert_command.filter(|c| !c.trim().is_empty()),
            batch_size,
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
}
