//! A trial: one [`Scenario`] run on a master and two slaves, the outcome compared.
//!
//! A [`Lab`] holds three clusters for many trials: the master (with prepared transactions and
//! without autovacuum, so that the same scenario takes the same course every time), a slave
//! fed by `dbmirror-apply`, and a slave fed by hand with `psql -v ON_ERROR_STOP=1 -f`. Each trial
//! gets fresh databases on all three: the schema on each, capture on the master, and
//! `dbmirror-apply init` on one slave, `sql/slave_setup.sql` on the other.
//!
//! Concurrently, the units of a segment (the steps between two DDL steps) are dealt to
//! sessions, and a random session advances by one statement at a time; the order in which
//! units end is recorded, so that the run can be repeated sequentially. Sequentially, the units
//! run through psql, as the reproduction scripts run them. At every sync point, at every DDL
//! step and at the end, the real `dbmirror-export once` exports everything committed, the
//! files are carried to both slaves and applied, and every table of the master is compared
//! with both slaves, row by row and with `dbmirror-export verify`.
//!
//! A statement that fails on the master is part of the workload; an internal error or a lost
//! connection there is a failure of the trial, as is anything the tools or the comparison
//! report.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::scenario::{render_unit, Ddl, Ending, Random, Scenario, Statement, Step, Unit, LOCK_TIMEOUT, SLAVE_NAME};
use crate::tools::{apply_command, export_command, file_names, Workdir};
use crate::{describe, own_rows, Cluster};

/// How long one run of a tool may take before the trial calls it hung.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one workload statement may take: none waits for a lock longer than the lock
/// timeout, and none is large.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The three clusters trials run on.
pub struct Lab {
    pub master: Cluster,
    /// Fed by `dbmirror-apply once`.
    pub applied: Cluster,
    /// Fed by `psql -v ON_ERROR_STOP=1 -f`, file by file.
    pub by_hand: Cluster,
    pub work: Workdir,
    runs: usize,
}

/// How a trial runs its workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Units dealt to the scenario's sessions, one statement at a time.
    Concurrent,
    /// Units one after another through psql, as the reproduction scripts run them.
    Sequential,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The master failed on its own: an internal error, or a lost connection.
    Master,
    /// `dbmirror-export once` failed.
    Export,
    /// `dbmirror-apply once` failed or stopped short.
    Apply,
    /// `psql -v ON_ERROR_STOP=1 -f` failed on a file.
    ByHand,
    /// A table differs between the master and a slave.
    Differs,
    /// `dbmirror-export verify` reports a difference.
    Verify,
    /// The scenario itself is broken: its schema or DDL does not run. Not a finding: a mistake
    /// of the generator, or a candidate of shrinking that removed too much.
    Invalid,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    /// The first line says what failed; the rest gives detail.
    pub message: String,
    /// Where: the sync point or DDL step, counted from 1.
    pub at: String,
    /// In a sequential run: how many live steps had run when it failed. The steps after
    /// them play no part in it.
    pub through: Option<usize>,
}

impl Failure {
    /// What identifies a class of failure across seeds and shrinking: the kind and the first
    /// line of the message without names, values and numbers.
    pub fn signature(&self) -> String {
        format!("{:?}: {}", self.kind, normalise(self.message.lines().next().unwrap_or("")))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} failure at {}: {}", self.kind, self.at, self.message)
    }
}

/// A message without what varies between instances of one failure: quoted names and values,
/// parenthesised details, numbers.
///
/// ```
/// use dbmirror_tests::trial::normalise;
/// assert_eq!(
///     normalise(r#"delete from "Other ""Schema"""."t1" matched 2 rows (key -5)"#),
///     normalise(r#"delete from "public"."UPPER6" matched 3 rows (key 7)"#)
/// );
/// ```
pub fn normalise(message: &str) -> String {
    let mut out = String::new();
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                // To the closing quote; a doubled quote inside is part of the name or value.
                while let Some(d) = chars.next() {
                    if d == c && chars.peek() != Some(&c) {
                        break;
                    }
                    if d == c {
                        chars.next();
                    }
                }
                out.push(c);
                out.push(c);
            }
            '(' => {
                let mut depth = 1;
                for d in chars.by_ref() {
                    depth += match d {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        break;
                    }
                }
                out.push_str("()");
            }
            // A minus sign belongs to the number it starts.
            '-' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {}
            '0'..='9' => {
                while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    chars.next();
                }
                out.push('#');
            }
            _ => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()
}

/// What a trial did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub statements: usize,
    /// Failed statements by SQLSTATE.
    pub errors: BTreeMap<String, usize>,
    /// A few failed statements' messages by SQLSTATE, to tell workload errors from capture's.
    pub examples: BTreeMap<String, String>,
    pub units: usize,
    pub syncs: usize,
    pub files: usize,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failed: usize = self.errors.values().sum();
        let mut top: Vec<(&String, &usize)> = self.errors.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = top.iter().take(6).map(|(code, n)| format!("{code}×{n}")).collect();
        write!(
            f,
            "{} units, {} statements ({failed} failed on the master: {}), {} files in {} syncs",
            self.units,
            self.statements,
            top.join(" "),
            self.files,
            self.syncs
        )
    }
}

pub struct Outcome {
    pub failure: Option<Failure>,
    /// The steps in the order they took effect: units as they ended, without what failed in
    /// them, sync points and DDL where they ran. Run sequentially, the same workload.
    pub serial: Vec<Step>,
    pub stats: Stats,
    /// The trial's files: scripts, spools, configurations.
    pub dir: PathBuf,
}

impl Lab {
    pub fn start() -> Lab {
        // Autovacuum off: it takes locks and prunes pages at moments of its own, and the
        // master must take the same course every time a scenario runs.
        // A short lock_timeout for the tools and the comparison: only a prepared transaction
        // left unfinished by shrinking can hold a lock they wait for, and it never lets go.
        let master = Cluster::start_with(
            "diff-master",
            &["max_prepared_transactions = 20", "autovacuum = off", "lock_timeout = '5s'"],
        );
        // Fails with a hint if the capture extension is not installed, before any scenario
        // could be blamed for it.
        master.create_extension();
        let applied = Cluster::start("diff-applied");
        let by_hand = Cluster::start("diff-by-hand");
        Lab { master, applied, by_hand, work: Workdir::new("differential"), runs: 0 }
    }

    fn clusters(&self) -> [&Cluster; 3] {
        [&self.master, &self.applied, &self.by_hand]
    }

    /// Runs `scenario` on fresh databases. With `keep`, the databases and files stay when the
    /// trial fails, for a look.
    pub fn run(&mut self, scenario: &Scenario, mode: Mode, keep: bool) -> Outcome {
        self.runs += 1;
        let db = format!("run{}", self.runs);
        let dir = self.work.dir(&db);
        let mut trial = Trial::new(self, scenario, &db, &dir);
        let result = trial.setup().and_then(|()| match mode {
            Mode::Concurrent => trial.concurrent(),
            Mode::Sequential => trial.sequential(),
        });
        let (serial, stats) = (std::mem::take(&mut trial.serial), trial.stats.clone());
        drop(trial);
        let failure = result.err();
        if failure.is_none() || !keep {
            self.drop_databases(&db);
            let _ = std::fs::remove_dir_all(&dir);
        }
        Outcome { failure, serial, stats, dir }
    }

    /// Drops a kept trial's databases and files: another seed already shows its failure.
    pub fn discard(&self, outcome: &Outcome) {
        if let Some(db) = outcome.dir.file_name() {
            self.drop_databases(&db.to_string_lossy());
        }
        let _ = std::fs::remove_dir_all(&outcome.dir);
    }

    fn drop_databases(&self, db: &str) {
        // Prepared transactions keep a database from being dropped.
        if let Ok(mut client) = Client::connect(&self.master.conninfo_for(db), NoTls) {
            let gids: Vec<String> = client
                .query("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()", &[])
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            for gid in gids {
                let _ = client.batch_execute(&format!("ROLLBACK PREPARED '{gid}'"));
            }
        }
        for cluster in self.clusters() {
            cluster.execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }

    /// Where a kept trial's databases are.
    pub fn describe_run(&self, db_dir: &Path) -> String {
        let db = db_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!(
            "master: psql '{}'\nslave fed by dbmirror-apply: psql '{}'\nslave fed by psql -f: psql '{}'\nfiles: {}",
            self.master.conninfo_for(&db),
            self.applied.conninfo_for(&db),
            self.by_hand.conninfo_for(&db),
            db_dir.display()
        )
    }
}

/// Consecutive units become one psql script; sync points and DDL stay as they are.
pub enum Part {
    Workload(String),
    Sync,
    Ddl(Ddl),
}

/// The scenario's live steps as parts, the way the sequential run and `reproduce.sh` run them,
/// each with the number of live steps up to its end.
pub fn parts(scenario: &Scenario) -> Vec<(Part, usize)> {
    let mut parts = Vec::new();
    let mut script = String::new();
    for (i, step) in scenario.live_steps().into_iter().enumerate() {
        match step {
            Step::Unit(unit) => script.push_str(&render_unit(&unit)),
            Step::Sync | Step::Ddl(_) => {
                if !script.is_empty() {
                    parts.push((Part::Workload(Scenario::workload_preamble() + &std::mem::take(&mut script)), i));
                }
                let part = match step {
                    Step::Ddl(ddl) => Part::Ddl(ddl),
                    _ => Part::Sync,
                };
                parts.push((part, i + 1));
            }
        }
    }
    let all = scenario.live_steps().len();
    if !script.is_empty() {
        parts.push((Part::Workload(Scenario::workload_preamble() + &script), all));
    }
    parts
}

struct Trial<'a> {
    lab: &'a Lab,
    scenario: &'a Scenario,
    db: String,
    dir: PathBuf,
    outbox: PathBuf,
    inbound: PathBuf,
    /// The by-hand slave's copy of every file, in name order.
    carried: PathBuf,
    export: PathBuf,
    apply: PathBuf,
    /// Files the by-hand slave has replayed.
    replayed: BTreeSet<String>,
    serial: Vec<Step>,
    stats: Stats,
    syncs: usize,
    ddls: usize,
}

impl<'a> Trial<'a> {
    fn new(lab: &'a Lab, scenario: &'a Scenario, db: &str, dir: &Path) -> Trial<'a> {
        let sub = |name: &str| {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).expect("a directory can be created");
            path
        };
        let (outbox, inbound, carried) = (sub("outbox"), sub("inbound"), sub("by-hand"));
        let export = dir.join("export.toml");
        std::fs::write(
            &export,
            format!(
                "slave_name = \"{SLAVE_NAME}\"\nmaster = \"{}\"\ntransaction_file_directory = \"{}\"\nbatch_size = {}\n",
                lab.master.conninfo_for(db),
                outbox.display(),
                scenario.batch_size
            ),
        )
        .expect("the exporter's configuration can be written");
        let apply = dir.join("apply.toml");
        std::fs::write(
            &apply,
            format!(
                "slave_name = \"{SLAVE_NAME}\"\nslave = \"{}\"\nspool = \"{}\"\n",
                lab.applied.conninfo_for(db),
                inbound.display()
            ),
        )
        .expect("the applier's configuration can be written");
        Trial {
            lab,
            scenario,
            db: db.to_string(),
            dir: dir.to_path_buf(),
            outbox,
            inbound,
            carried,
            export,
            apply,
            replayed: BTreeSet::new(),
            serial: Vec::new(),
            stats: Stats::default(),
            syncs: 0,
            ddls: 0,
        }
    }

    fn invalid(&self, what: &str, output: &Output) -> Failure {
        Failure {
            kind: Kind::Invalid,
            message: format!("{what}\n{}", describe(output)),
            at: "setup".into(),
            through: None,
        }
    }

    /// psql with ON_ERROR_STOP on `cluster`'s database; a failure makes the scenario invalid.
    fn script(&self, cluster: &Cluster, name: &str, sql: &str) -> Result<(), Failure> {
        let path = self.dir.join(name);
        std::fs::write(&path, sql).expect("a script can be written");
        let output = cluster.psql_in(&self.db, &["-v", "ON_ERROR_STOP=1", "-f", &path.display().to_string()]);
        if output.status.success() {
            Ok(())
        } else {
            Err(self.invalid(&format!("{name} failed"), &output))
        }
    }

    fn setup(&mut self) -> Result<(), Failure> {
        for cluster in self.lab.clusters() {
            cluster.execute(&format!("CREATE DATABASE {}", self.db));
        }
        let schema = self.scenario.schema_sql();
        self.script(&self.lab.master, "schema.sql", &schema)?;
        self.script(&self.lab.master, "mirror.sql", &self.scenario.mirror_sql())?;
        self.script(&self.lab.applied, "schema.sql", &schema)?;
        self.script(&self.lab.by_hand, "schema.sql", &schema)?;
        let init = run_tool(apply_command(&self.apply, &["init"]));
        if !init.status.success() {
            return Err(self.invalid("dbmirror-apply init failed", &init));
        }
        let setup = crate::repository().join("sql/slave_setup.sql");
        let output = self.lab.by_hand.psql_in(&self.db, &["-v", "ON_ERROR_STOP=1", "-f", &setup.display().to_string()]);
        if !output.status.success() {
            return Err(self.invalid("sql/slave_setup.sql failed", &output));
        }
        Ok(())
    }

    /// The live steps cut at DDL: (units and sync points, the DDL that follows them).
    fn segments(&self) -> Vec<(Vec<Step>, Option<Ddl>)> {
        let mut segments = vec![(Vec::new(), None)];
        for step in self.scenario.live_steps() {
            match step {
                Step::Ddl(ddl) => {
                    segments.last_mut().expect("there is a segment").1 = Some(ddl);
                    segments.push((Vec::new(), None));
                }
                step => segments.last_mut().expect("there is a segment").0.push(step),
            }
        }
        segments
    }

    fn concurrent(&mut self) -> Result<(), Failure> {
        let mut sessions: Vec<Session> = (0..self.scenario.sessions.max(1))
            .map(|i| Session::open(&self.lab.master, &self.db, &self.dir.join(format!("session-{}.sql", i + 1))))
            .collect();
        let mut schedule = Random::new(self.scenario.seed ^ 0x5eed_5c4e_d01e);
        for (steps, ddl) in self.segments() {
            let mut queue: VecDeque<Step> = steps.into();
            let mut prepared: BTreeSet<String> = BTreeSet::new();
            loop {
                // A sync point waits while an open transaction holds an ACCESS EXCLUSIVE lock
                // (TRUNCATE's): reading the tables would wait for a session that cannot move.
                if matches!(queue.front(), Some(Step::Sync)) {
                    if !self.exclusive_locks() {
                        queue.pop_front();
                        self.serial.push(Step::Sync);
                        self.sync(true)?;
                        continue;
                    }
                    if !sessions.iter().any(Session::busy) {
                        // Only a prepared transaction can hold the lock now: the sync waits
                        // until after the next step. Deferred onto the next sync point, it is
                        // that one: swapping two sync points would go round for ever.
                        if matches!(queue.get(1), None | Some(Step::Sync)) {
                            queue.pop_front();
                        } else {
                            queue.swap(0, 1);
                        }
                        continue;
                    }
                }
                // What an idle session would take: the first unit before the next sync point
                // that is its own (in a partitioned scenario) and, for a COMMIT PREPARED, whose
                // PREPARE TRANSACTION has run.
                let takes = |s: usize| -> Option<usize> {
                    queue.iter().take_while(|step| !matches!(step, Step::Sync)).position(|step| match step {
                        Step::Unit(unit @ Unit::FinishPrepared { gid, .. }) => {
                            prepared.contains(gid) && self.scenario.owner(unit).is_none_or(|o| o == s)
                        }
                        Step::Unit(unit) => self.scenario.owner(unit).is_none_or(|o| o == s),
                        _ => false,
                    })
                };
                let ready: Vec<usize> =
                    (0..sessions.len()).filter(|&s| sessions[s].busy() || takes(s).is_some()).collect();
                if ready.is_empty() {
                    match queue.pop_front() {
                        None => break,
                        // Its PREPARE was taken out by shrinking: it fails, as it would by hand.
                        Some(Step::Unit(unit)) => sessions[0].assign(unit),
                        Some(_) => unreachable!("sync points are handled above, segments hold no DDL"),
                    }
                    continue;
                }
                let s = ready[schedule.below(ready.len())];
                if !sessions[s].busy() {
                    let i = takes(s).expect("an idle ready session has a unit to take");
                    match queue.remove(i).expect("the unit is in the queue") {
                        Step::Unit(unit) => sessions[s].assign(unit),
                        _ => unreachable!("takes() finds units only"),
                    }
                }
                if let Some(unit) = sessions[s].advance(&mut self.stats)? {
                    if let Unit::Transaction { ending: Ending::Prepare(gid), .. } = &unit {
                        prepared.insert(gid.clone());
                    }
                    self.stats.units += 1;
                    if let Some(unit) = sessions[s].as_executed(unit) {
                        self.serial.push(Step::Unit(unit));
                    }
                }
            }
            if let Some(ddl) = ddl {
                self.serial.push(Step::Ddl(ddl.clone()));
                self.ddl(&ddl)?;
            }
        }
        drop(sessions);
        self.sync(true)
    }

    fn sequential(&mut self) -> Result<(), Failure> {
        self.serial = self.scenario.live_steps();
        for step in &self.serial {
            if let Step::Unit(unit) = step {
                self.stats.units += 1;
                self.stats.statements += unit.statements().len();
            }
        }
        for (i, (part, through)) in parts(self.scenario).into_iter().enumerate() {
            let result = match part {
                Part::Workload(script) => self.workload_script(&format!("step-{:02}.sql", i + 1), &script),
                Part::Sync => self.sync(true),
                Part::Ddl(ddl) => self.ddl(&ddl),
            };
            result.map_err(|failure| Failure { through: Some(through), ..failure })?;
        }
        self.sync(true)
    }

    /// Runs a workload script with psql, statements allowed to fail, as `reproduce.sh` does.
    fn workload_script(&mut self, name: &str, script: &str) -> Result<(), Failure> {
        let path = self.dir.join(name);
        std::fs::write(&path, script).expect("a script can be written");
        let output = self.lab.master.psql_in(&self.db, &["-f", &path.display().to_string()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            if let Some(rest) = line.split("ERROR:  ").nth(1) {
                let code: String = rest.chars().take(5).collect();
                if code.starts_with("XX") || code.starts_with("58") {
                    return Err(Failure {
                        kind: Kind::Master,
                        message: rest.to_string(),
                        at: name.to_string(),
                        through: None,
                    });
                }
                *self.stats.errors.entry(code.clone()).or_default() += 1;
                self.stats.examples.entry(code).or_insert_with(|| rest.to_string());
            }
        }
        let lost = ["server closed the connection", "connection to server was lost", "PANIC:"];
        if !output.status.success() || lost.iter().any(|l| stderr.contains(l)) {
            return Err(Failure {
                kind: Kind::Master,
                message: format!("psql lost the master running {name}\n{}", describe(&output)),
                at: name.to_string(),
                through: None,
            });
        }
        Ok(())
    }

    /// DDL: everything before it exported and applied, and the same DDL on every side; or,
    /// streamed, on the master alone, for the slaves to take from the stream.
    fn ddl(&mut self, ddl: &Ddl) -> Result<(), Failure> {
        self.ddls += 1;
        let name = format!("ddl-{:02}.sql", self.ddls);
        let on_master = ddl.master_script();
        if ddl.streamed {
            return self.script(&self.lab.master, &name, &on_master);
        }
        if ddl.before_export {
            self.script(&self.lab.master, &name, &on_master)?;
            self.sync(false)?;
        } else {
            self.sync(true)?;
            self.script(&self.lab.master, &name, &on_master)?;
        }
        self.script(&self.lab.applied, &name, &ddl.sql)?;
        self.script(&self.lab.by_hand, &name, &ddl.sql)?;
        self.compare(&format!("DDL step {}", self.ddls))
    }

    /// Exports, carries and applies everything committed; compares unless the slaves still
    /// wait for DDL the master already has.
    fn sync(&mut self, compare: bool) -> Result<(), Failure> {
        self.syncs += 1;
        self.stats.syncs += 1;
        let at = format!("sync {}", self.syncs);
        let failure = |kind, message: String| Failure { kind, message, at: at.clone(), through: None };
        let export = run_tool(export_command(&self.export, &["once"]));
        if !export.status.success() {
            return Err(failure(Kind::Export, format!("dbmirror-export once failed: {}", last_error(&export))));
        }
        // Carried as rsync would: every finished file, the manifests too.
        for name in file_names(&self.outbox) {
            if name.ends_with(dbmirror_spool::TEMPORARY_SUFFIX) {
                continue;
            }
            let from = self.outbox.join(&name);
            std::fs::copy(&from, self.carried.join(&name)).expect("a file can be carried");
            std::fs::rename(&from, self.inbound.join(&name)).expect("a file can be carried");
        }
        let applied = run_tool(apply_command(&self.apply, &["once"]));
        let mut problems: Vec<(Kind, String)> = Vec::new();
        if !applied.status.success() {
            problems.push((Kind::Apply, format!("dbmirror-apply once failed: {}", self.apply_error(&applied))));
        }
        for name in file_names(&self.carried) {
            if !name.ends_with(".sql") || self.replayed.contains(&name) {
                continue;
            }
            let path = self.carried.join(&name);
            let output =
                self.lab.by_hand.psql_in(&self.db, &["-v", "ON_ERROR_STOP=1", "-f", &path.display().to_string()]);
            if !output.status.success() {
                problems.push((Kind::ByHand, format!("psql -f {name} failed: {}", last_error(&output))));
                break;
            }
            self.replayed.insert(name);
            self.stats.files += 1;
        }
        let exported = self.query_master(&format!(
            "SELECT last_number::text FROM dbmirror_mirrorhost WHERE slavename = '{SLAVE_NAME}'"
        ));
        let last_applied = |cluster: &Cluster| -> String {
            query_one(
                &cluster.conninfo_for(&self.db),
                &format!("SELECT coalesce(max(last_number), 0)::text FROM dbmirror.slave_state WHERE slave_name = '{SLAVE_NAME}'"),
            )
        };
        if problems.is_empty() {
            for (cluster, which) in [(&self.lab.applied, "dbmirror-apply"), (&self.lab.by_hand, "psql -f")] {
                let applied = last_applied(cluster);
                if applied != exported {
                    problems.push((
                        if which == "psql -f" { Kind::ByHand } else { Kind::Apply },
                        format!("{which} stopped short: file {applied} of {exported} applied"),
                    ));
                }
            }
        }
        if let Some((kind, _)) = problems.first() {
            let message: Vec<String> = problems.iter().map(|(_, m)| m.clone()).collect();
            return Err(failure(*kind, message.join("\n")));
        }
        if compare {
            self.compare(&at)?;
        }
        Ok(())
    }

    fn apply_error(&self, output: &Output) -> String {
        let quarantine = self.inbound.join(dbmirror_spool::QUARANTINE_DIR);
        // A reason file: the file's name; "quarantined at TIME by dbmirror-apply: REASON", which
        // may go on over several lines; a last line on how to apply it after all.
        let reasons: Vec<String> = file_names(&quarantine)
            .iter()
            .filter(|n| n.ends_with(dbmirror_spool::REASON_SUFFIX))
            .filter_map(|n| std::fs::read_to_string(quarantine.join(n)).ok())
            .map(|text| {
                let lines: Vec<&str> =
                    text.lines().skip(1).filter(|l| !l.starts_with("To apply it after all")).collect();
                let text = lines.join("\n");
                text.split_once(" by dbmirror-apply: ").map_or(text.clone(), |(_, reason)| reason.to_string())
            })
            .collect();
        if reasons.is_empty() {
            last_error(output)
        } else {
            reasons.join("\n").trim().to_string()
        }
    }

    /// Whether a session (or a prepared transaction) holds an ACCESS EXCLUSIVE lock on a
    /// relation of the trial's database.
    fn exclusive_locks(&self) -> bool {
        self.query_master(
            "SELECT (count(*) > 0)::text FROM pg_locks \
              WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' \
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ) == "true"
    }

    fn query_master(&self, sql: &str) -> String {
        query_one(&self.lab.master.conninfo_for(&self.db), sql)
    }

    /// Every table of the master, row by row on both slaves, then `dbmirror-export verify`.
    fn compare(&mut self, at: &str) -> Result<(), Failure> {
        let failure = |kind, message: String| Failure { kind, message, at: at.to_string(), through: None };
        let mut master = connect(&self.lab.master.conninfo_for(&self.db));
        let tables: Vec<String> = master
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbmirror') \
                    AND n.nspname NOT LIKE 'pg\\_%' AND c.relname NOT LIKE 'dbmirror\\_%' ORDER BY 1",
                &[],
            )
            .expect("the master's tables can be listed")
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (cluster, which) in [(&self.lab.applied, "fed by dbmirror-apply"), (&self.lab.by_hand, "fed by psql -f")] {
            let mut slave = connect(&cluster.conninfo_for(&self.db));
            for table in &tables {
                let on_master = match own_rows(&mut master, table) {
                    Ok(rows) => rows,
                    // A prepared transaction whose COMMIT PREPARED shrinking took out.
                    Err(e) => {
                        return Err(failure(
                            Kind::Invalid,
                            format!("the master's {table} cannot be read: {}", crate::explain(&e)),
                        ))
                    }
                };
                let on_slave = match own_rows(&mut slave, table) {
                    Ok(rows) => rows,
                    Err(e) => {
                        return Err(failure(
                            Kind::Differs,
                            format!(
                                "a table cannot be read on the slave {which}\ntable {table}: {}",
                                crate::explain(&e)
                            ),
                        ))
                    }
                };
                if on_master != on_slave {
                    let show = |rows: Vec<&String>| -> String {
                        rows.iter().take(4).map(|r| format!("\n    {}", shorten(r))).collect()
                    };
                    let only_master: Vec<&String> = on_master.iter().filter(|r| !on_slave.contains(r)).collect();
                    let only_slave: Vec<&String> = on_slave.iter().filter(|r| !on_master.contains(r)).collect();
                    return Err(failure(
                        Kind::Differs,
                        format!(
                            "a table differs on the slave {which}\ntable {table}: master {} rows, slave {} rows\nonly on the master:{}\nonly on the slave:{}",
                            on_master.len(),
                            on_slave.len(),
                            show(only_master),
                            show(only_slave)
                        ),
                    ));
                }
            }
            let verify =
                run_tool(export_command(&self.export, &["verify", "--slave", &cluster.conninfo_for(&self.db)]));
            if !verify.status.success() {
                let report = String::from_utf8_lossy(&verify.stdout);
                let differing: Vec<&str> = report.lines().filter(|l| !l.starts_with("equal")).collect();
                return Err(failure(
                    Kind::Verify,
                    format!(
                        "dbmirror-export verify reports differences on the slave {which}\n{}\n{}",
                        differing.join("\n"),
                        last_error(&verify)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 300 {
        format!("{}...", text.chars().take(300).collect::<String>())
    } else {
        text.to_string()
    }
}

fn connect(conninfo: &str) -> Client {
    Client::connect(conninfo, NoTls).unwrap_or_else(|e| panic!("could not connect to {conninfo}: {e}"))
}

fn query_one(conninfo: &str, sql: &str) -> String {
    connect(conninfo).query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {}", crate::explain(&e))).get(0)
}

/// The last line of a tool's standard error that says something, without its timestamp.
fn last_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> =
        lines.iter().copied().filter(|l| l.contains("ERROR") || l.contains("error") || l.contains("failed")).collect();
    let line = errors.first().or(lines.last()).copied().unwrap_or("(nothing on standard error)");
    // Tools prefix each line with a UTC timestamp, psql with the script's path and line.
    let line = match line.split_once("Z ") {
        Some((stamp, rest)) if stamp.len() < 32 && stamp.starts_with("20") => rest,
        _ => line,
    };
    let line = line.find("ERROR:").map_or(line, |at| &line[at..]);
    let detail: Vec<&str> = lines.iter().copied().filter(|l| l.contains("DETAIL") || l.contains("HINT")).collect();
    if detail.is_empty() {
        line.to_string()
    } else {
        format!("{line}\n{}", detail.join("\n"))
    }
}

/// Runs a tool, killing it if it runs longer than a hung tool would.
pub fn run_tool(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    // Read both pipes on threads, so a chatty tool never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buffer);
        buffer
    });
    let err = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buffer);
        buffer
    });
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the tool can be waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran longer than {TOOL_TIMEOUT:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output { status, stdout: out.join().expect("stdout is read"), stderr: err.join().expect("stderr is read") }
}

/// A master session of the concurrent run: a psql process fed one statement at a time, so
/// that the concurrent run and the scripts of the sequential run behave alike in everything,
/// ON_ERROR_ROLLBACK and COPY included.
struct Session {
    child: std::process::Child,
    /// Taken (closed) when the session ends, so that psql sees the end of its input.
    stdin: Option<std::process::ChildStdin>,
    /// Everything sent to psql, for a look when a trial fails.
    transcript: std::fs::File,
    /// psql's standard error, line by line: error messages, then the marker after each statement.
    lines: std::sync::mpsc::Receiver<String>,
    unit: Option<Unit>,
    statements: Vec<Statement>,
    next: usize,
    /// Which statements of the unit failed so far.
    failed: Vec<bool>,
    /// A statement failed in a transaction without ON_ERROR_ROLLBACK, and no ROLLBACK TO has
    /// recovered from it since.
    aborted: bool,
}

/// What psql reports after each statement (`\warn` writes to standard error, unbuffered, after
/// the statement's own messages).
const DONE: &str = "__dbmirror_done__";

impl Session {
    fn open(cluster: &Cluster, db: &str, transcript: &Path) -> Session {
        let mut child = Command::new(crate::pg_bin().join("psql"))
            .args(["-X", "-q", "-v", "VERBOSITY=verbose", "-d"])
            .arg(cluster.conninfo_for(db))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql starts");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let transcript = std::fs::File::create(transcript).expect("a transcript can be written");
        let mut session = Session {
            child,
            stdin: Some(stdin),
            transcript,
            lines,
            unit: None,
            statements: Vec::new(),
            next: 0,
            failed: Vec::new(),
            aborted: false,
        };
        session
            .send(&format!("SET lock_timeout = '{LOCK_TIMEOUT}';\n"))
            .unwrap_or_else(|e| panic!("a psql session cannot start: {e}"));
        session
    }

    fn busy(&self) -> bool {
        self.unit.is_some()
    }

    fn assign(&mut self, unit: Unit) {
        self.statements = unit.statements();
        self.next = 0;
        self.failed.clear();
        self.aborted = false;
        self.unit = Some(unit);
    }

    /// The unit as it took effect, for the sequential form of the run: without the statements
    /// that failed (psql's savepoint undid them, or they failed in an aborted transaction), and
    /// ending in ROLLBACK if the transaction was aborted or its end failed. Run one after
    /// another, the units then do what they did here, even where a statement failed only
    /// because another session held a lock. None if nothing of it took effect.
    fn as_executed(&self, unit: Unit) -> Option<Unit> {
        match unit {
            Unit::Transaction { begin, error_rollback, statements, ending } => {
                let last = self.failed.len() - 1;
                let kept = statements.into_iter().enumerate().filter(|(i, _)| !self.failed[i + 1]).map(|(_, s)| s);
                let ending = if self.aborted || self.failed[last] { Ending::Rollback } else { ending };
                Some(Unit::Transaction { begin, error_rollback, statements: kept.collect(), ending })
            }
            unit => (!self.failed[0]).then_some(unit),
        }
    }

    /// Sends SQL and waits for psql to finish it: Ok(None) if it succeeded, Ok(Some((SQLSTATE,
    /// message))) if it failed on the server, Err if psql or the master went away.
    fn send(&mut self, sql: &str) -> Result<Option<(String, String)>, Failure> {
        let lost = |what: String| Failure { kind: Kind::Master, message: what, at: "workload".into(), through: None };
        let text = format!("{sql}\\warn {DONE} :ERROR :SQLSTATE\n");
        let _ = self.transcript.write_all(text.as_bytes());
        let stdin = self.stdin.as_mut().expect("an open session has its input");
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| lost(format!("psql went away: {e}")))?;
        let mut messages = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(STATEMENT_TIMEOUT)
                .map_err(|_| lost(format!("psql went away or hung: {}\nSQL: {}", messages.join("\n"), shorten(sql))))?;
            if let Some(result) = line.strip_prefix(DONE) {
                let mut fields = result.split_whitespace();
                let failed = fields.next() == Some("true");
                let code = fields.next().unwrap_or("").to_string();
                let message = messages.iter().find(|m: &&String| m.contains("ERROR:")).cloned().unwrap_or_default();
                let message = message.split_once("ERROR:").map_or(message.clone(), |(_, m)| m.trim().to_string());
                // VERBOSITY verbose puts the SQLSTATE first.
                let message = message.strip_prefix(&format!("{code}: ")).map(str::to_string).unwrap_or(message);
                if messages
                    .iter()
                    .any(|m| m.contains("server closed the connection") || m.contains("connection to server"))
                {
                    return Err(lost(format!(
                        "the master's connection was lost: {}\nSQL: {}",
                        messages.join("\n"),
                        shorten(sql)
                    )));
                }
                return Ok(failed.then_some((code, message)));
            }
            messages.push(line);
        }
    }

    /// Sends the next statement of the unit; returns the unit once it has ended.
    fn advance(&mut self, stats: &mut Stats) -> Result<Option<Unit>, Failure> {
        let unit = self.unit.as_ref().expect("a busy session has a unit");
        let error_rollback = unit.error_rollback();
        let transaction = matches!(unit, Unit::Transaction { .. });
        let statement = self.statements[self.next].clone();
        let mut sql = crate::scenario::render_statement(&statement);
        if self.next == 0 && error_rollback {
            sql = format!("\\set ON_ERROR_ROLLBACK on\n{sql}");
        }
        self.next += 1;
        stats.statements += 1;
        let result = self.send(&sql)?;
        self.failed.push(result.is_some());
        let in_transaction = transaction && self.next > 1;
        match &result {
            Some(_) if in_transaction && !error_rollback => self.aborted = true,
            None if statement.sql.starts_with("ROLLBACK TO ") => self.aborted = false,
            _ => {}
        }
        if let Some((code, message)) = result {
            if code.starts_with("XX") || code.starts_with("58") {
                return Err(Failure {
                    kind: Kind::Master,
                    message: format!("{code}: {message}\nSQL: {}", shorten(&statement.sql)),
                    at: "workload".into(),
                    through: None,
                });
            }
            *stats.errors.entry(code.clone()).or_default() += 1;
            stats.examples.entry(code).or_insert(message);
        }
        if self.next < self.statements.len() {
            return Ok(None);
        }
        if error_rollback {
            self.send("\\set ON_ERROR_ROLLBACK off\n")?;
        }
        let unit = self.unit.take().expect("the unit ends now");
        Ok(Some(unit))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The end of input ends psql even when it waits for the rest of a statement.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
