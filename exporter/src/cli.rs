//! The command line of `dbmirror-export`, and nothing else: the binary parses it, and the
//! package crate renders the man pages and shell completions from it. This library is the
//! binary's options and exit-code table alone; what the commands do lives in the binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dbmirror_cli::configuration::Location;
use dbmirror_cli::error::{Exit, Kind};
use dbmirror_cli::health::{LagThresholds, STATUS_EXIT_CODES};

/// The exit codes of `dbmirror-export`: `--help` shows them, and a test holds the README's
/// table to them.
pub const EXIT_CODES: &[Exit] = &[
    Exit::success("success"),
    Exit::failure(
        Kind::Runtime,
        "failure that retrying may cure: connection lost, database or I/O error (`run` retries these itself)",
    ),
    Exit::failure(Kind::Config, "bad command line or configuration"),
    Exit::failure(
        Kind::NotPrepared,
        "the master is not prepared: extension missing, slave not in dbmirror_MirrorHost, or its snapshot unfinished",
    ),
    Exit::failure(Kind::Busy, "another exporter is running for this slave"),
    Exit::failure(
        Kind::BadFile,
        "the outbox (or, in direct mode, the slave) holds a file that differs from what its number must contain, \
         or in direct mode the slave refused a transaction (its SQL failed: repair the slave)",
    ),
    Exit::failure(
        Kind::Differs,
        "`verify`: a mirrored table differs between master and slave, or capture is incomplete",
    ),
    Exit::failure(
        Kind::Diverged,
        "the master's state does not continue this stream: restored from a dump or an older copy",
    ),
    Exit::failure(
        Kind::Access,
        "the database refused the configured role: wrong password, unknown role or database, or missing privileges",
    ),
];

#[derive(Debug, Parser)]
#[command(
    name = "dbmirror-export",
    version,
    about = "Export the changes captured on a PostgreSQL master for one slave, or for several",
    long_about = "Export the changes captured on a PostgreSQL master for one slave: one numbered, \
                  checksummed SQL file per master transaction in the slave's transaction_file_directory, \
                  or, with `slave` in the configuration, straight into the slave database.\n\n\
                  `once` and `run` take several configurations (--config or --name repeated), one per \
                  slave of the same master database, all in file mode: each transaction is then read and \
                  rendered once and written for every slave. slave_name, transaction_file_directory, \
                  compression and signing_key are each slave's own; sleep_interval, batch_size, \
                  alert_command, log_format, metrics_file and metrics_interval come from the first \
                  configuration.",
    after_help = dbmirror_cli::error::help(EXIT_CODES)
)]
pub struct Cli {
    // Every command but keygen reads a configuration file, one per slave; once and run may
    // read several.
    #[command(flatten)]
    pub configuration: Location,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export everything pending for the slave (or for each slave configured), then exit
    Once,
    /// Export continuously, sleeping sleep_interval when idle; stop on SIGTERM or SIGINT
    Run,
    /// Start the slave on a live master, or start it again: write a consistent copy of every
    /// mirrored table into its outbox as numbered files, registering the slave if need be; the
    /// stream of transaction files continues exactly after it
    Snapshot {
        /// Bytes of SQL per file, about (the files of a snapshot are bounded in size)
        #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(4096..=(4u64 << 30)))]
        file_size: u64,
        /// Copy only this table (repeatable), for a slave that is running: it takes the table
        /// from the copy on, and the table is mirrored first if it is not yet
        #[arg(long, value_name = "TABLE")]
        table: Vec<String>,
        /// Also write the DDL of the tables copied into FILE, with pg_dump --schema-only (the
        /// capture triggers left out), for psql -f on the slave before the snapshot's files
        #[arg(long, value_name = "FILE")]
        schema_file: Option<PathBuf>,
    },
    /// Purge captured changes that every slave has been sent (the seed's clean_pending.pl)
    Clean,
    /// Show what has been exported, what is waiting and for how long; the exit code is a
    /// Nagios plugin's (see below)
    #[command(after_help = STATUS_EXIT_CODES)]
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        lag: LagThresholds,
    },
    /// Make an Ed25519 key pair for signing manifests: PREFIX.key (secret: the exporter's
    /// signing_key) and PREFIX.pub (public: the applier's public_key); never replaces a file
    Keygen {
        /// Path and name of the key files, without extension
        prefix: PathBuf,
    },
    /// Compare every mirrored table of master and slave (row count and hash per table)
    Verify {
        /// The slave database (libpq connection string or URL); default: `slave` of the configuration
        #[arg(long, value_name = "CONNINFO")]
        slave: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_documents_every_exit_code() {
        let help = Cli::command().render_long_help().to_string();
        for code in 0..=7 {
            assert!(help.contains(&format!("\n  {code}  ")), "exit code {code} missing from --help");
        }
        Cli::command().debug_assert();
    }
}
