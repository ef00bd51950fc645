//! `dbmirror-package DIR`: writes what the Debian package of the tools holds besides the
//! binaries and the files kept in `package/`: a man page for each tool and each of its
//! commands, and completions for bash, zsh and fish. All of it is rendered from the tools' own
//! command lines (the library targets of the exporter and applier crates), so it cannot drift
//! from `--help`. `scripts/package` runs it and gzips the man pages; it is never installed.
//!
//! It writes `DIR/man/*.1`, `DIR/bash/TOOL`, `DIR/zsh/_TOOL` and `DIR/fish/TOOL.fish`, the
//! names each shell looks for in its directory of completions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use dbmirror_cli::configuration::{CONFIG_DIR_VARIABLE, DEFAULT_CONFIG_DIR};
use dbmirror_cli::error::Exit;

#[derive(Debug, Parser)]
#[command(name = "dbmirror-package", about = "Write the man pages and shell completions of dbmirror's tools")]
struct Args {
    /// Directory to write into (created if need be)
    dir: PathBuf,
}

/// What a tool's man page says beyond its command line.
struct Tool {
    command: clap::Command,
    exit_codes: &'static [Exit],
    /// Files the tool reads or the package installs for it, as (path, what it is).
    files: Vec<(String, &'static str)>,
    /// Other pages to read.
    see_also: &'static [&'static str],
}

fn main() -> ExitCode {
    let args = Args::parse();
    let example = |name: &str| format!("/usr/share/doc/dbmirror-tools/examples/{name}");
    let tools = [
        Tool {
            command: dbmirror_export::Cli::command(),
            exit_codes: dbmirror_export::EXIT_CODES,
            files: vec![
                (format!("{DEFAULT_CONFIG_DIR}/NAME.toml"), "The configuration --name NAME reads."),
                (example("export.toml"), "An example configuration."),
                (
                    "/lib/systemd/system/dbmirror-export@.service".to_string(),
                    "The systemd unit dbmirror-export@NAME: runs dbmirror-export --name NAME run as the user dbmirror.",
                ),
            ],
            see_also: &["dbmirror-apply(1)", "systemctl(1)"],
        },
        Tool {
            command: dbmirror_apply::Cli::command(),
            exit_codes: dbmirror_apply::EXIT_CODES,
            files: vec![
                (format!("{DEFAULT_CONFIG_DIR}/NAME.toml"), "The configuration --name NAME reads."),
                (example("apply.toml"), "An example configuration."),
                (
                    "/lib/systemd/system/dbmirror-apply@.service".to_string(),
                    "The systemd unit dbmirror-apply@NAME: runs dbmirror-apply --name NAME watch as the user dbmirror.",
                ),
                (
                    "/usr/share/dbmirror/sql/slave_setup.sql".to_string(),
                    "What init runs on the slave, for psql -f where the files are applied by hand.",
                ),
                (
                    "/usr/share/dbmirror/sql/applier_role.sql".to_string(),
                    "Makes a role that can change the mirrored tables and nothing else.",
                ),
            ],
            see_also: &["dbmirror-export(1)", "systemctl(1)"],
        },
    ];
    for tool in &tools {
        if let Err(message) =
            write_manual(tool, &args.dir.join("man")).and_then(|()| write_completions(tool, &args.dir))
        {
            eprintln!("dbmirror-package: error: {message}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Writes the tool's page and one page per command (`dbmirror-export-run.1`, as git names
/// its commands' pages).
fn write_manual(tool: &Tool, dir: &Path) -> Result<(), String> {
    create_dir(dir)?;
    // Every page clap knows how to write; the tool's own page is written again below, with
    // what clap cannot know about it.
    clap_mangen::generate_to(tool.command.clone(), dir)
        .map_err(|e| format!("could not write the man pages into \"{}\": {e}", dir.display()))?;
    // Without the help command, as generate_to leaves it out: it would be listed without a page.
    let man = Man::new(tool.command.clone().disable_help_subcommand(true));
    let render = || -> std::io::Result<Vec<u8>> {
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        man.render_subcommands_section(&mut page)?;
        page.extend(extra_sections(tool).render().into_bytes());
        man.render_version_section(&mut page)?;
        Ok(page)
    };
    let page = render().map_err(|e| format!("could not render the man page {}: {e}", man.get_filename()))?;
    write(&dir.join(man.get_filename()), &page)
}

/// EXIT STATUS from the tool's exit-code table (the one `--help` shows, instead of its
/// rendering as text), FILES, ENVIRONMENT and SEE ALSO.
fn extra_sections(tool: &Tool) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for exit in tool.exit_codes {
        roff.control("TP", []).text([bold(exit.code().to_string())]).text([roman(exit.meaning())]);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in &tool.files {
        roff.control("TP", []).text([bold(path.as_str())]).text([roman(*what)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", [])
        .text([bold(CONFIG_DIR_VARIABLE)])
        .text([roman(format!("The directory where --name NAME finds NAME.toml, instead of {DEFAULT_CONFIG_DIR}."))]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(format!("{}, and the README in /usr/share/doc/dbmirror-tools/.", tool.see_also.join(", ")))]);
    roff
}

/// Writes the tool's completions for bash, zsh and fish.
fn write_completions(tool: &Tool, dir: &Path) -> Result<(), String> {
    let name = tool.command.get_name().to_string();
    for (shell, subdir, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut tool.command.clone(), &name, &mut script);
        let dir = dir.join(subdir);
        create_dir(&dir)?;
        write(&dir.join(file), &script)?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("could not create directory \"{}\": {e}", dir.display()))
}

fn write(path: &Path, content: &[u8]) -> Result<(), String> {
    std::fs::write(path, content).map_err(|e| format!("could not write \"{}\": {e}", path.display()))
}
