//! `dbmirror-apply`: replays the transaction files that arrive in a slave's inbound spool, in
//! order and exactly once, after checking them against their manifests.

use std::process::ExitCode;

use clap::Parser;
use dbmirror_apply::{Cli, Command, SnapshotOptions};
use dbmirror_cli::configuration::Reload;
use dbmirror_cli::error::Error;
use dbmirror_cli::health::Level;
use dbmirror_cli::log;

mod apply;
mod config;
mod inbox;
mod retention;
mod status;

use config::Config;

/// The configuration with the slave connection carrying the snapshot's replace setting.
fn with_snapshot_options(mut config: Config, snapshot: &SnapshotOptions) -> Config {
    if snapshot.replace {
        config::session_setting(&mut config.slave, dbmirror_sql::REPLACE_SETTING, "on");
    }
    config
}

/// The settings that a reload on SIGHUP does not change: they name the stream that `watch`
/// applies and the spool whose lock it holds and whose events it watches.
const RESTART_ONLY: &[&str] = &["slave_name", "spool"];

fn main() -> ExitCode {
    log::report_panics();
    let cli = Cli::parse();
    // `status` answers in a Nagios plugin's codes: whatever keeps it from telling is UNKNOWN.
    let checking = matches!(cli.command, Command::Status { .. });
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error(&e.to_string());
            ExitCode::from(if checking { Level::Unknown.exit_code() } else { e.kind().exit_code() })
        }
    }
}

/// Runs the command; returns the exit code of a success (for `status`, its verdict).
fn run(cli: Cli) -> Result<u8, Error> {
    let path = cli.configuration.path()?;
    let config = Config::load(&path)?;
    log::configure(config.log_format, &config.slave_name);
    let stop = dbmirror_cli::signals::stop_flag()?;
    // Before any work: SIGHUP must not end a command, whichever it is.
    let reload = dbmirror_cli::signals::reload_flag()?;
    match cli.command {
        Command::Init => {
            apply::init(&config)?;
            log::info("slave prepared");
            Ok(0)
        }
        Command::Once { snapshot } => {
            let summary = apply::once(&with_snapshot_options(config, &snapshot), &stop)?;
            log::info(&format!("applied {} files; last applied: {}", summary.applied, summary.last));
            if let Some(reason) = summary.waiting {
                log::info(&reason);
            }
            Ok(0)
        }
        Command::Watch { snapshot } => {
            let serves = format!(
                "slave \"{}\", spool \"{}\", archive \"{}\", quarantine \"{}\"",
                dbmirror_cli::configuration::describe(&config.slave),
                config.spool.display(),
                config.archive.display(),
                config.quarantine.display()
            );
            log::startup(env!("CARGO_PKG_VERSION"), &path, &config.slave_name, &serves);
            let mut reload = Reload::new(&path, reload, RESTART_ONLY)?;
            let parse = |text: &str| Config::parse(text).map(|config| with_snapshot_options(config, &snapshot));
            apply::watch(with_snapshot_options(config, &snapshot), &mut reload, &parse, &stop).map(|()| 0)
        }
        Command::Status { json, lag, gap_age } => Ok(status::show(&config, json, &lag, gap_age)?.exit_code()),
    }
}
