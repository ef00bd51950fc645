//! The golden spool: `spool-example/` is what the exporter writes for the scenario of
//! `export::workload` and a schema change, byte for byte, after the values that differ from run
//! to run (the master's system identifier, times and xids) are set to fixed ones. `BLESS=1`
//! rewrites it.
//!
//! The example is a valid spool in its own right: its manifests and hash chain are computed
//! for the fixed values, `sha256sum -c` accepts it, and the test replays it on a slave.

use std::io::BufRead;
use std::path::Path;

use chrono::{SecondsFormat, TimeZone, Utc};
use dbmirror_spool::{Checksum, Header, Manifest, ManifestEntry, TransactionFileName};
use dbmirror_sql::{quote_literal, GUARD_FUNCTION};
use dbmirror_tests::tools::{export_once, replay_by_hand, transaction_files, Workdir};
use dbmirror_tests::{assert_tables_equal, repository};

use crate::export::{setup, workload, TABLES};

const FIXED_MASTER: u64 = 7_000_000_000_000_000_001;

/// Rewrites the run-dependent values of an exported spool and recomputes the chain and the
/// manifests. Returns the normalised files, by name, in order.
fn normalise(outbox: &Path) -> Vec<(String, Vec<u8>)> {
    let time = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut files = Vec::new();
    let mut entries = Vec::new();
    let mut previous: Option<Checksum> = None;
    for path in transaction_files(outbox) {
        let bytes = std::fs::read(&path).unwrap();
        let mut reader = &bytes[..];
        let header = Header::read(&mut reader).unwrap();
        let header = Header {
            master: FIXED_MASTER,
            xid: 1000 + header.number,
            exported_at: time,
            committed_at: Some(time),
            previous_sha256: previous,
            ..header
        };
        let mut text = header.render();
        for line in reader.lines() {
            let line = line.unwrap();
            if line.starts_with(&format!("SELECT {GUARD_FUNCTION}(")) {
                let previous = previous.map_or_else(|| "NULL".to_string(), |c| quote_literal(&c.to_string()));
                text.push_str(&format!(
                    "SELECT {GUARD_FUNCTION}({}, {}, {}, {}, {previous}, {at}, {at});\n",
                    quote_literal(&header.slave),
                    quote_literal(&FIXED_MASTER.to_string()),
                    header.number,
                    header.xid,
                    at = quote_literal(&time.to_rfc3339_opts(SecondsFormat::Micros, true))
                ));
            } else {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let name = TransactionFileName { number: header.number, time, xid: header.xid, compressed: false };
        let checksum = Checksum::of(text.as_bytes());
        previous = Some(checksum);
        entries.push(ManifestEntry { checksum, file: name.clone() });
        files.push((name.file_name(), text.into_bytes()));
    }
    // One manifest per two files, as the scenario exports with batch_size = 2.
    for chunk in entries.chunks(2) {
        let manifest = Manifest::new(chunk.to_vec()).unwrap();
        files.push((manifest.name.file_name(), manifest.render().into_bytes()));
    }
    files.sort();
    files
}

#[test]
fn the_spool_example_is_what_the_exporter_writes() {
    let s = setup("batch_size = 2");
    workload(&s.master);
    // A schema change in its place among a transaction's changes.
    s.master.execute(
        "BEGIN;
         UPDATE item SET price = 7 WHERE id = 1;
         SELECT dbmirror_ddl('ALTER TABLE item ADD COLUMN note text DEFAULT ''none''');
         UPDATE item SET note = 'noted' WHERE id = 2;
         COMMIT;",
    );
    export_once(&s.config);
    let files = normalise(&s.outbox);
    // The exporter wrote the same manifests (by name) as the normalised spool has.
    let manifests =
        |names: Vec<String>| -> Vec<String> { names.into_iter().filter(|n| n.ends_with(".sha256")).collect() };
    let mut exported: Vec<String> =
        std::fs::read_dir(&s.outbox).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    exported.sort();
    assert_eq!(manifests(exported), manifests(files.iter().map(|(n, _)| n.clone()).collect()));

    let golden = repository().join("spool-example");
    if std::env::var_os("BLESS").is_some() {
        for entry in std::fs::read_dir(&golden).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sql" || e == "sha256") {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (name, bytes) in &files {
            std::fs::write(golden.join(name), bytes).unwrap();
        }
    }
    let mut expected: Vec<(String, Vec<u8>)> = std::fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql" || e == "sha256"))
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    expected.sort();
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&files),
        names(&expected),
        "spool-example/ lists other files; run BLESS=1 scripts/test golden to update it"
    );
    for ((name, bytes), (_, golden_bytes)) in files.iter().zip(&expected) {
        assert!(
            bytes == golden_bytes,
            "spool-example/{name} differs from what the exporter writes:\n--- written ---\n{}\n--- golden ---\n{}\n\
             (if the change is intended, run BLESS=1 scripts/test golden)",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(golden_bytes)
        );
    }

    // The example is a working spool: apply it by hand to a fresh slave.
    let work = Workdir::new("golden");
    let copy = work.dir("spool");
    for (name, bytes) in &expected {
        std::fs::write(copy.join(name), bytes).unwrap();
    }
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg("sha256sum -c --strict *.sha256")
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", dbmirror_tests::describe(&check));
    replay_by_hand(&s.slave, &copy);
    assert_tables_equal(&s.master, &s.slave, TABLES);
}
