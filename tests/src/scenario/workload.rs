//! The workload: transactions and autocommit statements of every kind the features allow,
//! prepared transactions finished a few units later, sync points, and DDL between segments,
//! each generated against the schema model as it is at that point.

use super::schema::{copy_field, Column, Gen, IdentityKind, KeyKind, Role, RowFunction, Table, World, DOMAIN};
use super::{ident, Ddl, Ending, Features, ObjectId, Scenario, Statement, Step, Unit};

/// Generates the scenario of `seed`: schema first, then `units` units of workload in one to
/// four segments separated by DDL.
pub fn generate(seed: u64, features: &Features, units: usize) -> Scenario {
    let mut world = World::new(seed, features);
    world.generate_schema();
    let sessions = if world.chance("concurrency", 85) { world.rng.between(2, 4) } else { 1 };
    // Sometimes each session writes tables of its own, as the parts of an application do:
    // then a session's backend is the only one that ever captures those tables.
    let partitioned = sessions > 1 && world.rng.percent(50);
    if partitioned {
        for (i, t) in world.live_tables().into_iter().enumerate() {
            world.owners.insert(world.tables[t].id, i % sessions);
        }
    }
    let batch_size = *world.rng.pick(&[1, 3, 1000]);
    let segments = if world.features.has("ddl") { 1 + world.rng.below(4) } else { 1 };
    let mut steps = Vec::new();
    for segment in 0..segments {
        if segment > 0 {
            if let Some(ddl) = world.ddl() {
                world.used.insert("ddl");
                steps.push(Step::Ddl(ddl));
            }
        }
        world.segment(&mut steps, units / segments, partitioned.then_some(sessions));
    }
    Scenario {
        seed,
        features: features.clone(),
        sessions,
        owners: world.owners,
        batch_size,
        objects: world.objects,
        steps,
        used: world.used,
        removed: Default::default(),
    }
}

impl World {
    /// `units` units; every transaction prepared in the segment is finished in it. With
    /// `partitions`, each unit writes only the tables of one partition (see
    /// [`Scenario::owner`]).
    fn segment(&mut self, steps: &mut Vec<Step>, units: usize, partitions: Option<usize>) {
        // (gid, commit, units still to come before it is finished)
        let mut prepared: Vec<(String, bool, usize)> = Vec::new();
        for u in 0..units {
            // A segment often opens with a transaction that rolls back or is prepared: the
            // first change of a table's shape (at the start, and after DDL) is then captured by
            // a transaction that ends without committing, or commits only later, while later
            // ones of the same session commit.
            self.partition = partitions.map(|n| (self.rng.below(n), n));
            let opener = u == 0 && self.rng.percent(80);
            let unit = if opener && self.chance("two_phase", 70) {
                self.transaction(Some(Ending::Prepare(String::new())))
            } else if opener {
                self.transaction(Some(Ending::Rollback))
            } else {
                self.unit()
            };
            self.partition = None;
            if let Unit::Transaction { ending: Ending::Prepare(gid), .. } = &unit {
                let commit = !self.chance("rollback_prepared", if opener { 50 } else { 35 });
                prepared.push((gid.clone(), commit, self.rng.below(6)));
            }
            steps.push(Step::Unit(unit));
            for (gid, commit, wait) in prepared.iter_mut() {
                if *wait == 0 {
                    steps.push(Step::Unit(Unit::FinishPrepared { gid: gid.clone(), commit: *commit }));
                }
                *wait = wait.wrapping_sub(1);
            }
            prepared.retain(|(_, _, wait)| *wait != usize::MAX);
            if self.chance("exports_during_workload", 6) {
                steps.push(Step::Sync);
            }
        }
        for (gid, commit, _) in prepared {
            steps.push(Step::Unit(Unit::FinishPrepared { gid, commit }));
        }
    }

    fn unit(&mut self) -> Unit {
        if self.rng.percent(25) {
            return Unit::Autocommit(self.statement());
        }
        self.transaction(None)
    }

    /// A transaction, ending as `ending` says (a prepared one under a name of its own) or as
    /// chance has it.
    fn transaction(&mut self, ending: Option<Ending>) -> Unit {
        let begin = if self.chance("isolation", 12) {
            self.rng.pick(&["BEGIN ISOLATION LEVEL REPEATABLE READ", "BEGIN ISOLATION LEVEL SERIALIZABLE"]).to_string()
        } else {
            "BEGIN".to_string()
        };
        let error_rollback = self.chance("error_rollback", 40);
        let mut statements = Vec::new();
        if self.chance("replica_role", 6) {
            statements.push(Statement::new("SET LOCAL session_replication_role = replica".into(), vec![]));
        }
        // A transaction that opens a segment begins with an insert: it captures something.
        if ending.is_some() {
            let tables = self.writable_tables();
            let table = self.tables[*self.rng.pick(&tables)].clone();
            statements.push(self.insert_values(&table));
        }
        let mut savepoints = 0;
        for _ in 0..self.rng.between(1, 5) {
            if self.chance("savepoints", 15) {
                savepoints += 1;
                statements.push(Statement::new(format!("SAVEPOINT s{savepoints}"), vec![]));
            }
            statements.push(self.statement());
            if savepoints > 0 && self.rng.percent(35) {
                let verb = if self.rng.percent(60) { "ROLLBACK TO SAVEPOINT" } else { "RELEASE SAVEPOINT" };
                statements.push(Statement::new(format!("{verb} s{savepoints}"), vec![]));
                savepoints -= 1;
            }
        }
        let ending = match ending {
            Some(Ending::Prepare(_)) => None,
            Some(ending) => Some(ending),
            None if self.chance("two_phase", 12) => None,
            None if self.rng.percent(8) => Some(Ending::Rollback),
            None => Some(Ending::Commit),
        }
        .unwrap_or_else(|| {
            self.gids += 1;
            Ending::Prepare(format!("g{}", self.gids))
        });
        Unit::Transaction { begin, error_rollback, statements, ending }
    }

    /// One data-changing statement on a random table.
    pub fn statement(&mut self) -> Statement {
        loop {
            let tables = self.writable_tables();
            let weighted: Vec<usize> =
                tables.iter().flat_map(|&t| std::iter::repeat_n(t, if self.tables[t].log { 1 } else { 4 })).collect();
            let t = *self.rng.pick(&weighted);
            let table = self.tables[t].clone();
            let roll = self.rng.below(106);
            let statement = match roll {
                0..=21 => Some(self.insert_values(&table)),
                22..=29 if self.chance("bulk", 8) => Some(self.insert_bulk(&table)),
                22..=29 => Some(self.insert_select(&table)),
                30..=37 if self.chance("copy", 100) => Some(self.copy(&table)),
                38..=54 => self.update_by_key(&table),
                55..=62 => Some(self.update_many(&table)),
                63..=67 if self.chance("key_updates", 100) => self.update_key(&table),
                68..=70 if self.chance("identity_default", 100) => Some(self.update_to_default(&table)),
                71..=80 => Some(self.delete(&table)),
                81..=84 if self.chance("truncate", 100) => Some(self.truncate(t)),
                85..=90 if self.chance("merge", 100) => Some(self.merge(&table)),
                91..=94 if self.chance("exception_blocks", 100) => Some(self.exception_block()),
                95..=99 => Some(self.no_op_update(&table)),
                100..=105 if self.features.has("row_functions") => self.row_function_statement(&table),
                _ => None,
            };
            if let Some(statement) = statement {
                return statement;
            }
        }
    }

    /// The tables the unit being generated may write: those of its partition, if it has one
    /// and the partition has tables.
    fn writable_tables(&self) -> Vec<usize> {
        let live = self.live_tables();
        let Some((k, _)) = self.partition else { return live };
        let own: Vec<usize> =
            live.iter().copied().filter(|&t| self.owners.get(&self.tables[t].id) == Some(&k)).collect();
        if own.is_empty() {
            live
        } else {
            own
        }
    }

    fn key_values(&mut self, table: &Table) -> Vec<String> {
        table.key_columns().into_iter().cloned().collect::<Vec<_>>().iter().map(|c| self.sql_key(c)).collect()
    }

    fn sql_key(&mut self, column: &Column) -> String {
        let value = Some(match &column.gen {
            Gen::Key(kind) => kind.text(self.rng.below(DOMAIN)),
            _ => (1 + self.rng.below(2 * DOMAIN)).to_string(),
        });
        World::sql_value(&value, column)
    }

    /// `"k1" = ... AND "k2" = ...` for a random key value.
    fn key_condition(&mut self, table: &Table) -> String {
        let values = self.key_values(table);
        table
            .key_columns()
            .iter()
            .zip(values)
            .map(|(c, v)| format!("{} = {v}", c.quoted()))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// A condition that picks some rows by their counter.
    fn some_rows(&mut self) -> String {
        let m = self.rng.between(2, 5);
        format!("n % {m} = {}", self.rng.below(m))
    }

    /// Which columns an insert gives values, and whether it needs OVERRIDING SYSTEM VALUE.
    fn insert_columns(&mut self, table: &Table) -> (Vec<Column>, bool) {
        let mut columns = Vec::new();
        for (i, column) in table.columns.iter().enumerate() {
            let give = match &column.role {
                Role::Generated => false,
                Role::Identity(kind) if table.key.contains(&i) => {
                    self.rng.percent(if *kind == IdentityKind::ByDefault { 40 } else { 25 })
                }
                Role::Key => true,
                Role::Identity(_) => self.rng.percent(15),
                Role::Counter => self.rng.percent(70),
                _ => self.rng.percent(50),
            };
            if give {
                columns.push(column.clone());
            }
        }
        let overriding = columns.iter().any(|c| c.role == Role::Identity(IdentityKind::Always));
        (columns, overriding)
    }

    fn row(&mut self, columns: &[Column]) -> Vec<Option<String>> {
        columns.iter().map(|c| self.value(c)).collect()
    }

    /// `count` rows, with different keys where a few tries find them: a statement whose rows
    /// share a key only ever fails.
    fn rows(&mut self, table: &Table, columns: &[Column], count: usize) -> Vec<Vec<Option<String>>> {
        let key: Vec<usize> =
            (0..columns.len()).filter(|&i| table.key_columns().iter().any(|k| k.name == columns[i].name)).collect();
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        for _ in 0..count {
            for attempt in 0..5 {
                let row = self.row(columns);
                let clash = !key.is_empty() && rows.iter().any(|r| key.iter().all(|&k| r[k] == row[k]));
                if !clash || attempt == 4 {
                    rows.push(row);
                    break;
                }
            }
        }
        rows
    }

    fn column_list(columns: &[Column]) -> String {
        columns.iter().map(Column::quoted).collect::<Vec<_>>().join(", ")
    }

    fn insert_values(&mut self, table: &Table) -> Statement {
        let (columns, overriding) = self.insert_columns(table);
        let target = format!("{} AS x", table.qname());
        let mut sql = if columns.is_empty() {
            format!("INSERT INTO {target} DEFAULT VALUES")
        } else {
            let count = self.rng.between(1, 3);
            let rows: Vec<String> = self
                .rows(table, &columns, count)
                .iter()
                .map(|row| {
                    let values: Vec<String> = row.iter().zip(&columns).map(|(v, c)| World::sql_value(v, c)).collect();
                    format!("({})", values.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO {target} ({}){} VALUES {}",
                Self::column_list(&columns),
                if overriding { " OVERRIDING SYSTEM VALUE" } else { "" },
                rows.join(", ")
            )
        };
        if self.chance("on_conflict", 30) {
            if self.rng.percent(50) || !table.has_note() {
                sql.push_str(" ON CONFLICT DO NOTHING");
            } else {
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET n = x.n + 1, note = EXCLUDED.note",
                    table.key_list()
                ));
            }
        }
        Statement::new(sql, vec![table.id])
    }

    /// Several rows in one statement: the exporter writes them as a COPY block.
    fn insert_select(&mut self, table: &Table) -> Statement {
        let mut columns = Vec::new();
        let mut exprs = Vec::new();
        let mut overriding = false;
        for (position, column) in table.key_columns().into_iter().enumerate() {
            let g = if position == 0 { "g".to_string() } else { "(g % 3 + 1)".to_string() };
            match (&column.gen, &column.role) {
                (Gen::Key(kind), _) => exprs.push(kind.expr(&g)),
                (_, Role::Identity(kind)) => {
                    if self.rng.percent(60) {
                        continue;
                    }
                    overriding |= *kind == IdentityKind::Always;
                    exprs.push(g);
                }
                _ => unreachable!("keys are key columns or identities"),
            }
            columns.push(column.quoted());
        }
        columns.push("n".to_string());
        exprs.push("g % 7".to_string());
        if table.has_note() {
            columns.push("note".to_string());
            exprs.push("'bulk ' || g".to_string());
        }
        let typed: Vec<Column> =
            table.columns.iter().filter(|c| c.role == Role::Typed && self.rng.percent(40)).cloned().collect();
        for column in typed {
            let value = self.value(&column);
            columns.push(column.quoted());
            exprs.push(World::sql_value(&value, &column));
        }
        let first = self.rng.between(1, DOMAIN);
        let last = first + self.rng.between(3, 10);
        let on_conflict = if self.chance("on_conflict", 30) { " ON CONFLICT DO NOTHING" } else { "" };
        Statement::new(
            format!(
                "INSERT INTO {} ({}){} SELECT {} FROM generate_series({first}, {last}) g{on_conflict}",
                table.qname(),
                columns.join(", "),
                if overriding { " OVERRIDING SYSTEM VALUE" } else { "" },
                exprs.join(", ")
            ),
            vec![table.id],
        )
    }

    /// More than a thousand rows in one statement, with keys beyond those of single rows
    /// (a bulk load): capture writes its buffer out in the middle of the statement.
    fn insert_bulk(&mut self, table: &Table) -> Statement {
        let mut columns = Vec::new();
        let mut exprs = Vec::new();
        for (position, column) in table.key_columns().into_iter().enumerate() {
            let g = if position == 0 { "(g + 100)" } else { "(g % 3 + 1)" };
            match &column.gen {
                Gen::Key(KeyKind::Bytea) => exprs.push(format!("decode(lpad(to_hex{g}, 6, '0'), 'hex')")),
                Gen::Key(kind) => exprs.push(kind.expr(g)),
                // Identity keys come from their sequence.
                _ => continue,
            }
            columns.push(column.quoted());
        }
        columns.push("n".to_string());
        exprs.push("g % 20".to_string());
        let rows = self.rng.between(1100, 1300);
        Statement::new(
            format!(
                "INSERT INTO {} ({}) SELECT {} FROM generate_series(1, {rows}) g",
                table.qname(),
                columns.join(", "),
                exprs.join(", ")
            ),
            vec![table.id],
        )
    }

    fn copy(&mut self, table: &Table) -> Statement {
        let (mut columns, _) = self.insert_columns(table);
        if columns.is_empty() {
            columns.push(table.column(&Role::Counter).expect("every table has n").clone());
        }
        let mut data = String::new();
        let count = self.rng.between(2, 6);
        for row in self.rows(table, &columns, count) {
            data.push_str(&row.iter().map(copy_field).collect::<Vec<_>>().join("\t"));
            data.push('\n');
        }
        Statement {
            sql: format!("COPY {} ({}) FROM STDIN", table.qname(), Self::column_list(&columns)),
            copy: Some(data),
            mentions: vec![table.id],
        }
    }

    /// Columns an UPDATE may set to a value.
    fn updatable(table: &Table) -> Vec<Column> {
        table
            .columns
            .iter()
            .filter(|c| {
                matches!(
                    c.role,
                    Role::Counter
                        | Role::Note
                        | Role::Typed
                        | Role::Reference { .. }
                        | Role::Identity(IdentityKind::ByDefault)
                ) && !table.key.iter().any(|&k| table.columns[k].name == c.name)
            })
            .cloned()
            .collect()
    }

    fn assignments(&mut self, columns: &[Column]) -> String {
        columns
            .iter()
            .map(|c| {
                let value = self.value(c);
                format!("{} = {}", c.quoted(), World::sql_value(&value, c))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn update_by_key(&mut self, table: &Table) -> Option<Statement> {
        let updatable = Self::updatable(table);
        if updatable.is_empty() {
            return None;
        }
        let mut columns = self.rng.subset(&updatable, 40);
        if columns.is_empty() {
            columns.push(self.rng.pick(&updatable).clone());
        }
        let set = self.assignments(&columns);
        let condition = self.key_condition(table);
        Some(Statement::new(format!("UPDATE {} SET {set} WHERE {condition}", table.qname()), vec![table.id]))
    }

    /// An update of several rows; on a table with children, sometimes ONLY the table itself.
    fn update_many(&mut self, table: &Table) -> Statement {
        let only = if !table.children.is_empty() && self.rng.percent(40) { "ONLY " } else { "" };
        let note = if table.has_note() && self.rng.percent(50) { ", note = coalesce(note, '') || '.'" } else { "" };
        let condition = self.some_rows();
        Statement::new(format!("UPDATE {only}{} SET n = n + 1{note} WHERE {condition}", table.qname()), vec![table.id])
    }

    fn update_key(&mut self, table: &Table) -> Option<Statement> {
        let key: Vec<Column> = table.key_columns().into_iter().cloned().collect();
        let column = self.rng.pick(&key).clone();
        let sql = match (&column.gen, &column.role) {
            (_, Role::Identity(IdentityKind::Always)) => return None,
            (Gen::Key(KeyKind::Int), _) if self.rng.percent(40) => {
                // Shift many keys at once: collisions on the way fail the statement.
                let condition = self.some_rows();
                format!("UPDATE {} SET {c} = {c} + 1 WHERE {condition}", table.qname(), c = column.quoted())
            }
            _ => {
                let value = self.sql_key(&column);
                let also = if self.rng.percent(30) { ", n = n + 1" } else { "" };
                let condition = self.key_condition(table);
                format!("UPDATE {} SET {} = {value}{also} WHERE {condition}", table.qname(), column.quoted())
            }
        };
        Some(Statement::new(sql, vec![table.id]))
    }

    /// Identity columns drawn again from their sequence, or defaulted columns reset.
    fn update_to_default(&mut self, table: &Table) -> Statement {
        let identity = table.columns.iter().find(|c| matches!(c.role, Role::Identity(_))).cloned();
        let condition = if self.rng.percent(50) { self.key_condition(table) } else { self.some_rows() };
        let set = match identity {
            Some(column) => format!("{} = DEFAULT", column.quoted()),
            None if table.has_note() => "n = DEFAULT, note = DEFAULT".to_string(),
            None => "n = DEFAULT".to_string(),
        };
        Statement::new(format!("UPDATE {} SET {set} WHERE {condition}", table.qname()), vec![table.id])
    }

    fn delete(&mut self, table: &Table) -> Statement {
        let only = if !table.children.is_empty() && self.rng.percent(40) { "ONLY " } else { "" };
        let condition = if self.rng.percent(60) { self.key_condition(table) } else { self.some_rows() };
        Statement::new(format!("DELETE FROM {only}{} WHERE {condition}", table.qname()), vec![table.id])
    }

    fn truncate(&mut self, t: usize) -> Statement {
        let table = self.tables[t].clone();
        let mut names = vec![table.qname()];
        let mut mentions = vec![table.id];
        let mut only = "";
        let mut options = String::new();
        match self.rng.below(5) {
            0 => {
                let others: Vec<usize> = self.writable_tables().into_iter().filter(|&o| o != t).collect();
                if !others.is_empty() {
                    let other = &self.tables[*self.rng.pick(&others)];
                    names.push(other.qname());
                    mentions.push(other.id);
                }
            }
            1 => options.push_str(" CASCADE"),
            2 if !table.children.is_empty() => only = "ONLY ",
            3 => options.push_str(" RESTART IDENTITY"),
            _ => {}
        }
        Statement::new(format!("TRUNCATE {only}{}{options}", names.join(", ")), mentions)
    }

    fn merge(&mut self, table: &Table) -> Statement {
        let key: Vec<Column> = table.key_columns().into_iter().cloned().collect();
        let rows: Vec<String> = (0..self.rng.between(1, 4))
            .map(|_| {
                let mut values: Vec<String> = key.iter().map(|c| self.sql_key(c)).collect();
                values.push(self.rng.below(20).to_string());
                format!("({})", values.join(", "))
            })
            .collect();
        let names: Vec<String> = (1..=key.len()).map(|i| format!("s{i}")).collect();
        let on: Vec<String> = key.iter().zip(&names).map(|(c, s)| format!("x.{} = s.{s}", c.quoted())).collect();
        let overriding =
            if table.identity_key() == Some(IdentityKind::Always) { " OVERRIDING SYSTEM VALUE" } else { "" };
        let note = if table.has_note() { ", note = 'merged'" } else { "" };
        Statement::new(
            format!(
                "MERGE INTO {} AS x USING (VALUES {}) AS s({}, sn) ON {} \
                 WHEN MATCHED AND x.n > 12 THEN DELETE \
                 WHEN MATCHED THEN UPDATE SET n = x.n + s.sn{note} \
                 WHEN NOT MATCHED THEN INSERT ({}, n){overriding} VALUES ({}, s.sn)",
                table.qname(),
                rows.join(", "),
                names.join(", "),
                on.join(" AND "),
                table.key_list(),
                names.iter().map(|s| format!("s.{s}")).collect::<Vec<_>>().join(", ")
            ),
            vec![table.id],
        )
    }

    /// A DO block whose inner block fails and is undone, or not.
    fn exception_block(&mut self) -> Statement {
        let simple = |world: &mut World| loop {
            let tables = world.writable_tables();
            let table = world.tables[*world.rng.pick(&tables)].clone();
            let statement = match world.rng.below(3) {
                0 => Some(world.insert_values(&table)),
                1 => world.update_by_key(&table),
                _ => Some(world.delete(&table)),
            };
            if let Some(statement) = statement {
                return statement;
            }
        };
        let (outer, inner) = (simple(self), simple(self));
        let raise = if self.rng.percent(70) { "\n        RAISE EXCEPTION 'undone';" } else { "" };
        let mut mentions = outer.mentions.clone();
        mentions.extend(inner.mentions.iter().copied());
        Statement::new(
            format!(
                "DO $dm$\nBEGIN\n    {};\n    BEGIN\n        {};{raise}\n    EXCEPTION WHEN OTHERS THEN NULL;\n    END;\nEND\n$dm$",
                outer.sql, inner.sql
            ),
            mentions,
        )
    }

    /// A statement on `table` that calls a row function (see [`RowFunction`]) for each of its
    /// rows: the function writes a row of its own table, this one (under the same key or the
    /// next ones) or another, between the statement's own row changes. The function's argument
    /// is the row's counter or the number its key was made from, so the statement does the
    /// same on every run. A write that collides with the statement's own (a key both insert,
    /// a row the function changed before the statement reaches it) fails the statement, the
    /// same way every time, as other failing statements do.
    fn row_function_statement(&mut self, table: &Table) -> Option<Statement> {
        let writable = self.writable_tables();
        let functions: Vec<RowFunction> =
            self.row_functions.iter().filter(|f| writable.contains(&f.target)).cloned().collect();
        if functions.is_empty() {
            return None;
        }
        let own: Vec<RowFunction> =
            functions.iter().filter(|f| self.tables[f.target].id == table.id).cloned().collect();
        let function = if !own.is_empty() && self.rng.percent(50) {
            self.rng.pick(&own).clone()
        } else {
            self.rng.pick(&functions).clone()
        };
        self.used.insert("row_functions");
        let (f, name, keys, overriding) = (&function.name, table.qname(), table.key_list(), table.overriding());
        // The function's key: the row's own, or one of the next.
        let shift = self.rng.below(3);
        let first = self.rng.between(1, DOMAIN);
        let series = format!("generate_series({first}, {}) g", first + self.rng.between(2, 6));
        let made = table.key_exprs("g").join(", ");
        let condition = if self.rng.percent(40) { self.key_condition(table) } else { self.some_rows() };
        let on_conflict = if self.chance("on_conflict", 40) { " ON CONFLICT DO NOTHING" } else { "" };
        let sql = match self.rng.below(9) {
            // In the select list of INSERT ... SELECT.
            0 => format!(
                "INSERT INTO {name} ({keys}, n){overriding} SELECT {made}, {f}(g + {shift}) % 20 FROM {series}{on_conflict}"
            ),
            // In a VALUES list, perhaps again in ON CONFLICT's SET list.
            1 => {
                let rows: Vec<String> = (0..self.rng.between(1, 3))
                    .map(|_| {
                        let g = self.rng.between(1, DOMAIN);
                        format!("({}, {f}({}) % 20)", table.key_exprs(&g.to_string()).join(", "), g + shift)
                    })
                    .collect();
                let on_conflict = if self.chance("on_conflict", 50) {
                    format!(" ON CONFLICT ({keys}) DO UPDATE SET n = {f}(x.n + {shift}) % 20")
                } else {
                    on_conflict.to_string()
                };
                format!("INSERT INTO {name} AS x ({keys}, n){overriding} VALUES {}{on_conflict}", rows.join(", "))
            }
            // In the SET list of an UPDATE.
            2 => format!("UPDATE {name} SET n = {f}(n + {shift}) % 20 WHERE {condition}"),
            // In the WHERE clause of an UPDATE or a DELETE.
            3 => format!("UPDATE {name} SET n = n + 1 WHERE {condition} AND {f}(n + {shift}) % 2 = 0"),
            4 => format!("DELETE FROM {name} WHERE {condition} AND {f}(n + {shift}) % 2 = 0"),
            // In RETURNING, evaluated as each row is changed.
            5 => format!("UPDATE {name} SET n = n + 1 WHERE {condition} RETURNING {f}(n + {shift})"),
            6 => format!("DELETE FROM {name} WHERE {condition} RETURNING {f}(n + {shift})"),
            // After each row a data-modifying CTE changed, as the outer query reads it.
            7 => format!(
                "WITH changed AS (UPDATE {name} SET n = n + 1 WHERE {condition} RETURNING n) \
                 SELECT count({f}(n + {shift})) FROM changed"
            ),
            // Rows deleted by a CTE and inserted again under the same keys, the function
            // called between.
            _ => format!(
                "WITH gone AS (DELETE FROM {name} WHERE {condition} RETURNING {keys}, n) \
                 INSERT INTO {name} ({keys}, n){overriding} SELECT {keys}, {f}(n + {shift}) % 20 FROM gone"
            ),
        };
        let mut mentions = vec![table.id, function.id];
        if self.tables[function.target].id != table.id {
            mentions.push(self.tables[function.target].id);
        }
        Some(Statement::new(sql, mentions))
    }

    /// An update that changes no value: nothing to capture.
    fn no_op_update(&mut self, table: &Table) -> Statement {
        let condition = self.some_rows();
        Statement::new(format!("UPDATE {} SET n = n WHERE {condition}", table.qname()), vec![table.id])
    }

    /// One DDL step, changing the model as the DDL changes the schema.
    fn ddl(&mut self) -> Option<Ddl> {
        for _ in 0..20 {
            let before_export = self.features.has("ddl_before_export") && self.rng.percent(50);
            let kind = self.rng.below(9);
            // DROP TYPE ... CASCADE drops mirrored columns, which capture refuses to carry.
            let streamed = kind < 7 && self.features.has("ddl_stream") && self.rng.percent(50);
            let ddl = match kind {
                0 => self.add_column(),
                1 => self.drop_column(),
                2 => self.rename_column(),
                3 => self.retype_column(),
                4 => self.rename_table(),
                5 => self.create_table(),
                6 => self.drop_table(),
                _ if self.features.has("drop_type") => self.drop_type(),
                _ => None,
            };
            if let Some(mut ddl) = ddl {
                if streamed {
                    self.used.insert("ddl_stream");
                    ddl.streamed = true;
                } else {
                    if before_export {
                        self.used.insert("ddl_before_export");
                    }
                    ddl.before_export = before_export;
                }
                return Some(ddl);
            }
        }
        None
    }

    fn ddl_step(sql: String, mentions: Vec<ObjectId>) -> Option<Ddl> {
        Some(Ddl { sql, master_sql: String::new(), mentions, before_export: false, streamed: false })
    }

    /// A live table that is not the log, and (for `own`) has a typed column of its own.
    fn ddl_table(&mut self, unpinned: bool) -> Option<usize> {
        let candidates: Vec<usize> = self
            .live_tables()
            .into_iter()
            .filter(|&t| !self.tables[t].log && (!unpinned || !self.tables[t].pinned))
            .collect();
        (!candidates.is_empty()).then(|| *self.rng.pick(&candidates))
    }

    /// A typed column that table `t` has of its own (not inherited), and its position.
    fn own_typed_column(&mut self, t: usize) -> Option<usize> {
        let table = &self.tables[t];
        let inherited: Vec<String> =
            table.parent.map(|p| self.tables[p].columns.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
        let candidates: Vec<usize> = (0..table.columns.len())
            .filter(|&i| table.columns[i].role == Role::Typed && !inherited.contains(&table.columns[i].name))
            .collect();
        (!candidates.is_empty()).then(|| *self.rng.pick(&candidates))
    }

    /// Applies `change` to the column named `name` of table `t` and of the tables inheriting it.
    fn change_column(&mut self, t: usize, name: &str, change: &dyn Fn(&mut Table, usize)) {
        let mut tables = vec![t];
        while let Some(t) = tables.pop() {
            tables.extend(self.tables[t].children.iter().copied());
            let table = &mut self.tables[t];
            if let Some(i) = table.columns.iter().position(|c| c.name == name) {
                change(table, i);
            }
        }
    }

    fn add_column(&mut self) -> Option<Ddl> {
        let t = self.ddl_table(false)?;
        let mut column = self.typed_column();
        // A regrole constant cannot be a default: a role is a shared object, which a column's
        // default cannot depend on ("constant of the type regrole cannot be used here").
        if self.rng.percent(40) && column.base_type() != "regrole" {
            let value = self.value(&column);
            column.default = value.is_some().then(|| World::sql_value(&value, &column));
        }
        let sql =
            format!("ALTER TABLE {} ADD COLUMN {};", self.tables[t].qname(), super::schema::column_definition(&column));
        let mut tables = vec![t];
        while let Some(t) = tables.pop() {
            tables.extend(self.tables[t].children.iter().copied());
            self.tables[t].columns.push(column.clone());
        }
        let mut mentions = vec![self.tables[t].id];
        mentions.extend(self.type_mentions(&column));
        Self::ddl_step(sql, mentions)
    }

    fn type_mentions(&self, column: &Column) -> Vec<ObjectId> {
        match &column.gen {
            Gen::User(u) | Gen::UserArray(u) => self.user_types.get(u).copied().into_iter().collect(),
            _ => vec![],
        }
    }

    fn drop_column(&mut self) -> Option<Ddl> {
        let t = self.ddl_table(false)?;
        let i = self.own_typed_column(t)?;
        let name = self.tables[t].columns[i].name.clone();
        let sql = format!("ALTER TABLE {} DROP COLUMN {};", self.tables[t].qname(), ident(&name));
        self.change_column(t, &name, &|table, i| {
            table.columns.remove(i);
            // Keys come before every typed column, so their positions stay.
        });
        Self::ddl_step(sql, vec![self.tables[t].id])
    }

    fn rename_column(&mut self) -> Option<Ddl> {
        let t = self.ddl_table(false)?;
        let i = self.own_typed_column(t)?;
        let name = self.tables[t].columns[i].name.clone();
        self.names += 1;
        let new_name = format!("{name} {}", self.names);
        let sql =
            format!("ALTER TABLE {} RENAME COLUMN {} TO {};", self.tables[t].qname(), ident(&name), ident(&new_name));
        self.change_column(t, &name, &|table, i| table.columns[i].name = new_name.clone());
        Self::ddl_step(sql, vec![self.tables[t].id])
    }

    /// A column changed to text (through each type's output), or an integer widened.
    fn retype_column(&mut self) -> Option<Ddl> {
        let t = self.ddl_table(false)?;
        let i = self.own_typed_column(t)?;
        let column = self.tables[t].columns[i].clone();
        let new_type = match column.base_type() {
            "integer" | "smallint" => "bigint",
            "real" => "double precision",
            _ => "text",
        };
        let sql = format!(
            "ALTER TABLE {} ALTER COLUMN {c} TYPE {new_type} USING {c}::{new_type};",
            self.tables[t].qname(),
            c = column.quoted()
        );
        let mut mentions = vec![self.tables[t].id];
        mentions.extend(self.type_mentions(&column));
        self.change_column(t, &column.name, &|table, i| {
            table.columns[i].sql_type = new_type.to_string();
            table.columns[i].gen = Gen::Sample(new_type.to_string());
            table.columns[i].default = None;
        });
        // ALTER TYPE would convert a default of the old type too: drop it first.
        let sql = if column.default.is_some() {
            format!("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT;\n{sql}", self.tables[t].qname(), column.quoted())
        } else {
            sql
        };
        Self::ddl_step(sql, mentions)
    }

    fn rename_table(&mut self) -> Option<Ddl> {
        let t = self.ddl_table(true)?;
        let old = self.tables[t].qname();
        let (_, name) = self.table_name();
        let sql = format!("ALTER TABLE {old} RENAME TO {};", ident(&name));
        self.tables[t].name = name;
        Self::ddl_step(sql, vec![self.tables[t].id])
    }

    fn create_table(&mut self) -> Option<Ddl> {
        let table = self.data_table();
        if let Some(&sessions) = self.owners.values().max() {
            let owner = self.rng.below(sessions + 1);
            self.owners.insert(table.id, owner);
        }
        self.tables.push(table);
        let t = self.tables.len() - 1;
        let sql = self.create_table_sql(t);
        let mut mentions = vec![self.tables[t].id];
        mentions.extend(self.table_depends(t));
        let master_sql = self.mirror_sql(t);
        Some(Ddl { sql, master_sql, mentions, before_export: false, streamed: false })
    }

    fn drop_table(&mut self) -> Option<Ddl> {
        let t = self.ddl_table(true)?;
        if !self.tables[t].children.is_empty() || self.live_tables().len() <= 2 {
            return None;
        }
        self.tables[t].dropped = true;
        if let Some(parent) = self.tables[t].parent {
            self.tables[parent].children.retain(|&c| c != t);
        }
        Self::ddl_step(format!("DROP TABLE {} CASCADE;", self.tables[t].qname()), vec![self.tables[t].id])
    }

    /// DROP TYPE mood CASCADE, which drops every column of the enum (and of its array).
    fn drop_type(&mut self) -> Option<Ddl> {
        let mood = *self.user_types.get(&super::schema::UserType::Mood)?;
        let uses_mood = |c: &Column| {
            matches!(c.gen, Gen::User(super::schema::UserType::Mood) | Gen::UserArray(super::schema::UserType::Mood))
        };
        let live = self.live_tables();
        if self.mood_dropped
            || live.iter().any(|&t| self.tables[t].key_columns().iter().any(|c| c.gen == Gen::Key(KeyKind::Mood)))
            || !live.iter().any(|&t| self.tables[t].columns.iter().any(uses_mood))
        {
            return None;
        }
        self.mood_dropped = true;
        self.used.insert("drop_type");
        let mut mentions = vec![mood];
        for t in live {
            if self.tables[t].columns.iter().any(uses_mood) {
                mentions.push(self.tables[t].id);
                self.tables[t].columns.retain(|c| !uses_mood(c));
            }
        }
        Self::ddl_step("DROP TYPE mood CASCADE;".into(), mentions)
    }
}
