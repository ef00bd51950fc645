//! The grammar of transaction files: exactly the statements `dbmirror-export` writes, in the
//! order it writes them. Every statement is checked against it before it is sent to the slave,
//! so a file that crossed the air gap can make the slave do nothing but what a genuine file
//! does: change rows of ordinary tables, check their shape, advance sequences, record itself as
//! applied, and run the master's DDL as far as the slave's [`DdlPolicy`] allows. The DDL's text
//! is one string literal, which the grammar cannot judge: under [`DdlPolicy::Refuse`] the
//! checker refuses it here, and otherwise the slave's `dbmirror.ddl()` holds it to the same
//! policy (the applier gives the session its `dbmirror.ddl` setting).
//!
//! ```text
//! file      := session* BEGIN ; local* guard change* sequence* COMMIT ;
//! session   := SET name = 'value' ;              -- only the session settings files use
//! local     := SET LOCAL name = 'value' ;        -- only the canonical and apply settings
//! guard     := SELECT dbmirror.guard('text', 'text', int, int, 'text' | NULL
//!                                    [, 'text' [, 'text' | NULL]]) ;
//!                                   -- the export time; files written before it was added lack it
//!            | SELECT dbmirror.start_stream('text', 'text', int, int, 'text', ARRAY['table', ...]) ;
//!                                   -- the first file of a snapshot
//! change    := INSERT INTO table (column, ...) OVERRIDING SYSTEM VALUE VALUES (value, ...) ;
//!            | COPY table (column, ...) FROM STDIN ;
//!            | WITH m AS (UPDATE ONLY table SET column = value, ... WHERE key old* RETURNING 1)
//!                SELECT dbmirror.one_row(count(*), 'text') FROM m ;
//!            | WITH m AS (DELETE FROM ONLY table WHERE key old* RETURNING 1)
//!                SELECT dbmirror.one_row(count(*), 'text') FROM m ;
//!            | TRUNCATE ONLY table [, ONLY table] ... ;
//!            | SELECT dbmirror.snapshot_tables(ARRAY['table', ...]) ;
//!            | SELECT dbmirror.check_table('table', ARRAY['column type', ...], ARRAY['column', ...]) ;
//!                                   -- before the first change of a table: its columns and key
//!            | SELECT dbmirror.ddl('text', 'text' [, ARRAY['table', ...]]) ;
//!                                   -- DDL and the master's search_path; refused under DdlPolicy::Refuse
//! sequence  := SELECT dbmirror.advance_sequence('schema.sequence', int, true) ;
//! key       := column = value AND ...
//! old       := AND dbmirror.old_value(column, value)
//!                                    -- ONLY is optional in UPDATE and DELETE (older files lack it)
//! table     := "schema"."name"        -- not in pg_catalog, information_schema, pg_toast or dbmirror
//! column    := "name"
//! value     := 'text' | NULL
//! 'table'   := a literal holding a table    -- ARRAY[...] holds one at least
//! 'column'  := a literal holding a column
//! 'column type' := a literal holding a column, a space, and its type as format_type() prints it
//! ```
//!
//! Identifiers are always double-quoted and values always single-quoted (with
//! `standard_conforming_strings` on, so a backslash is an ordinary character): there is no
//! other way in for a function call, a second statement or a cast. The lexer knows no comments,
//! dollar quotes or escape strings, so anything using them is refused.

use dbmirror_sql::{
    APPLY_SETTINGS, CANONICAL_SETTINGS, CHECK_TABLE_FUNCTION, DDL_FUNCTION, GUARD_FUNCTION, OLD_VALUE_FUNCTION,
    ONE_ROW_FUNCTION, SEQUENCE_FUNCTION, SESSION_SETTINGS, SNAPSHOT_TABLES_FUNCTION, START_FUNCTION,
};

/// Schemas a file may never touch.
const FORBIDDEN_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_toast", dbmirror_sql::SLAVE_SCHEMA];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word: keyword or unquoted name, as written.
    Word(String),
    /// A double-quoted identifier, unescaped.
    Ident(String),
    /// A single-quoted literal, unescaped.
    Text(String),
    /// An integer, possibly negative.
    Int(String),
    Punct(char),
}

fn lex(sql: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '"' | '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some((_, q)) if q == c => {
                            if chars.peek().map(|(_, n)| *n) == Some(c) {
                                chars.next();
                                text.push(c);
                            } else {
                                break;
                            }
                        }
                        Some((_, other)) => text.push(other),
                        None => return Err("unterminated quote".into()),
                    }
                }
                tokens.push(if c == '"' { Token::Ident(text) } else { Token::Text(text) });
            }
            '(' | ')' | ',' | '.' | '=' | ';' | '*' | '[' | ']' => tokens.push(Token::Punct(c)),
            '-' | '0'..='9' => {
                let mut number = c.to_string();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    number.push(*d);
                    chars.next();
                }
                if number == "-" {
                    return Err("unexpected \"-\"".into());
                }
                tokens.push(Token::Int(number));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = c.to_string();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_alphanumeric() || *d == '_') {
                    word.push(*d);
                    chars.next();
                }
                // A quote right after a word would start E'...', U&'...' or similar.
                if matches!(chars.peek(), Some((_, '\'')) | Some((_, '&'))) {
                    return Err(format!("unexpected string prefix {word}"));
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

/// A cursor over a statement's tokens.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.at);
        self.at += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn word(&mut self, word: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => Ok(()),
            other => Err(format!("expected {word}, found {}", shown(other))),
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn punct(&mut self, p: char) -> Result<(), String> {
        match self.next() {
            Some(Token::Punct(c)) if *c == p => Ok(()),
            other => Err(format!("expected \"{p}\", found {}", shown(other))),
        }
    }

    fn is_punct(&self, p: char) -> bool {
        self.peek() == Some(&Token::Punct(p))
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(name)) => Ok(name.clone()),
            other => Err(format!("expected a quoted identifier, found {}", shown(other))),
        }
    }

    fn text(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Text(text)) => Ok(text.clone()),
            other => Err(format!("expected a string literal, found {}", shown(other))),
        }
    }

    fn int(&mut self) -> Result<i64, String> {
        match self.next() {
            Some(Token::Int(n)) => n.parse().map_err(|_| format!("{n} is out of range")),
            other => Err(format!("expected a number, found {}", shown(other))),
        }
    }

    /// `'text'` or NULL.
    fn value(&mut self) -> Result<(), String> {
        match self.next() {
            Some(Token::Text(_)) => Ok(()),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("NULL") => Ok(()),
            other => Err(format!("expected a string literal or NULL, found {}", shown(other))),
        }
    }

    /// `"schema"."table"`, outside the forbidden schemas.
    fn table(&mut self) -> Result<(), String> {
        let schema = self.ident()?;
        self.punct('.')?;
        let table = self.ident()?;
        allowed_schema(&schema).map_err(|e| format!("{e} (table \"{schema}\".\"{table}\")"))
    }

    /// Whether the statement is `SELECT` of the dotted function `name` (looked at, not read).
    fn calls(&self, name: &str) -> bool {
        let (schema, function) = name.split_once('.').expect("function names are schema-qualified");
        matches!(
            (self.tokens.get(1), self.tokens.get(2), self.tokens.get(3)),
            (Some(Token::Word(s)), Some(Token::Punct('.')), Some(Token::Word(f))) if s == schema && f == function
        )
    }

    /// A dotted function name such as `dbmirror.guard`.
    fn function(&mut self, name: &str) -> Result<(), String> {
        let (schema, function) = name.split_once('.').expect("function names are schema-qualified");
        self.word(schema)?;
        self.punct('.')?;
        self.word(function)
    }

    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T, String>) -> Result<Vec<T>, String> {
        let mut items = vec![item(self)?];
        while self.is_punct(',') {
            self.next();
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// `"column" = value AND ...`, then `AND dbmirror.old_value("column", value)` any number of
    /// times.
    fn key(&mut self) -> Result<(), String> {
        let mut old_values = false;
        loop {
            if !old_values && matches!(self.peek(), Some(Token::Ident(_))) {
                self.ident()?;
                self.punct('=')?;
                self.value()?;
            } else {
                old_values = true;
                self.function(OLD_VALUE_FUNCTION)?;
                self.punct('(')?;
                self.ident()?;
                self.punct(',')?;
                self.value()?;
                self.punct(')')?;
            }
            if !self.is_word("AND") {
                return Ok(());
            }
            self.next();
        }
    }

    /// `('slave', 'master', number, xid, `: how the guard and the start of a stream begin.
    fn file_identity(&mut self) -> Result<(), String> {
        self.punct('(')?;
        self.text()?;
        self.punct(',')?;
        self.text()?;
        self.punct(',')?;
        self.int()?;
        self.punct(',')?;
        self.int()?;
        self.punct(',')
    }

    /// `ARRAY['...', ...]` of at least one literal, each of which `item` accepts.
    fn array(&mut self, item: impl Fn(&str) -> Result<(), String>) -> Result<(), String> {
        self.word("ARRAY")?;
        self.punct('[')?;
        for text in self.list(Parser::text)? {
            item(&text)?;
        }
        self.punct(']')
    }

    /// `ARRAY['"schema"."table"', ...]`, outside the forbidden schemas.
    fn tables(&mut self) -> Result<(), String> {
        self.array(|name| allowed_schema(&name_schema(name, "table")?))
    }

    /// An optional `ONLY`.
    fn only(&mut self) {
        if self.is_word("ONLY") {
            self.next();
        }
    }

    fn end(&mut self) -> Result<(), String> {
        self.punct(';')?;
        match self.next() {
            None => Ok(()),
            Some(token) => Err(format!("unexpected {} after the end of the statement", shown(Some(token)))),
        }
    }
}

fn shown(token: Option<&Token>) -> String {
    match token {
        None => "the end of the statement".into(),
        Some(Token::Word(w)) => w.clone(),
        Some(Token::Ident(i)) => format!("\"{i}\""),
        Some(Token::Text(_)) => "a string literal".into(),
        Some(Token::Int(n)) => n.clone(),
        Some(Token::Punct(c)) => format!("\"{c}\""),
    }
}

fn allowed_schema(schema: &str) -> Result<(), String> {
    if FORBIDDEN_SCHEMAS.contains(&schema) || schema.starts_with("pg_temp") || schema.starts_with("pg_toast") {
        return Err(format!("schema \"{schema}\" may not be changed by a transaction file"));
    }
    Ok(())
}

/// The schema of a sequence or table name (`what`) as `format('%I.%I')` writes it.
fn name_schema(name: &str, what: &str) -> Result<String, String> {
    let bad = || format!("\"{name}\" is not a schema-qualified {what} name");
    if let Some(rest) = name.strip_prefix('"') {
        let mut schema = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    schema.push('"');
                } else {
                    return if chars.next() == Some('.') && chars.peek().is_some() { Ok(schema) } else { Err(bad()) };
                }
            } else {
                schema.push(c);
            }
        }
        Err(bad())
    } else {
        let (schema, rest) = name.split_once('.').ok_or_else(bad)?;
        if schema.is_empty()
            || rest.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$' || !c.is_ascii())
        {
            return Err(bad());
        }
        Ok(schema.to_string())
    }
}

/// `"name"` at the start of `text`, double quotes doubled inside: the quoted name and the rest.
fn split_quoted(text: &str) -> Option<(&str, &str)> {
    let mut quotes = text.strip_prefix('"')?.match_indices('"').map(|(at, _)| at + 1).peekable();
    // Inside the name, quotes come in pairs; the first one alone ends it.
    while let Some(at) = quotes.next() {
        if quotes.peek() == Some(&(at + 1)) {
            quotes.next();
        } else {
            return Some(text.split_at(at + 1));
        }
    }
    None
}

/// A column as `check_table` names its key: `"name"`.
fn quoted_column(text: &str) -> Result<(), String> {
    match split_quoted(text) {
        Some((_, "")) => Ok(()),
        _ => Err(format!("\"{text}\" is not a quoted column name")),
    }
}

/// A column as `check_table` describes it: `"name" TYPE`.
fn column_and_type(text: &str) -> Result<(), String> {
    match split_quoted(text).and_then(|(_, rest)| rest.strip_prefix(' ')) {
        Some(type_name) if !type_name.trim().is_empty() => Ok(()),
        _ => Err(format!("\"{text}\" is not a quoted column name and its type")),
    }
}

/// What DDL (schema changes) a slave takes from files: the applier's `ddl` setting. The slave
/// session gets the same as `dbmirror.ddl` ([`dbmirror_sql::DDL_SETTING`]), which the slave's
/// `dbmirror.ddl()` enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DdlPolicy {
    /// No DDL: a file that carries any is refused before it is sent.
    Refuse,
    /// DDL that creates, changes or drops only the tables the file names for it, and what
    /// belongs to them; the slave refuses the rest.
    #[default]
    Mirrored,
    /// Any DDL the master ran.
    Any,
}

impl DdlPolicy {
    /// Every policy, as the setting names them.
    pub const ALL: [DdlPolicy; 3] = [DdlPolicy::Refuse, DdlPolicy::Mirrored, DdlPolicy::Any];

    /// The setting's value: `refuse`, `mirrored` or `any`.
    pub fn as_str(self) -> &'static str {
        match self {
            DdlPolicy::Refuse => "refuse",
            DdlPolicy::Mirrored => "mirrored",
            DdlPolicy::Any => "any",
        }
    }
}

impl std::fmt::Display for DdlPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DdlPolicy {
    type Err = String;

    /// The policy a setting's value names; the error says which values there are.
    fn from_str(value: &str) -> Result<Self, String> {
        DdlPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str() == value)
            .ok_or_else(|| format!("ddl must be \"refuse\", \"mirrored\" or \"any\", not \"{}\"", value.escape_debug()))
    }
}

/// Where in a file the checker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before BEGIN: session settings.
    Session,
    /// After BEGIN: transaction settings, then the guard.
    Settings,
    /// After the guard: changes.
    Changes,
    /// Sequences: after the first one, no more changes.
    Sequences,
    /// After COMMIT: nothing more.
    Done,
}

/// What a checked statement is, as far as running it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A session setting before BEGIN: it may change how what follows is lexed.
    Session,
    /// `COPY ... FROM STDIN`: data lines follow.
    Copy,
    /// The file's final COMMIT.
    Commit,
    /// Anything else.
    Other,
}

/// Checks the statements of one file, in order.
#[derive(Debug)]
pub struct Checker {
    stage: Stage,
    ddl: DdlPolicy,
}

impl Default for Checker {
    /// A checker for a slave that takes DDL on the tables a file names ([`DdlPolicy::Mirrored`]).
    fn default() -> Self {
        Self::new(DdlPolicy::default())
    }
}

/// Why a statement is refused: it is not one the exporter writes, or not in its place, or it
/// carries DDL that the slave's policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
    ddl: bool,
}

impl Refusal {
    /// The reason, as it completes "statement refused: ...".
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the statement is one the exporter writes, refused because it carries DDL and
    /// the slave refuses DDL: the file is genuine, the slave's setting stops it.
    pub fn is_ddl(&self) -> bool {
        self.ddl
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refusal {}

/// What the next statement of a file is, once read.
struct Statement {
    /// Where in the file the checker is after it.
    stage: Stage,
    kind: Kind,
    /// Whether it carries DDL.
    ddl: bool,
}

impl Checker {
    /// A checker for the first statement of a file, on a slave with DDL policy `ddl`.
    pub fn new(ddl: DdlPolicy) -> Self {
        Self { stage: Stage::Session, ddl }
    }

    /// Checks the next statement of the file; the error says why it is refused.
    pub fn check(&mut self, sql: &str) -> Result<Kind, Refusal> {
        let statement = self.read(sql).map_err(|reason| Refusal { reason, ddl: false })?;
        if statement.ddl && self.ddl == DdlPolicy::Refuse {
            return Err(Refusal {
                reason: format!(
                    "the file carries DDL (a schema change) and this slave refuses DDL (ddl = \"{}\")",
                    DdlPolicy::Refuse
                ),
                ddl: true,
            });
        }
        self.stage = statement.stage;
        Ok(statement.kind)
    }

    /// Reads the next statement of the file, refusing anything the exporter does not write there.
    fn read(&self, sql: &str) -> Result<Statement, String> {
        let tokens = lex(sql)?;
        let mut p = Parser { tokens, at: 0 };
        let first = match p.peek() {
            Some(Token::Word(w)) => w.to_ascii_uppercase(),
            other => return Err(format!("a statement cannot start with {}", shown(other))),
        };
        let mut ddl = false;
        let (stage, kind) = match (self.stage, first.as_str()) {
            (Stage::Session, "SET") => {
                p.next();
                setting(&mut p, SESSION_SETTINGS)?;
                (Stage::Session, Kind::Session)
            }
            (Stage::Session, "BEGIN") => {
                p.next();
                (Stage::Settings, Kind::Other)
            }
            (Stage::Settings, "SET") => {
                p.next();
                p.word("LOCAL")?;
                let allowed: Vec<(&str, &str)> = CANONICAL_SETTINGS.iter().chain(APPLY_SETTINGS).copied().collect();
                setting(&mut p, &allowed)?;
                (Stage::Settings, Kind::Other)
            }
            (Stage::Settings, "SELECT") if p.calls(START_FUNCTION) => {
                // The first file of a snapshot starts the stream in the guard's place, and
                // names the tables it fills.
                p.next();
                p.function(START_FUNCTION)?;
                p.file_identity()?;
                p.text()?;
                p.punct(',')?;
                p.tables()?;
                p.punct(')')?;
                (Stage::Changes, Kind::Other)
            }
            (Stage::Settings, "SELECT") => {
                p.next();
                p.function(GUARD_FUNCTION)?;
                p.file_identity()?;
                p.value()?;
                // Files written before the guard took the export time, then the master's commit
                // time, have five or six arguments.
                if p.is_punct(',') {
                    p.next();
                    p.text()?;
                    if p.is_punct(',') {
                        p.next();
                        p.value()?;
                    }
                }
                p.punct(')')?;
                (Stage::Changes, Kind::Other)
            }
            (Stage::Changes, "INSERT") => {
                p.next();
                p.word("INTO")?;
                p.table()?;
                p.punct('(')?;
                let columns = p.list(Parser::ident)?.len();
                p.punct(')')?;
                for word in ["OVERRIDING", "SYSTEM", "VALUE", "VALUES"] {
                    p.word(word)?;
                }
                p.punct('(')?;
                let values = p.list(Parser::value)?.len();
                p.punct(')')?;
                if values != columns {
                    return Err(format!("{columns} columns but {values} values"));
                }
                (Stage::Changes, Kind::Other)
            }
            (Stage::Changes, "COPY") => {
                p.next();
                p.table()?;
                p.punct('(')?;
                p.list(Parser::ident)?;
                p.punct(')')?;
                p.word("FROM")?;
                p.word("STDIN")?;
                (Stage::Changes, Kind::Copy)
            }
            (Stage::Changes, "WITH") => {
                p.next();
                p.word("m")?;
                p.word("AS")?;
                p.punct('(')?;
                if p.is_word("UPDATE") {
                    p.next();
                    p.only();
                    p.table()?;
                    p.word("SET")?;
                    p.list(|p| {
                        p.ident()?;
                        p.punct('=')?;
                        p.value()
                    })?;
                } else {
                    p.word("DELETE")?;
                    p.word("FROM")?;
                    p.only();
                    p.table()?;
                }
                p.word("WHERE")?;
                p.key()?;
                p.word("RETURNING")?;
                if p.int()? != 1 {
                    return Err("expected RETURNING 1".into());
                }
                p.punct(')')?;
                p.word("SELECT")?;
                p.function(ONE_ROW_FUNCTION)?;
                p.punct('(')?;
                p.word("count")?;
                p.punct('(')?;
                p.punct('*')?;
                p.punct(')')?;
                p.punct(',')?;
                p.text()?;
                p.punct(')')?;
                p.word("FROM")?;
                p.word("m")?;
                (Stage::Changes, Kind::Other)
            }
            (Stage::Changes, "TRUNCATE") => {
                // `TRUNCATE ONLY a, ONLY b`; files of earlier versions name ONLY once.
                p.next();
                p.word("ONLY")?;
                p.list(|p| {
                    p.only();
                    p.table()
                })?;
                (Stage::Changes, Kind::Other)
            }
            (Stage::Changes, "SELECT") if p.calls(SNAPSHOT_TABLES_FUNCTION) => {
                // A copy of tables added to a running slave prepares them first.
                p.next();
                p.function(SNAPSHOT_TABLES_FUNCTION)?;
                p.punct('(')?;
                p.tables()?;
                p.punct(')')?;
                (Stage::Changes, Kind::Other)
            }
            (Stage::Changes, "SELECT") if p.calls(CHECK_TABLE_FUNCTION) => {
                // Before the first change of a table: the master's columns and primary key.
                p.next();
                p.function(CHECK_TABLE_FUNCTION)?;
                p.punct('(')?;
                let table = p.text()?;
                allowed_schema(&name_schema(&table, "table")?)?;
                p.punct(',')?;
                p.array(column_and_type)?;
                p.punct(',')?;
                p.array(quoted_column)?;
                p.punct(')')?;
                (Stage::Changes, Kind::Other)
            }
            (Stage::Changes, "SELECT") if p.calls(DDL_FUNCTION) => {
                // The statement and the master's search_path, then the tables it changes.
                p.next();
                p.function(DDL_FUNCTION)?;
                p.punct('(')?;
                p.text()?;
                p.punct(',')?;
                p.text()?;
                if p.is_punct(',') {
                    p.next();
                    p.tables()?;
                }
                p.punct(')')?;
                ddl = true;
                (Stage::Changes, Kind::Other)
            }
            (Stage::Changes | Stage::Sequences, "SELECT") => {
                p.next();
                p.function(SEQUENCE_FUNCTION)?;
                p.punct('(')?;
                let name = p.text()?;
                allowed_schema(&name_schema(&name, "sequence")?)?;
                p.punct(',')?;
                p.int()?;
                p.punct(',')?;
                p.word("true")?;
                p.punct(')')?;
                (Stage::Sequences, Kind::Other)
            }
            (Stage::Changes | Stage::Sequences, "COMMIT") => {
                p.next();
                (Stage::Done, Kind::Commit)
            }
            (Stage::Done, _) => return Err("statement after COMMIT".into()),
            (stage, word) => return Err(format!("{word} is not allowed here ({})", expected(stage))),
        };
        p.end()?;
        Ok(Statement { stage, kind, ddl })
    }

    /// Whether the file ended where a file may end.
    pub fn finished(&self) -> bool {
        self.stage == Stage::Done
    }
}

fn expected(stage: Stage) -> &'static str {
    match stage {
        Stage::Session => "expected session settings or BEGIN",
        Stage::Settings => "expected SET LOCAL or the guard",
        Stage::Changes => "expected a change, a sequence or COMMIT",
        Stage::Sequences => "expected a sequence or COMMIT",
        Stage::Done => "the file is complete",
    }
}

/// `name = 'value'` where (name, value) is one of `allowed`.
fn setting(p: &mut Parser, allowed: &[(&str, &str)]) -> Result<(), String> {
    let name = match p.next() {
        Some(Token::Word(w)) => w.clone(),
        other => return Err(format!("expected a setting name, found {}", shown(other))),
    };
    p.punct('=')?;
    let value = p.text()?;
    if !allowed.iter().any(|(n, v)| n.eq_ignore_ascii_case(&name) && *v == value) {
        return Err(format!("setting {name} to '{value}' is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[&str] = &[
        "SET client_encoding = 'UTF8';",
        "SET standard_conforming_strings = 'on';",
        "BEGIN;",
        "SET LOCAL DateStyle = 'ISO, YMD';",
        "SET LOCAL session_replication_role = 'replica';",
        "SELECT dbmirror.guard('o''brien', '7', 2, 900, '6b86', '2026-01-02T03:04:05.000000Z');",
        "INSERT INTO \"public\".\"My \"\"T\"\"\" (\"id\", \"Name\") OVERRIDING SYSTEM VALUE VALUES ('1', NULL);",
        "COPY \"public\".\"t\" (\"id\") FROM STDIN;",
        "WITH m AS (UPDATE \"public\".\"t\" SET \"a\" = 'x', \"b\" = NULL WHERE \"id\" = '1' AND \"k\" = '2' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of \"public\".\"t\"') FROM m;",
        "WITH m AS (DELETE FROM ONLY \"public\".\"t\" WHERE \"id\" = '9' AND dbmirror.old_value(\"a\", NULL) RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from \"public\".\"t\"') FROM m;",
        "TRUNCATE ONLY \"public\".\"a\", ONLY \"s\".\"b\";",
        "SELECT dbmirror.advance_sequence('public.item_id_seq', 51, true);",
        "SELECT dbmirror.advance_sequence('\"My \"\"S\"\"\".\"s\"', -3, true);",
        "COMMIT;",
    ];

    fn check_all(statements: &[&str]) -> Result<Vec<Kind>, (usize, String)> {
        check_all_under(DdlPolicy::default(), statements)
    }

    fn check_all_under(ddl: DdlPolicy, statements: &[&str]) -> Result<Vec<Kind>, (usize, String)> {
        let mut checker = Checker::new(ddl);
        statements.iter().enumerate().map(|(i, s)| checker.check(s).map_err(|e| (i, e.to_string()))).collect()
    }

    /// The genuine file with `statements` among its changes, right after the guard.
    fn with_changes<'a>(statements: &[&'a str]) -> Vec<&'a str> {
        let mut file = FILE.to_vec();
        file.splice(6..6, statements.iter().copied());
        file
    }

    const CHECK_TABLE: &str = "SELECT dbmirror.check_table('\"public\".\"orders\"', ARRAY['\"id\" integer', '\"note\" text', '\"mood\" public.mood'], ARRAY['\"id\"']);";
    const DDL: &str = "SELECT dbmirror.ddl('ALTER TABLE orders ADD COLUMN note text', '\"$user\", public');";
    const DDL_WITH_TABLES: &str = "SELECT dbmirror.ddl('ALTER TABLE \"Order Line\"\n  RENAME TO lines; -- why not\nCREATE INDEX ON orders (note)', 'public', ARRAY['\"public\".\"orders\"', '\"public\".\"lines\"']);";

    /// The shape checks and the DDL the exporter writes among the changes, under the policies
    /// that let DDL through.
    #[test]
    fn accepts_table_checks_and_ddl_among_the_changes() {
        let statements = [
            CHECK_TABLE,
            "SELECT dbmirror.check_table('\"My \"\"S\"\"\".\"Order Line\"', ARRAY['\"we\"\"ird\" character varying(20)', '\"n\" numeric(10,2)', '\"t\" timestamp with time zone', '\"a\" text[]'], ARRAY['\"we\"\"ird\"', '\"n\"']);",
            DDL,
            DDL_WITH_TABLES,
            "SELECT dbmirror.ddl('CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$SELECT 1$$', '');",
            CHECK_TABLE,
        ];
        for ddl in [DdlPolicy::Mirrored, DdlPolicy::Any] {
            let kinds = check_all_under(ddl, &with_changes(&statements)).unwrap_or_else(|e| panic!("{ddl}: {e:?}"));
            assert!(kinds[6..12].iter().all(|k| *k == Kind::Other), "{kinds:?}");
        }
        // Also between changes, and right before the sequences.
        let mut file = FILE.to_vec();
        file.insert(11, DDL);
        file.insert(8, CHECK_TABLE);
        check_all(&file).unwrap();
    }

    /// Each case puts one statement among the changes of a genuine file; all must be refused.
    #[test]
    fn refuses_table_checks_and_ddl_that_the_exporter_does_not_write() {
        let cases: &[(&str, &str)] = &[
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" integer']);", "expected \",\", found \")\""),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" integer'], '\"id\"');", "expected ARRAY"),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" integer'], ARRAY[]);", "expected a string literal, found \"]\""),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY[], ARRAY['\"id\"']);", "expected a string literal, found \"]\""),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\"integer'], ARRAY['\"id\"']);", "not a quoted column name and its type"),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['id integer'], ARRAY['\"id\"']);", "not a quoted column name and its type"),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" '], ARRAY['\"id\"']);", "not a quoted column name and its type"),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" integer'], ARRAY['\"id\" integer']);", "not a quoted column name"),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" integer'], ARRAY['id']);", "not a quoted column name"),
            ("SELECT dbmirror.check_table('\"dbmirror\".\"slave_state\"', ARRAY['\"id\" integer'], ARRAY['\"id\"']);", "schema \"dbmirror\""),
            ("SELECT dbmirror.check_table('t', ARRAY['\"id\" integer'], ARRAY['\"id\"']);", "not a schema-qualified table name"),
            ("SELECT dbmirror.check_table(NULL, ARRAY['\"id\" integer'], ARRAY['\"id\"']);", "expected a string literal, found NULL"),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" integer'], ARRAY['\"id\"'], true);", "expected \")\", found \",\""),
            ("SELECT dbmirror.check_table('\"public\".\"t\"', ARRAY['\"id\" integer'], ARRAY['\"id\"']) FROM x;", "expected \";\", found FROM"),
            ("SELECT dbmirror.ddl('DROP TABLE t');", "expected \",\", found \")\""),
            ("SELECT dbmirror.ddl('DROP TABLE t', NULL);", "expected a string literal, found NULL"),
            ("SELECT dbmirror.ddl('DROP TABLE t' || 'x', 'public');", "unexpected character '|'"),
            ("SELECT dbmirror.ddl($$DROP TABLE t$$, 'public');", "unexpected character '$'"),
            ("SELECT dbmirror.ddl(E'DROP TABLE t', 'public');", "string prefix E"),
            ("SELECT dbmirror.ddl('DROP TABLE t', 'public', '{\"public.t\"}');", "expected ARRAY"),
            ("SELECT dbmirror.ddl('DROP TABLE t', 'public', ARRAY[]);", "expected a string literal, found \"]\""),
            ("SELECT dbmirror.ddl('DROP TABLE t', 'public', ARRAY['\"pg_catalog\".\"pg_class\"']);", "schema \"pg_catalog\""),
            ("SELECT dbmirror.ddl('DROP TABLE t', 'public', ARRAY['\"dbmirror\".\"applied_file\"']);", "schema \"dbmirror\""),
            ("SELECT dbmirror.ddl('DROP TABLE t', 'public', ARRAY['t']);", "not a schema-qualified table name"),
            ("SELECT dbmirror.ddl('DROP TABLE t', 'public', ARRAY['\"public\".\"t\"'], 'x');", "expected \")\", found \",\""),
            ("SELECT dbmirror.ddl('DROP TABLE t', 'public'); DROP TABLE u;", "unexpected DROP"),
            ("SELECT dbmirror.ddl_refuse('x');", "expected advance_sequence, found ddl_refuse"),
        ];
        let mut wrong = Vec::new();
        for (statement, reason) in cases {
            match check_all(&with_changes(&[statement])) {
                Ok(_) => wrong.push(format!("{statement}: accepted")),
                Err((at, error)) if at != 6 || !error.contains(reason) => {
                    wrong.push(format!("{statement}: refused at statement {at} with {error:?}, expected {reason:?}"))
                }
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn refuses_table_checks_and_ddl_outside_the_changes() {
        // Before the guard, instead of it, after the sequences, after COMMIT.
        for (at, statement) in [(5, CHECK_TABLE), (4, DDL), (12, DDL), (12, CHECK_TABLE), (14, DDL)] {
            let mut file = FILE.to_vec();
            file.insert(at, statement);
            let (refused_at, _) = check_all(&file).expect_err(&format!("{statement} at {at}"));
            assert_eq!(refused_at, at, "{statement}");
        }
    }

    /// A slave that refuses DDL refuses the file at its DDL, and says that this is why: the
    /// file is what the exporter writes, and the setting stops it.
    #[test]
    fn a_slave_that_refuses_ddl_refuses_a_file_that_carries_some() {
        for statement in [DDL, DDL_WITH_TABLES] {
            let mut checker = Checker::new(DdlPolicy::Refuse);
            for genuine in &with_changes(&[CHECK_TABLE])[..7] {
                checker.check(genuine).unwrap();
            }
            let refusal = checker.check(statement).expect_err(statement);
            assert!(refusal.is_ddl());
            assert_eq!(
                refusal.reason(),
                "the file carries DDL (a schema change) and this slave refuses DDL (ddl = \"refuse\")"
            );
        }
        // A file without DDL is fine; a malformed call is refused as foreign, not as DDL.
        check_all_under(DdlPolicy::Refuse, &with_changes(&[CHECK_TABLE])).unwrap();
        let mut checker = Checker::new(DdlPolicy::Refuse);
        for genuine in &FILE[..6] {
            checker.check(genuine).unwrap();
        }
        assert!(!checker.check("SELECT dbmirror.ddl('DROP TABLE t', now());").unwrap_err().is_ddl());
        assert!(!checker.check("DROP TABLE t;").unwrap_err().is_ddl());
    }

    #[test]
    fn ddl_policies_read_from_their_names_only() {
        for policy in DdlPolicy::ALL {
            assert_eq!(policy.as_str().parse::<DdlPolicy>(), Ok(policy));
        }
        assert_eq!(DdlPolicy::default(), DdlPolicy::Mirrored);
        for bad in ["", "Refuse", "ANY", "none", "mirrored "] {
            let error = bad.parse::<DdlPolicy>().unwrap_err();
            assert_eq!(error, format!("ddl must be \"refuse\", \"mirrored\" or \"any\", not \"{bad}\""));
        }
    }

    #[test]
    fn accepts_what_the_exporter_writes() {
        let kinds = check_all(FILE).unwrap();
        assert_eq!(kinds[7], Kind::Copy);
        assert_eq!(kinds[13], Kind::Commit);
        assert_eq!(kinds[..2], [Kind::Session, Kind::Session]);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Other).count(), 10);
    }

    /// Each case replaces one statement of a genuine file; all must be refused.
    #[test]
    fn refuses_anything_else() {
        let cases: &[(usize, &str, &str)] = &[
            (7, "COPY \"public\".\"t\" (\"id\") TO PROGRAM 'rm -rf /';", "expected FROM"),
            (7, "COPY \"public\".\"t\" (\"id\") FROM PROGRAM 'id';", "expected STDIN"),
            (6, "DROP TABLE \"public\".\"t\";", "DROP is not allowed here"),
            (6, "ALTER ROLE postgres PASSWORD 'x';", "ALTER is not allowed here"),
            (6, "SELECT pg_terminate_backend(1);", "expected dbmirror"),
            (6, "INSERT INTO \"public\".\"t\" (\"a\") OVERRIDING SYSTEM VALUE VALUES ('1'); DROP TABLE x;", "unexpected DROP"),
            (6, "INSERT INTO \"public\".\"t\" (\"a\") OVERRIDING SYSTEM VALUE VALUES ('1' || pg_sleep(10));", "unexpected character '|'"),
            (6, "INSERT INTO \"public\".\"t\" (\"a\") OVERRIDING SYSTEM VALUE VALUES (E'\\x27');", "string prefix E"),
            (6, "INSERT INTO \"public\".\"t\" (\"a\") OVERRIDING SYSTEM VALUE VALUES ($$x$$);", "unexpected character '$'"),
            (6, "INSERT INTO \"public\".\"t\" (\"a\") /* x */ OVERRIDING SYSTEM VALUE VALUES ('1');", "unexpected character '/'"),
            (6, "INSERT INTO \"public\".\"t\" (\"a\") OVERRIDING SYSTEM VALUE VALUES ('1') -- x\n;", "unexpected \"-\""),
            (6, "INSERT INTO \"public\".\"t\" (\"a\", \"b\") OVERRIDING SYSTEM VALUE VALUES ('1');", "2 columns but 1 values"),
            (6, "INSERT INTO \"dbmirror\".\"slave_state\" (\"a\") OVERRIDING SYSTEM VALUE VALUES ('1');", "schema \"dbmirror\""),
            (6, "INSERT INTO \"pg_catalog\".\"pg_authid\" (\"a\") OVERRIDING SYSTEM VALUE VALUES ('1');", "schema \"pg_catalog\""),
            (6, "INSERT INTO public.t (\"a\") OVERRIDING SYSTEM VALUE VALUES ('1');", "expected a quoted identifier"),
            (6, "WITH m AS (UPDATE \"public\".\"t\" SET \"a\" = 'x' WHERE \"id\" = '1' OR true RETURNING 1) SELECT dbmirror.one_row(count(*), 'x') FROM m;", "expected RETURNING"),
            (6, "WITH m AS (UPDATE \"public\".\"t\" SET \"a\" = now() WHERE \"id\" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'x') FROM m;", "expected a string literal or NULL"),
            (6, "TRUNCATE \"public\".\"t\";", "expected ONLY"),
            (8, "WITH m AS (UPDATE ONLY \"public\".\"t\" SET \"a\" = 'x' WHERE \"id\" = '1' AND dbmirror.old_value(\"a\", now()) RETURNING 1) SELECT dbmirror.one_row(count(*), 'x') FROM m;", "expected a string literal or NULL"),
            (8, "WITH m AS (UPDATE ONLY \"public\".\"t\" SET \"a\" = 'x' WHERE dbmirror.old_value(\"a\", 'x') AND \"id\" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'x') FROM m;", "expected dbmirror"),
            (8, "WITH m AS (UPDATE ONLY \"public\".\"t\" SET \"a\" = 'x' WHERE \"id\" = '1' AND dbmirror.guard(\"a\", 'x') RETURNING 1) SELECT dbmirror.one_row(count(*), 'x') FROM m;", "expected old_value"),
            (9, "WITH m AS (DELETE FROM ONLY ONLY \"public\".\"t\" WHERE \"id\" = '9' RETURNING 1) SELECT dbmirror.one_row(count(*), 'x') FROM m;", "expected a quoted identifier"),
            (6, "TRUNCATE ONLY \"public\".\"t\" CASCADE;", "expected \";\", found CASCADE"),
            (11, "SELECT dbmirror.advance_sequence('pg_catalog.x', 1, true);", "schema \"pg_catalog\""),
            (11, "SELECT dbmirror.advance_sequence('x', 1, true);", "not a schema-qualified"),
            (11, "SELECT setval('public.s', 1);", "expected dbmirror"),
            (3, "SET LOCAL statement_timeout = '0';", "setting statement_timeout"),
            (3, "SET LOCAL session_replication_role = 'origin';", "setting session_replication_role"),
            (1, "SET role = 'postgres';", "setting role"),
            (2, "BEGIN; COMMIT;", "unexpected COMMIT"),
            (5, "SELECT dbmirror.guard('a', 'b', 1, 2, now());", "expected a string literal or NULL"),
            (5, "SELECT dbmirror.guard('a', 'b', 1, 2, NULL, now());", "expected a string literal, found now"),
            (5, "SELECT dbmirror.guard('a', 'b', 1, 2, NULL, NULL);", "expected a string literal, found NULL"),
            (5, "SELECT dbmirror.guard('a', 'b', 1, 2, NULL, '2026-01-01T00:00:00Z', now());", "expected a string literal or NULL"),
            (5, "SELECT dbmirror.guard('a', 'b', 1, 2, NULL, '2026-01-01T00:00:00Z', 'x', 'y');", "expected \")\", found \",\""),
            (5, "SELECT dbmirror.guard('a', 'b', 1, 2, NULL, );", "expected a string literal, found \")\""),
            (13, "COMMIT; SELECT 1;", "unexpected SELECT"),
            (13, "ROLLBACK;", "ROLLBACK is not allowed here"),
            (6, "", "cannot start with the end of the statement"),
            (6, "'unterminated;", "unterminated quote"),
        ];
        let mut wrong = Vec::new();
        for (index, statement, reason) in cases {
            let mut file = FILE.to_vec();
            file[*index] = statement;
            match check_all(&file) {
                Ok(_) => wrong.push(format!("{statement}: accepted")),
                Err((at, error)) if at != *index || !error.contains(reason) => {
                    wrong.push(format!("{statement}: refused at statement {at} with {error:?}, expected {reason:?}"))
                }
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The guard as the exporter writes it now (with the export time and the master's commit
    /// time), and as files written before either have it.
    #[test]
    fn accepts_the_guard_with_five_six_or_seven_arguments() {
        for guard in [
            "SELECT dbmirror.guard('o''brien', '7', 2, 900, '6b86', '2026-01-02T03:04:05.000000Z', '2026-01-02T03:04:01.000000Z');",
            "SELECT dbmirror.guard('o''brien', '7', 1, 900, NULL, '2026-01-02T03:04:05.000000Z', NULL);",
            "SELECT dbmirror.guard('o''brien', '7', 2, 900, '6b86', '2026-01-02T03:04:05.000000Z');",
            "SELECT dbmirror.guard('o''brien', '7', 1, 900, NULL, '2026-01-02T03:04:05.000000Z');",
            "SELECT dbmirror.guard('o''brien', '7', 2, 900, '6b86');",
            "SELECT dbmirror.guard('o''brien', '7', 1, 900, NULL);",
        ] {
            let mut file = FILE.to_vec();
            file[5] = guard;
            check_all(&file).unwrap_or_else(|e| panic!("{guard}: {e:?}"));
        }
    }

    #[test]
    fn refuses_statements_out_of_place() {
        // A change before the guard, the guard twice, a change after the sequences.
        for order in [&[0, 2, 6][..], &[2, 5, 5], &[2, 5, 11, 6], &[2, 13]] {
            let file: Vec<&str> = order.iter().map(|&i| FILE[i]).collect();
            assert!(check_all(&file).is_err(), "{file:?}");
        }
        let mut checker = Checker::default();
        for statement in &FILE[..13] {
            checker.check(statement).unwrap();
        }
        assert!(!checker.finished());
        checker.check(FILE[13]).unwrap();
        assert!(checker.finished());
        assert!(checker.check(FILE[13]).is_err());
    }
}
