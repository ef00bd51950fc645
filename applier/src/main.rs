//! `dbmirror-apply`: replays the transaction files that arrive in a slave's inbound spool, in
//! order and exactly once, after checking them against their manifests.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dbmirror_cli::error::{Error, Exit, Kind};
use dbmirror_cli::log;

mod apply;
mod config;
mod inbox;
mod status;

use config::Config;

/// The exit codes of `dbmirror-apply`: `--help` shows them, and a test holds the README's
/// table to them.
const EXIT_CODES: &[Exit] = &[
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
struct Cli {
    /// Configuration file (TOML)
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Show the last applied file, what the spool holds, gaps and quarantined files
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SnapshotOptions {
    /// Let a snapshot (see dbmirror-export snapshot) replace the rows of tables that are not
    /// empty; without it, a snapshot goes only into empty tables
    #[arg(long)]
    replace: bool,
}

impl SnapshotOptions {
    /// The slave connection, with the snapshot's replace setting for the session.
    fn apply_to(&self, mut config: Config) -> Config {
        if self.replace {
            config::session_setting(&mut config.slave, dbmirror_sql::REPLACE_SETTING, "on");
        }
        config
    }
}

fn main() -> ExitCode {
    log::report_panics();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&e.to_string());
            ExitCode::from(e.kind().exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let config = Config::load(&cli.config)?;
    let stop = dbmirror_cli::signals::stop_flag()?;
    match cli.command {
        Command::Init => {
            apply::init(&config)?;
            log::info("slave prepared");
            Ok(())
        }
        Command::Once { snapshot } => {
            let summary = apply::once(&snapshot.apply_to(config), &stop)?;
            log::info(&format!("applied {} files; last applied: {}", summary.applied, summary.last));
            if let Some(reason) = summary.waiting {
                log::info(&reason);
            }
            Ok(())
        }
        Command::Watch { snapshot } => apply::watch(&snapshot.apply_to(config), &stop),
        Command::Status { json } => status::show(&config, json),
    }
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
