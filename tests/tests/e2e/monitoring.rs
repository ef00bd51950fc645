//! Monitoring, end to end: `status` of both tools as a Nagios check (figures and exit codes),
//! the SQL views for dashboards, the metrics files that `run` and `watch` write for
//! node_exporter, and `alert_command` firing on changes of state only.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use dbmirror_tests::tools::{
    apply, apply_command, apply_config, export_command, export_config, export_once, transaction_files, transfer,
    Running, Workdir,
};
use dbmirror_tests::{describe, Cluster};

use crate::export::SCHEMA;

/// A master with the extension, `item` mirrored and slave `slave1` registered (capture records
/// each transaction's commit time, with no setting of the master's); a prepared slave; an
/// outbox and an inbound spool.
struct Sites {
    master: Cluster,
    slave: Cluster,
    work: Workdir,
    outbox: PathBuf,
    inbound: PathBuf,
    export: PathBuf,
    apply: PathBuf,
}

fn sites(export_extra: &str, apply_extra: &str) -> Sites {
    let master = Cluster::start("master");
    master.create_extension();
    master.execute(SCHEMA);
    master
        .execute("SELECT dbmirror_mirror_table('item'); INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('slave1')");
    let slave = Cluster::start("slave");
    slave.execute(SCHEMA);
    slave.slave_setup();
    let work = Workdir::new("monitoring");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, "slave1", &outbox, &format!("batch_size = 1\n{export_extra}"));
    let apply = apply_config(&work, &slave, "slave1", &inbound, apply_extra);
    Sites { master, slave, work, outbox, inbound, export, apply }
}

fn insert(master: &Cluster, count: usize) {
    for i in 0..count {
        master.execute(&format!("INSERT INTO item (name) VALUES ('row {i}')"));
    }
}

/// The exit code and the parsed JSON of `status --json`.
fn json_status(output: Output) -> (i32, serde_json::Value) {
    let code = output.status.code().expect("status exits");
    let json =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe(&output)));
    (code, json)
}

fn export_status(s: &Sites, args: &[&str]) -> (i32, serde_json::Value) {
    json_status(export_command(&s.export, &[&["status", "--json"], args].concat()).output().unwrap())
}

fn apply_status(s: &Sites, args: &[&str]) -> (i32, serde_json::Value) {
    json_status(apply(&s.apply, &[&["status", "--json"], args].concat()))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn master_status_counts_waiting_transactions_and_judges_their_age() {
    let s = sites("", "");
    let (code, json) = export_status(&s, &[]);
    assert_eq!((code, &json["waiting_transactions"], &json["health"]["level"]), (0, &0.into(), &"ok".into()), "{json}");
    insert(&s.master, 2);
    std::thread::sleep(Duration::from_millis(50));
    let (code, json) = export_status(&s, &[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["waiting_transactions"], 2, "{json}");
    assert!(json["oldest_waiting_age_seconds"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["oldest_waiting_committed_at"].as_str().unwrap().ends_with('Z'), "{json}");
    let (code, json) = export_status(&s, &["--warn-lag", "0.01"]);
    assert_eq!((code, &json["health"]["level"]), (1, &"warning".into()), "{json}");
    let (code, json) = export_status(&s, &["--warn-lag", "0.01", "--crit-lag", "0.02"]);
    assert_eq!((code, &json["health"]["level"]), (2, &"critical".into()), "{json}");
    assert!(json["health"]["problems"][0].as_str().unwrap().contains("over --crit-lag"), "{json}");
    // The view says the same.
    assert_eq!(
        s.master.query_value(
            "SELECT format('%s %s %s %s', slave_name, last_number, waiting_transactions, oldest_waiting_age_seconds > 0) \
               FROM dbmirror_status"
        ),
        "slave1 0 2 t"
    );
    export_once(&s.export);
    let (code, json) = export_status(&s, &["--warn-lag", "0.01", "--crit-lag", "0.02"]);
    assert_eq!((code, &json["waiting_transactions"], &json["last_number"]), (0, &0.into(), &2.into()), "{json}");
    assert_eq!(
        s.master.query_value("SELECT format('%s %s', last_number, waiting_transactions) FROM dbmirror_status"),
        "2 0"
    );
    // The text form has the verdict first.
    let text = export_command(&s.export, &["status", "--crit-lag", "0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("health:                OK\n"), "{}", describe(&text));
}

/// The slave's lag is counted from the master commit time of the last applied transaction,
/// not from when the exporter got to it: a transaction exported late shows its true age.
#[test]
fn slave_lag_is_measured_from_the_master_commit_time() {
    let s = sites("", "settle_seconds = 0");
    insert(&s.master, 1);
    let time = |column: &str| format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    let committed_at = s.master.query_value(&format!("SELECT {} FROM dbmirror_Pending", time("committed_at")));
    std::thread::sleep(Duration::from_secs(2));
    export_once(&s.export);
    transfer(&s.outbox, &s.inbound);
    assert!(apply(&s.apply, &["once"]).status.success());
    let (code, json) = apply_status(&s, &[]);
    assert_eq!((code, &json["last_applied"]), (0, &1.into()), "{json}");
    assert_eq!(json["last_committed_at"], committed_at.as_str(), "{json}");
    assert_ne!(json["last_exported_at"], json["last_committed_at"], "{json}");
    let lag = json["lag_seconds"].as_f64().unwrap();
    assert!(lag >= 2.0, "{json}");
    // The view and the metrics say the same; the header carried it.
    assert_eq!(
        s.slave.query_value(&format!(
            "SELECT format('%s %s', {}, lag_seconds >= 2) FROM dbmirror.status",
            time("last_committed_at")
        )),
        format!("{committed_at} t")
    );
    let file = std::fs::read_to_string(&transaction_files(&s.outbox)[0]).unwrap();
    assert!(file.contains(&format!("\n-- committed-at: {}", &committed_at[..committed_at.len() - 1])), "{file}");
}

/// Prevents a monitoring system from reading "cannot tell" as a verdict on the stream: an
/// unreachable database is UNKNOWN (3) for both tools, not exit code 1.
#[test]
fn status_is_unknown_when_the_database_cannot_be_reached() {
    let work = Workdir::new("unknown");
    let dir = work.dir("spool");
    let export = work.file(
        "export.toml",
        &format!(
            "slave_name = \"s\"\nmaster = \"host=/nonexistent dbname=x\"\ntransaction_file_directory = \"{}\"\n",
            dir.display()
        ),
    );
    let apply_toml = work.file(
        "apply.toml",
        &format!("slave_name = \"s\"\nslave = \"host=/nonexistent dbname=x\"\nspool = \"{}\"\n", dir.display()),
    );
    let output = export_command(&export, &["status"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let output = apply(&apply_toml, &["status", "--json"]);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
}

#[test]
fn slave_status_reports_lag_waiting_files_gaps_and_quarantine_with_nagios_codes() {
    let s = sites("", "settle_seconds = 0");
    insert(&s.master, 2);
    export_once(&s.export);
    transfer(&s.outbox, &s.inbound);
    let (code, json) = apply_status(&s, &[]);
    assert_eq!(
        (code, &json["files_waiting"], &json["lag_seconds"]),
        (0, &2.into(), &serde_json::Value::Null),
        "{json}"
    );
    assert!(apply(&s.apply, &["once"]).status.success());
    std::thread::sleep(Duration::from_millis(50));
    let (code, json) = apply_status(&s, &[]);
    assert_eq!((code, &json["last_applied"], &json["files_waiting"]), (0, &2.into(), &0.into()), "{json}");
    assert!(json["lag_seconds"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["last_exported_at"].as_str().unwrap().ends_with('Z'), "{json}");
    assert_eq!(apply_status(&s, &["--warn-lag", "0.01"]).0, 1);
    assert_eq!(apply_status(&s, &["--warn-lag", "0.01", "--crit-lag", "0.02"]).0, 2);
    assert_eq!(
        s.slave
            .query_value("SELECT format('%s %s %s', slave_name, last_applied, lag_seconds > 0) FROM dbmirror.status"),
        "slave1 2 t"
    );

    // A gap: file 3 missing, file 4 there. CRITICAL once it is older than --gap-age.
    insert(&s.master, 2);
    export_once(&s.export);
    transfer(&s.outbox, &s.inbound);
    let third = transaction_files(&s.inbound)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("00000000000000000003_"))
        .expect("file 3 in the spool");
    let parked = s.work.path().join(third.file_name().unwrap());
    std::fs::rename(&third, &parked).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (code, json) = apply_status(&s, &[]);
    assert_eq!((code, &json["gaps"], &json["files_waiting"]), (0, &serde_json::json!([3]), &1.into()), "{json}");
    let (code, json) = apply_status(&s, &["--gap-age", "0.01"]);
    assert_eq!(code, 2, "{json}");
    assert!(json["health"]["problems"][0].as_str().unwrap().starts_with("file 3 is missing"), "{json}");

    // A damaged file goes to quarantine: CRITICAL whatever the thresholds.
    let bytes = std::fs::read(&parked).unwrap();
    std::fs::write(&third, [&bytes[..bytes.len() - 2], b"X\n"].concat()).unwrap();
    std::fs::remove_file(&parked).unwrap();
    assert_eq!(apply(&s.apply, &["once"]).status.code(), Some(5));
    let (code, json) = apply_status(&s, &["--warn-lag", "1e9", "--crit-lag", "1e9"]);
    assert_eq!((code, &json["health"]["level"]), (2, &"critical".into()), "{json}");
    assert!(json["health"]["problems"][0].as_str().unwrap().contains("is in quarantine"), "{json}");
    let text = apply(&s.apply, &["status"]);
    assert_eq!(text.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("health:        CRITICAL: "), "{}", describe(&text));
}

/// The samples of a metrics file, as (series, value), after checking that each follows its
/// HELP and TYPE lines.
fn samples(path: &Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut samples = Vec::new();
    let mut typed = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed = Some(rest.strip_suffix(" gauge").expect("gauges").to_string());
        } else if !line.starts_with("# HELP ") {
            let (series, value) = line.rsplit_once(' ').expect("a sample is a series and a value");
            let name = series.split('{').next().unwrap();
            assert_eq!(typed.as_deref(), Some(name), "{text}");
            assert!(series.ends_with("{slave=\"slave1\"}"), "{text}");
            samples.push((name.to_string(), value.parse().unwrap()));
        }
    }
    samples
}

fn value(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

#[test]
fn run_and_watch_write_metrics_files_for_node_exporter() {
    let work = Workdir::new("metrics");
    let (export_prom, apply_prom) = (work.path().join("export.prom"), work.path().join("apply.prom"));
    let s = sites(
        &format!("sleep_interval = 0.1\nmetrics_file = \"{}\"\nmetrics_interval = 0.2", export_prom.display()),
        &format!("poll_interval = 0.1\nmetrics_file = \"{}\"\nmetrics_interval = 0.2", apply_prom.display()),
    );
    insert(&s.master, 3);
    let exporter = Running::start(export_command(&s.export, &["run"]).stderr(Stdio::null()));
    wait_for("the exporter's metrics", || {
        export_prom.exists() && value(&samples(&export_prom), "dbmirror_export_last_file_number") == Some(3.0)
    });
    let figures = samples(&export_prom);
    assert_eq!(value(&figures, "dbmirror_export_up"), Some(1.0));
    assert_eq!(value(&figures, "dbmirror_export_waiting_transactions"), Some(0.0));
    assert_eq!(value(&figures, "dbmirror_export_oldest_waiting_age_seconds"), Some(0.0));
    assert!(exporter.terminate().status.success());

    transfer(&s.outbox, &s.inbound);
    let watcher = Running::start(apply_command(&s.apply, &["watch"]).stderr(Stdio::null()));
    wait_for("the applier's metrics", || {
        apply_prom.exists() && value(&samples(&apply_prom), "dbmirror_apply_last_applied_number") == Some(3.0)
    });
    let figures = samples(&apply_prom);
    assert_eq!(value(&figures, "dbmirror_apply_up"), Some(1.0));
    assert_eq!(value(&figures, "dbmirror_apply_files_waiting"), Some(0.0));
    assert_eq!(value(&figures, "dbmirror_apply_gap"), Some(0.0));
    assert_eq!(value(&figures, "dbmirror_apply_quarantined_files"), Some(0.0));
    assert!(value(&figures, "dbmirror_apply_lag_seconds").unwrap() >= 0.0);
    assert!(watcher.terminate().status.success());
    let names: Vec<String> =
        std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "no temporary file left: {names:?}");
}

/// Prevents an alert storm: a master down for several retries alerts once, and its return
/// alerts once more.
#[test]
fn alert_command_fires_once_for_a_lasting_failure_and_once_on_recovery() {
    let work = Workdir::new("alerts");
    let (alerts, log) = (work.path().join("alerts.txt"), work.path().join("run.log"));
    let s = sites(&format!("sleep_interval = 0.1\nalert_command = \"cat >> '{}'\"", alerts.display()), "");
    let exporter = Running::start(export_command(&s.export, &["run"]).stderr(std::fs::File::create(&log).unwrap()));
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the exporter to start", || logged().contains("starting"));
    s.master.crash();
    wait_for("a second failed attempt", || logged().contains("(attempt 2;"));
    s.master.restart();
    wait_for("the recovery", || std::fs::read_to_string(&alerts).unwrap_or_default().contains("recovered"));
    insert(&s.master, 1);
    wait_for("an export after the recovery", || !transaction_files(&s.outbox).is_empty());
    assert!(exporter.terminate().status.success());
    let text = std::fs::read_to_string(&alerts).unwrap();
    let alerted: Vec<&str> = text.lines().filter(|l| l.starts_with("dbmirror-export: ")).collect();
    assert_eq!(alerted.len(), 2, "one alert for the failure, one for the recovery:\n{text}\n{}", logged());
    assert!(alerted[1].starts_with("dbmirror-export: recovered: exporting again after failing with: "), "{text}");
}
