//! Faults and hostile input: damaged and forged spools, signatures, crafted SQL, lost
//! connections, a full disk, and kill -9 anywhere. In every case: a clear message, nothing
//! applied wrongly, nothing deleted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dbmirror_tests::tools::{
    apply, apply_config, export_config, export_once, file_names, psql_file, replay_by_hand, spool_names,
    transaction_files, transfer, EXPORT_DISK_FULL_AFTER, EXPORT_FAULTS_HINT,
};
use dbmirror_tests::{assert_tables_equal, describe, table_rows, Cluster};

use crate::export::{setup, workload, Setup, TABLES};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn last_applied(slave: &Cluster) -> String {
    slave.query_value("SELECT coalesce((SELECT last_number::text FROM dbmirror.slave_state), 'none')")
}

/// Every file and manifest under `dir`, recursively, with its bytes: what "nothing deleted" means.
fn everything(dir: &Path) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(everything(&path));
        } else if !path.to_string_lossy().ends_with(".reason") && !path.to_string_lossy().ends_with(".lock") {
            all.push(std::fs::read(&path).unwrap());
        }
    }
    all.sort();
    all
}

struct Damage {
    s: Setup,
    inbound: PathBuf,
    config: PathBuf,
}

/// Three transactions exported one file per manifest, the first applied; the rest carried.
fn damage(extra_apply: &str) -> Damage {
    let s = setup("batch_size = 1");
    for i in 1..=3 {
        s.master.execute(&format!("INSERT INTO item (name) VALUES ('row {i}')"));
    }
    export_once(&s.config);
    let inbound = s.work.dir("inbound");
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, &format!("settle_seconds = 0\n{extra_apply}"));
    transfer(&s.outbox, &inbound);
    Damage { s, inbound, config }
}

impl Damage {
    fn file(&self, n: usize) -> PathBuf {
        transaction_files(&self.inbound)[n - 1].clone()
    }

    /// Runs the applier and checks that nothing was applied past `applied` and nothing lost.
    fn refused(&self, applied: &str, code: i32, message: &str) -> Output {
        let before = everything(&self.inbound);
        let output = apply(&self.config, &["once"]);
        assert_eq!(output.status.code(), Some(code), "{}", describe(&output));
        assert!(stderr(&output).contains(message), "{message:?} not in:\n{}", describe(&output));
        assert_eq!(last_applied(&self.s.slave), applied);
        assert_eq!(everything(&self.inbound), before, "nothing may be deleted or changed");
        output
    }
}

#[test]
fn damaged_and_misplaced_files_are_detected_and_kept() {
    // A truncated file and a zero-length file: checksum mismatch, quarantined, kept as they were.
    for cut in [|b: &[u8]| b[..b.len() - 7].to_vec(), |_: &[u8]| Vec::new()] {
        let d = damage("");
        let second = d.file(2);
        let bytes = std::fs::read(&second).unwrap();
        std::fs::write(&second, cut(&bytes)).unwrap();
        d.refused("1", 5, "stopped at file 2");
        let reason = std::fs::read_to_string(
            d.inbound.join("quarantine").join(format!("{}.reason", second.file_name().unwrap().to_str().unwrap())),
        )
        .unwrap();
        assert!(reason.contains("checksum mismatch"), "{reason}");
    }

    // A manifest that arrived before its file; a renamed file; a stale temporary file.
    let d = damage("");
    let third = d.file(3);
    let renamed = d.inbound.join(third.file_name().unwrap().to_str().unwrap().replace(".sql", "_x.sql"));
    std::fs::rename(d.file(2), d.s.work.path().join("parked.sql")).unwrap();
    std::fs::rename(&third, &renamed).unwrap();
    std::fs::write(d.inbound.join("00000000000000000004_20261201T000000Z_1.sql.tmp"), b"half").unwrap();
    d.refused("1", 0, "waiting for file 2 (");
    let status = String::from_utf8(apply(&d.config, &["status"]).stdout).unwrap();
    assert!(status.contains("ignoring temporary file"), "{status}");
    assert!(status.contains(&format!("ignoring \"{}\"", renamed.display())), "{status}");
}

#[test]
fn a_manifest_before_its_file_and_files_out_of_order_wait_then_apply() {
    let d = damage("");
    std::fs::rename(d.file(2), d.s.work.path().join("2.sql")).unwrap();
    let waiting = apply(&d.config, &["once"]);
    assert!(stderr(&waiting).contains("waiting for file 2 (\""), "{}", describe(&waiting));
    assert!(stderr(&waiting).contains("its manifest has arrived"), "{}", describe(&waiting));
    assert_eq!(last_applied(&d.s.slave), "1");
    // File 2 arrives after file 3: both are applied, in order.
    let name = transaction_files(&d.s.outbox)[1].file_name().unwrap().to_owned();
    std::fs::rename(d.s.work.path().join("2.sql"), d.inbound.join(name)).unwrap();
    let output = apply(&d.config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_tables_equal(&d.s.master, &d.s.slave, TABLES);
}

/// Without a pinned master, the slave's state pins it after the first file: a file from
/// another master is refused by the guard.
#[test]
fn a_file_from_another_master_is_refused_by_the_guard() {
    let d = damage("");
    let ok = apply(&d.config, &["once"]);
    assert!(ok.status.success(), "{}", describe(&ok));
    // Another master, same slave name, same schema.
    let other = Cluster::start("other-master");
    other.create_extension();
    other.execute(crate::export::SCHEMA);
    other.execute("SELECT dbmirror_mirror_table('item'); INSERT INTO dbmirror_MirrorHost VALUES ('slave1');");
    for i in 1..=4 {
        other.execute(&format!("INSERT INTO item (name) VALUES ('other {i}')"));
    }
    let outbox = d.s.work.dir("other-outbox");
    export_once(&export_config(&d.s.work, &other, "slave1", &outbox, "batch_size = 1"));
    let fourth = transaction_files(&outbox)[3].clone();
    std::fs::copy(&fourth, d.inbound.join(fourth.file_name().unwrap())).unwrap();
    let manifest = file_names(&outbox).into_iter().find(|n| n.starts_with("00000000000000000004-")).unwrap();
    std::fs::copy(outbox.join(&manifest), d.inbound.join(&manifest)).unwrap();
    let before = table_rows(&d.s.slave, "item");
    let output = apply(&d.config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(stderr(&output).contains("but this slave follows master"), "{}", describe(&output));
    assert_eq!(table_rows(&d.s.slave, "item"), before);
    assert_eq!(last_applied(&d.s.slave), "3");
}

fn keygen(prefix: &Path) {
    let output = Command::new(dbmirror_tests::binary("dbmirror-export")).arg("keygen").arg(prefix).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
}

#[test]
fn signed_manifests_are_required_once_a_public_key_is_configured() {
    let s = setup("");
    let keys = s.work.dir("keys");
    keygen(&keys.join("exporter"));
    keygen(&keys.join("stranger"));
    let again = Command::new(dbmirror_tests::binary("dbmirror-export"))
        .arg("keygen")
        .arg(keys.join("exporter"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "keygen never replaces a key:\n{}", describe(&again));
    let public = |name: &str| format!("public_key = \"{}\"", keys.join(format!("{name}.pub")).display());

    // Unsigned files: refused, kept in quarantine, nothing applied.
    let unsigned = setup("");
    unsigned.master.execute("INSERT INTO item (name) VALUES ('unsigned')");
    export_once(&unsigned.config);
    let inbound = unsigned.work.dir("inbound");
    transfer(&unsigned.outbox, &inbound);
    let config = apply_config(&unsigned.work, &unsigned.slave, "slave1", &inbound, &public("exporter"));
    let output = apply(&config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(stderr(&output).contains("is not signed, and a public key is configured"), "{}", describe(&output));
    assert_eq!(last_applied(&unsigned.slave), "none");
    assert_eq!(file_names(&inbound.join("quarantine")).len(), 2, "the manifest and its reason");

    // Signed by the exporter's key: applied; the signed manifest still suits sha256sum.
    let signed = export_config(
        &s.work,
        &s.master,
        "slave1",
        &s.outbox,
        &format!("signing_key = \"{}\"", keys.join("exporter.key").display()),
    );
    s.master.execute("INSERT INTO item (name) VALUES ('signed')");
    export_once(&signed);
    let check =
        Command::new("sh").arg("-c").arg("sha256sum -c --strict *.sha256").current_dir(&s.outbox).output().unwrap();
    assert!(check.status.success(), "{}", describe(&check));
    let inbound = s.work.dir("inbound");
    transfer(&s.outbox, &inbound);
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, &public("exporter"));
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_tables_equal(&s.master, &s.slave, TABLES);

    // Forged: a file changed, and its manifest's checksum and end line rewritten to match, by
    // someone without the secret key.
    s.master.execute("INSERT INTO item (name) VALUES ('genuine')");
    export_once(&signed);
    let file = transaction_files(&s.outbox).last().unwrap().clone();
    let manifest_name = file_names(&s.outbox).into_iter().rfind(|n| n.ends_with(".sha256")).unwrap();
    let forged_sql = std::fs::read_to_string(&file).unwrap().replace("'genuine'", "'forged!'");
    let manifest = std::fs::read_to_string(s.outbox.join(&manifest_name)).unwrap();
    let old_sum = dbmirror_spool::Checksum::of(&std::fs::read(&file).unwrap()).to_string();
    let new_sum = dbmirror_spool::Checksum::of(forged_sql.as_bytes()).to_string();
    let mut lines: Vec<String> = manifest.replace(&old_sum, &new_sum).lines().map(str::to_string).collect();
    lines.pop();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(inbound.join(file.file_name().unwrap()), &forged_sql).unwrap();
    std::fs::write(
        inbound.join(&manifest_name),
        format!("{body}# end {}\n", dbmirror_spool::Checksum::of(body.as_bytes())),
    )
    .unwrap();
    let before = table_rows(&s.slave, "item");
    let output = apply(&config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(stderr(&output).contains("has a signature that does not verify"), "{}", describe(&output));
    assert_eq!(table_rows(&s.slave, "item"), before);

    // The genuine files, checked with a stranger's key: refused as well.
    std::fs::copy(s.outbox.join(&manifest_name), inbound.join(&manifest_name)).unwrap();
    std::fs::copy(&file, inbound.join(file.file_name().unwrap())).unwrap();
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, &public("stranger"));
    let output = apply(&config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert_eq!(table_rows(&s.slave, "item"), before);

    // And with the right key they apply.
    std::fs::copy(s.outbox.join(&manifest_name), inbound.join(&manifest_name)).unwrap();
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, &public("exporter"));
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

/// Crafted files whose manifest is genuine (the attacker could write it, there is no key): the
/// applier still runs only what the exporter writes.
#[test]
fn crafted_sql_is_refused_before_it_reaches_the_slave() {
    let s = setup("");
    s.master.execute("INSERT INTO item (name) VALUES ('genuine')");
    export_once(&s.config);
    let genuine = std::fs::read_to_string(&transaction_files(&s.outbox)[0]).unwrap();
    let insert = genuine.lines().find(|l| l.starts_with("INSERT INTO")).unwrap().to_string();
    let cases = [
        ("COPY \"public\".\"item\" (\"id\") TO PROGRAM 'touch /tmp/dbmirror-pwned';".to_string(), "expected FROM"),
        ("DROP TABLE \"public\".\"item\";".to_string(), "DROP is not allowed here"),
        ("ALTER ROLE postgres PASSWORD 'x';".to_string(), "ALTER is not allowed here"),
        ("SELECT pg_catalog.pg_sleep(1);".to_string(), "expected dbmirror"),
        (insert.replace("VALUES ('1'", "VALUES ('1' || (SELECT current_user)"), "unexpected character '|'"),
        (insert.replace(" VALUES (", " /* '; DROP TABLE item; */ VALUES ("), "unexpected character '/'"),
        // A backslash does not escape a quote: the literal ends there, and the rest of the line
        // is a comment inside an open parenthesis, so the statement never ends.
        (insert.replace("'genuine'", "'a\\'; DROP TABLE \"public\".\"item\"; --'"), "could not be read as SQL"),
        // The quote closes early, so the reader splits there, exactly as psql would.
        (insert.replace("'genuine'", "'x'); DROP TABLE \"public\".\"item\"; SELECT ('x'"), "5 columns but 2 values"),
        (insert.replace("\"public\".\"item\"", "\"dbmirror\".\"slave_state\""), "schema \"dbmirror\""),
    ];
    for (i, (statement, reason)) in cases.iter().enumerate() {
        let work = s.work.dir(&format!("crafted-{i}"));
        let inbound = work.join("inbound");
        std::fs::create_dir_all(&inbound).unwrap();
        let crafted = genuine.replace(&insert, statement);
        let name = transaction_files(&s.outbox)[0].file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(inbound.join(&name), &crafted).unwrap();
        let entry = dbmirror_spool::ManifestEntry {
            checksum: dbmirror_spool::Checksum::of(crafted.as_bytes()),
            file: dbmirror_spool::TransactionFileName::parse(&name).unwrap(),
        };
        let manifest = dbmirror_spool::Manifest::new(vec![entry]).unwrap();
        std::fs::write(inbound.join(manifest.name.file_name()), manifest.render()).unwrap();
        let config = apply_config(&s.work, &s.slave, "slave1", &inbound, "");
        let output = apply(&config, &["once"]);
        assert_eq!(output.status.code(), Some(5), "{statement}\n{}", describe(&output));
        assert!(stderr(&output).contains(reason), "{statement}: {reason:?} not in\n{}", describe(&output));
        assert_eq!(last_applied(&s.slave), "none", "{statement}");
        assert_eq!(s.slave.query_value("SELECT count(*)::text FROM item"), "0");
        assert!(file_names(&inbound.join("quarantine")).contains(&name));
    }
    assert!(!Path::new("/tmp/dbmirror-pwned").exists());
}

/// A slave table that is missing, or whose column changed: a clear error, the file kept, and
/// the applier goes on once the slave is repaired.
#[test]
fn a_missing_or_changed_slave_table_stops_the_applier_with_a_clear_error() {
    for (break_it, repair, message) in [
        ("DROP TABLE \"Order Line\"", "CREATE TABLE \"Order Line\" (\"Order\" integer, \"Line\" integer, item integer, qty integer, PRIMARY KEY (\"Order\", \"Line\"))", "table \"public\".\"Order Line\" does not exist here"),
        ("ALTER TABLE item RENAME COLUMN price TO cost", "ALTER TABLE item RENAME COLUMN cost TO price", "column \"price\" numeric(10,2) is missing here; column \"cost\" is only here"),
    ] {
        let s = setup("");
        workload(&s.master);
        export_once(&s.config);
        let inbound = s.work.dir("inbound");
        transfer(&s.outbox, &inbound);
        let config = apply_config(&s.work, &s.slave, "slave1", &inbound, "");
        s.slave.execute(break_it);
        let output = apply(&config, &["once"]);
        assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
        assert!(stderr(&output).contains(message), "{message:?} not in\n{}", describe(&output));
        s.slave.execute(repair);
        for name in file_names(&inbound.join("quarantine")).iter().filter(|n| !n.ends_with(".reason")) {
            std::fs::rename(inbound.join("quarantine").join(name), inbound.join(name)).unwrap();
        }
        let output = apply(&config, &["once"]);
        assert!(output.status.success(), "{}", describe(&output));
        assert_tables_equal(&s.master, &s.slave, TABLES);
    }
}

/// A tiny xorshift generator: the crash loop's random moments, reproducible from the printed seed.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Moves finished files from the outbox to the inbound spool, as `rsync --remove-source-files
/// --exclude='.*'` would, until `stop` is set.
fn mover(
    outbox: PathBuf,
    inbound: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for name in spool_names(&outbox) {
                if !name.ends_with(".tmp") {
                    let _ = std::fs::rename(outbox.join(&name), inbound.join(&name));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })
}

/// Writes to the master until `stop` is set, reconnecting whenever the master goes away.
fn writer(conninfo: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut committed = 0;
        let mut round = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(mut client) = postgres::Client::connect(&conninfo, postgres::NoTls) else {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let sql = format!(
                    "BEGIN; INSERT INTO item (name, price) VALUES ('round {round}', {round});
                     UPDATE item SET price = price + 1 WHERE id = (SELECT max(id) / 2 + 1 FROM item);
                     DELETE FROM item WHERE id = (SELECT min(id) FROM item) AND {round} % 5 = 0;
                     INSERT INTO \"Order Line\" VALUES ({round}, 1, NULL, {round}) ON CONFLICT DO NOTHING;
                     COMMIT;"
                );
                if client.batch_execute(&sql).is_err() {
                    break;
                }
                committed += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        committed
    })
}

/// kill -9 of the exporter and the applier at random moments while the master is written to,
/// and immediate shutdowns of both servers, then catch up: the slave equals the master, every
/// number was applied, and none twice (the guard would have refused it). `CRASH_KILLS` (default
/// 50 of each) sets the length; a longer run is `CRASH_KILLS=500 scripts/test faults::crash`.
#[test]
fn crash_loop_kill_9_anywhere_loses_nothing_and_doubles_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let kills: u64 = std::env::var("CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(50);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash loop: {kills} kills of each, seed {seed}");
    let mut random = Random(seed);

    let s = setup("sleep_interval = 0.05\nbatch_size = 20");
    let inbound = s.work.dir("inbound");
    let apply_conf = apply_config(&s.work, &s.slave, "slave1", &inbound, "poll_interval = 0.1\nsettle_seconds = 2");
    let stop = Arc::new(AtomicBool::new(false));
    let moving = mover(s.outbox.clone(), inbound.clone(), stop.clone());
    let writing = writer(s.master.conninfo(), stop.clone());

    let spawn = |exporter: bool| {
        let mut command = if exporter {
            dbmirror_tests::tools::export_command(&s.config, &["run"])
        } else {
            dbmirror_tests::tools::apply_command(&apply_conf, &["watch"])
        };
        command.stderr(std::process::Stdio::null()).spawn().expect("the tool starts")
    };
    let mut exporter = spawn(true);
    let mut applier = spawn(false);
    for round in 0..2 * kills {
        std::thread::sleep(std::time::Duration::from_millis(20 + random.next(250)));
        let victim = if round % 2 == 0 { &mut exporter } else { &mut applier };
        victim.kill().expect("SIGKILL is delivered");
        victim.wait().expect("the killed process is reaped");
        *victim = spawn(round % 2 == 0);
        match round {
            r if r == kills / 2 || r == kills + kills / 2 => {
                s.master.crash();
                s.master.restart();
            }
            r if r == kills / 2 + 10 || r == kills + kills / 2 + 10 => {
                s.slave.crash();
                s.slave.restart();
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let committed = writing.join().unwrap();
    moving.join().unwrap();
    for mut child in [exporter, applier] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(committed > 100, "the workload ran ({committed} transactions)");

    // Catch up, as an operator would after the storm.
    export_once(&s.config);
    transfer(&s.outbox, &inbound);
    let output = apply(&apply_conf, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_tables_equal(&s.master, &s.slave, TABLES);
    let assigned = s.master.query_value("SELECT last_number::text FROM dbmirror_mirrorhost");
    assert_eq!(last_applied(&s.slave), assigned, "every number assigned was applied");
    assert!(file_names(&inbound.join("quarantine")).is_empty(), "nothing was quarantined");
    // Each number is in the archive (copies of a file carried twice are kept with a suffix).
    let archived: std::collections::BTreeSet<u64> = file_names(&inbound.join("archive"))
        .iter()
        .filter_map(|n| dbmirror_spool::TransactionFileName::parse(n).ok())
        .map(|n| n.number)
        .collect();
    let last: u64 = assigned.parse().unwrap();
    assert_eq!(archived, (1..=last).collect(), "every file number was applied once, in order");
}

/// Waits until `done` or fails after a minute.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The master goes away while the exporter streams a large transaction: a clear error, no file
/// and nothing recorded; once the master is back, the same export completes.
#[test]
fn the_master_going_away_mid_export_leaves_nothing_half_done() {
    let s = setup("");
    s.master.execute("INSERT INTO item (name, price) SELECT 'bulk ' || g, g FROM generate_series(1, 400000) g");
    let child = dbmirror_tests::tools::export_command(&s.config, &["once"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the exporter to start writing", || file_names(&s.outbox).iter().any(|n| n.ends_with(".sql.tmp")));
    s.master.crash();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr(&output).contains("database connection"), "{}", describe(&output));
    assert!(file_names(&s.outbox).is_empty(), "no file, no temporary file, no manifest: {:?}", file_names(&s.outbox));
    s.master.restart();
    assert_eq!(
        s.master.query_value("SELECT count(*)::text FROM dbmirror_mirroredtransaction WHERE sha256 IS NOT NULL"),
        "0"
    );
    s.export_and_apply_everything();
}

/// The slave goes away during a large COPY, or a statement times out: the file is not blamed
/// (it stays in the spool, exit code 1), nothing of it remains, and the next run applies it.
#[test]
fn a_lost_slave_or_a_statement_timeout_is_retried_not_blamed_on_the_file() {
    let s = setup("");
    s.master.execute("INSERT INTO item (name, price) SELECT 'bulk ' || g, g FROM generate_series(1, 400000) g");
    export_once(&s.config);
    let inbound = s.work.dir("inbound");
    transfer(&s.outbox, &inbound);
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, "");
    let spool = file_names(&inbound);

    let child =
        dbmirror_tests::tools::apply_command(&config, &["once"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    wait_for("the COPY to start", || {
        s.slave.query_value("SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE 'COPY%'") == "1"
    });
    s.slave.crash();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr(&output).contains("will be tried again"), "{}", describe(&output));
    s.slave.restart();
    assert_eq!(last_applied(&s.slave), "none");
    assert_eq!(s.slave.query_value("SELECT count(*)::text FROM item"), "0");

    s.slave.execute("ALTER ROLE postgres SET statement_timeout = '50ms'");
    let output = apply(&config, &["once"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr(&output).contains("canceling statement due to statement timeout"), "{}", describe(&output));
    assert_eq!(last_applied(&s.slave), "none");
    assert!(file_names(&inbound.join("quarantine")).is_empty());
    let mut still: Vec<String> = file_names(&inbound).into_iter().filter(|n| !n.starts_with('.')).collect();
    still.sort();
    assert_eq!(still, spool.into_iter().filter(|n| !n.starts_with('.')).collect::<Vec<_>>());

    s.slave.execute("ALTER ROLE postgres RESET statement_timeout");
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

/// The outbox fills up: the exporter stops with a clear error and records nothing as sent that
/// is not durably on disk; with room again, it writes the same files. A small tmpfs where the
/// machine allows mounting one, otherwise an injected "No space left on device".
#[test]
fn a_full_outbox_stops_the_exporter_without_recording_anything_as_sent() {
    let s = setup("");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&s.outbox)
        .output()
        .is_ok_and(|o| o.status.success());
    eprintln!("disk full: {}", if mounted { "256 kB tmpfs" } else { "injected ENOSPC (mount not permitted)" });
    s.master.execute("INSERT INTO item (name) VALUES ('small')");
    s.master.execute("INSERT INTO item (name, price) SELECT repeat('x', 200) || g, g FROM generate_series(1, 5000) g");
    let mut command = dbmirror_tests::tools::export_command(&s.config, &["once"]);
    if !mounted {
        command.env(EXPORT_DISK_FULL_AFTER, "262144");
    }
    let output = command.output().unwrap();
    let written =
        s.master.query_value("SELECT count(*)::text FROM dbmirror_mirroredtransaction WHERE sha256 IS NOT NULL");
    let leftovers: Vec<String> = file_names(&s.outbox);
    if mounted {
        assert!(Command::new("umount").arg(&s.outbox).status().unwrap().success());
    }
    assert!(mounted || !output.status.success(), "the injected full disk did not happen. {EXPORT_FAULTS_HINT}");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr(&output).contains("No space left on device"), "{}", describe(&output));
    assert!(stderr(&output).contains("HINT:  Nothing was recorded as sent."), "{}", describe(&output));
    assert_eq!(written, "0", "nothing is recorded as sent");
    assert!(leftovers.iter().all(|n| !n.ends_with(".tmp")), "the failed file does not stay: {leftovers:?}");
    assert!(leftovers.iter().all(|n| !n.ends_with(".sha256")), "no manifest for a batch that failed: {leftovers:?}");
    // With room again (the tmpfs gone, or no injected failure), the same export completes.
    for name in &leftovers {
        let _ = std::fs::remove_file(s.outbox.join(name));
    }
    s.export_and_apply_everything();
}

/// The role that sql/applier_role.sql makes can apply files, and do nothing else.
#[test]
fn the_applier_runs_as_a_role_that_can_only_change_the_mirrored_tables() {
    let s = setup("");
    let role_sql = dbmirror_tests::repository().join("sql/applier_role.sql");
    let output = s.slave.psql(&[
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "role=mirror_writer",
        "-v",
        "tables=public.item, public.\"Order Line\"",
        "-v",
        "sequences=public.item_id_seq",
        "-f",
        &role_sql.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    workload(&s.master);
    export_once(&s.config);
    let inbound = s.work.dir("inbound");
    transfer(&s.outbox, &inbound);
    let conninfo = s.slave.conninfo().replace("user=postgres", "user=mirror_writer");
    let config = s.work.file(
        "restricted.toml",
        &format!("slave_name = \"slave1\"\nslave = \"{conninfo}\"\nspool = \"{}\"\n", inbound.display()),
    );
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_tables_equal(&s.master, &s.slave, TABLES);
    // Nothing else: not another table, not the catalog, not its own state behind the guard's back.
    let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
    for sql in [
        "CREATE TABLE public.intruder (x int)",
        "DELETE FROM dbmirror.slave_state",
        "DELETE FROM dbmirror.applied_file",
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        "ALTER TABLE public.item ADD COLUMN x int",
    ] {
        let err = client.batch_execute(sql).expect_err(sql);
        assert_eq!(err.as_db_error().map(|d| d.code().code()), Some("42501"), "{sql}: {err:?}");
    }
}

/// Regression test: a master restored from an older physical copy exports again numbers that
/// the slave has applied, with other transactions. The applier used to archive them as
/// already applied ("applied 0 files"), and psql -f said only "already applied", so the slave
/// silently kept a history the master no longer had. Now the guard and the applier both
/// recognise the other content and say what probably happened, whether the slave applied the
/// original files with the applier (which knows their checksums) or by hand (the guard's
/// record of each number's master transaction and export time tells them apart).
#[test]
fn a_master_restored_from_an_older_copy_is_refused_not_silently_taken_for_files_already_applied() {
    let s = setup("");
    let by_hand = Cluster::start("slave-by-hand");
    by_hand.execute(crate::export::SCHEMA);
    by_hand.slave_setup();
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    let backup = s.master.snapshot();
    s.master.execute("INSERT INTO item (name) VALUES ('two')");
    s.master.execute("INSERT INTO item (name) VALUES ('three')");
    export_once(&s.config);
    let inbound = s.work.dir("inbound");
    let hand_inbound = s.work.dir("hand-inbound");
    transfer(&s.outbox, &inbound);
    transfer(&s.outbox, &hand_inbound);
    let first_history: Vec<(String, Vec<u8>)> = transaction_files(&s.outbox)
        .iter()
        .map(|f| (f.file_name().unwrap().to_str().unwrap().to_string(), std::fs::read(f).unwrap()))
        .collect();
    // The outbox is emptied, its state file too (which would otherwise make the exporter refuse
    // the restored master: history::a_master_restored_from_an_older_copy_...), so that the
    // slaves must tell the two histories apart by themselves.
    for name in file_names(&s.outbox) {
        std::fs::remove_file(s.outbox.join(name)).unwrap();
    }
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, "");
    let output = apply(&config, &["once"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(replay_by_hand(&by_hand, &hand_inbound), 3);
    let applied = table_rows(&s.slave, "item");
    assert_eq!(table_rows(&by_hand, "item"), applied);

    // The master comes back from the copy taken after the first transaction, and goes on with
    // other transactions: numbers 2 and 3 again, with other content (and quite possibly the
    // same xids, which the restored master hands out again).
    s.master.restore(&backup);
    s.master.execute("INSERT INTO item (name) VALUES ('other two')");
    s.master.execute("INSERT INTO item (name) VALUES ('other three')");
    export_once(&s.config);
    let second_history = transaction_files(&s.outbox);
    assert_eq!(second_history.len(), 2);
    // Compared by content: a file of the other history may carry the very name of an applied
    // one (same number, same xid, assigned within the same second).
    let second_contents: Vec<Vec<u8>> = second_history.iter().map(|f| std::fs::read(f).unwrap()).collect();

    // By hand: the guard refuses them and names the likely cause.
    for file in &second_history {
        let output = psql_file(&s.slave, file);
        assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
        let said = stderr(&output);
        assert!(said.contains("the master's history diverged"), "{said}");
        assert!(said.contains("Was the master restored from an older copy?"), "{said}");
    }
    // A true re-send of an applied file is still only "already applied".
    let resent = hand_inbound.join(&first_history[1].0);
    std::fs::write(&resent, &first_history[1].1).unwrap();
    let output = psql_file(&s.slave, &resent);
    assert!(stderr(&output).contains("was already applied"), "{}", describe(&output));
    assert!(!stderr(&output).contains("diverged"), "{}", describe(&output));

    // The applier, on both slaves: quarantined with the reason, exit code 5, nothing applied.
    let hand_config = s.work.file(
        "apply-by-hand.toml",
        &format!(
            "slave_name = \"slave1\"\nslave = \"{}\"\nspool = \"{}\"\n",
            by_hand.conninfo(),
            hand_inbound.display()
        ),
    );
    for (slave, spool, config) in [(&s.slave, &inbound, &config), (&by_hand, &hand_inbound, &hand_config)] {
        for name in file_names(spool) {
            if !name.starts_with('.') {
                std::fs::remove_file(spool.join(name)).unwrap();
            }
        }
        transfer(&s.outbox, spool);
        let output = apply(config, &["once"]);
        assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
        let said = stderr(&output);
        assert!(said.contains("the master's history diverged"), "{said}");
        assert!(said.contains("HINT:  Was the master restored from an older copy?"), "{said}");
        assert!(!said.contains("applied 0 files"), "{said}");
        assert_eq!(table_rows(slave, "item"), applied, "nothing of the other history was applied");
        assert_eq!(last_applied(slave), "3");
        let quarantined = file_names(&spool.join("quarantine"));
        for file in &second_history {
            let name = file.file_name().unwrap().to_str().unwrap().to_string();
            assert!(quarantined.contains(&name), "{name} not in quarantine: {quarantined:?}");
            let reason = std::fs::read_to_string(spool.join("quarantine").join(format!("{name}.reason"))).unwrap();
            assert!(reason.contains("the master's history diverged"), "{reason}");
        }
        let archive = spool.join("archive");
        assert!(
            file_names(&archive).iter().all(|n| !second_contents.contains(&std::fs::read(archive.join(n)).unwrap())),
            "none of the other history's files was archived as applied"
        );
    }
}

/// Regression test: in direct mode, a master restored from an older copy assigned numbers the
/// slave had applied to other transactions, and the exporter skipped them as applied before a
/// crash, silently. It now compares them with what the slave recorded, and stops.
#[test]
fn direct_mode_refuses_a_master_restored_from_an_older_copy() {
    let s = setup("");
    let config = s.work.file(
        "direct.toml",
        &format!("slave_name = \"slave1\"\nmaster = \"{}\"\nslave = \"{}\"\n", s.master.conninfo(), s.slave.conninfo()),
    );
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&config);
    let backup = s.master.snapshot();
    s.master.execute("INSERT INTO item (name) VALUES ('two')");
    export_once(&config);
    let applied = table_rows(&s.slave, "item");
    s.master.restore(&backup);
    s.master.execute("INSERT INTO item (name) VALUES ('other two')");
    let output = dbmirror_tests::tools::export_command(&config, &["once"]).output().unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(stderr(&output).contains("the master's history diverged"), "{}", describe(&output));
    assert!(stderr(&output).contains("HINT:  Was the master restored from an older copy?"), "{}", describe(&output));
    assert_eq!(table_rows(&s.slave, "item"), applied);
    assert_eq!(last_applied(&s.slave), "2");
}
