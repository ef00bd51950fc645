//! The command line of `dbmirror-apply`, and nothing else: the binary parses it, and the
//! package crate renders the man pages and shell completions from it. This library is the
//! binary's options and exit-code table alone; what the commands do lives in the binary.

use clap::{Parser, Subcommand};
use dbmirror_cli::configuration::Location;
use dbmirror_cli::error::{Exit, Kind};
use dbmirror_cli::health::{LagThresholds, DEFAULT_GAP_AGE, STATUS_EXIT_CODES};

/// The exit codes of `dbmirror-apply`: `--help` shows them, and a test holds the README's
/// table to them.
pub const EXIT_CODES: &[Exit] = &[
    Exit::success("success: every complete file in order was applied (files still arriving are waited for)"),
    Exit::failure(
        Kind::Runtime,
        "failure that retrying may cure: slave connection lost, database or I/O error (`watch` retries these itself)",
    ),
    Exit::failure(Kind::Config, "bad command line or configuration"),
    Exit::failure(
        Kind::NotPrepared,
        "the slave is not prepared, or was by an earlier version: run `dbmirror-apply init` (or `psql -f sql/slave_setup.sql`)",
    ),
    Exit::failure(Kind::Busy, "another applier is running on this spool"),
    Exit::failure(Kind::BadFile, "stopped at a bad file: it was moved to quarantine, with the reason beside it"),
    Exit::failure(
        Kind::Access,
        "the database refused the configured role: wrong password, unknown role or database, or missing privileges",
    ),
];

#[derive(Debug, Parser)]
#[command(
    name = "dbmirror-apply",
    version,
    about = "Apply dbmirror transaction files from an inbound spool to a slave database",
    long_about = "Apply dbmirror transaction files from an inbound spool to a slave database: only files \
                  whose manifest has arrived and whose checksum matches, in number order, each exactly once \
                  and in one transaction. Applied files go to the archive; bad files to quarantine, with the \
                  reason beside them.",
    after_help = dbmirror_cli::error::help(EXIT_CODES)
)]
pub struct Cli {
    #[command(flatten)]
    pub configuration: Location,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prepare the slave database, or upgrade it in place (the same SQL as sql/slave_setup.sql); harmless to repeat
    Init,
    /// Apply every file that is next in order and complete, then exit
    Once {
        #[command(flatten)]
        snapshot: SnapshotOptions,
    },
    /// Apply files as they arrive, until SIGTERM or SIGINT
    Watch {
        #[command(flatten)]
        snapshot: SnapshotOptions,
    },
    /// Show the last applied file, the lag, what the spool holds, gaps and quarantined files;
    /// the exit code is a Nagios plugin's (see below)
    #[command(after_help = STATUS_EXIT_CODES)]
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        lag: LagThresholds,
        /// Seconds a gap may hold up files that arrived after it before status says CRITICAL
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_GAP_AGE)]
        gap_age: f64,
    },
}

#[derive(Debug, clap::Args)]
pub struct SnapshotOptions {
    /// Let a snapshot (see dbmirror-export snapshot) replace the rows of tables that are not
    /// empty; without it, a snapshot goes only into empty tables
    #[arg(long)]
    pub replace: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_documents_every_exit_code() {
        let help = Cli::command().render_long_help().to_string();
        for code in 0..=5 {
            assert!(help.contains(&format!("\n  {code}  ")), "exit code {code} missing from --help");
        }
        Cli::command().debug_assert();
    }
}
