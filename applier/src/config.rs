//! The applier's configuration file (TOML), read and checked before anything else happens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dbmirror_spool::{PublicKey, ARCHIVE_DIR, QUARANTINE_DIR};
use serde::Deserialize;

use dbmirror_apply::configuration;
use dbmirror_apply::error::Error;

/// Seconds a file must have been left alone before a checksum mismatch counts as damage rather
/// than a copy in progress, unless configured.
pub const DEFAULT_SETTLE_SECONDS: f64 = 60.0;
/// Seconds between rescans of the spool in `watch`, in case a file-system event was missed.
pub const DEFAULT_POLL_INTERVAL: f64 = 5.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    slave_name: String,
    slave: String,
    spool: PathBuf,
    archive: Option<PathBuf>,
    quarantine: Option<PathBuf>,
    master: Option<String>,
    settle_seconds: Option<f64>,
    poll_interval: Option<f64>,
    public_key: Option<PathBuf>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub slave_name: String,
    pub slave: postgres::Config,
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
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, Error> {
        configuration::load(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        let raw: RawConfig = configuration::from_toml(text)?;
        configuration::slave_name(&raw.slave_name)?;
        let slave = configuration::connection("slave", &raw.slave)?;
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
        Ok(Self {
            slave_name: raw.slave_name,
            slave,
            archive: raw.archive.unwrap_or_else(|| raw.spool.join(ARCHIVE_DIR)),
            quarantine: raw.quarantine.unwrap_or_else(|| raw.spool.join(QUARANTINE_DIR)),
            spool: raw.spool,
            master,
            settle: configuration::seconds("settle_seconds", raw.settle_seconds, DEFAULT_SETTLE_SECONDS, true)?,
            poll_interval: configuration::seconds("poll_interval", raw.poll_interval, DEFAULT_POLL_INTERVAL, false)?,
            public_key: raw
                .public_key
                .as_deref()
                .map(PublicKey::load)
                .transpose()
                .map_err(|e| Error::config(e.to_string()))?,
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
    fn defaults_put_archive_and_quarantine_in_the_spool() {
        let config =
            Config::parse(&format!("slave_name = \"s\"\nslave = \"host=/tmp dbname=copy\"\nspool = \"{}\"\n", dir()))
                .unwrap();
        assert_eq!(config.archive, std::env::temp_dir().join("archive"));
        assert_eq!(config.quarantine, std::env::temp_dir().join("quarantine"));
        assert_eq!(config.settle, Duration::from_secs(60));
        assert_eq!(config.master, None);
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
        ];
        for (text, expected) in cases {
            let err = Config::parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
}
