//! The generator's model of the schema: tables, their columns and what values each column
//! takes, kept up to date as DDL changes it; and the schema objects made from it, triggers and
//! mirroring included.

use std::collections::{BTreeMap, BTreeSet};

use super::{ident, literal, Features, Object, ObjectId, Random};
use crate::samples::{samples, typed};

/// Key values are drawn from this many per key type, so that inserts collide, updates and
/// deletes find rows, and parent and child tables share keys.
pub const DOMAIN: usize = 10;

/// The types a primary key column can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Int,
    BigInt,
    Text,
    Uuid,
    Date,
    Numeric,
    Bytea,
    Timestamptz,
    Mood,
}

impl KeyKind {
    pub fn sql_type(self) -> &'static str {
        match self {
            KeyKind::Int => "integer",
            KeyKind::BigInt => "bigint",
            KeyKind::Text => "text",
            KeyKind::Uuid => "uuid",
            KeyKind::Date => "date",
            KeyKind::Numeric => "numeric",
            KeyKind::Bytea => "bytea",
            KeyKind::Timestamptz => "timestamp with time zone",
            KeyKind::Mood => "mood",
        }
    }

    /// The text of key value `i` (`0..DOMAIN`); value 0 is the type's edge case.
    pub fn text(self, i: usize) -> String {
        match (self, i) {
            (KeyKind::Int, _) => i.to_string(),
            (KeyKind::BigInt, 0) => i64::MIN.to_string(),
            (KeyKind::BigInt, _) => (i as i64 * 1_000_000_000_000).to_string(),
            (KeyKind::Text, 0) => String::new(),
            (KeyKind::Text, 1) => "quote ' and \\ backslash".into(),
            (KeyKind::Text, 2) => "ünï ☃ \"k\"".into(),
            (KeyKind::Text, _) => format!("k{i}"),
            (KeyKind::Uuid, _) => format!("00000000-0000-0000-0000-{i:012x}"),
            (KeyKind::Date, 0) => "infinity".into(),
            (KeyKind::Date, _) => format!("2024-01-{i:02}"),
            (KeyKind::Numeric, 0) => "NaN".into(),
            (KeyKind::Numeric, _) => format!("{i}.5"),
            (KeyKind::Bytea, 0) => "\\x".into(),
            (KeyKind::Bytea, _) => format!("\\x{i:02x}"),
            (KeyKind::Timestamptz, 0) => "-infinity".into(),
            (KeyKind::Timestamptz, _) => format!("2024-01-01 {i:02}:00:00+00"),
            (KeyKind::Mood, _) => MOOD[i % MOOD.len()].into(),
        }
    }

    /// An expression of this type for the integer expression `g` (1 to 2 * DOMAIN): the same
    /// value as [`text`](Self::text) of `g` where both exist, so bulk inserts collide with
    /// single ones.
    pub fn expr(self, g: &str) -> String {
        match self {
            KeyKind::Int => format!("({g})"),
            KeyKind::BigInt => format!("(({g})::bigint * 1000000000000)"),
            KeyKind::Text => format!("('k' || ({g}))"),
            KeyKind::Uuid => format!("('00000000-0000-0000-0000-' || lpad(to_hex({g}), 12, '0'))::uuid"),
            KeyKind::Date => format!("('2023-12-31'::date + ({g}))"),
            KeyKind::Numeric => format!("(({g}) + 0.5)"),
            KeyKind::Bytea => format!("decode(lpad(to_hex({g}), 2, '0'), 'hex')"),
            KeyKind::Timestamptz => format!("('2024-01-01 00:00:00+00'::timestamptz + ({g}) * interval '1 hour')"),
            KeyKind::Mood => format!("(enum_range(NULL::mood))[1 + ({g}) % 4]"),
        }
    }
}

/// The labels of enum `mood`.
pub const MOOD: &[&str] = &["sad", "o'k", "happy ☃", "with \"quotes\""];

/// The user-defined types a scenario may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UserType {
    Mood,
    Pair,
    Positive,
    Tags,
    FloatRange,
    FloatMultirange,
}

impl UserType {
    pub fn sql_type(self) -> &'static str {
        match self {
            UserType::Mood => "mood",
            UserType::Pair => "pair",
            UserType::Positive => "positive",
            UserType::Tags => "tags",
            UserType::FloatRange => "floatrange",
            UserType::FloatMultirange => "floatmultirange",
        }
    }

    /// Sample values as text, edge values first.
    fn samples(self) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|v| v.to_string()).collect();
        match self {
            UserType::Mood => s(MOOD),
            UserType::Pair => vec![
                composite(&[Some("1"), Some("a \"b\", (c)\\"), Some("{1.5,NaN}")]),
                composite(&[None, Some(""), Some("{}")]),
                composite(&[Some("-7"), None, None]),
            ],
            UserType::Positive => s(&["0.001", "Infinity", "12345678901234567890.5"]),
            UserType::Tags => s(&["{x,\"y z\",NULL}", "{}", "{\"a,b\",\"\\\\\"}"]),
            UserType::FloatRange => s(&["[1.5,Infinity)", "empty", "(-Infinity,0]", "[-0.5,0.25]"]),
            UserType::FloatMultirange => s(&["{[1,2),[3,4)}", "{}", "{(,0]}"]),
        }
    }
}

/// The text of a composite value (NULL fields empty, every other field quoted).
fn composite(fields: &[Option<&str>]) -> String {
    let fields: Vec<String> = fields.iter().map(|f| f.map(quote_element).unwrap_or_default()).collect();
    format!("({})", fields.join(","))
}

/// An array or composite element, double-quoted as array_in and record_in read it.
fn quote_element(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The text of an array of `elements` (None is NULL); `box` separates elements with `;`.
pub fn array_text(elements: &[Option<String>], delimiter: char) -> String {
    let elements: Vec<String> =
        elements.iter().map(|e| e.as_deref().map(quote_element).unwrap_or_else(|| "NULL".into())).collect();
    format!("{{{}}}", elements.join(&delimiter.to_string()))
}

/// What values a column takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Gen {
    Key(KeyKind),
    /// An identity column: values 1 to 2 * DOMAIN where a value is named.
    Identity,
    /// Column `n`: small integers, which triggers count up and generated columns read.
    Counter,
    /// Column `note`: short texts, which BEFORE triggers append to.
    Note,
    Sample(String),
    SampleArray(String),
    User(UserType),
    UserArray(UserType),
    /// A stored generated column: never written.
    Generated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    Always,
    ByDefault,
}

impl IdentityKind {
    fn sql(self) -> &'static str {
        match self {
            IdentityKind::Always => "GENERATED ALWAYS AS IDENTITY",
            IdentityKind::ByDefault => "GENERATED BY DEFAULT AS IDENTITY",
        }
    }
}

/// What a column is for, which decides what statements and DDL may do with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Key,
    Counter,
    Note,
    /// A column of a random type, free for DDL to drop, rename or retype.
    Typed,
    Identity(IdentityKind),
    Generated,
    /// Part of a foreign key to `table`'s key column number `position`.
    Reference {
        table: usize,
        position: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub sql_type: String,
    pub gen: Gen,
    pub role: Role,
    /// A constant default, as SQL.
    pub default: Option<String>,
}

impl Column {
    pub fn new(name: impl Into<String>, sql_type: impl Into<String>, gen: Gen, role: Role) -> Column {
        Column { name: name.into(), sql_type: sql_type.into(), gen, role, default: None }
    }

    /// The type without a generation clause.
    pub fn base_type(&self) -> &str {
        self.sql_type.split(" GENERATED").next().unwrap_or(&self.sql_type)
    }

    pub fn quoted(&self) -> String {
        ident(&self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub id: ObjectId,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// Positions in `columns`.
    pub key: Vec<usize>,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// The table user triggers write into.
    pub log: bool,
    /// Named inside trigger functions: renaming or dropping it would break them.
    pub pinned: bool,
    pub dropped: bool,
    /// Tables with a foreign key to this one.
    pub referenced_by: Vec<usize>,
}

impl Table {
    pub fn qname(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }

    pub fn key_columns(&self) -> Vec<&Column> {
        self.key.iter().map(|&k| &self.columns[k]).collect()
    }

    /// The key as a quoted column list: `"k1", "k2"`.
    pub fn key_list(&self) -> String {
        self.key_columns().iter().map(|c| c.quoted()).collect::<Vec<_>>().join(", ")
    }

    pub fn identity_key(&self) -> Option<IdentityKind> {
        match self.key_columns().as_slice() {
            [Column { role: Role::Identity(kind), .. }] => Some(*kind),
            _ => None,
        }
    }

    /// Whether it has the `note` column (the log does not).
    pub fn has_note(&self) -> bool {
        self.columns.iter().any(|c| c.role == Role::Note)
    }

    pub fn column(&self, role: &Role) -> Option<&Column> {
        self.columns.iter().find(|c| &c.role == role)
    }

    /// An expression for each key column for the integer expression `g`, as bulk inserts make
    /// keys: the first column's value `g`, the others' `g % 3 + 1`, an identity `g` itself.
    pub fn key_exprs(&self, g: &str) -> Vec<String> {
        self.key_columns()
            .iter()
            .enumerate()
            .map(|(position, column)| {
                let g = if position == 0 { g.to_string() } else { format!("({g}) % 3 + 1") };
                match column.gen {
                    Gen::Key(kind) => kind.expr(&g),
                    _ => format!("({g})"),
                }
            })
            .collect()
    }

    /// What an INSERT that names the key columns needs: OVERRIDING SYSTEM VALUE for an
    /// identity key GENERATED ALWAYS.
    pub fn overriding(&self) -> &'static str {
        if self.identity_key() == Some(IdentityKind::Always) {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        }
    }

    /// Whether it can have triggers with transition tables (not with inheritance).
    fn plain(&self) -> bool {
        self.parent.is_none() && self.children.is_empty()
    }
}

/// How a table comes to be mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirroring {
    Function,
    Seed,
    /// dbmirror_mirror_table(), then the seed's trigger as well.
    FunctionThenSeed,
    /// The seed's trigger, then dbmirror_mirror_table() (which finds it and does nothing).
    SeedThenFunction,
}

/// A VOLATILE function that statements call per row (feature `row_functions`): it writes the
/// row of table `target` whose key its integer argument names (as [`Table::key_exprs`] makes
/// keys) and returns the argument. Called from a statement's expressions, it changes rows in the
/// middle of the statement, between the statement's own rows, as no trigger is involved in.
#[derive(Debug, Clone)]
pub struct RowFunction {
    pub id: ObjectId,
    pub name: String,
    /// Index of the table it writes, in `World::tables`.
    pub target: usize,
}

/// The generator's state: the random source, the objects made so far, and the schema model.
pub struct World {
    pub features: Features,
    pub rng: Random,
    pub objects: Vec<Object>,
    pub next_id: ObjectId,
    pub tables: Vec<Table>,
    pub used: BTreeSet<&'static str>,
    pub user_types: BTreeMap<UserType, ObjectId>,
    pub mood_dropped: bool,
    pub samples: BTreeMap<&'static str, Vec<String>>,
    /// Schemas tables may live in, with the object that creates each (None for public).
    pub schemas: Vec<(String, Option<ObjectId>)>,
    /// Numbers for table names, so that names made by DDL never repeat.
    pub names: usize,
    /// Prepared transactions so far, for their names.
    pub gids: usize,
    /// While a unit of a partitioned scenario is generated: its partition, of how many.
    pub partition: Option<(usize, usize)>,
    /// In a partitioned scenario, the session each table belongs to.
    pub owners: BTreeMap<ObjectId, usize>,
    /// Functions that statements call per row.
    pub row_functions: Vec<RowFunction>,
}

/// Types worth meeting more often than their share of the catalog gives them.
const HIGHLIGHTED: &[&str] = &[
    "jsonb",
    "bytea",
    "numeric",
    "double precision",
    "real",
    "timestamp with time zone",
    "date",
    "interval",
    "text",
    "int4range",
    "tstzrange",
    "boolean",
];

/// Types of columns when `types` is off.
const PLAIN: &[&str] = &["integer", "text", "boolean", "numeric"];

impl World {
    pub fn new(seed: u64, features: &Features) -> World {
        World {
            features: features.clone(),
            rng: Random::new(seed),
            objects: Vec::new(),
            next_id: 0,
            tables: Vec::new(),
            used: BTreeSet::new(),
            user_types: BTreeMap::new(),
            mood_dropped: false,
            samples: samples(),
            schemas: vec![("public".into(), None)],
            names: 0,
            gids: 0,
            partition: None,
            owners: BTreeMap::new(),
            row_functions: Vec::new(),
        }
    }

    /// Whether feature `name` is on and, with probability `percent`, to be used now; records
    /// its use.
    pub fn chance(&mut self, name: &'static str, percent: usize) -> bool {
        if self.features.has(name) && self.rng.percent(percent) {
            self.used.insert(name);
            true
        } else {
            false
        }
    }

    pub fn new_id(&mut self) -> ObjectId {
        self.next_id += 1;
        self.next_id - 1
    }

    fn object(&mut self, what: String, sql: String, depends: Vec<ObjectId>) -> ObjectId {
        let id = self.new_id();
        self.objects.push(Object { id, what, sql, depends, master_only: false, removable: true });
        id
    }

    pub fn live_tables(&self) -> Vec<usize> {
        (0..self.tables.len()).filter(|&t| !self.tables[t].dropped).collect()
    }

    /// The schema: types, tables, foreign keys, functions, triggers, and the master's capture.
    pub fn generate_schema(&mut self) {
        if self.chance("identifiers", 60) {
            let name = "Other \"Schema\" ☃".to_string();
            let id =
                self.object(format!("schema {}", ident(&name)), format!("CREATE SCHEMA {};", ident(&name)), vec![]);
            self.schemas.push((name, Some(id)));
        }
        if self.chance("user_types", 85) {
            self.create_user_types();
        }
        // The log is where user triggers write; every trigger is made with it.
        let triggers = [
            "before_row_triggers",
            "upsert_triggers",
            "triggers_before_capture",
            "triggers_after_capture",
            "before_row_writes",
            "statement_triggers",
            "truncate_triggers",
            "deferred_triggers",
        ];
        if triggers.iter().any(|t| self.features.has(t)) {
            self.create_log();
        }
        let count = self.rng.between(2, 4);
        for _ in 0..count {
            let table = self.data_table();
            self.tables.push(table);
        }
        self.add_foreign_key_columns();
        let data: Vec<usize> = (0..self.tables.len()).filter(|&t| !self.tables[t].log).collect();
        if self.features.has("inheritance") {
            let parents: Vec<usize> =
                data.iter().copied().filter(|&t| self.tables[t].identity_key().is_none()).collect();
            if !parents.is_empty() && self.rng.percent(60) {
                self.used.insert("inheritance");
                let parent = *self.rng.pick(&parents);
                self.add_child(parent);
            }
        }
        for t in 0..self.tables.len() {
            self.create_table_object(t);
        }
        self.create_foreign_keys();
        self.create_triggers();
        self.create_row_functions();
        for t in 0..self.tables.len() {
            self.mirror(t);
        }
    }

    fn create_user_types(&mut self) {
        let labels: Vec<String> = MOOD.iter().map(|l| literal(l)).collect();
        let types = [
            (UserType::Mood, format!("CREATE TYPE mood AS ENUM ({});", labels.join(", "))),
            (UserType::Pair, "CREATE TYPE pair AS (a integer, b text, c numeric[]);".into()),
            (UserType::Positive, "CREATE DOMAIN positive AS numeric CHECK (VALUE > 0);".into()),
            (UserType::Tags, "CREATE DOMAIN tags AS text[] CHECK (cardinality(VALUE) < 10);".into()),
            (UserType::FloatRange, "CREATE TYPE floatrange AS RANGE (subtype = float8);".into()),
        ];
        for (user_type, sql) in types {
            let id = self.object(format!("type {}", user_type.sql_type()), sql, vec![]);
            self.user_types.insert(user_type, id);
        }
        // The multirange comes with the range.
        let range = self.user_types[&UserType::FloatRange];
        self.user_types.insert(UserType::FloatMultirange, range);
    }

    fn create_log(&mut self) {
        let id = self.new_id();
        let columns = vec![
            Column::new("id", "bigint", Gen::Identity, Role::Identity(IdentityKind::ByDefault)),
            Column::new("src", "text", Gen::Note, Role::Typed),
            Column::new("op", "text", Gen::Note, Role::Typed),
            Column::new("n", "integer", Gen::Counter, Role::Counter),
        ];
        self.tables.push(Table {
            id,
            schema: "public".into(),
            name: "dm_log".into(),
            columns,
            key: vec![0],
            parent: None,
            children: vec![],
            log: true,
            pinned: true,
            dropped: false,
            referenced_by: vec![],
        });
    }

    /// A new table's name and schema.
    pub fn table_name(&mut self) -> (String, String) {
        self.names += 1;
        let n = self.names;
        let name = if self.chance("identifiers", 35) {
            self.rng
                .pick(&[format!("Tab \"{n}\" ☃"), format!("UPPER{n}"), format!("select {n}"), format!("ünï cöde {n}")])
                .clone()
        } else {
            format!("t{n}")
        };
        let schema = if self.schemas.len() > 1 && self.rng.percent(30) {
            self.schemas[1].0.clone()
        } else {
            "public".to_string()
        };
        (schema, name)
    }

    fn key_kinds(&self) -> Vec<KeyKind> {
        let mut kinds = vec![
            KeyKind::Int,
            KeyKind::Int,
            KeyKind::Text,
            KeyKind::Text,
            KeyKind::BigInt,
            KeyKind::Uuid,
            KeyKind::Date,
            KeyKind::Numeric,
            KeyKind::Bytea,
            KeyKind::Timestamptz,
        ];
        if self.user_types.contains_key(&UserType::Mood) && !self.mood_dropped {
            kinds.push(KeyKind::Mood);
        }
        kinds
    }

    /// A data table: a key, `n`, `note`, columns of random types, and perhaps an identity
    /// column and a generated one. `fresh` tables (made by DDL) have no identity key.
    pub fn data_table(&mut self) -> Table {
        let id = self.new_id();
        let (schema, name) = self.table_name();
        let mut columns = Vec::new();
        let identity_key = self.chance("identity", 25);
        if identity_key {
            let kind = if self.rng.percent(50) { IdentityKind::Always } else { IdentityKind::ByDefault };
            columns.push(Column::new("id", "bigint", Gen::Identity, Role::Identity(kind)));
        } else {
            let count = if self.chance("composite_keys", 40) { self.rng.between(2, 3) } else { 1 };
            let kinds = self.key_kinds();
            for k in 0..count {
                let kind = *self.rng.pick(&kinds);
                let name = if self.chance("identifiers", 25) {
                    self.rng.pick(&[format!("Key ü{k}"), format!("from{k}"), format!("K\"{k}\"")]).clone()
                } else {
                    format!("k{}", k + 1)
                };
                columns.push(Column::new(name, kind.sql_type(), Gen::Key(kind), Role::Key));
            }
        }
        let key = (0..columns.len()).collect();
        columns.push(Column::new("n", "integer", Gen::Counter, Role::Counter));
        columns.push(Column::new("note", "text", Gen::Note, Role::Note));
        for _ in 0..self.rng.between(1, 4) {
            let column = self.typed_column();
            columns.push(column);
        }
        if !identity_key && self.chance("identity", 30) {
            let kind = if self.rng.percent(50) { IdentityKind::Always } else { IdentityKind::ByDefault };
            columns.push(Column::new("seq", "bigint", Gen::Identity, Role::Identity(kind)));
        }
        if self.chance("generated", 40) {
            let (sql_type, expr) =
                if self.rng.percent(50) { ("bigint", "\"n\" * 2 + 1") } else { ("text", "upper(\"note\")") };
            let sql_type = format!("{sql_type} GENERATED ALWAYS AS ({expr}) STORED");
            columns.push(Column::new("g", sql_type, Gen::Generated, Role::Generated));
        }
        Table {
            id,
            schema,
            name,
            columns,
            key,
            parent: None,
            children: vec![],
            log: false,
            pinned: false,
            dropped: false,
            referenced_by: vec![],
        }
    }

    /// A column of a random type, with a fresh name.
    pub fn typed_column(&mut self) -> Column {
        self.names += 1;
        let name = if self.chance("identifiers", 25) {
            self.rng.pick(&[format!("Col \"{}\" é", self.names), format!("order{}", self.names)]).clone()
        } else {
            format!("c{}", self.names)
        };
        let (sql_type, gen) = self.random_type();
        Column::new(name, sql_type, gen, Role::Typed)
    }

    fn random_type(&mut self) -> (String, Gen) {
        let user: Vec<UserType> =
            self.user_types.keys().copied().filter(|t| *t != UserType::Mood || !self.mood_dropped).collect();
        if !user.is_empty() && self.rng.percent(25) {
            let user_type = *self.rng.pick(&user);
            if matches!(user_type, UserType::Mood | UserType::Pair | UserType::FloatRange) && self.chance("arrays", 40)
            {
                return (format!("{}[]", user_type.sql_type()), Gen::UserArray(user_type));
            }
            return (user_type.sql_type().into(), Gen::User(user_type));
        }
        let base = if self.chance("types", 100) {
            if self.rng.percent(40) {
                self.rng.pick(HIGHLIGHTED).to_string()
            } else {
                let all: Vec<&str> = self.samples.keys().copied().collect();
                self.rng.pick(&all).to_string()
            }
        } else {
            self.rng.pick(PLAIN).to_string()
        };
        if self.chance("arrays", 20) {
            (format!("{base}[]"), Gen::SampleArray(base))
        } else {
            (base.clone(), Gen::Sample(base))
        }
    }

    /// Foreign key columns: each later table may reference an earlier one, or itself.
    fn add_foreign_key_columns(&mut self) {
        if !self.features.has("foreign_keys") {
            return;
        }
        let data: Vec<usize> = (0..self.tables.len()).filter(|&t| !self.tables[t].log).collect();
        for (i, &child) in data.iter().enumerate() {
            if !self.rng.percent(60) {
                continue;
            }
            self.used.insert("foreign_keys");
            let target = if i == 0 || self.rng.percent(15) { child } else { data[self.rng.below(i)] };
            let key: Vec<Column> = self.tables[target].key_columns().into_iter().cloned().collect();
            // Half the references have a default, for ON DELETE SET DEFAULT to use.
            let with_default = self.rng.percent(50);
            for (k, column) in key.iter().enumerate() {
                let gen = match column.gen {
                    Gen::Key(kind) => Gen::Key(kind),
                    _ => Gen::Identity,
                };
                let mut reference = Column::new(
                    format!("r{}_{}", target + 1, k + 1),
                    column.sql_type.clone(),
                    gen.clone(),
                    Role::Reference { table: target, position: k },
                );
                if with_default {
                    reference.default = Some(match gen {
                        Gen::Key(kind) => typed(&kind.text(1), kind.sql_type()),
                        _ => "1".into(),
                    });
                }
                self.tables[child].columns.push(reference);
            }
            if !self.tables[target].referenced_by.contains(&child) {
                self.tables[target].referenced_by.push(child);
            }
        }
    }

    fn add_child(&mut self, parent: usize) {
        let id = self.new_id();
        let (schema, _) = self.table_name();
        let p = &self.tables[parent];
        let mut columns = p.columns.clone();
        columns.push(Column::new("extra", "text", Gen::Note, Role::Typed));
        let child = Table {
            id,
            schema,
            name: format!("{} kid", p.name),
            columns,
            key: p.key.clone(),
            parent: Some(parent),
            children: vec![],
            log: false,
            pinned: false,
            dropped: false,
            referenced_by: vec![],
        };
        self.tables.push(child);
        let index = self.tables.len() - 1;
        self.tables[parent].children.push(index);
    }

    /// The objects a table needs first: its schema, its types, its parent.
    pub fn table_depends(&self, t: usize) -> Vec<ObjectId> {
        let table = &self.tables[t];
        let mut depends: Vec<ObjectId> = Vec::new();
        if let Some((_, Some(id))) = self.schemas.iter().find(|(s, _)| *s == table.schema) {
            depends.push(*id);
        }
        for column in &table.columns {
            let user_type = match (&column.gen, &column.role) {
                (Gen::User(u) | Gen::UserArray(u), _) => Some(*u),
                (Gen::Key(KeyKind::Mood), _) => Some(UserType::Mood),
                _ => None,
            };
            if let Some(id) = user_type.and_then(|u| self.user_types.get(&u)) {
                depends.push(*id);
            }
        }
        if let Some(parent) = table.parent {
            depends.push(self.tables[parent].id);
        }
        depends.sort();
        depends.dedup();
        depends
    }

    /// The CREATE TABLE statement of table `t`, as the model has it now.
    pub fn create_table_sql(&self, t: usize) -> String {
        let table = &self.tables[t];
        if let Some(parent) = table.parent {
            let extra = table.columns.last().expect("a child has its own column");
            return format!(
                "CREATE TABLE {} ({} {}, PRIMARY KEY ({})) INHERITS ({});",
                table.qname(),
                extra.quoted(),
                extra.sql_type,
                table.key_list(),
                self.tables[parent].qname()
            );
        }
        let mut lines: Vec<String> = table.columns.iter().map(column_definition).collect();
        lines.push(format!("PRIMARY KEY ({})", table.key_list()));
        format!("CREATE TABLE {} (\n    {}\n);", table.qname(), lines.join(",\n    "))
    }

    fn create_table_object(&mut self, t: usize) {
        let sql = self.create_table_sql(t);
        let depends = self.table_depends(t);
        let id = self.tables[t].id;
        let what = format!("table {}", self.tables[t].qname());
        self.objects.push(Object { id, what, sql, depends, master_only: false, removable: true });
    }

    fn create_foreign_keys(&mut self) {
        for child in 0..self.tables.len() {
            let mut targets: Vec<usize> = self.tables[child]
                .columns
                .iter()
                .filter_map(|c| match c.role {
                    Role::Reference { table, .. } => Some(table),
                    _ => None,
                })
                .collect();
            targets.dedup();
            // Inherited reference columns carry no constraint: foreign keys are not inherited.
            if self.tables[child].parent.is_some() {
                continue;
            }
            for target in targets {
                let columns: Vec<String> = self.tables[child]
                    .columns
                    .iter()
                    .filter(|c| matches!(c.role, Role::Reference { table, .. } if table == target))
                    .map(Column::quoted)
                    .collect();
                let actions = ["NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"];
                let on_delete = *self.rng.pick(&actions);
                let on_update = *self.rng.pick(&actions);
                let deferrable =
                    *self.rng.pick(&["", " DEFERRABLE INITIALLY DEFERRED", " DEFERRABLE INITIALLY IMMEDIATE"]);
                let sql = format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {on_delete} ON UPDATE {on_update}{deferrable};",
                    self.tables[child].qname(),
                    ident(&format!("fk{}_{}", child + 1, target + 1)),
                    columns.join(", "),
                    self.tables[target].qname(),
                    self.tables[target].key_list()
                );
                let what = format!("foreign key of {} to {}", self.tables[child].qname(), self.tables[target].qname());
                let depends = vec![self.tables[child].id, self.tables[target].id];
                self.object(what, sql, depends);
            }
        }
    }

    fn log_table(&self) -> Option<&Table> {
        self.tables.iter().find(|t| t.log)
    }

    /// Trigger functions and user triggers on every data table.
    fn create_triggers(&mut self) {
        let Some(log) = self.log_table() else { return };
        let (log_id, log_name) = (log.id, log.qname());
        let function = |body: &str, returns: &str| {
            format!(
                "LANGUAGE plpgsql AS $fn$\nBEGIN\n    IF pg_trigger_depth() < 4 THEN\n{body}    END IF;\n    RETURN {returns};\nEND\n$fn$;"
            )
        };
        let insert_log = |value: &str| {
            format!("        INSERT INTO {log_name} (src, op, n) VALUES (TG_TABLE_NAME, TG_NAME || ' ' || TG_OP, {value});\n")
        };
        let audit_body = format!(
            "        IF TG_LEVEL = 'STATEMENT' THEN\n    {}        ELSIF TG_OP = 'DELETE' THEN\n    {}        ELSE\n    {}        END IF;\n",
            insert_log("0"),
            insert_log("OLD.n"),
            insert_log("NEW.n")
        );
        let audit = self.object(
            "function dm_audit: writes a row into dm_log".into(),
            format!("CREATE FUNCTION dm_audit() RETURNS trigger {}", function(&audit_body, "NULL")),
            vec![log_id],
        );
        let audit_before = self.object(
            "function dm_audit_before: writes a row into dm_log before the change".into(),
            format!(
                "CREATE FUNCTION dm_audit_before() RETURNS trigger {}",
                function(&audit_body, "CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END")
            ),
            vec![log_id],
        );
        let stamp = self.object(
            "function dm_stamp: changes NEW, and suppresses some deletes".into(),
            "CREATE FUNCTION dm_stamp() RETURNS trigger LANGUAGE plpgsql AS $fn$\nBEGIN\n    \
             IF TG_OP = 'DELETE' THEN\n        IF OLD.n % 7 = 3 THEN\n            RETURN NULL;\n        END IF;\n        RETURN OLD;\n    END IF;\n    \
             NEW.note := coalesce(NEW.note, '') || '+';\n    RETURN NEW;\nEND\n$fn$;"
                .into(),
            vec![],
        );
        let count_new = self.object(
            "function dm_count_new: counts a statement's new rows into dm_log".into(),
            format!(
                "CREATE FUNCTION dm_count_new() RETURNS trigger LANGUAGE plpgsql AS $fn$\nBEGIN\n    \
                 INSERT INTO {log_name} (src, op, n) SELECT TG_TABLE_NAME, TG_NAME || ' ' || TG_OP, count(*) FROM dm_new;\n    RETURN NULL;\nEND\n$fn$;"
            ),
            vec![log_id],
        );
        for t in 0..self.tables.len() {
            if self.tables[t].log {
                continue;
            }
            let table = self.tables[t].clone();
            let on = table.qname();
            let row = "INSERT OR UPDATE OR DELETE";
            let trigger = |world: &mut World, name: &str, sql: String, function: ObjectId, feature: &'static str| {
                world.used.insert(feature);
                let what = format!("trigger {name} on {on}");
                world.object(what, sql, vec![table.id, function]);
            };
            if self.chance("triggers_before_capture", 35) {
                let sql =
                    format!("CREATE TRIGGER a_audit AFTER {row} ON {on} FOR EACH ROW EXECUTE FUNCTION dm_audit();");
                trigger(self, "a_audit", sql, audit, "triggers_before_capture");
            }
            if self.chance("triggers_after_capture", 35) {
                let sql =
                    format!("CREATE TRIGGER z_audit AFTER {row} ON {on} FOR EACH ROW EXECUTE FUNCTION dm_audit();");
                trigger(self, "z_audit", sql, audit, "triggers_after_capture");
            }
            if self.chance("before_row_triggers", 30) {
                let sql =
                    format!("CREATE TRIGGER b_stamp BEFORE {row} ON {on} FOR EACH ROW EXECUTE FUNCTION dm_stamp();");
                trigger(self, "b_stamp", sql, stamp, "before_row_triggers");
            }
            if self.chance("before_row_writes", 25) {
                let sql = format!(
                    "CREATE TRIGGER b_audit BEFORE {row} ON {on} FOR EACH ROW EXECUTE FUNCTION dm_audit_before();"
                );
                trigger(self, "b_audit", sql, audit_before, "before_row_writes");
            }
            if self.chance("statement_triggers", 35) {
                if table.plain() && self.rng.percent(50) {
                    let sql = format!(
                        "CREATE TRIGGER s_count AFTER INSERT ON {on} REFERENCING NEW TABLE AS dm_new FOR EACH STATEMENT EXECUTE FUNCTION dm_count_new();"
                    );
                    trigger(self, "s_count", sql, count_new, "statement_triggers");
                } else {
                    let timing = *self.rng.pick(&["BEFORE", "AFTER"]);
                    let sql = format!(
                        "CREATE TRIGGER s_audit {timing} {row} ON {on} FOR EACH STATEMENT EXECUTE FUNCTION dm_audit();"
                    );
                    trigger(self, "s_audit", sql, audit, "statement_triggers");
                }
            }
            // Rows whose counter ran high expire before each insert into their table.
            if self.chance("statement_triggers", 20) {
                self.tables[t].pinned = true;
                let name = format!("dm_expire_{}", t + 1);
                let body = format!("        DELETE FROM ONLY {on} WHERE n >= 15;\n");
                let function = self.object(
                    format!("function {name}: deletes rows whose counter ran high"),
                    format!("CREATE FUNCTION {name}() RETURNS trigger {}", function(&body, "NULL")),
                    vec![table.id],
                );
                let sql = format!(
                    "CREATE TRIGGER s_expire BEFORE INSERT ON {on} FOR EACH STATEMENT EXECUTE FUNCTION {name}();"
                );
                trigger(self, "s_expire", sql, function, "statement_triggers");
            }
            if self.chance("truncate_triggers", 40) {
                let name = *self.rng.pick(&["a_truncated", "z_truncated"]);
                let sql = format!(
                    "CREATE TRIGGER {name} AFTER TRUNCATE ON {on} FOR EACH STATEMENT EXECUTE FUNCTION dm_audit();"
                );
                trigger(self, name, sql, audit, "truncate_triggers");
            }
            // A table emptied by TRUNCATE gets its first row back at once, as tables of
            // defaults do.
            if self.chance("truncate_triggers", 30) {
                self.tables[t].pinned = true;
                let name = format!("dm_reseed_{}", t + 1);
                let (columns, values): (Vec<String>, Vec<String>) = table
                    .key_columns()
                    .iter()
                    .filter_map(|c| match &c.gen {
                        Gen::Key(kind) => Some((c.quoted(), typed(&kind.text(1), kind.sql_type()))),
                        _ => None,
                    })
                    .unzip();
                let row = if columns.is_empty() {
                    "DEFAULT VALUES".to_string()
                } else {
                    format!("({}) VALUES ({})", columns.join(", "), values.join(", "))
                };
                let function = self.object(
                    format!("function {name}: puts a first row back into a table TRUNCATE emptied"),
                    format!(
                        "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$\nBEGIN\n    \
                         INSERT INTO {on} {row};\n    RETURN NULL;\nEND\n$fn$;"
                    ),
                    vec![table.id],
                );
                let trigger_name = *self.rng.pick(&["a_reseed", "z_reseed"]);
                let sql = format!(
                    "CREATE TRIGGER {trigger_name} AFTER TRUNCATE ON {on} FOR EACH STATEMENT EXECUTE FUNCTION {name}();"
                );
                trigger(self, trigger_name, sql, function, "truncate_triggers");
            }
            let key_match = |prefix: &str| {
                let columns: Vec<String> = table.key_columns().iter().map(|c| c.quoted()).collect();
                let values: Vec<String> = columns.iter().map(|c| format!("{prefix}.{c}")).collect();
                format!("({}) = ({})", columns.join(", "), values.join(", "))
            };
            if self.chance("deferred_triggers", 30) {
                self.tables[t].pinned = true;
                let name = format!("dm_touch_{}", t + 1);
                let body = format!(
                    "        UPDATE ONLY {on} SET n = n + 100 WHERE {};\n{}",
                    key_match("NEW"),
                    insert_log("NEW.n")
                );
                let function = self.object(
                    format!("function {name}: at commit, changes the row again and logs it"),
                    format!("CREATE FUNCTION {name}() RETURNS trigger {}", function(&body, "NULL")),
                    vec![table.id, log_id],
                );
                let sql = format!(
                    "CREATE CONSTRAINT TRIGGER c_touch AFTER INSERT ON {on} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}();"
                );
                trigger(self, "c_touch", sql, function, "deferred_triggers");
            }
            if self.chance("upsert_triggers", 30) {
                self.tables[t].pinned = true;
                let name = format!("dm_upsert_{}", t + 1);
                let body = format!("        DELETE FROM ONLY {on} WHERE {};\n", key_match("NEW"));
                let function = self.object(
                    format!("function {name}: deletes the key an insert brings, so that the insert replaces it"),
                    format!("CREATE FUNCTION {name}() RETURNS trigger {}", function(&body, "NEW")),
                    vec![table.id],
                );
                let trigger_name = *self.rng.pick(&["a_upsert", "z_upsert"]);
                let sql = format!(
                    "CREATE TRIGGER {trigger_name} BEFORE INSERT ON {on} FOR EACH ROW EXECUTE FUNCTION {name}();"
                );
                trigger(self, trigger_name, sql, function, "upsert_triggers");
            }
            // A child table's insert counts up its parent row: a trigger writing into another
            // mirrored table that the workload also changes.
            let mut targets: Vec<usize> = table
                .columns
                .iter()
                .filter_map(|c| match c.role {
                    Role::Reference { table, .. } => Some(table),
                    _ => None,
                })
                .collect();
            targets.dedup();
            for target in targets {
                let feature = if self.rng.percent(50) { "triggers_before_capture" } else { "triggers_after_capture" };
                if !self.chance(feature, 50) {
                    continue;
                }
                self.tables[target].pinned = true;
                let parent = self.tables[target].clone();
                let references: Vec<String> = table
                    .columns
                    .iter()
                    .filter(|c| matches!(c.role, Role::Reference { table, .. } if table == target))
                    .map(|c| format!("NEW.{}", c.quoted()))
                    .collect();
                let name = format!("dm_count_{}_{}", t + 1, target + 1);
                let body = format!(
                    "        UPDATE ONLY {} SET n = n + 1 WHERE ({}) = ({});\n",
                    parent.qname(),
                    parent.key_list(),
                    references.join(", ")
                );
                let function = self.object(
                    format!("function {name}: counts inserts into {} up on {}", table.qname(), parent.qname()),
                    format!("CREATE FUNCTION {name}() RETURNS trigger {}", function(&body, "NULL")),
                    vec![table.id, parent.id],
                );
                let trigger_name = if feature == "triggers_before_capture" { "a_count" } else { "z_count" };
                let trigger_name = format!("{trigger_name}_{}", target + 1);
                let sql = format!(
                    "CREATE TRIGGER {trigger_name} AFTER INSERT ON {on} FOR EACH ROW EXECUTE FUNCTION {name}();"
                );
                trigger(self, &trigger_name, sql, function, feature);
            }
        }
    }

    /// Row functions (see [`RowFunction`]) that delete, update or upsert a row of a table, in
    /// PL/pgSQL or SQL. They exist on the slaves too, which never call them: the schema is the
    /// same on both sides.
    fn create_row_functions(&mut self) {
        if !self.features.has("row_functions") {
            return;
        }
        for t in 0..self.tables.len() {
            let table = self.tables[t].clone();
            let (on, keys) = (table.qname(), table.key_list());
            let key = table.key_exprs("i").join(", ");
            for (verb, percent) in [("delete", 30), ("update", 30), ("upsert", 35)] {
                if !self.rng.percent(percent) {
                    continue;
                }
                let (write, does) = match verb {
                    "delete" => (format!("DELETE FROM ONLY {on} WHERE ({keys}) = ({key})"), "deletes"),
                    "update" => (format!("UPDATE ONLY {on} SET n = n + 1 WHERE ({keys}) = ({key})"), "counts up"),
                    _ => (
                        format!(
                            "INSERT INTO {on} AS x ({keys}, n){} VALUES ({key}, i % 20) ON CONFLICT ({keys}) DO UPDATE SET n = x.n + 1",
                            table.overriding()
                        ),
                        "inserts or counts up",
                    ),
                };
                let name = format!("dm_row_{verb}_{}", t + 1);
                let body = if self.rng.percent(50) {
                    format!("LANGUAGE plpgsql VOLATILE AS $fn$\nBEGIN\n    {write};\n    RETURN i;\nEND\n$fn$;")
                } else {
                    format!("LANGUAGE sql VOLATILE AS $fn$\n    {write};\n    SELECT i;\n$fn$;")
                };
                // Renaming or dropping the table would break the function.
                self.tables[t].pinned = true;
                let id = self.object(
                    format!("function {name}: {does} the row of {on} its argument names"),
                    format!("CREATE FUNCTION {name}(i integer) RETURNS integer {body}"),
                    vec![table.id],
                );
                self.row_functions.push(RowFunction { id, name, target: t });
            }
        }
    }

    /// Mirrors table `t` on the master, with dbmirror_mirror_table() or the seed's trigger.
    pub fn mirror(&mut self, t: usize) {
        let mode = if self.chance("double_mirroring", 15) {
            if self.rng.percent(60) {
                Mirroring::FunctionThenSeed
            } else {
                Mirroring::SeedThenFunction
            }
        } else if self.chance("seed_form", 30) {
            Mirroring::Seed
        } else {
            Mirroring::Function
        };
        let table = &self.tables[t];
        let function = format!("SELECT dbmirror_mirror_table({});", literal(&table.qname()));
        let seed = format!(
            "CREATE TRIGGER {} AFTER INSERT OR DELETE OR UPDATE ON {} FOR EACH ROW EXECUTE PROCEDURE \"recordchange\" ();",
            ident(&format!("{}_Trig", table.name)),
            table.qname()
        );
        let (first, second) = match mode {
            Mirroring::Function => ((function, "dbmirror_mirror_table"), None),
            Mirroring::Seed => ((seed, "the seed's trigger"), None),
            Mirroring::FunctionThenSeed => {
                ((function, "dbmirror_mirror_table"), Some((seed, "the seed's trigger as well")))
            }
            Mirroring::SeedThenFunction => {
                ((seed, "the seed's trigger"), Some((function, "dbmirror_mirror_table as well")))
            }
        };
        let (qname, table_id) = (table.qname(), table.id);
        let id = self.new_id();
        self.objects.push(Object {
            id,
            what: format!("capture of {qname} by {}", first.1),
            sql: first.0,
            depends: vec![table_id],
            master_only: true,
            removable: false,
        });
        if let Some((sql, how)) = second {
            let id = self.new_id();
            self.objects.push(Object {
                id,
                what: format!("capture of {qname} by {how}"),
                sql,
                depends: vec![table_id],
                master_only: true,
                removable: true,
            });
        }
    }

    /// The SQL that mirrors a table DDL made, on the master (as [`mirror`](Self::mirror)
    /// would, but as text for a DDL step).
    pub fn mirror_sql(&mut self, t: usize) -> String {
        let before = self.objects.len();
        self.mirror(t);
        let sql: Vec<String> = self.objects.drain(before..).map(|o| o.sql).collect();
        sql.join("\n")
    }

    /// A value for a column: its text, or None for NULL.
    pub fn value(&mut self, column: &Column) -> Option<String> {
        let nullable = !matches!(column.role, Role::Key | Role::Counter | Role::Identity(_));
        if nullable && self.rng.percent(12) {
            return None;
        }
        Some(match &column.gen {
            Gen::Key(kind) => kind.text(self.rng.below(DOMAIN)),
            Gen::Identity => (1 + self.rng.below(2 * DOMAIN)).to_string(),
            Gen::Counter => self.rng.below(20).to_string(),
            Gen::Note => self.rng.pick(&["a", "b", "it's", "tab\there", "ü ☃", "line\nbreak"]).to_string(),
            Gen::Sample(t) => self.sample(t),
            Gen::SampleArray(t) => {
                let count = self.rng.below(4);
                let elements: Vec<Option<String>> =
                    (0..count).map(|_| if self.rng.percent(15) { None } else { Some(self.sample(t)) }).collect();
                array_text(&elements, if t == "box" { ';' } else { ',' })
            }
            Gen::User(u) => self.rng.pick(&u.samples()).clone(),
            Gen::UserArray(u) => {
                let count = self.rng.below(3);
                let samples = u.samples();
                let elements: Vec<Option<String>> = (0..count)
                    .map(|_| if self.rng.percent(15) { None } else { Some(self.rng.pick(&samples).clone()) })
                    .collect();
                array_text(&elements, ',')
            }
            Gen::Generated => unreachable!("generated columns are never written"),
        })
    }

    fn sample(&mut self, t: &str) -> String {
        let values = &self.samples[t];
        // The long text makes every file it is in large: rarely.
        let i = self.rng.below(values.len());
        if values[i].len() > 1000 && self.rng.percent(80) {
            values[0].clone()
        } else {
            values[i].clone()
        }
    }

    /// A value as an SQL expression of the column's type.
    pub fn sql_value(value: &Option<String>, column: &Column) -> String {
        match value {
            None => "NULL".into(),
            Some(text) => typed(text, column.base_type()),
        }
    }
}

/// A column as CREATE TABLE and ADD COLUMN write it.
pub fn column_definition(c: &Column) -> String {
    let mut definition = format!("{} {}", c.quoted(), c.sql_type);
    match &c.role {
        Role::Identity(kind) => definition = format!("{definition} {}", kind.sql()),
        Role::Counter => definition.push_str(" NOT NULL DEFAULT 0"),
        Role::Note => definition.push_str(" DEFAULT 'new'"),
        Role::Key => definition.push_str(" NOT NULL"),
        _ => {}
    }
    if let Some(default) = &c.default {
        definition = format!("{definition} DEFAULT {default}");
    }
    definition
}

/// A value as a field of COPY's text format.
pub fn copy_field(value: &Option<String>) -> String {
    match value {
        None => "\\N".into(),
        Some(text) => text.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r").replace('\t', "\\t"),
    }
}
