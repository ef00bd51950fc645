//! Fidelity: every type, identifier, setting and concurrent workload converges to a slave whose
//! tables hold exactly the master's values (DESIGN invariants 1-3 and 8).
//!
//! Values are compared as text under the canonical settings on both sides (exact for every
//! type, floats included, with extra_float_digits 3), by `assert_tables_equal` and by the
//! exporter's own `verify`.

use std::path::PathBuf;
use std::process::Command;

use dbmirror_sql::quote_literal;
use dbmirror_tests::samples::{samples, typed};
use dbmirror_tests::tools::{
    apply, apply_config, export_command, export_config, export_once, replay_by_hand, transfer, Workdir,
};
use dbmirror_tests::{assert_tables_equal, describe, Cluster};

/// Types whose input function refuses every value: they hold planner or index internals and
/// cannot be given values in a user table. The test checks that they do refuse.
const NO_INPUT: &[&str] = &[
    "pg_node_tree",
    "pg_ndistinct",
    "pg_dependencies",
    "pg_mcv_list",
    "gtsvector",
    "pg_brin_bloom_summary",
    "pg_brin_minmax_multi_summary",
];

/// Settings that make a session's view of values as different from the canonical one as
/// possible.
const HOSTILE_SESSION: &str = "SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; \
    SET TimeZone = 'Pacific/Kiritimati'; SET extra_float_digits = 0; SET bytea_output = 'escape'; \
    SET standard_conforming_strings = off; SET lc_monetary = 'de_DE.UTF-8';";

/// The slave's defaults, different again.
const HOSTILE_SLAVE: &[&str] = &[
    "DateStyle = 'German, DMY'",
    "IntervalStyle = 'iso_8601'",
    "TimeZone = 'Asia/Kathmandu'",
    "extra_float_digits = -15",
    "bytea_output = 'escape'",
    "standard_conforming_strings = off",
    "lc_monetary = 'de_DE.UTF-8'",
    "xmloption = 'document'",
];

struct Pair {
    master: Cluster,
    slave: Cluster,
    work: Workdir,
    outbox: PathBuf,
    inbound: PathBuf,
    export: PathBuf,
    apply: PathBuf,
}

/// A master and a slave (with hostile defaults) sharing `schema`; every table in `schema`
/// named in `tables` is mirrored.
fn pair(schema: &str, tables: &[String]) -> Pair {
    let master = Cluster::start("master");
    master.create_extension();
    master.execute(schema);
    for table in tables {
        master.execute(&format!("SELECT dbmirror_mirror_table({})", quote_literal(table)));
    }
    master.execute("INSERT INTO dbmirror_MirrorHost VALUES ('fidelity')");
    let slave = Cluster::start_with("slave", HOSTILE_SLAVE);
    slave.execute(schema);
    let work = Workdir::new("fidelity");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, "fidelity", &outbox, "");
    let apply = apply_config(&work, &slave, "fidelity", &inbound, "");
    let init = dbmirror_tests::tools::apply(&apply, &["init"]);
    assert!(init.status.success(), "{}", describe(&init));
    Pair { master, slave, work, outbox, inbound, export, apply }
}

impl Pair {
    /// Export, carry and apply everything, then compare with assert_tables_equal and verify.
    fn sync_and_compare(&self, tables: &[String]) {
        export_once(&self.export);
        transfer(&self.outbox, &self.inbound);
        let output = apply(&self.apply, &["once"]);
        assert!(output.status.success(), "{}", describe(&output));
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        assert_tables_equal(&self.master, &self.slave, &names);
        let verify = export_command(&self.export, &["verify", "--slave", &self.slave.conninfo()]).output().unwrap();
        assert!(verify.status.success(), "verify found differences:\n{}", describe(&verify));
        let report = String::from_utf8_lossy(&verify.stdout);
        assert_eq!(report.lines().filter(|l| l.starts_with("equal ")).count(), tables.len(), "{report}");
    }
}

/// Every base type PostgreSQL 15 offers to user tables, its array, and its edge values, by
/// INSERT, by COPY and by UPDATE, written by a session with hostile settings, applied to a
/// slave with hostile defaults.
#[test]
fn every_built_in_type_and_its_array_round_trips() {
    let catalog = Cluster::start("catalog");
    let types: Vec<(String, bool)> = catalog
        .client()
        .query(
            "SELECT format_type(t.oid, NULL), t.typarray <> 0 FROM pg_type t \
              WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typtype IN ('b', 'r', 'm') AND t.typisdefined \
                AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.oid = t.typelem AND e.typarray = t.oid) \
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    drop(catalog);
    let samples = samples();
    let missing: Vec<&String> = types
        .iter()
        .map(|(t, _)| t)
        .filter(|t| !samples.contains_key(t.as_str()) && !NO_INPUT.contains(&t.as_str()))
        .collect();
    assert!(missing.is_empty(), "types without samples (add them to samples()): {missing:?}");
    assert!(types.len() > 80, "the catalog lists {} types", types.len());

    let testable: Vec<&(String, bool)> = types.iter().filter(|(t, _)| !NO_INPUT.contains(&t.as_str())).collect();
    let table_of = |i: usize| format!("public.v{i:03}");
    let schema: String = testable
        .iter()
        .enumerate()
        .map(|(i, (t, has_array))| {
            let array = if *has_array { format!(", a {t}[]") } else { String::new() };
            format!("CREATE TABLE {} (id integer PRIMARY KEY, v {t}{array});\n", table_of(i))
        })
        .collect();
    let tables: Vec<String> = (0..testable.len()).map(table_of).collect();
    let p = pair(&schema, &tables);

    let mut client = p.master.client();
    client.batch_execute(HOSTILE_SESSION).unwrap();
    for no_input in NO_INPUT {
        let err = client.query_one(&format!("SELECT 'x'::{no_input}"), &[]).expect_err(no_input);
        assert!(err.as_db_error().is_some(), "{no_input} should refuse input: {err}");
    }
    for (i, (t, has_array)) in testable.iter().enumerate() {
        let table = table_of(i);
        let values = &samples[t.as_str()];
        let array = |j: usize| -> String {
            // The array holds this value, the next one, and a NULL; or is empty.
            if j % 3 == 2 {
                format!("'{{}}'::{t}[]")
            } else {
                let next = &values[(j + 1) % values.len()];
                format!("ARRAY[{}, {}, NULL]", typed(&values[j], t), typed(next, t))
            }
        };
        let columns = |id: usize, j: usize| -> String {
            let v = if j == values.len() { "NULL".to_string() } else { typed(&values[j], t) };
            match (has_array, j == values.len()) {
                (true, false) => format!("({id}, {v}, {})", array(j)),
                (true, true) => format!("({id}, NULL, NULL)"),
                (false, _) => format!("({id}, {v})"),
            }
        };
        // One transaction per row: INSERT statements in the files.
        for j in 0..=values.len() {
            client
                .batch_execute(&format!("INSERT INTO {table} VALUES {}", columns(j, j)))
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        // Many rows in one statement: a COPY block in the file.
        let rows: Vec<String> = (0..4)
            .flat_map(|k| (0..=values.len()).map(move |j| (100 + k * 10 + j, j)))
            .map(|(id, j)| columns(id, j))
            .collect();
        client
            .batch_execute(&format!("INSERT INTO {table} VALUES {}", rows.join(", ")))
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        // Updates that change the value to the next sample, and a delete.
        client
            .batch_execute(&format!(
                "UPDATE {table} u SET v = (SELECT v FROM {table} o WHERE o.id = (u.id + 1) % {n}) WHERE u.id < {n}; \
                 DELETE FROM {table} WHERE id = 100",
                n = values.len() + 1
            ))
            .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    drop(client);
    p.sync_and_compare(&tables);
}

#[test]
fn composites_enums_domains_and_user_ranges_round_trip() {
    let schema = r#"
        CREATE TYPE mood AS ENUM ('sad', 'o''k', 'happy ☃', 'with "quotes"');
        CREATE TYPE pair AS (a integer, b text, c numeric[]);
        CREATE DOMAIN positive AS numeric CHECK (VALUE > 0);
        CREATE DOMAIN tags AS text[] CHECK (cardinality(VALUE) < 10);
        CREATE TYPE floatrange AS RANGE (subtype = float8);
        CREATE TABLE rich (id integer PRIMARY KEY, m mood, ms mood[], p pair, ps pair[], d positive, t tags,
                           r floatrange, rm floatmultirange, nested pair[]);
    "#;
    let tables = vec!["rich".to_string()];
    let p = pair(schema, &tables);
    let mut client = p.master.client();
    client.batch_execute(HOSTILE_SESSION).unwrap();
    client
        .batch_execute(
            r#"INSERT INTO rich VALUES
                 (1, 'o''k', E'{sad,"happy ☃","with \\"quotes\\""}', ROW(1, E'a "b", (c)\\', '{1.5,NaN}'),
                  ARRAY[ROW(2, NULL, NULL)::pair, NULL], 0.001, '{x,"y z",NULL}', '[1.5,Infinity)', '{[1,2),[3,4)}',
                  ARRAY[ROW(3, E'\n', '{}')::pair]),
                 (2, NULL, '{}', NULL, '{}', NULL, NULL, 'empty', '{}', NULL);
               INSERT INTO rich SELECT id + 10, m, ms, p, ps, d, t, r, rm, nested FROM rich;
               INSERT INTO rich SELECT id + 100, m, ms, p, ps, d, t, r, rm, nested FROM rich;
               UPDATE rich SET p.b = 'changed ''field''', m = 'sad' WHERE id = 1;"#,
        )
        .unwrap();
    drop(client);
    p.sync_and_compare(&tables);
}

#[test]
fn any_identifier_round_trips() {
    let long_table = "t".repeat(63);
    let long_column = "é".repeat(31);
    let schema = format!(
        r#"CREATE SCHEMA "Mixed Schema ""q"" ☃";
           CREATE TABLE "Mixed Schema ""q"" ☃"."Table With Spaces" ("Id" integer, "select" text, "from" text,
               "a""b" text, "ünï cöde" text, "{long_column}" text, PRIMARY KEY ("Id", "select"));
           CREATE TABLE public.{long_table} ("user" integer PRIMARY KEY, "order" text);
           CREATE TABLE "UPPER" ("KEY" text PRIMARY KEY, "Value" text);"#
    );
    let tables = vec![
        r#""Mixed Schema ""q"" ☃"."Table With Spaces""#.to_string(),
        format!("public.{long_table}"),
        r#""UPPER""#.to_string(),
    ];
    let p = pair(&schema, &tables);
    p.master.execute(&format!(
        r#"INSERT INTO "Mixed Schema ""q"" ☃"."Table With Spaces" VALUES (1, 'k', 'f', 'q', 'u', 'l'), (2, 'k''', NULL, NULL, NULL, NULL);
           UPDATE "Mixed Schema ""q"" ☃"."Table With Spaces" SET "select" = 'new key', "{long_column}" = 'x' WHERE "Id" = 1;
           INSERT INTO public.{long_table} SELECT g, g::text FROM generate_series(1, 10) g;
           DELETE FROM public.{long_table} WHERE "user" = 3;
           INSERT INTO "UPPER" VALUES ('Ключ', 'значение'), ('a"b', 'c');
           UPDATE "UPPER" SET "KEY" = 'renamed' WHERE "KEY" = 'a"b';"#
    ));
    p.sync_and_compare(&tables);
    assert_eq!(
        p.slave.query_value(r#"SELECT "select" FROM "Mixed Schema ""q"" ☃"."Table With Spaces" WHERE "Id" = 1"#),
        "new key"
    );
}

#[test]
fn keys_composite_changing_reused_self_referencing_and_deferred() {
    let schema = r#"
        CREATE TABLE node (id integer PRIMARY KEY, parent integer REFERENCES node DEFERRABLE INITIALLY DEFERRED, label text);
        CREATE TABLE pairkey (a text, b timestamptz, c numeric, v text, PRIMARY KEY (a, b, c));
        CREATE TABLE odd (k bytea PRIMARY KEY, u uuid UNIQUE, v text);
    "#;
    let tables: Vec<String> = ["node", "pairkey", "odd"].iter().map(|t| t.to_string()).collect();
    let p = pair(schema, &tables);
    let mut client = p.master.client();
    client.batch_execute(HOSTILE_SESSION).unwrap();
    client
        .batch_execute(
            r#"BEGIN;
               -- Children before their parent: the foreign key is deferred.
               INSERT INTO node VALUES (2, 1, 'child'), (3, 1, 'child 2');
               INSERT INTO node VALUES (1, NULL, 'root');
               COMMIT;
               BEGIN;
               -- Delete and insert again the same key in one transaction.
               DELETE FROM node WHERE id = 3;
               INSERT INTO node VALUES (3, 2, 'grandchild');
               -- Change a primary key that others reference (deferred).
               UPDATE node SET id = 20 WHERE id = 2;
               UPDATE node SET parent = 20 WHERE parent = 2;
               COMMIT;
               INSERT INTO pairkey VALUES (E'a''\\', '2024-02-29 23:30:00+14', 'NaN', 'x'), ('b', 'infinity', 1.10, 'y');
               UPDATE pairkey SET b = '2024-03-01 00:00:00+00', c = 1.1 WHERE a = 'b';
               UPDATE pairkey SET v = 'z' WHERE c = 'NaN';
               INSERT INTO odd VALUES (E'\\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'v'), ('', NULL, 'empty key');
               UPDATE odd SET k = E'\\x0000', v = 'changed' WHERE k = E'\\x00ff';
               DELETE FROM odd WHERE k = '';
               -- Swap two keys in one statement.
               INSERT INTO node VALUES (4, 1, 'four'), (5, 1, 'five');
               UPDATE node SET label = label || '!' WHERE id IN (4, 5);"#,
        )
        .unwrap();
    drop(client);
    p.sync_and_compare(&tables);
}

#[test]
fn sequences_on_the_slave_are_never_behind_and_never_go_back() {
    let schema = r#"
        CREATE SEQUENCE shared_seq START 1000 INCREMENT 7;
        CREATE SEQUENCE down_seq INCREMENT -1 START -1 MAXVALUE -1;
        CREATE TABLE s1 (id serial PRIMARY KEY, other bigint DEFAULT nextval('shared_seq'), down integer DEFAULT nextval('down_seq'));
        CREATE TABLE s2 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
        CREATE TABLE s3 (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text);
    "#;
    let tables: Vec<String> = ["s1", "s2", "s3"].iter().map(|t| t.to_string()).collect();
    let p = pair(schema, &tables);
    p.master.execute(
        "INSERT INTO s1 DEFAULT VALUES; INSERT INTO s1 DEFAULT VALUES;
         INSERT INTO s2 (v) SELECT g::text FROM generate_series(1, 5) g;
         INSERT INTO s3 (v) VALUES ('a'); INSERT INTO s3 (id, v) VALUES (100, 'explicit');",
    );
    p.sync_and_compare(&tables);
    let positions = |c: &Cluster| -> Vec<String> {
        ["s1_id_seq", "shared_seq", "down_seq", "s2_id_seq", "s3_id_seq"]
            .iter()
            .map(|s| c.query_value(&format!("SELECT last_value::text FROM {s}")))
            .collect()
    };
    assert_eq!(positions(&p.slave), positions(&p.master));
    // A newer value on the slave (someone used the sequence there) is not undone by an older file.
    p.slave.execute("SELECT setval('shared_seq', 5000)");
    p.master.execute("INSERT INTO s1 DEFAULT VALUES");
    p.sync_and_compare(&tables);
    assert_eq!(p.slave.query_value("SELECT last_value::text FROM shared_seq"), "5000");
    assert_eq!(p.slave.query_value("SELECT last_value::text FROM s1_id_seq"), "3");
    assert_eq!(p.slave.query_value("SELECT last_value::text FROM down_seq"), "-3");
}

/// A writer whose client encoding is LATIN1: the master stores UTF-8, the file carries UTF-8.
#[test]
fn a_writer_in_another_client_encoding_round_trips() {
    let tables = vec!["enc".to_string()];
    let p = pair("CREATE TABLE enc (id integer PRIMARY KEY, t text);", &tables);
    let script = p.work.path().join("latin1.sql");
    // "café" and "Ü" in LATIN1 bytes.
    std::fs::write(&script, b"INSERT INTO enc VALUES (1, 'caf\xe9'), (2, '\xdc');\n").unwrap();
    let output = Command::new(dbmirror_tests::pg_bin().join("psql"))
        .env("PGCLIENTENCODING", "LATIN1")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", &p.master.conninfo(), "-f"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    p.sync_and_compare(&tables);
    assert_eq!(p.slave.query_value("SELECT t FROM enc WHERE id = 1"), "café");
}

/// Concurrent clients with conflicting updates, foreign keys, a cascading trigger and
/// savepoints, while the exporter and the applier run: the slave ends equal to the master.
#[test]
fn a_concurrent_conflicting_workload_converges() {
    let schema = r#"
        CREATE TABLE account (id integer PRIMARY KEY, balance bigint NOT NULL, updates integer NOT NULL DEFAULT 0);
        CREATE TABLE entry (id bigserial PRIMARY KEY, account integer NOT NULL REFERENCES account ON DELETE CASCADE,
                            amount integer NOT NULL, note text);
        CREATE TABLE audit (id bigserial PRIMARY KEY, entry bigint, account integer, at_balance bigint);
        CREATE FUNCTION book() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE account SET balance = balance + NEW.amount, updates = updates + 1 WHERE id = NEW.account;
            INSERT INTO audit (entry, account, at_balance) SELECT NEW.id, NEW.account, balance FROM account WHERE id = NEW.account;
            RETURN NULL;
        END $$;
        CREATE TRIGGER a_book AFTER INSERT ON entry FOR EACH ROW EXECUTE FUNCTION book();
    "#;
    let tables: Vec<String> = ["account", "entry", "audit"].iter().map(|t| t.to_string()).collect();
    let p = pair(schema, &tables);
    p.master.execute("INSERT INTO account SELECT g, 0 FROM generate_series(1, 5) g");
    // The slave runs the same trigger; the files' replica role keeps it from firing twice.
    let script = p.work.file(
        "workload.sql",
        r#"\set a random(1, 5)
\set b random(1, 5)
\set amount random(-100, 100)
BEGIN;
-- Lock both accounts in id order: conflicts wait, but never deadlock (a deadlock costs a second).
SELECT 1 FROM account WHERE id IN (:a, :b) ORDER BY id FOR UPDATE;
INSERT INTO entry (account, amount, note) VALUES (:a, :amount, 'client ' || :client_id);
SAVEPOINT s;
UPDATE account SET updates = updates + 1 WHERE id = :b;
ROLLBACK TO s;
UPDATE account SET balance = balance - 1 WHERE id = :b;
DELETE FROM entry WHERE id IN (SELECT id FROM entry WHERE account = :b ORDER BY id LIMIT 1) AND :amount > 90;
END;
"#,
    );
    // The exporter runs during the load.
    let config = export_config(&p.work, &p.master, "fidelity", &p.outbox, "sleep_interval = 0.2");
    let exporter =
        dbmirror_tests::tools::Running::start(export_command(&config, &["run"]).stderr(std::process::Stdio::null()));
    let output = Command::new(dbmirror_tests::pg_bin().join("pgbench"))
        .args(["-n", "-c", "4", "-j", "2", "-t", "150", "--max-tries=20", "-f"])
        .arg(&script)
        .arg(p.master.conninfo())
        .output()
        .unwrap();
    assert!(output.status.success(), "pgbench failed:\n{}", describe(&output));
    // Let the exporter catch up, then stop it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while p.master.query_value("SELECT count(*)::text FROM dbmirror_pending") != "0" {
        assert!(std::time::Instant::now() < deadline, "the exporter did not catch up");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(exporter.terminate().status.success());
    p.sync_and_compare(&tables);
    // And by hand, with psql, on a second slave: the same result.
    let by_hand = Cluster::start("by-hand");
    by_hand.execute(schema);
    by_hand.slave_setup();
    replay_by_hand(&by_hand, &p.inbound.join("archive"));
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    assert_tables_equal(&p.master, &by_hand, &names);
}

/// TRUNCATE ... CASCADE truncates tables that reference each other in one statement, and the
/// slave must do the same; generated columns are not sent, the slave computes them.
#[test]
fn truncate_cascade_and_generated_columns_round_trip() {
    let schema = r#"
        CREATE TABLE parent (id integer PRIMARY KEY, doubled integer GENERATED ALWAYS AS (id * 2) STORED);
        CREATE TABLE child (id integer PRIMARY KEY, parent integer REFERENCES parent, label text,
                            shout text GENERATED ALWAYS AS (upper(label)) STORED);
    "#;
    let tables: Vec<String> = ["parent", "child"].iter().map(|t| t.to_string()).collect();
    let p = pair(schema, &tables);
    p.master.execute(
        "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1, 'a'), (2, 2, 'b');
         UPDATE child SET label = 'changed' WHERE id = 1;",
    );
    p.sync_and_compare(&tables);
    p.master.execute(
        "BEGIN; TRUNCATE parent CASCADE; INSERT INTO parent VALUES (3); INSERT INTO child VALUES (3, 3, 'c'); COMMIT;",
    );
    p.sync_and_compare(&tables);
    assert_eq!(p.slave.query_value("SELECT shout FROM child"), "C");
}
