//! The grammar of transaction files: exactly the statements `dbmirror-export` writes, in the
//! order it writes them. Every statement is checked against it before it is sent to the slave,
//! so a file that crossed the air gap can make the slave do nothing but what a genuine file
//! does: change rows of ordinary tables, advance sequences, and record itself as applied.
//!
//! ```text
//! file      := session* BEGIN ; local* guard change* sequence* COMMIT ;
//! session   := SET name = 'value' ;              -- only the session settings files use
//! local     := SET LOCAL name = 'value' ;        -- only the canonical and apply settings
//! guard     := SELECT dbmirror.guard('text', 'text', int, int, 'text' | NULL [, 'text']) ;
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
//! sequence  := SELECT dbmirror.advance_sequence('schema.sequence', int, true) ;
//! key       := column = value AND ...
//! old       := AND dbmirror.old_value(column, value)
//!                                    -- ONLY is optional in UPDATE and DELETE (older files lack it)
//! table     := "schema"."name"        -- not in pg_catalog, information_schema, pg_toast or dbmirror
//! column    := "name"
//! value     := 'text' | NULL
//! ```
//!
//! Identifiers are always double-quoted and values always single-quoted (with
//! `standard_conforming_strings` on, so a backslash is an ordinary character): there is no
//! other way in for a function call, a second statement or a cast. The lexer knows no comments,
//! dollar quotes or escape strings, so anything using them is refused.

use dbmirror_sql::{
    APPLY_SETTINGS, CANONICAL_SETTINGS, GUARD_FUNCTION, OLD_VALUE_FUNCTION, ONE_ROW_FUNCTION, SEQUENCE_FUNCTION,
    SESSION_SETTINGS, SNAPSHOT_TABLES_FUNCTION, START_FUNCTION,
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

    /// `ARRAY['"schema"."table"', ...]`, outside the forbidden schemas.
    fn tables(&mut self) -> Result<(), String> {
        self.word("ARRAY")?;
        self.punct('[')?;
        for name in self.list(Parser::text)? {
            allowed_schema(&name_schema(&name, "table")?)?;
        }
        self.punct(']')
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
}

impl Default for Checker {
    fn default() -> Self {
        Self { stage: Stage::Session }
    }
}

/// Why a statement is refused: it is not one the exporter writes, or not in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
}

impl Refusal {
    /// The reason, as it completes "statement refused: ...".
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refusal {}

impl Checker {
    /// Checks the next statement of the file; the error says why it is refused.
    pub fn check(&mut self, sql: &str) -> Result<Kind, Refusal> {
        self.check_statement(sql).map_err(|reason| Refusal { reason })
    }

    fn check_statement(&mut self, sql: &str) -> Result<Kind, String> {
        let tokens = lex(sql)?;
        let mut p = Parser { tokens, at: 0 };
        let first = match p.peek() {
            Some(Token::Word(w)) => w.to_ascii_uppercase(),
            other => return Err(format!("a statement cannot start with {}", shown(other))),
        };
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
                if p.is_punct(',') {
                    p.next();
                    p.text()?;
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
        self.stage = stage;
        Ok(kind)
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
        let mut checker = Checker::default();
        statements.iter().enumerate().map(|(i, s)| checker.check(s).map_err(|e| (i, e.to_string()))).collect()
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
            (5, "SELECT dbmirror.guard('a', 'b', 1, 2, NULL, '2026-01-01T00:00:00Z', 'x');", "expected \")\", found \",\""),
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

    /// The guard as the exporter writes it now (with the export time), and as files written
    /// before that have it.
    #[test]
    fn accepts_the_guard_with_and_without_the_export_time() {
        for guard in [
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
