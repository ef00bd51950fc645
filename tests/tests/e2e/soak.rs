//! Soak: pgbench writes to mirrored tables while the whole chain runs as it would in
//! production: `dbmirror-export run` and `dbmirror-apply watch` as processes, and a shipper that
//! moves finished files from the outbox to the inbound spool in name order, transaction files
//! before the manifests that cover them, each under a temporary dot-name first (as rsync does).
//! Once a second the test samples how far the slave is behind: files written minus files
//! applied, and the age of the oldest file not yet applied. After pgbench stops, the chain
//! drains and every table must be equal (DESIGN invariants 1 to 6, under load and over time).
//!
//! `SOAK_SECONDS` (default 60) sets how long pgbench runs, `SOAK_CLIENTS` (default 4) its
//! clients, and `SOAK_RATE` (default 100) the transactions per second it aims at (`pgbench -R`;
//! 0 for as fast as it can, which on a small machine outruns the tests' debug-built applier, so
//! that the lag only grows). A long run: `SOAK_SECONDS=3600 scripts/test soak::`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dbmirror_spool::{TransactionFileName, MANIFEST_EXTENSION, QUARANTINE_DIR, TEMPORARY_SUFFIX};
use dbmirror_tests::pgbench::{pgbench, pgbench_tables, TABLES};
use dbmirror_tests::tools::{
    apply, apply_command, apply_config, export_command, export_config, file_names, spool_names, Running, Workdir,
};
use dbmirror_tests::{assert_tables_equal, describe, Cluster};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// When the shipper first saw each file number in the outbox.
type Seen = Arc<Mutex<BTreeMap<u64, Instant>>>;

/// Moves finished files from `outbox` to `inbound` until `stop` is set and the outbox is empty:
/// transaction files in name order, then manifests, each copied under a dot-name and renamed.
fn shipper(outbox: PathBuf, inbound: PathBuf, stop: Arc<AtomicBool>, seen: Seen) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut moved = 0;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            // Dot-files are not part of the spool: the exporter's state stays in its outbox.
            let names: Vec<String> =
                spool_names(&outbox).into_iter().filter(|n| !n.ends_with(TEMPORARY_SUFFIX)).collect();
            let (manifests, files): (Vec<String>, Vec<String>) =
                names.into_iter().partition(|n| n.ends_with(&format!(".{MANIFEST_EXTENSION}")));
            for name in files.iter().chain(&manifests) {
                if let Ok(file) = TransactionFileName::parse(name) {
                    seen.lock().expect("the shipper's record").entry(file.number).or_insert_with(Instant::now);
                }
                ship(&outbox, &inbound, name);
                moved += 1;
            }
            if stopping && files.is_empty() && manifests.is_empty() {
                return moved;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn ship(outbox: &Path, inbound: &Path, name: &str) {
    let partial = inbound.join(format!(".{name}.part"));
    std::fs::copy(outbox.join(name), &partial).expect("a file can be copied into the inbound spool");
    std::fs::rename(&partial, inbound.join(name)).expect("a copied file can be renamed into place");
    std::fs::remove_file(outbox.join(name)).expect("a shipped file can be removed from the outbox");
}

/// One sample of how far the slave is behind.
struct Lag {
    files: u64,
    seconds: f64,
}

fn last_applied(slave: &Cluster) -> u64 {
    slave.query_value("SELECT coalesce(max(last_number), 0)::text FROM dbmirror.slave_state").parse().expect("a number")
}

fn sample(slave: &Cluster, seen: &Seen) -> Lag {
    let applied = last_applied(slave);
    let seen = seen.lock().expect("the shipper's record");
    let written = seen.keys().next_back().copied().unwrap_or(0);
    let seconds = seen.get(&(applied + 1)).map_or(0.0, |at| at.elapsed().as_secs_f64());
    Lag { files: written.saturating_sub(applied), seconds }
}

fn stop(tool: Running, what: &str, log: &Path) {
    let output = tool.terminate();
    assert!(
        output.status.success(),
        "{what} did not stop cleanly on SIGTERM ({}); its log: {}",
        output.status,
        log.display()
    );
}

fn summary(samples: &[Lag]) -> String {
    let max_files = samples.iter().map(|s| s.files).max().unwrap_or(0);
    let max_seconds = samples.iter().map(|s| s.seconds).fold(0.0, f64::max);
    let n = samples.len().max(1) as f64;
    let mean_files = samples.iter().map(|s| s.files as f64).sum::<f64>() / n;
    let mean_seconds = samples.iter().map(|s| s.seconds).sum::<f64>() / n;
    format!(
        "lag over {} samples: files written but not applied max {max_files}, mean {mean_files:.1}; \
         age of the oldest unapplied file max {max_seconds:.1} s, mean {mean_seconds:.2} s",
        samples.len()
    )
}

#[test]
fn pgbench_with_exporter_shipper_and_applier_running_keeps_the_slave_close_and_equal() {
    let seconds = setting("SOAK_SECONDS", 60);
    let clients = setting("SOAK_CLIENTS", 4);
    let rate = setting("SOAK_RATE", 100);
    let master = Cluster::start("soak-master");
    let slave = Cluster::start("soak-slave");
    master.create_extension();
    pgbench_tables(&master);
    pgbench_tables(&slave);
    assert_tables_equal(&master, &slave, TABLES);
    for table in TABLES {
        master.execute(&format!("SELECT dbmirror_mirror_table('{table}')"));
    }
    master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('soak')");

    let work = Workdir::new("soak");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, "soak", &outbox, "sleep_interval = 0.2");
    let apply_conf = apply_config(&work, &slave, "soak", &inbound, "poll_interval = 0.5");
    let init = apply(&apply_conf, &["init"]);
    assert!(init.status.success(), "{}", describe(&init));
    let logs = (work.path().join("export.log"), work.path().join("apply.log"));
    let log = |path: &Path| std::fs::File::create(path).expect("a log file can be created");
    let exporter = Running::start(export_command(&export, &["run"]).stderr(log(&logs.0)));
    let applier = Running::start(apply_command(&apply_conf, &["watch"]).stderr(log(&logs.1)));
    let stop_shipping = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let shipping = shipper(outbox.clone(), inbound.clone(), stop_shipping.clone(), seen.clone());

    // pgbench runs on a thread; the test samples the lag meanwhile.
    let bench = {
        let mut command = pgbench(&master);
        command.args(["-n", "-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string()]);
        if rate > 0 {
            command.args(["-R", &rate.to_string()]);
        }
        std::thread::spawn(move || command.output().expect("pgbench runs"))
    };
    let mut samples = Vec::new();
    while !bench.is_finished() {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(sample(&slave, &seen));
    }
    let bench = bench.join().expect("the pgbench thread ends");
    assert!(bench.status.success(), "pgbench failed:\n{}", describe(&bench));
    let applied_during_load = last_applied(&slave);

    // Drain: everything pgbench committed is exported, shipped and applied.
    let started = Instant::now();
    let limit = Duration::from_secs(300.max(seconds * 2));
    let drained = loop {
        let pending = master.query_value("SELECT count(*)::text FROM dbmirror_pending");
        let assigned: u64 = master
            .query_value("SELECT last_number::text FROM dbmirror_mirrorhost WHERE slavename = 'soak'")
            .parse()
            .expect("a number");
        if pending == "0" && last_applied(&slave) == assigned {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the chain did not drain in {limit:?}: {pending} transactions waiting, file {} of {assigned} applied; logs: {} {}",
            last_applied(&slave),
            logs.0.display(),
            logs.1.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop(exporter, "dbmirror-export run", &logs.0);
    stop(applier, "dbmirror-apply watch", &logs.1);
    stop_shipping.store(true, Ordering::Relaxed);
    let moved = shipping.join().expect("the shipper ends");

    let transactions = String::from_utf8_lossy(&bench.stdout)
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .unwrap_or("number of transactions actually processed: unknown")
        .to_string();
    let files = last_applied(&slave);
    eprintln!(
        "soak: {seconds} s of pgbench with {clients} clients at {}, {transactions}; {files} files ({moved} files and manifests shipped), \
         {applied_during_load} applied while pgbench ran; drained in {:.1} s\nsoak: {}",
        if rate > 0 { format!("{rate} transactions/s") } else { "full speed".to_string() },
        drained.as_secs_f64(),
        summary(&samples)
    );
    assert!(applied_during_load > 0, "nothing was applied while pgbench ran: the chain did not keep up at all");
    assert!(file_names(&inbound.join(QUARANTINE_DIR)).is_empty(), "files were quarantined: {}", inbound.display());
    assert_tables_equal(&master, &slave, TABLES);
    let verify = export_command(&export, &["verify", "--slave", &slave.conninfo()]).output().expect("verify runs");
    assert!(verify.status.success(), "verify found differences:\n{}", describe(&verify));
}
