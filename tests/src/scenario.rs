//! Random scenarios for the differential tester: a schema and a workload generated from a seed,
//! rendered as the SQL scripts a person would paste.
//!
//! A [`Scenario`] is data: schema [`Object`]s (types, tables, functions, triggers, foreign keys,
//! mirroring), each with the objects it cannot exist without, and [`Step`]s (transactions and
//! autocommit statements, sync points, DDL), each statement with the objects it mentions. The
//! same scenario drives the concurrent run, where its units are dealt to several sessions, and,
//! serialised in the order the units ended, the sequential re-runs that shrink a failure;
//! removing an object removes whatever depends on it and every statement that mentions it.
//!
//! Generation is deterministic: one seed and one set of [`Features`] give the same scenario,
//! byte for byte, on any machine.

mod features;
mod random;
mod schema;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

pub use features::{Features, FEATURES};
pub use random::Random;

/// Index of a schema object, or of a table that a DDL step creates.
pub type ObjectId = usize;

/// The name the master knows its one slave by, in dbmirror_MirrorHost and in both slaves' state.
pub const SLAVE_NAME: &str = "slave";

/// How long a statement waits for a lock before it fails. Sessions of the concurrent run are
/// driven one statement at a time by one thread, so a statement that waits for a lock waits for
/// a session that cannot move until it fails: a short timeout makes that failure quick, and the
/// same on every run.
pub const LOCK_TIMEOUT: &str = "50ms";

/// One schema object: a statement run once, before the workload.
#[derive(Debug, Clone)]
pub struct Object {
    pub id: ObjectId,
    /// What it is, for comments in the scripts: `table "public"."t1"`.
    pub what: String,
    pub sql: String,
    /// Objects it cannot exist without.
    pub depends: Vec<ObjectId>,
    /// Capture, on the master only: the slaves get the schema without it.
    pub master_only: bool,
    /// Whether shrinking may remove it on its own. A table's mirroring goes only with its
    /// table: a table that is not mirrored would differ for a reason that is no failure.
    pub removable: bool,
}

/// One SQL statement of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    /// For `COPY ... FROM STDIN`: the data lines, each ending in a newline.
    pub copy: Option<String>,
    /// The tables and types it names.
    pub mentions: Vec<ObjectId>,
}

impl Statement {
    pub fn new(sql: String, mentions: Vec<ObjectId>) -> Self {
        Statement { sql, copy: None, mentions }
    }

    /// Savepoint commands, which psql's ON_ERROR_ROLLBACK leaves alone.
    pub fn is_savepoint_command(&self) -> bool {
        ["SAVEPOINT ", "RELEASE ", "ROLLBACK TO "].iter().any(|p| self.sql.starts_with(p))
    }
}

/// How a transaction ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Commit,
    Rollback,
    /// `PREPARE TRANSACTION 'gid'`; a later [`Unit::FinishPrepared`] commits or rolls it back.
    Prepare(String),
}

impl Ending {
    pub fn sql(&self) -> String {
        match self {
            Ending::Commit => "COMMIT".into(),
            Ending::Rollback => "ROLLBACK".into(),
            Ending::Prepare(gid) => format!("PREPARE TRANSACTION '{gid}'"),
        }
    }
}

/// What one session does from start to end: the unit of dealing and of serialising.
#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    Autocommit(Statement),
    Transaction {
        /// `BEGIN`, or `BEGIN ISOLATION LEVEL ...`.
        begin: String,
        /// Runs as psql does with ON_ERROR_ROLLBACK on: a failed statement is undone alone.
        /// Otherwise a failed statement aborts the transaction, which then ends in a rollback.
        error_rollback: bool,
        statements: Vec<Statement>,
        ending: Ending,
    },
    FinishPrepared {
        gid: String,
        commit: bool,
    },
}

impl Unit {
    /// The statements in the order a session sends them.
    pub fn statements(&self) -> Vec<Statement> {
        match self {
            Unit::Autocommit(statement) => vec![statement.clone()],
            Unit::Transaction { begin, statements, ending, .. } => {
                let mut all = vec![Statement::new(begin.clone(), vec![])];
                all.extend(statements.iter().cloned());
                all.push(Statement::new(ending.sql(), vec![]));
                all
            }
            Unit::FinishPrepared { gid, commit } => {
                let verb = if *commit { "COMMIT" } else { "ROLLBACK" };
                vec![Statement::new(format!("{verb} PREPARED '{gid}'"), vec![])]
            }
        }
    }

    pub fn error_rollback(&self) -> bool {
        matches!(self, Unit::Transaction { error_rollback: true, .. })
    }
}

/// DDL between transactions, once every session is idle and every prepared transaction
/// finished. Either the same `sql` runs on the master and on the slaves, or (`streamed`) it runs
/// on the master alone, captured with `dbmirror.capture_ddl`, and reaches the slaves in the
/// stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Ddl {
    pub sql: String,
    /// Master only, after `sql`: capture of a table the DDL made.
    pub master_sql: String,
    pub mentions: Vec<ObjectId>,
    /// On the master before the changes that precede it are exported (the slaves get it after
    /// applying them); otherwise everything is exported and applied first.
    pub before_export: bool,
    pub streamed: bool,
}

impl Ddl {
    /// What runs on the master: `sql` then `master_sql`; streamed, both in one transaction with
    /// DDL capture on (a table made and mirrored in one transaction travels with its DDL).
    pub fn master_script(&self) -> String {
        if self.streamed {
            format!("BEGIN;\nSET LOCAL dbmirror.capture_ddl = on;\n{}\n{}\nCOMMIT;\n", self.sql, self.master_sql)
        } else {
            format!("{}\n{}", self.sql, self.master_sql)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Unit(Unit),
    /// Export everything committed so far, carry it to both slaves, apply it, compare.
    Sync,
    Ddl(Ddl),
}

/// A schema and a workload.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub features: Features,
    /// Sessions of the concurrent run.
    pub sessions: usize,
    /// When each session writes only tables of its own, as the parts of an application do:
    /// the session each table belongs to (see [`owner`](Self::owner)). Empty otherwise.
    pub owners: BTreeMap<ObjectId, usize>,
    /// The exporter's batch_size.
    pub batch_size: u32,
    pub objects: Vec<Object>,
    pub steps: Vec<Step>,
    /// The features the generator used: a switched-on feature it never used is reported.
    pub used: BTreeSet<&'static str>,
    /// Objects taken out by shrinking, with what depends on them.
    pub removed: BTreeSet<ObjectId>,
}

impl Scenario {
    /// The scenario of `seed` with `features`, with about `units` transactions and autocommit
    /// statements.
    pub fn generate(seed: u64, features: &Features, units: usize) -> Scenario {
        workload::generate(seed, features, units)
    }

    /// The objects removed, directly or through what they depend on.
    pub fn excluded(&self) -> BTreeSet<ObjectId> {
        let mut excluded = self.removed.clone();
        // Objects depend only on objects before them.
        for object in &self.objects {
            if object.depends.iter().any(|d| excluded.contains(d)) {
                excluded.insert(object.id);
            }
        }
        excluded
    }

    /// Whether the scenario still has an object (not removed by shrinking).
    pub fn has_object(&self, id: ObjectId) -> bool {
        !self.excluded().contains(&id)
    }

    /// The steps without the statements, DDL and transactions that mention removed objects.
    pub fn live_steps(&self) -> Vec<Step> {
        let excluded = self.excluded();
        let live = |s: &Statement| !s.mentions.iter().any(|m| excluded.contains(m));
        self.steps
            .iter()
            .filter_map(|step| match step {
                Step::Unit(Unit::Autocommit(s)) => live(s).then(|| step.clone()),
                Step::Unit(Unit::Transaction { begin, error_rollback, statements, ending }) => {
                    let statements: Vec<Statement> = statements.iter().filter(|s| live(s)).cloned().collect();
                    // A prepared transaction stays, even empty: its COMMIT PREPARED follows.
                    (!statements.is_empty() || matches!(ending, Ending::Prepare(_))).then(|| {
                        Step::Unit(Unit::Transaction {
                            begin: begin.clone(),
                            error_rollback: *error_rollback,
                            statements,
                            ending: ending.clone(),
                        })
                    })
                }
                Step::Ddl(ddl) => (!ddl.mentions.iter().any(|m| excluded.contains(m))).then(|| step.clone()),
                _ => Some(step.clone()),
            })
            .collect()
    }

    /// The same schema with `steps` in place of the workload, run by one session: the
    /// sequential form of a concurrent run.
    pub fn with_steps(&self, steps: Vec<Step>) -> Scenario {
        Scenario { steps, sessions: 1, owners: BTreeMap::new(), ..self.clone() }
    }

    /// In a partitioned scenario, the session a unit belongs to: the owner of the first table
    /// it names (a unit writes the tables of one owner). None: any session.
    pub fn owner(&self, unit: &Unit) -> Option<usize> {
        let first = unit.statements().iter().flat_map(|s| s.mentions.first().copied()).next()?;
        self.owners.get(&first).copied().filter(|&o| o < self.sessions)
    }

    /// Whether any step needs prepared transactions (max_prepared_transactions > 0).
    pub fn prepares(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Unit(Unit::Transaction { ending: Ending::Prepare(_), .. })))
    }

    /// The schema both master and slaves get: everything but capture.
    pub fn schema_sql(&self) -> String {
        self.objects_sql(false)
    }

    /// What the master gets after the schema: the extension, capture, and the slave.
    pub fn mirror_sql(&self) -> String {
        let mut sql = String::from("CREATE EXTENSION dbmirror;\n");
        sql.push_str(&self.objects_sql(true));
        let _ = writeln!(sql, "INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('{SLAVE_NAME}');");
        sql
    }

    fn objects_sql(&self, master_only: bool) -> String {
        let excluded = self.excluded();
        let mut sql = String::new();
        for object in self.objects.iter().filter(|o| o.master_only == master_only && !excluded.contains(&o.id)) {
            let _ = writeln!(sql, "-- {}\n{}", object.what, object.sql);
        }
        sql
    }

    /// The settings every workload script starts with.
    pub fn workload_preamble() -> String {
        format!("\\set VERBOSITY verbose\nSET lock_timeout = '{LOCK_TIMEOUT}';\n")
    }

    /// The whole workload as one annotated psql script, for reading: sync points and DDL are
    /// comments saying what to do there (`reproduce.sh` does it).
    pub fn workload_sql(&self) -> String {
        let mut sql = Self::workload_preamble();
        for step in self.live_steps() {
            match step {
                Step::Unit(unit) => sql.push_str(&render_unit(&unit)),
                Step::Sync => sql.push_str(
                    "-- ==== sync: dbmirror-export once; carry the files; dbmirror-apply once; compare ====\n",
                ),
                Step::Ddl(ddl) => {
                    let when = if ddl.before_export {
                        "on the master now; sync; then on the slave"
                    } else {
                        "sync first; then on the master and on the slave"
                    };
                    let _ = writeln!(sql, "-- ==== DDL, {when}: ====\n-- {}", ddl.sql.replace('\n', "\n-- "));
                    if !ddl.master_sql.is_empty() {
                        let _ =
                            writeln!(sql, "-- and on the master only:\n-- {}", ddl.master_sql.replace('\n', "\n-- "));
                    }
                }
            }
        }
        sql
    }
}

/// A unit as psql script text.
pub fn render_unit(unit: &Unit) -> String {
    let mut sql = String::new();
    if unit.error_rollback() {
        sql.push_str("\\set ON_ERROR_ROLLBACK on\n");
    }
    for statement in unit.statements() {
        sql.push_str(&render_statement(&statement));
    }
    if unit.error_rollback() {
        sql.push_str("\\set ON_ERROR_ROLLBACK off\n");
    }
    sql
}

/// A statement as psql script text, with its COPY data.
pub fn render_statement(statement: &Statement) -> String {
    match &statement.copy {
        Some(data) => format!("{};\n{data}\\.\n", statement.sql),
        None => format!("{};\n", statement.sql),
    }
}

/// An identifier, always double-quoted.
pub use dbmirror_sql::quote_identifier as ident;

/// A string literal (standard_conforming_strings is on in every session the tester opens).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::{Features, Scenario, Step};

    fn rendered(s: &Scenario) -> String {
        format!("{}{}{}", s.schema_sql(), s.mirror_sql(), s.workload_sql())
    }

    #[test]
    fn a_seed_gives_the_same_scenario_every_time() {
        for seed in [1, 2, 99] {
            let a = Scenario::generate(seed, &Features::all(), 60);
            assert_eq!(rendered(&a), rendered(&Scenario::generate(seed, &Features::all(), 60)));
            assert_ne!(rendered(&a), rendered(&Scenario::generate(seed + 1000, &Features::all(), 60)));
        }
    }

    #[test]
    fn switched_off_features_are_not_used() {
        let features = Features::parse("all,-ddl,-two_phase,-inheritance").unwrap();
        for seed in 0..20 {
            let s = Scenario::generate(seed, &features, 60);
            assert!(!s.used.contains("ddl") && !s.used.contains("two_phase") && !s.used.contains("inheritance"));
            assert!(!s.steps.iter().any(|st| matches!(st, Step::Ddl(_))));
            assert!(!s.workload_sql().contains("PREPARE TRANSACTION"));
            assert!(!s.schema_sql().contains("INHERITS"));
        }
    }

    #[test]
    fn removing_a_table_removes_what_depends_on_it_and_mentions_it() {
        let s = Scenario::generate(5, &Features::all(), 60);
        let table = s.objects.iter().find(|o| o.what.starts_with("table ")).unwrap();
        let mut without = s.clone();
        without.removed.insert(table.id);
        assert!(!without.schema_sql().contains(&table.sql));
        let excluded = without.excluded();
        for step in without.live_steps() {
            if let Step::Unit(unit) = step {
                for statement in unit.statements() {
                    assert!(!statement.mentions.iter().any(|m| excluded.contains(m)), "{statement:?}");
                }
            }
        }
    }
}
