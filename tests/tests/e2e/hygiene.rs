//! Operating the tools: reloading the configuration on SIGHUP, errors that name what to fix
//! in the configuration, a database that refuses the configured role, one log line per event,
//! and an archive that does not grow without limit.

use std::path::Path;
use std::time::{Duration, Instant};

use dbmirror_tests::tools::{
    apply, apply_command, apply_config, export_command, transaction_files, transfer, Running, Workdir,
};
use dbmirror_tests::{assert_tables_equal, describe};

use crate::export::{setup, TABLES};

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Rewrites the configuration file at `path` with `from` replaced by `to`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = read(path);
    assert!(text.contains(from), "{from:?} is not in {text:?}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// SIGHUP used to end `run` and `watch` with exit code 129. Now it reloads the configuration
/// between cycles: a valid file replaces the one in use and the log names what changed; an
/// invalid one, or one that changes what only a restart may change, is logged and the
/// configuration in use is kept; the process goes on either way.
#[test]
fn sighup_reloads_the_configuration_of_run_and_watch_and_keeps_it_when_the_file_is_bad() {
    let s = setup("sleep_interval = 0.2");
    let log = s.work.path().join("run.log");
    let mut exporter = Running::start(export_command(&s.config, &["run"]).stderr(std::fs::File::create(&log).unwrap()));
    wait_for("the exporter to start", || read(&log).contains("starting version"));

    edit(&s.config, "sleep_interval = 0.2", "sleep_interval = 0.3\nbatch_size = 7");
    exporter.signal("HUP");
    wait_for("the reload", || read(&log).contains("changed batch_size, sleep_interval"));
    edit(&s.config, "sleep_interval = 0.3", "sleep_interval = \"10s\"");
    exporter.signal("HUP");
    wait_for("the refused reload", || read(&log).contains("was not reloaded"));
    let said = read(&log);
    assert!(
        said.contains("key \"sleep_interval\": invalid type: string \"10s\", expected a number"),
        "the error names the key:\n{said}"
    );
    edit(&s.config, "sleep_interval = \"10s\"", "sleep_interval = 0.3");
    edit(&s.config, "slave_name = \"slave1\"", "slave_name = \"slave2\"");
    exporter.signal("HUP");
    wait_for("the refused change", || read(&log).contains("slave_name cannot change while running"));
    // Still running, on the configuration it had: a change is exported.
    s.master.execute("INSERT INTO item (name) VALUES ('after the reloads')");
    wait_for("the export", || !transaction_files(&s.outbox).is_empty());
    assert!(exporter.is_running(), "{}", read(&log));
    let output = exporter.terminate();
    assert!(output.status.success(), "{}", read(&log));

    let inbound = s.work.dir("inbound");
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, "poll_interval = 0.5");
    let log = s.work.path().join("watch.log");
    let mut applier = Running::start(apply_command(&config, &["watch"]).stderr(std::fs::File::create(&log).unwrap()));
    wait_for("the applier to start", || read(&log).contains("watching"));
    edit(&config, "poll_interval = 0.5", "poll_interval = 0.2\nsettle_seconds = 5");
    applier.signal("HUP");
    wait_for("the reload", || read(&log).contains("changed poll_interval, settle_seconds"));
    edit(&config, "poll_interval = 0.2", "poll_interval = [");
    applier.signal("HUP");
    wait_for("the refused reload", || read(&log).contains("was not reloaded"));
    transfer(&s.outbox, &inbound);
    wait_for("the file to be applied", || read(&log).contains("applied files 1-1"));
    assert!(applier.is_running(), "{}", read(&log));
    let output = applier.terminate();
    assert!(output.status.success(), "{}", read(&log));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

/// A value of the wrong type names its line and key in the file's words, with a hint, and
/// a misspelt key is refused naming both.
#[test]
fn a_bad_value_or_key_in_the_configuration_names_its_line_and_key() {
    let work = Workdir::new("toml");
    let outbox = work.dir("outbox");
    let config = work.file(
        "export.toml",
        &format!(
            "slave_name = \"s\"\nmaster = \"host=/nonexistent\"\ntransaction_file_directory = \"{}\"\nsleep_interval = \"10s\"\n",
            outbox.display()
        ),
    );
    let output = export_command(&config, &["once"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "configuration file \"{}\": line 4, key \"sleep_interval\": invalid type: string \"10s\", expected a number",
            config.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("HINT:  Write the number without quotes, as in sleep_interval = 10."), "{stderr}");

    let inbound = work.dir("inbound");
    let config = work.file(
        "apply.toml",
        &format!(
            "slave_name = \"s\"\nslave = \"host=/nonexistent\"\nspool = \"{}\"\n\npoll_intervall = 5\n",
            inbound.display()
        ),
    );
    let output = apply(&config, &["once"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 5, key \"poll_intervall\": unknown field `poll_intervall`"), "{stderr}");
    assert!(stderr.contains("HINT:  Check the spelling of the key"), "{stderr}");
}

/// Runs `command` and returns its exit code and standard error, failing the test if it does not
/// end within a minute: `run` and `watch` must stop on what only an operator can fix.
fn ends(command: &mut std::process::Command) -> (Option<i32>, String) {
    let mut running = Running::start(command.stderr(std::process::Stdio::piped()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while running.is_running() {
        assert!(Instant::now() < deadline, "{command:?} still runs after a minute: it retries what cannot pass");
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = running.wait();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Prevents `run` and `watch` from retrying for ever what no retry can cure: a wrong password,
/// an unknown role or database, a role without privileges. Each is exit code 8 with a hint
/// that says what to fix, in `once` as in `run` and `watch`.
#[test]
fn a_database_that_refuses_the_configured_role_is_exit_code_8_and_not_retried() {
    let s = setup("");
    s.master.execute("CREATE ROLE weak LOGIN; CREATE ROLE secret LOGIN PASSWORD 'right'");
    s.slave.execute("CREATE ROLE weak LOGIN");
    let hba = s.master.data_dir().join("pg_hba.conf");
    std::fs::write(&hba, format!("local all secret scram-sha-256\n{}", read(&hba))).unwrap();
    s.master.execute("SELECT pg_reload_conf()");
    let conninfo = s.master.conninfo();
    let user = conninfo.split(' ').find(|part| part.starts_with("user=")).expect("a user").to_string();
    let cases = [
        (
            conninfo.replace("dbname=postgres", "dbname=nosuchdb"),
            "database \"nosuchdb\" does not exist",
            "Check dbname",
        ),
        (conninfo.replace(&user, "user=nosuchrole"), "role \"nosuchrole\" does not exist", "Check the user"),
        (conninfo.replace(&user, "user=secret password=wrong"), "password authentication failed", "Check the password"),
        (conninfo.replace(&user, "user=weak"), "permission denied", "Grant the configured role"),
    ];
    for (master, message, hint) in cases {
        let config = s.work.file(
            "refused.toml",
            &format!(
                "slave_name = \"slave1\"\nmaster = \"{master}\"\ntransaction_file_directory = \"{}\"\n",
                s.outbox.display()
            ),
        );
        for command in ["once", "run"] {
            let (code, stderr) = ends(&mut export_command(&config, &[command]));
            assert_eq!(code, Some(8), "{command} with {master}:\n{stderr}");
            assert!(stderr.contains(message), "{command} with {master}:\n{stderr}");
            assert!(stderr.contains(&format!("HINT:  {hint}")), "{command} with {master}:\n{stderr}");
            assert!(!stderr.contains("retrying"), "{command} with {master}:\n{stderr}");
        }
    }
    let inbound = s.work.dir("inbound");
    let slave = s.slave.conninfo().replace(&user, "user=weak");
    let config = s.work.file(
        "apply-refused.toml",
        &format!("slave_name = \"slave1\"\nslave = \"{slave}\"\nspool = \"{}\"\n", inbound.display()),
    );
    let (code, stderr) = ends(&mut apply_command(&config, &["watch"]));
    assert_eq!(code, Some(8), "{stderr}");
    assert!(stderr.contains("permission denied") && stderr.contains("HINT:  Grant the configured role"), "{stderr}");
}

/// Every log line is one event: in the text format an error's HINT is on its line, and with
/// `log_format = "json"` each line is one JSON object with the hint and the slave as fields.
#[test]
fn each_log_line_is_one_event_in_text_or_json() {
    let s = setup("log_format = \"json\"");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    let output = export_command(&s.config, &["once"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let lines = json_lines(&output.stderr);
    let done = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap_or("").starts_with("exported files 1-1"))
        .expect("a line for the batch");
    assert_eq!(done["level"], "LOG");
    assert_eq!(done["program"], "dbmirror-export");
    assert_eq!(done["slave"], "slave1");
    assert!(done["time"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{done}");

    let inbound = s.work.dir("inbound");
    let refused = s.slave.conninfo().replace("dbname=postgres", "dbname=nosuchdb");
    for (format, extra) in [("json", "log_format = \"json\""), ("text", "")] {
        let config = s.work.file(
            &format!("apply-{format}.toml"),
            &format!("slave_name = \"slave1\"\nslave = \"{refused}\"\nspool = \"{}\"\n{extra}\n", inbound.display()),
        );
        let output = apply(&config, &["once"]);
        assert_eq!(output.status.code(), Some(8), "{}", describe(&output));
        if format == "json" {
            let lines = json_lines(&output.stderr);
            let error = lines.iter().find(|l| l["level"] == "ERROR").expect("an error line");
            assert!(error["message"].as_str().unwrap().contains("database \"nosuchdb\" does not exist"), "{error}");
            assert!(error["hint"].as_str().unwrap().starts_with("Check dbname"), "{error}");
            assert_eq!(error["slave"], "slave1");
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.lines().any(|l| l.contains(" ERROR: ")
                    && l.contains("does not exist")
                    && l.contains(" HINT:  Check dbname")),
                "the hint is on the error's line:\n{stderr}"
            );
            assert!(
                stderr.lines().all(|l| chrono::DateTime::parse_from_rfc3339(l.split(' ').next().unwrap()).is_ok()),
                "{stderr}"
            );
        }
    }
}

/// Each line of `stderr` parsed as a JSON object; fails the test on any other line.
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect()
}

/// The archive keeps what `archive_keep_files` says and no more; a file archived under a
/// taken name (`NAME.1`) is logged; a `.reason` file whose file was moved back into the
/// spool and applied is deleted with it.
#[test]
fn the_archive_is_pruned_duplicates_are_logged_and_stale_reasons_go() {
    let s = setup("");
    for name in ["one", "two", "three"] {
        s.master.execute(&format!("INSERT INTO item (name) VALUES ('{name}')"));
    }
    export_once_quietly(&s.config);
    let inbound = s.work.dir("inbound");
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, "archive_keep_files = 2");
    transfer(&s.outbox, &inbound);
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    let archive = inbound.join("archive");
    let exported = transaction_files(&s.outbox);
    let names = |files: &[std::path::PathBuf]| -> Vec<String> {
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect()
    };
    assert_eq!(names(&transaction_files(&archive)), names(&exported[1..]), "the newest two files are kept");
    assert!(String::from_utf8_lossy(&output.stderr).contains("deleted 1 files from archive"), "{}", describe(&output));

    // File 3 arrives again: it goes to the archive as NAME.1, and the log says so.
    std::fs::copy(&exported[2], inbound.join(exported[2].file_name().unwrap())).unwrap();
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was in the archive already") && stderr.contains(".sql.1\""), "{stderr}");

    // File 4 fails on the slave and goes to quarantine with its reason; once the slave is
    // repaired and the file moved back, it is applied and its reason goes.
    s.master.execute("UPDATE item SET name = 'changed' WHERE name = 'one'");
    export_once_quietly(&s.config);
    s.slave.execute("CREATE TABLE saved AS SELECT * FROM item WHERE name = 'one'; DELETE FROM item WHERE name = 'one'");
    transfer(&s.outbox, &inbound);
    let output = apply(&config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let quarantine = inbound.join("quarantine");
    let file = transaction_files(&quarantine).pop().expect("file 4 in quarantine");
    let reason = std::path::PathBuf::from(format!("{}.reason", file.display()));
    assert!(reason.is_file());
    s.slave.execute("INSERT INTO item SELECT * FROM saved");
    std::fs::rename(&file, inbound.join(file.file_name().unwrap())).unwrap();
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!reason.exists(), "the reason of an applied file is gone:\n{}", describe(&output));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

fn export_once_quietly(config: &Path) {
    let output = export_command(config, &["once"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
}
