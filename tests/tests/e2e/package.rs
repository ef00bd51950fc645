//! The Debian packages, installed on this machine: `scripts/test` builds them with
//! `scripts/package` and installs them before the tests run. The binaries in /usr/bin carry a
//! master's transactions to a slave with their configurations found by name, as the systemd
//! units start them; man pages, completions and units are where the system looks for them.
//! Without the packages these tests fail with a hint: they are never skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dbmirror_cli::configuration::CONFIG_DIR_VARIABLE;
use dbmirror_tests::tools::{transaction_files, transfer, Running, Workdir};
use dbmirror_tests::{assert_tables_equal, describe, repository, Cluster};

use crate::export::{workload, SCHEMA, TABLES};

const PACKAGES: [&str; 2] = ["dbmirror-tools", "postgresql-15-dbmirror"];
const EXPORT: &str = "/usr/bin/dbmirror-export";
const APPLY: &str = "/usr/bin/dbmirror-apply";
const EXAMPLES: &str = "/usr/share/doc/dbmirror-tools/examples";
/// The slave's name, and the name of its configuration on both sides, as in the README.
const NAME: &str = "backup_system";

/// Fails unless both packages are installed in the version of this source tree.
fn assert_installed() {
    let output = Command::new("dpkg").arg("-s").args(PACKAGES).output().expect("dpkg runs");
    let text = String::from_utf8_lossy(&output.stdout);
    for package in PACKAGES {
        let paragraph = text.split("\n\n").find(|p| p.starts_with(&format!("Package: {package}\n")));
        let installed = paragraph.is_some_and(|p| {
            p.contains("\nStatus: install ok installed\n")
                && p.contains(&format!("\nVersion: {}\n", env!("CARGO_PKG_VERSION")))
        });
        assert!(
            installed,
            "package {package} {} is not installed:\n{}\nHINT: build and install the packages: \
             scripts/package && apt-get install -y --reinstall ./target/debian/*.deb (scripts/test does)",
            env!("CARGO_PKG_VERSION"),
            describe(&output)
        );
    }
}

/// An installed example configuration with the values of `replace` (key, value) put in, as an
/// administrator would make `/etc/dbmirror/NAME.toml` from it. Keys the example does not set
/// are a failure, so that the examples keep the keys the README's quick start shows.
fn from_example(example: &str, replace: &[(&str, String)]) -> String {
    let path = Path::new(EXAMPLES).join(example);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("could not read {}: {e}", path.display()));
    let mut config = String::new();
    let mut replaced = Vec::new();
    for line in text.lines() {
        let key = line.split_once('=').map(|(key, _)| key.trim());
        match replace.iter().find(|(k, _)| Some(*k) == key) {
            Some((key, value)) => {
                config.push_str(&format!("{key} = \"{value}\"\n"));
                replaced.push(*key);
            }
            None => config.push_str(&format!("{line}\n")),
        }
    }
    for (key, _) in replace {
        assert!(replaced.contains(key), "{} sets no {key}:\n{text}", path.display());
    }
    config
}

/// The installed `tool` with `DBMIRROR_CONFIG_DIR=etc` and `args`.
fn installed(tool: &str, etc: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(tool);
    command.env(CONFIG_DIR_VARIABLE, etc).args(args);
    command
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "{}", describe(&output));
    output
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that a long-running command logged its startup line first.
fn assert_startup_line(output: &Output, tool: &str, config: &Path, serves: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    let expected = format!(
        " {tool} LOG: starting version {} for slave \"{NAME}\" with configuration \"{}\": {serves}",
        env!("CARGO_PKG_VERSION"),
        config.display()
    );
    assert!(first.ends_with(&expected), "the first line should end with {expected:?}:\n{stderr}");
}

/// The README's quick start with the installed tools: configurations made from the packaged
/// examples in a directory of their own on each side (a master's and a slave's /etc/dbmirror),
/// found by `--name`; `snapshot` and `init` by hand, then `run` and `watch` as the systemd units
/// start them.
#[test]
fn the_installed_tools_find_their_configuration_by_name_and_mirror_a_master() {
    assert_installed();
    let master = Cluster::start("master");
    master.create_extension();
    master.execute(SCHEMA);
    for table in TABLES {
        master.execute(&format!("SELECT dbmirror_mirror_table('{}')", table.replace('\'', "''")));
    }
    master.execute("INSERT INTO item (name, price) SELECT 'before ' || g, g FROM generate_series(1, 20) g");
    let slave = Cluster::start("slave");
    slave.execute(SCHEMA);

    let work = Workdir::new("package");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let (master_etc, slave_etc) = (work.dir("master-etc"), work.dir("slave-etc"));
    let export_config = master_etc.join(format!("{NAME}.toml"));
    let apply_config = slave_etc.join(format!("{NAME}.toml"));
    std::fs::write(
        &export_config,
        from_example(
            "export.toml",
            &[("master", master.conninfo()), ("transaction_file_directory", outbox.display().to_string())],
        ),
    )
    .unwrap();
    std::fs::write(
        &apply_config,
        from_example("apply.toml", &[("slave", slave.conninfo()), ("spool", inbound.display().to_string())]),
    )
    .unwrap();

    ok(installed(APPLY, &slave_etc, &["--name", NAME, "init"]).output().unwrap());
    ok(installed(EXPORT, &master_etc, &["--name", NAME, "snapshot"]).output().unwrap());
    workload(&master);

    let run = Running::start(installed(EXPORT, &master_etc, &["--name", NAME, "run"]).stderr(Stdio::piped()));
    wait_for("the exporter to send everything", || {
        master.query_value("SELECT count(*)::text FROM dbmirror_pending") == "0"
    });
    let output = run.terminate();
    assert!(output.status.success(), "{}", describe(&output));
    assert_startup_line(
        &output,
        "dbmirror-export",
        &export_config,
        &format!("master \"{}\", outbox \"{}\"", master.conninfo(), outbox.display()),
    );

    transfer(&outbox, &inbound);
    let files = transaction_files(&inbound).len();
    let watch = Running::start(installed(APPLY, &slave_etc, &["--name", NAME, "watch"]).stderr(Stdio::piped()));
    wait_for("the applier to apply every file", || {
        slave.query_value("SELECT coalesce((SELECT last_number::text FROM dbmirror.slave_state), 'none')")
            == files.to_string()
    });
    let output = watch.terminate();
    assert!(output.status.success(), "{}", describe(&output));
    assert_startup_line(
        &output,
        "dbmirror-apply",
        &apply_config,
        &format!(
            "slave \"{}\", spool \"{}\", archive \"{}\", quarantine \"{}\"",
            slave.conninfo(),
            inbound.display(),
            inbound.join("archive").display(),
            inbound.join("quarantine").display()
        ),
    );
    assert_tables_equal(&master, &slave, TABLES);
    ok(installed(EXPORT, &master_etc, &["--name", NAME, "status"]).output().unwrap());
    ok(installed(APPLY, &slave_etc, &["--name", NAME, "status"]).output().unwrap());

    // --config still names a file, and wins over --name.
    ok(installed(APPLY, Path::new("/nonexistent"), &["--name", "other", "--config"])
        .arg(&apply_config)
        .arg("status")
        .output()
        .unwrap());
    // Without either, or with a name that has no file, the tools stop at once, saying what to
    // pass or which file is missing. (Not `status`, which says UNKNOWN, 3, as a monitoring check.)
    for tool in [EXPORT, APPLY] {
        let output = installed(tool, &slave_etc, &["once"]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--name NAME") && stderr.contains("--config FILE"), "{stderr}");
        let output = installed(tool, &slave_etc, &["--name", "nosuch", "once"]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        let missing = slave_etc.join("nosuch.toml");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(&missing.display().to_string()),
            "{}",
            describe(&output)
        );
    }
}

/// The packages put their files where the system finds them, the same files as this source
/// tree holds.
#[test]
fn the_packages_install_man_pages_completions_units_and_the_extension() {
    assert_installed();
    for page in ["dbmirror-export", "dbmirror-apply", "dbmirror-export-run", "dbmirror-apply-watch"] {
        let output = Command::new("man").args(["-w", page]).output().expect("man runs");
        assert!(output.status.success(), "man -w {page} finds no page:\n{}", describe(&output));
    }
    for tool in ["dbmirror-export", "dbmirror-apply"] {
        for path in [
            format!("/usr/share/bash-completion/completions/{tool}"),
            format!("/usr/share/zsh/vendor-completions/_{tool}"),
            format!("/usr/share/fish/vendor_completions.d/{tool}.fish"),
        ] {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(text.contains("--name"), "{path} does not complete --name");
        }
    }
    for (installed, source) in [
        ("/usr/share/dbmirror/sql/slave_setup.sql", "sql/slave_setup.sql"),
        ("/usr/share/dbmirror/sql/applier_role.sql", "sql/applier_role.sql"),
        ("/lib/systemd/system/dbmirror-export@.service", "package/systemd/dbmirror-export@.service"),
        ("/lib/systemd/system/dbmirror-apply@.service", "package/systemd/dbmirror-apply@.service"),
        ("/usr/share/doc/dbmirror-tools/examples/export.toml", "package/examples/export.toml"),
        ("/usr/share/doc/dbmirror-tools/examples/apply.toml", "package/examples/apply.toml"),
        ("/usr/share/postgresql/15/extension/dbmirror.control", "trigger/dbmirror.control"),
    ] {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let expected = read(&repository().join(source)).replace("@CARGO_VERSION@", env!("CARGO_PKG_VERSION"));
        assert_eq!(read(Path::new(installed)), expected, "{installed} differs from {source}: the package is stale");
    }
    let extension =
        PathBuf::from(format!("/usr/share/postgresql/15/extension/dbmirror--{}.sql", env!("CARGO_PKG_VERSION")));
    assert!(extension.is_file(), "{} is missing", extension.display());
    assert!(Path::new("/usr/lib/postgresql/15/lib/dbmirror.so").is_file());

    // The units run as the user the package made, which can read /etc/dbmirror.
    let user = Command::new("getent").args(["passwd", "dbmirror"]).output().expect("getent runs");
    assert!(user.status.success(), "the package made no user dbmirror");
    let etc = Command::new("stat").args(["-c", "%U:%G %a", "/etc/dbmirror"]).output().expect("stat runs");
    assert_eq!(String::from_utf8_lossy(&etc.stdout).trim(), "root:dbmirror 750", "{}", describe(&etc));

    let units = ["/lib/systemd/system/dbmirror-export@.service", "/lib/systemd/system/dbmirror-apply@.service"];
    match Command::new("systemd-analyze").arg("verify").args(units).output() {
        // It instantiates each template, and checks every key, the programs ExecStart names
        // and the man pages Documentation names.
        Ok(output) => {
            assert!(
                output.status.success() && output.stderr.is_empty(),
                "systemd-analyze verify:\n{}",
                describe(&output)
            )
        }
        // Without systemd (a container without it, say), what matters in the units is checked
        // as text.
        Err(_) => {
            for (unit, exec) in units.iter().zip([
                "ExecStart=/usr/bin/dbmirror-export --name %i run",
                "ExecStart=/usr/bin/dbmirror-apply --name %i watch",
            ]) {
                let text = std::fs::read_to_string(unit).unwrap();
                for line in [exec, "User=dbmirror", "Restart=on-failure", "WantedBy=multi-user.target"] {
                    assert!(text.lines().any(|l| l == line), "{unit} lacks {line:?}");
                }
                assert!(text.lines().any(|l| l.starts_with("RestartPreventExitStatus=2 3")), "{unit}");
            }
        }
    }
}
