//! `dbmirror-export`: drains the changes captured on a master for one slave into one SQL file
//! per master transaction (or applies them straight to the slave), and cleans up what every
//! slave has been sent. The seed's DBMirror.pl and clean_pending.pl, done again.

use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use clap::{Parser, Subcommand};

mod config;
mod direct;
mod error;
mod export;
mod fault;
mod filter;
mod master;
mod outbox;
mod snapshot;
mod sql;
mod status;
mod verify;

use config::Config;
use dbmirror_cli::log;
use error::{Error, EXIT_CODES};

#[derive(Debug, Parser)]
#[command(
    name = "dbmirror-export",
    version,
    about = "Export the changes captured on a PostgreSQL master for one slave",
    long_about = "Export the changes captured on a PostgreSQL master for one slave: one numbered, \
                  checksummed SQL file per master transaction in the slave's transaction_file_directory, \
                  or, with `slave` in the configuration, straight into the slave database.",
    after_help = dbmirror_cli::error::help(EXIT_CODES)
)]
struct Cli {
    /// Configuration file (TOML), one per slave; every command but keygen needs it
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Export everything pending for the slave, then exit
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
    /// Show what has been exported and what is waiting
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
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

fn main() -> ExitCode {
    log::report_panics();
    let cli = Cli::parse();
    let mut alert_command = None;
    match run(cli, &mut alert_command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&e.to_string());
            if let Some(command) = alert_command {
                alert(&command, &e);
            }
            ExitCode::from(e.kind().exit_code())
        }
    }
}

fn run(cli: Cli, alert_command: &mut Option<String>) -> Result<(), Error> {
    let command = match cli.command {
        Command::Keygen { prefix } => return keygen(&prefix),
        command => command,
    };
    let Some(path) = &cli.config else {
        return Err(Error::config("--config FILE is required").with_hint("See dbmirror-export --help."));
    };
    let config = Config::load(path)?;
    alert_command.clone_from(&config.alert_command);
    let stop = dbmirror_cli::signals::stop_flag()?;
    match command {
        Command::Keygen { .. } => unreachable!("keygen needs no configuration and returned above"),
        Command::Once => {
            let alert_each = |e: &Error| {
                if let Some(command) = &config.alert_command {
                    alert(command, e);
                }
            };
            let summary = export::once(&config, &stop, &mut export::CaptureProblems::default(), &alert_each)?;
            log::info(&format!(
                "done: {} transactions ({} changes) exported for slave \"{}\", {} purged",
                summary.transactions, summary.changes, config.slave_name, summary.purged
            ));
            Ok(())
        }
        Command::Run => {
            let alert_each = |e: &Error| {
                if let Some(command) = &config.alert_command {
                    alert(command, e);
                }
            };
            export::run(&config, &stop, &alert_each)
        }
        Command::Snapshot { file_size, table, schema_file } => {
            snapshot::snapshot(&config, file_size, &table, schema_file.as_deref(), &stop)?;
            Ok(())
        }
        Command::Clean => {
            let mut master = master::Master::connect(&config.master, &config.slave_name)?;
            let purged = master.clean()?;
            log::info(&format!("purged {purged} transactions that every slave has been sent"));
            Ok(())
        }
        Command::Status { json } => status::show(&config, json),
        Command::Verify { slave, json } => {
            let slave = match (slave, &config.output) {
                (Some(text), _) => dbmirror_cli::configuration::connection("--slave", &text)?,
                (None, config::Output::Direct { slave }) => (**slave).clone(),
                (None, config::Output::Files { .. }) => {
                    return Err(Error::config("verify needs the slave database")
                        .with_hint("Pass --slave CONNINFO, or set slave in the configuration."))
                }
            };
            let mut master = master::Master::connect(&config.master, &config.slave_name)?;
            let comparisons = verify::compare(&mut master, &slave)?;
            verify::report(&comparisons, &master.capture_problems()?, json)
        }
    }
}

/// Writes a new key pair: PREFIX.key and PREFIX.pub.
fn keygen(prefix: &std::path::Path) -> Result<(), Error> {
    let (secret, public) = dbmirror_spool::SigningKey::generate()?;
    let with = |extension: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(extension);
        PathBuf::from(name)
    };
    let (secret_path, public_path) = (with(".key"), with(".pub"));
    if public_path.exists() {
        return Err(Error::config(format!(
            "\"{}\" exists already; keygen never replaces a key",
            public_path.display()
        )));
    }
    secret.save(&secret_path)?;
    public.save(&public_path)?;
    log::info(&format!(
        "wrote \"{}\" (secret: the exporter's signing_key) and \"{}\" (public: the applier's public_key)",
        secret_path.display(),
        public_path.display()
    ));
    Ok(())
}

/// Runs the configured alert command with the error on its standard input, as the seed
/// e-mailed its errors. A failing alert is reported, never fatal.
fn alert(command: &str, error: &Error) {
    let spawned = std::process::Command::new("/bin/sh").arg("-c").arg(command).stdin(Stdio::piped()).spawn().and_then(
        |mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                writeln!(stdin, "dbmirror-export: {error}")?;
            }
            child.wait()
        },
    );
    match spawned {
        Ok(status) if status.success() => {}
        Ok(status) => log::error(&format!("alert_command failed: {status}")),
        Err(e) => log::error(&format!("could not run alert_command: {e}")),
    }
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
