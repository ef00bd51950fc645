//! Schema changes in the stream: DDL captured on the master (with `dbmirror.capture_ddl` or
//! `dbmirror_ddl()`) reaches the slaves in its place among the changes, through the applier and
//! through `psql -f`; what cannot be carried is refused or warned about where it happens; a
//! slave can refuse DDL; a slave whose table drifted stops with a message naming the difference.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbmirror_tests::pgbench::{pgbench, pgbench_schema, pgbench_tables, TABLES};
use dbmirror_tests::tools::{
    apply, apply_config, export_command, export_config, psql_file, transaction_files, transfer, Workdir,
};
use dbmirror_tests::{assert_tables_equal, describe, Cluster};

const SLAVE: &str = "follower";

/// The tables of the schema upgrade, as master and slaves start with them.
const SCHEMA: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok'); \
    CREATE TYPE legacy AS ENUM ('old'); \
    CREATE TABLE orders (id int PRIMARY KEY, label text, m mood, qty int, amount int, obsolete legacy);";

fn ok(output: Output, what: &str) -> Output {
    assert!(output.status.success(), "{what} failed ({}):\n{}", output.status, describe(&output));
    output
}

/// Replays by hand, in order, every file of `dir`.
fn replay_all(slave: &Cluster, dir: &Path) {
    for file in transaction_files(dir) {
        ok(psql_file(slave, &file), &format!("psql -f {}", file.display()));
    }
}

/// The schema of `tables` as a slave must have it: columns with their types, indexes,
/// constraints, and the values of the enum mood.
fn schema_of(cluster: &Cluster, tables: &[&str]) -> String {
    let list = tables.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    cluster.query_value(&format!(
        "SELECT concat_ws(E'\\n', \
            (SELECT string_agg(format('%s.%s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod)), E'\\n' ORDER BY c.relname, a.attname) \
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
              WHERE c.relname IN ({list}) AND a.attnum > 0 AND NOT a.attisdropped), \
            (SELECT string_agg(indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes WHERE tablename IN ({list})), \
            (SELECT string_agg(format('%s %s', conname, pg_get_constraintdef(oid)), E'\\n' ORDER BY conname) \
               FROM pg_constraint WHERE conrelid IN (SELECT oid FROM pg_class WHERE relname IN ({list}))), \
            (SELECT string_agg(format('default %s.%s %s', c.relname, a.attname, pg_get_expr(d.adbin, d.adrelid)), E'\\n' ORDER BY c.relname, a.attname) \
               FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
              WHERE c.relname IN ({list})), \
            (SELECT string_agg(enumlabel::text, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'mood'::regtype))"
    ))
}

/// A schema upgrade on a master under load (pgbench, and a writer on the table being changed)
/// reaches the slave with no hand work: columns added, dropped, renamed and retyped, defaults
/// and constraints, an index made and dropped, an enum value added, a table created and mirrored
/// in one transaction, and DDL sent with dbmirror_ddl(); changes captured before each statement
/// are exported after it, with the columns they were captured with.
#[test]
fn a_schema_upgrade_under_load_reaches_the_slaves_through_the_applier_and_by_hand() {
    let master = Cluster::start("ddl-master");
    master.create_extension();
    pgbench_tables(&master);
    master.execute(SCHEMA);
    for table in TABLES.iter().chain(&["orders"]) {
        master.execute(&format!("SELECT dbmirror_mirror_table('{table}')"));
    }
    master.execute(
        "INSERT INTO orders SELECT g, 'seed ' || g, 'sad', g, g * 10, 'old' FROM generate_series(100000, 100100) g",
    );
    let slave = Cluster::start("ddl-slave");
    let by_hand = Cluster::start("ddl-by-hand");
    for s in [&slave, &by_hand] {
        pgbench_schema(s);
        s.execute(SCHEMA);
    }
    by_hand.slave_setup();
    let work = Workdir::new("ddl-upgrade");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, SLAVE, &outbox, "");
    let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
    ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");
    ok(export_command(&export, &["snapshot"]).output().unwrap(), "dbmirror-export snapshot");

    let mut load = pgbench(&master);
    load.args(["-n", "-c", "2", "-T", "6", "-R", "200"]);
    let load = std::thread::spawn(move || load.output().expect("pgbench runs"));
    // A writer on the table being changed, using only columns the upgrade keeps.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer_client = master.client();
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 1;
        while !writer_stop.load(Ordering::Relaxed) {
            writer_client
                .batch_execute(&format!(
                    "INSERT INTO orders (id, label, m) VALUES ({i}, 'o{i}', 'ok'); \
                     UPDATE orders SET label = label || '+' WHERE id = {}; \
                     DELETE FROM orders WHERE id = {} AND {i} % 5 = 0",
                    i - 1,
                    i - 2
                ))
                .expect("the writer's statements run");
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        i
    });

    let mut migration = master.client();
    migration.batch_execute("SET dbmirror.capture_ddl = on").unwrap();
    // Single statements go through the extended protocol (a prepared statement, as drivers
    // send them), transactions through the simple one.
    let step = |client: &mut postgres::Client, sql: &str| {
        let done = if sql.contains(';') { client.batch_execute(sql) } else { client.execute(sql, &[]).map(|_| ()) };
        done.unwrap_or_else(|e| panic!("{sql}: {}", dbmirror_tests::explain(&e)));
        std::thread::sleep(Duration::from_millis(200));
    };
    for sql in [
        "ALTER TABLE orders ADD COLUMN note text",
        "ALTER TABLE orders ADD COLUMN priority int NOT NULL DEFAULT 3",
        "ALTER TABLE orders RENAME COLUMN qty TO quantity",
        "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2) USING amount / 4.0",
        "ALTER TABLE orders DROP COLUMN obsolete",
        "CREATE INDEX orders_note ON orders (note)",
        "CREATE INDEX orders_label ON orders (label)",
        "ALTER TYPE mood ADD VALUE 'happy'",
        "ALTER TABLE orders ALTER COLUMN label SET DEFAULT 'none'",
        "ALTER TABLE orders ADD CONSTRAINT orders_priority CHECK (priority > 0)",
        // A table created and mirrored in one transaction, with rows in the same transaction.
        "BEGIN; \
         CREATE TABLE extra (id serial PRIMARY KEY, order_id int, v text); \
         CREATE INDEX extra_order ON extra (order_id); \
         SELECT dbmirror_mirror_table('extra'); \
         INSERT INTO extra (order_id, v) SELECT id, label FROM orders WHERE id BETWEEN 100000 AND 100004; \
         UPDATE orders SET note = 'linked' WHERE id IN (SELECT order_id FROM extra); \
         COMMIT",
        // Changes before and after a rename, in one transaction.
        "BEGIN; \
         UPDATE orders SET note = 'before' WHERE id = 100010; \
         ALTER TABLE orders RENAME COLUMN note TO remark; \
         UPDATE orders SET remark = 'after' WHERE id = 100011; \
         COMMIT",
        "SELECT dbmirror_ddl('ALTER TABLE orders ADD COLUMN shipped boolean')",
        "UPDATE orders SET m = 'happy', shipped = true, quantity = quantity + 1 WHERE id = 100012",
        "DROP INDEX orders_label",
        // No longer used by a mirrored table: not in the stream, and nothing refers to it.
        "DROP TYPE legacy",
        "ALTER TABLE orders ALTER COLUMN priority TYPE bigint",
    ] {
        step(&mut migration, sql);
    }
    // Part of the stream is exported while the writers go on; the rest after.
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("the writer ends");
    assert!(written > 20, "the writer wrote during the upgrade ({written} rounds)");
    let load = load.join().expect("pgbench ends");
    assert!(load.status.success(), "pgbench failed:\n{}", describe(&load));
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");

    let files: Vec<String> =
        transaction_files(&outbox).iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect();
    assert!(
        files.iter().any(|f| f.contains("SELECT dbmirror.ddl('ALTER TABLE orders RENAME COLUMN note TO remark'")),
        "the rename travels as the master ran it"
    );
    assert!(files.iter().any(|f| f.contains("SELECT dbmirror.check_table('\"public\".\"orders\"'")));

    transfer(&outbox, &inbound);
    ok(apply(&apply_conf, &["once"]), "dbmirror-apply once");
    replay_all(&by_hand, &outbox);
    let tables: Vec<&str> = TABLES.iter().copied().chain(["orders", "extra"]).collect();
    for s in [&slave, &by_hand] {
        assert_tables_equal(&master, s, &tables);
        assert_eq!(schema_of(&master, &["orders", "extra"]), schema_of(s, &["orders", "extra"]));
    }
    assert!(schema_of(&slave, &["orders"]).contains("orders.remark text"));
    assert_eq!(slave.query_value("SELECT remark FROM orders WHERE id = 100010"), "before");
    assert_eq!(slave.query_value("SELECT m::text FROM orders WHERE id = 100012"), "happy");
    assert_eq!(master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
}

/// `psql` as a session with DDL capture on: each statement in its own `-c`.
fn capturing(master: &Cluster, statements: &[&str]) -> Output {
    let mut args = vec!["-X", "-c", "SET dbmirror.capture_ddl = on"];
    for s in statements {
        args.extend(["-c", s]);
    }
    master.psql(&args)
}

fn pending_ddl(master: &Cluster) -> String {
    master.query_value(
        "SELECT coalesce(string_agg(convert_from(data, 'UTF8'), ' | ' ORDER BY xid, cid, seq), '') \
           FROM dbmirror_pendingdata WHERE op = 'x'",
    )
}

/// What the stream cannot carry is refused (capture on) or warned about (capture off) where it
/// happens, and leaves nothing behind: DDL inside a DO block, a column whose default the slave
/// would compute differently, a statement on mirrored and other tables at once, DDL that drops a
/// mirrored column by cascade. CREATE INDEX CONCURRENTLY is warned about. dbmirror_ddl() takes
/// one DDL statement, from anywhere.
#[test]
fn ddl_the_stream_cannot_carry_is_refused_or_warned_about_where_it_happens() {
    let master = Cluster::start("ddl-refused");
    master.create_extension();
    master.execute(SCHEMA);
    master.execute("SELECT dbmirror_mirror_table('orders')");
    master.execute("CREATE TABLE plain (id int PRIMARY KEY)");
    master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('s')");
    let columns = || {
        master.query_value("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped")
    };
    let before = columns();

    for (statement, expected) in [
        ("DO $$ BEGIN ALTER TABLE orders ADD COLUMN x int; END $$", "cannot read the statement's text"),
        ("ALTER TABLE orders ADD COLUMN at timestamptz DEFAULT now()", "a default that is not a constant"),
        ("ALTER TABLE orders ADD COLUMN n serial", "whose default takes values from a sequence"),
        ("ALTER TABLE orders ADD COLUMN g int GENERATED ALWAYS AS IDENTITY", "an identity"),
        ("DROP TABLE orders, plain", "also changes \"public\".\"plain\", which is not mirrored"),
        ("DROP TYPE legacy CASCADE", "dbmirror does not carry DROP TYPE"),
    ] {
        let refused = capturing(&master, &[statement]);
        let text = describe(&refused);
        assert!(text.contains("ERROR") && text.contains(expected), "{statement}:\n{text}");
        assert!(text.contains("HINT"), "{statement}: the refusal says what to do instead:\n{text}");
    }
    assert_eq!(columns(), before, "refused statements changed nothing");
    assert_eq!(pending_ddl(&master), "", "refused statements recorded nothing");

    let concurrently = capturing(&master, &["CREATE INDEX CONCURRENTLY orders_label ON orders (label)"]);
    let text = describe(&ok(concurrently, "CREATE INDEX CONCURRENTLY"));
    assert!(text.contains("WARNING") && text.contains("is not in the stream"), "{text}");
    let off = ok(master.psql(&["-X", "-c", "ALTER TABLE orders ADD COLUMN y int"]), "ALTER TABLE with capture off");
    let text = describe(&off);
    assert!(text.contains("WARNING") && text.contains("dbmirror.capture_ddl is off"), "{text}");
    // Statements that concern only the master pass without a word.
    let quiet = ok(
        capturing(&master, &["COMMENT ON TABLE orders IS 'o'", "GRANT SELECT ON orders TO PUBLIC"]),
        "COMMENT, GRANT",
    );
    assert!(!describe(&quiet).contains("WARNING"), "{}", describe(&quiet));
    assert_eq!(pending_ddl(&master), "");

    for (statement, expected) in [
        ("SELECT dbmirror_ddl('UPDATE orders SET label = ''x''')", "takes DDL, not UPDATE"),
        (
            "SELECT dbmirror_ddl('ALTER TABLE orders ADD a int; ALTER TABLE orders ADD b int')",
            "takes one statement, not 2",
        ),
    ] {
        let refused = master.psql(&["-X", "-c", statement]);
        assert!(describe(&refused).contains(expected), "{statement}:\n{}", describe(&refused));
    }
    // From inside a function, dbmirror_ddl() is the way.
    ok(
        master.psql(&["-X", "-c", "DO $$ BEGIN PERFORM dbmirror_ddl('ALTER TABLE orders ADD COLUMN z int'); END $$"]),
        "dbmirror_ddl() in DO",
    );
    assert_eq!(pending_ddl(&master), "ALTER TABLE orders ADD COLUMN z int");
}

/// A slave configured to refuse DDL quarantines a file that carries DDL, with the reason; by
/// default a slave refuses DDL that changes anything but the tables the file names.
#[test]
fn a_slave_refuses_ddl_as_configured_and_the_file_waits_in_quarantine_with_the_reason() {
    let master = Cluster::start("ddl-policy-master");
    master.create_extension();
    master.execute(SCHEMA);
    master.execute("SELECT dbmirror_mirror_table('orders')");
    master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('strict'), ('default')");
    master.execute("INSERT INTO orders (id, label) VALUES (1, 'a')");
    ok(capturing(&master, &["ALTER TABLE orders ADD COLUMN note text"]), "ALTER TABLE");
    master.execute("SELECT dbmirror_ddl('CREATE VIEW order_labels AS SELECT label FROM orders')");

    let work = Workdir::new("ddl-policy");
    for (name, setting) in [("strict", "ddl = \"refuse\"\n"), ("default", "")] {
        let outbox = work.dir(&format!("{name}-outbox"));
        let inbound = work.dir(&format!("{name}-inbound"));
        let export = export_config(&work, &master, name, &outbox, "");
        ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
        let slave = Cluster::start(&format!("ddl-policy-{name}"));
        slave.execute(SCHEMA);
        let conf = apply_config(&work, &slave, name, &inbound, setting);
        ok(apply(&conf, &["init"]), "dbmirror-apply init");
        transfer(&outbox, &inbound);
        let stopped = apply(&conf, &["once"]);
        assert_eq!(stopped.status.code(), Some(5), "{}", describe(&stopped));
        let reasons: Vec<String> = std::fs::read_dir(inbound.join("quarantine"))
            .expect("a quarantine")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "reason"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        if name == "strict" {
            // The first file carries the ALTER TABLE: refused, and nothing of it applied.
            assert!(reasons[0].contains("refuses DDL"), "{}", reasons[0]);
            assert_eq!(slave.query_value("SELECT count(*)::text FROM orders"), "1", "the insert's file went first");
            assert!(!slave
                .query_value("SELECT string_agg(attname, ',') FROM pg_attribute WHERE attrelid = 'orders'::regclass")
                .contains("note"));
        } else {
            // The ALTER TABLE ran; the view is not a mirrored table.
            assert!(slave
                .query_value("SELECT string_agg(attname, ',') FROM pg_attribute WHERE attrelid = 'orders'::regclass")
                .contains("note"));
            assert!(reasons[0].contains("order_labels"), "{}", reasons[0]);
            assert_eq!(slave.query_value("SELECT count(*)::text FROM pg_class WHERE relname = 'order_labels'"), "0");
        }
    }
}

/// A slave whose table differs from the shape the master captured its changes with stops
/// before the file's statements on it run, with a message that names the table and the
/// difference, through the applier and through psql -f; once repaired, the file applies.
#[test]
fn a_slave_whose_table_drifted_stops_with_a_message_that_names_the_difference() {
    let master = Cluster::start("ddl-drift-master");
    master.create_extension();
    master.execute(SCHEMA);
    master.execute("SELECT dbmirror_mirror_table('orders')");
    master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('drifted')");
    master.execute("INSERT INTO orders (id, label, qty) VALUES (1, 'a', 2)");
    let work = Workdir::new("ddl-drift");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, "drifted", &outbox, "");
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");

    let slave = Cluster::start("ddl-drift-slave");
    slave.execute(SCHEMA);
    // Altered by hand: a column more, another type.
    slave.execute("ALTER TABLE orders ADD COLUMN local_note text, ALTER COLUMN qty TYPE bigint");
    let conf = apply_config(&work, &slave, "drifted", &inbound, "");
    ok(apply(&conf, &["init"]), "dbmirror-apply init");
    transfer(&outbox, &inbound);
    let stopped = apply(&conf, &["once"]);
    assert!(!stopped.status.success());
    let text = describe(&stopped);
    for part in ["\"public\".\"orders\"", "\"qty\"", "bigint", "integer", "\"local_note\""] {
        assert!(text.contains(part), "the message names {part}:\n{text}");
    }
    // The file is intact: it waits in quarantine for the slave's repair.
    let quarantine = inbound.join("quarantine");
    let file = &transaction_files(&quarantine)[0];
    let by_hand = psql_file(&slave, file);
    assert!(describe(&by_hand).contains("\"local_note\""), "{}", describe(&by_hand));
    assert_eq!(slave.query_value("SELECT count(*)::text FROM orders"), "0");

    slave.execute("ALTER TABLE orders DROP COLUMN local_note, ALTER COLUMN qty TYPE integer");
    std::fs::rename(file, inbound.join(file.file_name().unwrap())).unwrap();
    ok(apply(&conf, &["once"]), "dbmirror-apply once, after the repair");
    assert_tables_equal(&master, &slave, &["orders"]);
}
