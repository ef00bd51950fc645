//! Shrinking a failing scenario, and writing it down as scripts a person can run.
//!
//! Shrinking works on the sequential form of a scenario and keeps a change only when a fresh
//! sequential run still fails with the same [signature](crate::trial::Failure::signature):
//! the steps after the failure go first; then whole tables, types, triggers, functions and
//! foreign keys with everything that depends on them and every statement that names them;
//! then steps in halves, quarters and so on down to single steps; then single statements and
//! COPY lines; then transactions are made plainer (no ON_ERROR_ROLLBACK, no isolation level,
//! COMMIT for PREPARE). It stops when a round changes nothing or the time
//! budget is spent, and keeps the smallest scenario found so far either way.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::scenario::{Ending, ObjectId, Scenario, Step, Unit, SLAVE_NAME};
use crate::trial::{parts, Failure, Lab, Mode, Part};

pub struct Shrunk {
    pub scenario: Scenario,
    /// The failure of the last run that reproduced it.
    pub failure: Failure,
    /// Sequential runs tried.
    pub runs: usize,
    /// Whether shrinking ran to its end rather than out of time.
    pub finished: bool,
}

struct Shrinker<'a> {
    lab: &'a mut Lab,
    target: String,
    deadline: Instant,
    runs: usize,
    best: Scenario,
    failure: Failure,
}

/// Shrinks `scenario`, whose sequential run fails with `failure`, for at most `budget`.
pub fn shrink(lab: &mut Lab, scenario: &Scenario, failure: &Failure, budget: Duration) -> Shrunk {
    let mut shrinker = Shrinker {
        lab,
        target: failure.signature(),
        deadline: Instant::now() + budget,
        runs: 0,
        best: materialise(scenario),
        failure: failure.clone(),
    };
    let finished = shrinker.run();
    Shrunk { scenario: shrinker.best, failure: shrinker.failure, runs: shrinker.runs, finished }
}

/// The scenario with its steps as they run: statements of removed objects gone.
fn materialise(scenario: &Scenario) -> Scenario {
    Scenario { steps: scenario.live_steps(), ..scenario.clone() }
}

/// How big a scenario is: steps, statements, objects.
fn size(scenario: &Scenario) -> (usize, usize, usize) {
    let statements = scenario
        .steps
        .iter()
        .map(|s| match s {
            Step::Unit(unit) => unit.statements().len(),
            _ => 1,
        })
        .sum();
    let excluded = scenario.excluded();
    let objects = scenario.objects.iter().filter(|o| !excluded.contains(&o.id)).count();
    (scenario.steps.len(), statements, objects)
}

impl Shrinker<'_> {
    fn out_of_time(&self) -> bool {
        Instant::now() > self.deadline
    }

    /// Keeps `candidate` if it still fails the same way.
    fn accept(&mut self, candidate: Scenario) -> bool {
        if self.out_of_time() {
            return false;
        }
        self.runs += 1;
        let outcome = self.lab.run(&candidate, Mode::Sequential, false);
        match outcome.failure {
            Some(failure) if failure.signature() == self.target => {
                self.best = materialise(&candidate);
                self.failure = failure;
                true
            }
            _ => false,
        }
    }

    fn with_steps(&self, steps: Vec<Step>) -> Scenario {
        Scenario { steps, ..self.best.clone() }
    }

    /// Rounds until one changes nothing; false if time ran out first.
    fn run(&mut self) -> bool {
        if let Some(through) = self.failure.through {
            if through < self.best.steps.len() {
                let steps = self.best.steps[..through].to_vec();
                self.accept(self.with_steps(steps));
            }
        }
        loop {
            let before = size(&self.best);
            // Tables first: taking one out takes every statement on it.
            self.drop_objects();
            self.drop_steps();
            self.drop_statements();
            self.simplify();
            if self.out_of_time() {
                return false;
            }
            if size(&self.best) == before {
                return true;
            }
        }
    }

    /// Steps in chunks of half, a quarter, ... one.
    fn drop_steps(&mut self) {
        let mut chunk = self.best.steps.len().div_ceil(2);
        while chunk >= 1 && !self.out_of_time() {
            let mut i = 0;
            while i < self.best.steps.len() && !self.out_of_time() {
                let mut steps = self.best.steps.clone();
                steps.drain(i..(i + chunk).min(steps.len()));
                if !self.accept(self.with_steps(steps)) {
                    i += chunk;
                }
            }
            chunk /= 2;
        }
    }

    /// Objects that may go on their own, with what depends on them: tables first.
    fn drop_objects(&mut self) {
        let mut candidates: Vec<(bool, ObjectId)> =
            self.best.objects.iter().filter(|o| o.removable).map(|o| (!o.what.starts_with("table "), o.id)).collect();
        // Tables a DDL step makes.
        for step in &self.best.steps {
            if let Step::Ddl(ddl) = step {
                if !ddl.master_sql.is_empty() {
                    candidates.push((false, ddl.mentions[0]));
                }
            }
        }
        candidates.sort();
        for (_, id) in candidates {
            if self.out_of_time() {
                return;
            }
            if !self.best.has_object(id) {
                continue;
            }
            let mut candidate = self.best.clone();
            candidate.removed.insert(id);
            self.accept(candidate);
        }
    }

    /// Single statements of transactions, and single lines of COPY data.
    fn drop_statements(&mut self) {
        let mut s = self.best.steps.len();
        while s > 0 && !self.out_of_time() {
            s -= 1;
            let count = match self.best.steps.get(s) {
                Some(Step::Unit(Unit::Transaction { statements, .. })) => statements.len(),
                _ => continue,
            };
            for i in (0..count).rev() {
                let mut steps = self.best.steps.clone();
                match steps.get_mut(s) {
                    Some(Step::Unit(Unit::Transaction { statements, .. })) if i < statements.len() => {
                        statements.remove(i);
                    }
                    _ => continue,
                }
                self.accept(self.with_steps(steps));
            }
        }
        for s in 0..self.best.steps.len() {
            let count = match self.best.steps.get(s) {
                Some(Step::Unit(unit)) => unit.statements().len(),
                _ => 0,
            };
            for i in 0..count {
                let mut line = copy_lines(&self.best.steps, s, i);
                while line > 0 && copy_lines(&self.best.steps, s, i) > 1 && !self.out_of_time() {
                    line -= 1;
                    let mut steps = self.best.steps.clone();
                    remove_copy_line(&mut steps[s], i, line);
                    self.accept(self.with_steps(steps));
                }
            }
        }
    }

    /// Plainer transactions: no ON_ERROR_ROLLBACK, plain BEGIN, COMMIT instead of PREPARE.
    fn simplify(&mut self) {
        // Each accepted change may take steps out (a COMMIT PREPARED goes with its PREPARE):
        // the length is read again every time.
        let mut s = 0;
        while s < self.best.steps.len() && !self.out_of_time() {
            s += 1;
            let Some(Step::Unit(Unit::Transaction { begin, error_rollback, statements, ending })) =
                self.best.steps.get(s - 1).cloned()
            else {
                continue;
            };
            let s = s - 1;
            if error_rollback {
                let mut steps = self.best.steps.clone();
                steps[s] = Step::Unit(Unit::Transaction {
                    begin: begin.clone(),
                    error_rollback: false,
                    statements: statements.clone(),
                    ending: ending.clone(),
                });
                self.accept(self.with_steps(steps));
            }
            if begin != "BEGIN" {
                let mut steps = self.best.steps.clone();
                if let Step::Unit(Unit::Transaction { begin, .. }) = &mut steps[s] {
                    *begin = "BEGIN".into();
                }
                self.accept(self.with_steps(steps));
            }
            if let Ending::Prepare(gid) = &ending {
                let mut steps = self.best.steps.clone();
                if let Step::Unit(Unit::Transaction { ending, .. }) = &mut steps[s] {
                    *ending = Ending::Commit;
                }
                steps.retain(|step| !matches!(step, Step::Unit(Unit::FinishPrepared { gid: g, .. }) if g == gid));
                self.accept(self.with_steps(steps));
            }
        }
    }
}

/// Lines of COPY data of statement `i` of step `s` (0 if it is not a COPY).
fn copy_lines(steps: &[Step], s: usize, i: usize) -> usize {
    match steps.get(s) {
        Some(Step::Unit(unit)) => {
            unit.statements().get(i).and_then(|st| st.copy.as_ref()).map_or(0, |d| d.lines().count())
        }
        _ => 0,
    }
}

fn remove_copy_line(step: &mut Step, i: usize, line: usize) {
    let statement = match step {
        Step::Unit(Unit::Autocommit(statement)) if i == 0 => statement,
        // Statement i of a transaction's statements() is preceded by its BEGIN.
        Step::Unit(Unit::Transaction { statements, .. }) if i >= 1 && i <= statements.len() => &mut statements[i - 1],
        _ => return,
    };
    if let Some(data) = &statement.copy {
        let mut lines: Vec<&str> = data.lines().collect();
        if line < lines.len() {
            lines.remove(line);
        }
        statement.copy = Some(lines.iter().map(|l| format!("{l}\n")).collect());
    }
}

/// Writes `scenario` into `dir` as scripts: `schema.sql` (master and slave), `mirror.sql`
/// (master), `workload.sql` (the whole workload, annotated), the parts `reproduce.sh` runs one
/// after another (`step-NN.sql` on the master, `ddl-NN.sql` on both), `reproduce.sh` itself
/// and `failure.txt`. Returns the files written.
pub fn write_reproduction(dir: &Path, scenario: &Scenario, failure: &Failure, notes: &str) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("the reproduction's directory can be created");
    let mut written = Vec::new();
    let mut write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("a reproduction file can be written");
        written.push(path);
    };
    write("schema.sql", &scenario.schema_sql());
    write("mirror.sql", &scenario.mirror_sql());
    write("workload.sql", &scenario.workload_sql());
    let mut script = format!(
        "#!/bin/sh\n\
         # Reproduces a failure of the dbmirror differential test: seed {seed}, features {features}.\n\
         # {signature}\n\
         #\n\
         # Usage: MASTER='host=... dbname=...' SLAVE='host=... dbname=...' sh reproduce.sh\n\
         # MASTER and SLAVE are empty databases; the master's cluster has the dbmirror extension\n\
         # installed and max_prepared_transactions > 0. dbmirror-export and dbmirror-apply come\n\
         # from $BIN if it is set, otherwise from PATH. Workload statements may fail: that is part\n\
         # of the workload. The last command to fail is the failure.\n\
         set -eu\n\
         cd \"$(dirname \"$0\")\"\n\
         export_() {{ \"${{BIN:+$BIN/}}dbmirror-export\" --config export.toml \"$@\"; }}\n\
         apply_() {{ \"${{BIN:+$BIN/}}dbmirror-apply\" --config apply.toml \"$@\"; }}\n\
         ddl() {{ psql -X -q -v ON_ERROR_STOP=1 -d \"$1\" -f \"$2\"; }}\n\
         sync_() {{ export_ once; for f in outbox/*; do [ -e \"$f\" ] && mv \"$f\" inbound/; done; apply_ once; export_ verify --slave \"$SLAVE\"; }}\n\
         rm -rf outbox inbound\n\
         mkdir outbox inbound\n\
         printf 'slave_name = \"{SLAVE_NAME}\"\\nmaster = \"%s\"\\ntransaction_file_directory = \"%s/outbox\"\\nbatch_size = {batch}\\n' \"$MASTER\" \"$PWD\" > export.toml\n\
         printf 'slave_name = \"{SLAVE_NAME}\"\\nslave = \"%s\"\\nspool = \"%s/inbound\"\\n' \"$SLAVE\" \"$PWD\" > apply.toml\n\
         ddl \"$SLAVE\" schema.sql\n\
         apply_ init\n\
         ddl \"$MASTER\" schema.sql\n\
         ddl \"$MASTER\" mirror.sql\n",
        seed = scenario.seed,
        features = scenario.features,
        signature = failure.signature(),
        batch = scenario.batch_size,
    );
    for (i, (part, _)) in parts(scenario).into_iter().enumerate() {
        match part {
            Part::Workload(sql) => {
                let name = format!("step-{:02}.sql", i + 1);
                write(&name, &sql);
                let _ = writeln!(script, "psql -X -q -d \"$MASTER\" -f {name}");
            }
            Part::Sync => script.push_str("sync_\n"),
            Part::Ddl(ddl) if ddl.streamed => {
                let name = format!("ddl-{:02}.sql", i + 1);
                write(&name, &ddl.master_script());
                let _ = writeln!(script, "ddl \"$MASTER\" {name}");
            }
            Part::Ddl(ddl) => {
                let name = format!("ddl-{:02}.sql", i + 1);
                write(&name, &ddl.sql);
                let master = if ddl.master_sql.is_empty() {
                    format!("ddl \"$MASTER\" {name}")
                } else {
                    let master_name = format!("ddl-{:02}-master.sql", i + 1);
                    write(&master_name, &ddl.master_sql);
                    format!("ddl \"$MASTER\" {name}; ddl \"$MASTER\" {master_name}")
                };
                if ddl.before_export {
                    let _ = writeln!(script, "{master}\nsync_\nddl \"$SLAVE\" {name}");
                } else {
                    let _ = writeln!(script, "sync_\n{master}\nddl \"$SLAVE\" {name}");
                }
            }
        }
    }
    script.push_str("sync_\necho 'no failure: the slave equals the master'\n");
    write("reproduce.sh", &script);
    write(
        "failure.txt",
        &format!(
            "seed {}\nfeatures {}\nsignature {}\n{}\n\n{notes}\n",
            scenario.seed,
            scenario.features,
            failure.signature(),
            failure
        ),
    );
    written
}
