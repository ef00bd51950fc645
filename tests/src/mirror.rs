//! A master and two slaves with the same schema, kept in step the two ways a slave can be fed:
//! one by `dbmirror-apply`, one by hand with `psql -f`. After every [`Mirror::sync`] each
//! mirrored table must be equal on all three.

use std::path::PathBuf;
use std::process::Output;

use crate::tools::{
    apply, apply_config, export_command, export_config, psql_file, transaction_files, transfer, Workdir,
};
use crate::{describe, table_rows, Cluster};

/// The slave name every [`Mirror`] uses.
pub const SLAVE: &str = "slave1";

pub struct Mirror {
    pub master: Cluster,
    /// Fed by `dbmirror-apply once`.
    pub applied: Cluster,
    /// Fed by `psql -v ON_ERROR_STOP=1 -f FILE`, file by file.
    pub by_hand: Cluster,
    pub work: Workdir,
    pub outbox: PathBuf,
    pub inbound: PathBuf,
    pub export: PathBuf,
    pub apply: PathBuf,
    /// Files replayed by hand so far.
    replayed: usize,
}

impl Mirror {
    /// Starts the three clusters, creates `schema` on each, runs `mirror` (for example
    /// `SELECT dbmirror_mirror_table('t')`) on the master only, registers the slave and
    /// prepares both slaves. `master_settings` go into the master's postgresql.conf.
    pub fn start(schema: &str, mirror: &str, master_settings: &[&str]) -> Mirror {
        let master = Cluster::start_with("master", master_settings);
        master.create_extension();
        master.execute(schema);
        master.execute(mirror);
        master.execute(&format!("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('{SLAVE}')"));
        let applied = Cluster::start("applied");
        applied.execute(schema);
        let by_hand = Cluster::start("by-hand");
        by_hand.execute(schema);
        by_hand.slave_setup();
        let work = Workdir::new("mirror");
        let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
        let export = export_config(&work, &master, SLAVE, &outbox, "");
        let apply_path = apply_config(&work, &applied, SLAVE, &inbound, "");
        let init = apply(&apply_path, &["init"]);
        assert!(init.status.success(), "dbmirror-apply init failed:\n{}", describe(&init));
        Mirror { master, applied, by_hand, work, outbox, inbound, export, apply: apply_path, replayed: 0 }
    }

    /// Exports, carries and applies everything both ways, and checks that both slaves equal
    /// the master.
    pub fn sync(&mut self) {
        self.apply_all();
        self.assert_equal();
    }

    /// Exports, carries and applies everything both ways.
    pub fn apply_all(&mut self) {
        let export = self.export_once();
        assert!(export.status.success(), "dbmirror-export once failed:\n{}", describe(&export));
        transfer(&self.outbox, &self.inbound);
        let output = apply(&self.apply, &["once"]);
        assert!(output.status.success(), "dbmirror-apply once failed:\n{}", describe(&output));
        let files = transaction_files(&self.outbox);
        for file in &files[self.replayed..] {
            let output = psql_file(&self.by_hand, file);
            assert!(output.status.success(), "psql -f {} failed:\n{}", file.display(), describe(&output));
        }
        self.replayed = files.len();
    }

    /// Runs `sql` on both slaves, as an operator follows DDL by hand.
    pub fn on_slaves(&self, sql: &str) {
        self.applied.execute(sql);
        self.by_hand.execute(sql);
    }

    /// Runs `dbmirror-export once`, whatever its result.
    pub fn export_once(&self) -> Output {
        export_command(&self.export, &["once"]).output().expect("dbmirror-export runs")
    }

    /// The mirrored tables of the master, as SQL names.
    pub fn tables(&self) -> Vec<String> {
        let mut client = self.master.client();
        let rows = client.query("SELECT t::text FROM dbmirror_mirrored_tables() t", &[]).expect("mirrored tables");
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Fails, showing the first differences, unless each mirrored table is equal on the master
    /// and both slaves.
    pub fn assert_equal(&self) {
        for table in self.tables() {
            let master = table_rows(&self.master, &table);
            for (name, slave) in [("dbmirror-apply", &self.applied), ("psql -f", &self.by_hand)] {
                let rows = table_rows(slave, &table);
                if rows != master {
                    let only_master: Vec<&String> = master.iter().filter(|r| !rows.contains(r)).take(5).collect();
                    let only_slave: Vec<&String> = rows.iter().filter(|r| !master.contains(r)).take(5).collect();
                    panic!(
                        "table {table} differs on the slave fed by {name}: master {} rows, slave {}\n\
                         only on master: {only_master:?}\nonly on slave: {only_slave:?}",
                        master.len(),
                        rows.len()
                    );
                }
            }
        }
    }
}
