//! `dbmirror-export`: drains the changes captured on a master for one slave into one SQL file
//! per master transaction (or applies them straight to the slave), and cleans up what every
//! slave has been sent. The seed's DBMirror.pl and clean_pending.pl, done again.

use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use clap::Parser;

mod config;
mod direct;
mod error;
mod export;
mod fault;
mod filter;
mod group;
mod master;
mod outbox;
mod snapshot;
mod sql;
mod status;
mod tee;
mod verify;

use config::Config;
use dbmirror_cli::configuration::Reload;
use dbmirror_cli::health::Level;
use dbmirror_cli::log;
use dbmirror_export::{Cli, Command};
use error::Error;

/// The settings that a reload on SIGHUP does not change: they name the stream that `run`
/// exports and the place it writes to, which the outbox's state and the master's lock belong to.
const RESTART_ONLY: &[&str] = &["slave_name", "transaction_file_directory", "slave"];

fn main() -> ExitCode {
    log::report_panics();
    let cli = Cli::parse();
    // Only `once` and `run` serve several slaves; any other command given several
    // configurations is a bad command line, whatever exit codes the command uses otherwise.
    if cli.configuration.several() && !matches!(cli.command, Command::Once | Command::Run) {
        if let Err(e) = cli.configuration.path() {
            log::error(&e.to_string());
            return ExitCode::from(e.kind().exit_code());
        }
    }
    let mut alert_command = None;
    // `status` answers in a Nagios plugin's codes: whatever keeps it from telling is UNKNOWN.
    let checking = matches!(cli.command, Command::Status { .. });
    match run(cli, &mut alert_command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error(&e.to_string());
            if let Some(command) = alert_command.filter(|_| !checking) {
                alert(&command, &e.to_string());
            }
            ExitCode::from(if checking { Level::Unknown.exit_code() } else { e.kind().exit_code() })
        }
    }
}

/// Runs the command; returns the exit code of a success (for `status`, its verdict).
fn run(cli: Cli, alert_command: &mut Option<String>) -> Result<u8, Error> {
    let command = match cli.command {
        Command::Keygen { prefix } => return keygen(&prefix).map(|()| 0),
        command => command,
    };
    if matches!(command, Command::Once | Command::Run) {
        return export(command, &cli.configuration.paths()?, alert_command);
    }
    let path = cli.configuration.path()?;
    let config = Config::load(&path)?;
    log::configure(config.log_format, &config.slave_name);
    alert_command.clone_from(&config.alert_command);
    let stop = dbmirror_cli::signals::stop_flag()?;
    // Before any work: SIGHUP must not end a command, whichever it is (the handler stays).
    dbmirror_cli::signals::reload_flag()?;
    match command {
        Command::Keygen { .. } | Command::Once | Command::Run => {
            unreachable!("keygen needs no configuration, once and run are export's: both returned above")
        }
        Command::Snapshot { file_size, table, schema_file } => {
            snapshot::snapshot(&config, file_size, &table, schema_file.as_deref(), &stop)?;
            Ok(0)
        }
        Command::Clean => {
            let mut master = master::Master::connect(&config.master, &config.slave_name)?;
            let purged = master.clean()?;
            log::info(&format!("purged {purged} transactions that every slave has been sent"));
            Ok(0)
        }
        Command::Status { json, lag } => Ok(status::show(&config, json, &lag)?.exit_code()),
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
            verify::report(&comparisons, &master.capture_problems()?, json).map(|()| 0)
        }
    }
}

/// `once` or `run` for one slave, or for several slaves of one master, one configuration each
/// (see [`group`]); the settings of the process come from the first configuration.
fn export(command: Command, paths: &[PathBuf], alert_command: &mut Option<String>) -> Result<u8, Error> {
    let configs = paths.iter().map(|path| Config::load(path)).collect::<Result<Vec<_>, _>>()?;
    log::configure(configs[0].log_format, &group::names(&configs));
    alert_command.clone_from(&configs[0].alert_command);
    let stop = dbmirror_cli::signals::stop_flag()?;
    // Before any work: SIGHUP must not end a command, whichever it is.
    let reload = dbmirror_cli::signals::reload_flag()?;
    group::check(&configs)?;
    let slaves = match &configs[..] {
        [config] => format!("slave \"{}\"", config.slave_name),
        _ => {
            format!("slaves {}", configs.iter().map(|c| format!("\"{}\"", c.slave_name)).collect::<Vec<_>>().join(", "))
        }
    };
    match command {
        Command::Once => {
            let alert_each = |text: &str| {
                if let Some(command) = &configs[0].alert_command {
                    alert(command, text);
                }
            };
            let summary = export::once(&configs, &stop, &mut export::CaptureProblems::default(), &alert_each)?;
            log::info(&format!(
                "done: {} transactions ({} changes) exported for {slaves}, {} purged",
                summary.transactions, summary.changes, summary.purged
            ));
            Ok(0)
        }
        Command::Run => {
            for (path, config) in paths.iter().zip(&configs) {
                log::startup(env!("CARGO_PKG_VERSION"), path, &config.slave_name, &serves(config));
            }
            let mut reloads = paths
                .iter()
                .map(|path| Reload::new(path, reload.clone(), RESTART_ONLY))
                .collect::<Result<Vec<_>, _>>()?;
            let alert_each = |config: &Config, text: &str| {
                if let Some(command) = &config.alert_command {
                    alert(command, text);
                }
            };
            export::run(configs, &mut reloads, &stop, &alert_each).map(|()| 0)
        }
        _ => unreachable!("only once and run come here"),
    }
}

/// What `run` reads and writes, for its startup line.
fn serves(config: &Config) -> String {
    let master = dbmirror_cli::configuration::describe(&config.master);
    match &config.output {
        config::Output::Files { directory, .. } => {
            format!("master \"{master}\", outbox \"{}\"", directory.display())
        }
        config::Output::Direct { slave } => {
            format!("master \"{master}\", straight into slave \"{}\"", dbmirror_cli::configuration::describe(slave))
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

/// Runs the configured alert command with `text` (an error, or the news of a recovery) on its
/// standard input, as the seed e-mailed its errors. A failing alert is reported, never fatal.
fn alert(command: &str, text: &str) {
    let spawned = std::process::Command::new("/bin/sh").arg("-c").arg(command).stdin(Stdio::piped()).spawn().and_then(
        |mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                writeln!(stdin, "dbmirror-export: {text}")?;
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
