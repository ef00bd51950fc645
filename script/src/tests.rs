use std::io::{self, BufReader, Read};

use crate::{ErrorKind, Item, ScriptError, ScriptReader, COPY_CHUNK_BYTES};

/// All items of a script that must read without error.
fn items(input: &[u8]) -> Vec<Item> {
    ScriptReader::new(input).collect::<Result<Vec<_>, _>>().unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

/// The items before the error, and the error, of a script that must fail.
fn failure(input: &[u8]) -> (Vec<Item>, ScriptError) {
    failure_with_limit(input, crate::DEFAULT_MAX_STATEMENT_BYTES)
}

fn failure_with_limit(input: &[u8], limit: usize) -> (Vec<Item>, ScriptError) {
    let mut reader = ScriptReader::with_max_statement_bytes(input, limit);
    let mut seen = Vec::new();
    loop {
        match reader.next_item() {
            Ok(Some(item)) => seen.push(item),
            Ok(None) => panic!("expected an error, got {seen:?}"),
            Err(e) => {
                // Nothing may follow an error.
                assert!(matches!(reader.next_item(), Ok(None)));
                return (seen, e);
            }
        }
    }
}

fn error_of(input: &[u8]) -> (u64, ErrorKind) {
    let (_, e) = failure(input);
    (e.line(), e.kind().cloned().expect("not an I/O error"))
}

fn stmt(sql: &str, line: u64) -> Item {
    Item::Statement { sql: sql.to_owned(), line }
}

fn meta(command: &str, args: &str, line: u64) -> Item {
    Item::Meta { command: command.to_owned(), args: args.to_owned(), line }
}

fn data(bytes: &[u8]) -> Item {
    Item::CopyData(bytes.to_vec())
}

fn copy_end(line: u64) -> Item {
    Item::CopyEnd { line }
}

#[test]
fn statements_across_lines() {
    assert_eq!(
        items(b"SELECT\n  1,\n  2;\nSELECT 3; SELECT\n4;\n"),
        [stmt("SELECT\n  1,\n  2;", 1), stmt("SELECT 3;", 4), stmt("SELECT\n4;", 4)]
    );
}

#[test]
fn leading_whitespace_and_dash_comments_are_dropped_inner_ones_kept() {
    let script = b"-- header\n\n   \t\n  SELECT 1 -- one; not the end\n\n    + 2; -- trailing\n/* kept */ SELECT 3;\n";
    assert_eq!(items(script), [stmt("SELECT 1 -- one; not the end\n    + 2;", 4), stmt("/* kept */ SELECT 3;", 7)]);
}

#[test]
fn blank_lines_are_kept_only_inside_quotes_and_comments() {
    assert_eq!(items(b"SELECT 'a\n\nb',\n\n  /*\n\n*/ 1;\n"), [stmt("SELECT 'a\n\nb',\n  /*\n\n*/ 1;", 1)]);
}

#[test]
fn semicolons_inside_quotes_and_comments() {
    let script = concat!(
        "SELECT 'a;b', 'it''s;';\n",
        "SELECT E'\\';', e'\\\\';\n",
        "SELECT \"x;y\", \"q\"\";\";\n",
        "SELECT $$;$$, $t$;$t$;\n",
        "SELECT 1 -- ;\n",
        ";\n",
        "SELECT /* ; */ 2;\n",
        "SELECT B'1;', X'f;', N'n;', U&'u;', U&\"v;\";\n",
    );
    assert_eq!(
        items(script.as_bytes()),
        [
            stmt("SELECT 'a;b', 'it''s;';", 1),
            stmt("SELECT E'\\';', e'\\\\';", 2),
            stmt("SELECT \"x;y\", \"q\"\";\";", 3),
            stmt("SELECT $$;$$, $t$;$t$;", 4),
            stmt("SELECT 1 -- ;\n;", 5),
            stmt("SELECT /* ; */ 2;", 7),
            stmt("SELECT B'1;', X'f;', N'n;', U&'u;', U&\"v;\";", 8),
        ]
    );
}

#[test]
fn nested_comments() {
    assert_eq!(
        items(b"/* a /* b; */ c; */ SELECT 1;\n/*/ x; */ SELECT 2;\nSELECT /* a **/ 3 /*/**/*/;\n"),
        [
            stmt("/* a /* b; */ c; */ SELECT 1;", 1),
            stmt("/*/ x; */ SELECT 2;", 2),
            stmt("SELECT /* a **/ 3 /*/**/*/;", 3),
        ]
    );
}

#[test]
fn dollar_quotes_with_similar_tags() {
    let script = concat!(
        "SELECT $fn$ a $f$ ; $fn_x$ ; $FN$ ; $$ ; $fn$;\n",
        "SELECT $1, $2;\n",
        "SELECT 1 AS a$$; SELECT $_$;$_$;\n",
        "SELECT $a$x$junk$a$; SELECT $b$\n;\n$b$;\n",
    );
    assert_eq!(
        items(script.as_bytes()),
        [
            stmt("SELECT $fn$ a $f$ ; $fn_x$ ; $FN$ ; $$ ; $fn$;", 1),
            stmt("SELECT $1, $2;", 2),
            stmt("SELECT 1 AS a$$;", 3),
            stmt("SELECT $_$;$_$;", 3),
            stmt("SELECT $a$x$junk$a$;", 4),
            stmt("SELECT $b$\n;\n$b$;", 4),
        ]
    );
}

#[test]
fn escape_strings() {
    assert_eq!(
        items(b"SELECT E'\\';' AS x; SELECT 'a\\'; SELECT e'\\\\';\n"),
        [stmt("SELECT E'\\';' AS x;", 1), stmt("SELECT 'a\\';", 1), stmt("SELECT e'\\\\';", 1),]
    );
}

#[test]
fn number_tokens_extend_as_in_psql() {
    // `1e` is one token, so the quote opens a plain literal; `1e-` is one
    // token, so `-x` is no comment; `1..2` is 1, `..`, 2; `1_000$$` is one
    // token, so no dollar quote starts.
    assert_eq!(
        items(
            b"SELECT 1e'\\'; SELECT 2;\nSELECT 1e--x;\nSELECT 1..2, .5e'\\';\nSELECT 1_000$$, 1.5e-3_x$$; SELECT 3;\n"
        ),
        [
            stmt("SELECT 1e'\\';", 1),
            stmt("SELECT 2;", 1),
            stmt("SELECT 1e--x;", 2),
            stmt("SELECT 1..2, .5e'\\';", 3),
            stmt("SELECT 1_000$$, 1.5e-3_x$$;", 4),
            stmt("SELECT 3;", 4),
        ]
    );
}

#[test]
fn string_continuation_only_within_a_psql_line() {
    // psql lexes line by line, so `'\'` on the next line is a new plain
    // literal; a bare `\r` inside a line is a newline to the lexer.
    assert_eq!(
        items(b"SELECT E'a'\n'\\'; SELECT 2;\nSELECT E'a'\r'\\';' ;\n"),
        [stmt("SELECT E'a'\n'\\';", 1), stmt("SELECT 2;", 2), stmt("SELECT E'a'\r'\\';' ;", 3),]
    );
}

#[test]
fn parentheses_hold_semicolons() {
    assert_eq!(
        items(b"SELECT (1;\n2);\nSELECT 3);\nSELECT 4;\n"),
        [stmt("SELECT (1;\n2);", 1), stmt("SELECT 3);", 3), stmt("SELECT 4;", 4)]
    );
}

#[test]
fn routine_bodies_hold_semicolons() {
    let script = concat!(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql\n",
        "BEGIN ATOMIC\n",
        "  SELECT 1;\n",
        "  SELECT CASE WHEN true THEN 1 END;\n",
        "END;\n",
        "create or replace procedure p() begin atomic select 1; end;\n",
        "CREATE FUNCTION g(begin int) RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;\n",
        "BEGIN;\n",
        "SELECT 1;\n",
        "END;\n",
    );
    assert_eq!(
        items(script.as_bytes()),
        [
            stmt(
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT CASE WHEN true THEN 1 END;\nEND;",
                1
            ),
            stmt("create or replace procedure p() begin atomic select 1; end;", 6),
            stmt("CREATE FUNCTION g(begin int) RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;", 7),
            stmt("BEGIN;", 8),
            stmt("SELECT 1;", 9),
            stmt("END;", 10),
        ]
    );
}

#[test]
fn routine_heuristic_quirks_match_psql() {
    // psql counts `begin` after a lone `$` as a word, but not inside the
    // number token `1begin`.
    assert_eq!(
        items(b"CREATE FUNCTION f() RETURNS int $begin; SELECT 1; END;\nCREATE FUNCTION g() RETURNS int 1begin; SELECT 1;\n"),
        [
            stmt("CREATE FUNCTION f() RETURNS int $begin; SELECT 1; END;", 1),
            stmt("CREATE FUNCTION g() RETURNS int 1begin;", 2),
            stmt("SELECT 1;", 2),
        ]
    );
}

#[test]
fn carriage_return_and_vertical_tab_are_whitespace() {
    // A bare `\r` ends a `--` comment inside a line; a vertical tab is
    // whitespace from psql 17 on.
    assert_eq!(
        items(b"-- c\rSELECT 1 -- d\rFROM t;\n\x0b\x0cSELECT 2;\n"),
        [stmt("SELECT 1 -- d\rFROM t;", 1), stmt("SELECT 2;", 2)]
    );
}

#[test]
fn lone_semicolons_are_statements() {
    assert_eq!(
        items(b";\n/* c */;\nSELECT 1;;\n"),
        [stmt(";", 1), stmt("/* c */;", 2), stmt("SELECT 1;", 3), stmt(";", 3)]
    );
}

#[test]
fn empty_and_comment_only_scripts() {
    assert_eq!(items(b""), []);
    assert_eq!(items(b"\n\n-- x\n  \n"), []);
    assert_eq!(items(b"SELECT 1;\n-- bye\n/* end */\n  \n"), [stmt("SELECT 1;", 1)]);
    assert_eq!(items(b"/* only */"), []);
}

#[test]
fn copy_from_stdin_data() {
    let script = b"COPY public.t (a, \"b c\") FROM stdin;\n1\t\\N\tx\n\\\\.\n \\.\n\\.x\n2\tfoo\r\n\\.\nSELECT 1;\n";
    assert_eq!(
        items(script),
        [
            stmt("COPY public.t (a, \"b c\") FROM stdin;", 1),
            data(b"1\t\\N\tx\n\\\\.\n \\.\n\\.x\n2\tfoo\r\n"),
            copy_end(7),
            stmt("SELECT 1;", 8),
        ]
    );
}

#[test]
fn copy_with_crlf_end_marker() {
    assert_eq!(
        items(b"COPY t FROM STDIN;\r\na\r\n\\.\r\nSELECT 1;\r\n"),
        [stmt("COPY t FROM STDIN;", 1), data(b"a\r\n"), copy_end(3), stmt("SELECT 1;", 4)]
    );
}

#[test]
fn copy_data_is_not_lexed() {
    assert_eq!(
        items(b"COPY t FROM stdin;\n'\t$$\t/*\t:x\t\\set\n\\.\nSELECT 1;\n"),
        [stmt("COPY t FROM stdin;", 1), data(b"'\t$$\t/*\t:x\t\\set\n"), copy_end(3), stmt("SELECT 1;", 4),]
    );
}

/// Whether the reader expects COPY data after the first statement.
fn starts_copy(script: &str) -> bool {
    let mut reader = ScriptReader::new(script.as_bytes());
    match reader.next_item() {
        Ok(Some(Item::Statement { .. })) => reader.awaiting_copy_data(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn copy_from_stdin_detection() {
    for script in [
        "copy \"My \"\"T\"\"\"(\"a\") from STDIN with (format csv, header true);",
        "COPY/* c */t FROM -- x\n  StdIn;",
        "COPY s.from FROM stdin;",
        "COPY s . to (\"from\", b) FROM stdin;",
        "COPY BINARY t FROM STDIN;",
        "COPY t FROM STDIN DELIMITER '|';",
        "/* lead */ COPY t FROM STDIN;",
        "COPY U&\"t\" FROM stdin;",
    ] {
        assert!(starts_copy(script), "{script}");
    }
    for script in [
        "COPY t TO STDOUT;",
        "COPY (SELECT 1 FROM x) TO STDOUT;",
        "COPY t FROM '/tmp/f';",
        "COPY t FROM PROGRAM 'cat';",
        "COPY \"from\" TO stdout;",
        "SELECT 'COPY t FROM STDIN';",
        "SELECT * FROM stdin;",
        "COPY t FROM \"stdin\";",
        "COPY t FROM;",
    ] {
        assert!(!starts_copy(script), "{script}");
    }
}

#[test]
fn copy_column_list_and_quoted_names() {
    let script = b"COPY \"Sch\".\"T;1\" (\"a)\", b) FROM stdin WITH (FORMAT csv);\n\"x;\",1\n\\.\n";
    assert_eq!(
        items(script),
        [stmt("COPY \"Sch\".\"T;1\" (\"a)\", b) FROM stdin WITH (FORMAT csv);", 1), data(b"\"x;\",1\n"), copy_end(3),]
    );
}

#[test]
fn copy_end_marker_at_end_of_file_without_newline() {
    assert_eq!(items(b"COPY t FROM stdin;\na\n\\."), [stmt("COPY t FROM stdin;", 1), data(b"a\n"), copy_end(3)]);
    assert_eq!(items(b"COPY t FROM stdin;\n\\."), [stmt("COPY t FROM stdin;", 1), copy_end(2)]);
}

#[test]
fn end_of_file_inside_copy_data() {
    let (seen, e) = failure(b"SELECT 1;\nCOPY t FROM stdin;\na\n");
    assert_eq!(seen, [stmt("SELECT 1;", 1), stmt("COPY t FROM stdin;", 2)]);
    assert_eq!(e.to_string(), "line 2: end of file inside COPY data (missing \\. line)");
    // `\.` followed by a lone `\r` is data, as for psql.
    assert_eq!(error_of(b"COPY t FROM stdin;\n\\.\r"), (1, ErrorKind::UnterminatedCopy));
}

#[test]
fn text_after_copy_statement_is_read_after_the_data() {
    assert_eq!(
        items(b"COPY t FROM stdin; SELECT 1; SELECT\nx\n\\.\n2;\n"),
        [stmt("COPY t FROM stdin;", 1), data(b"x\n"), copy_end(3), stmt("SELECT 1;", 1), stmt("SELECT\n2;", 1),]
    );
}

#[test]
fn copy_data_chunks() {
    let mut script = b"COPY t FROM stdin;\n".to_vec();
    let mut rows = Vec::new();
    for i in 0..3000 {
        rows.extend_from_slice(format!("{i:039}\n").as_bytes());
    }
    script.extend_from_slice(&rows);
    script.extend_from_slice(b"\\.\n");
    // 1638 lines of 40 bytes fit into 64 KiB, 1639 do not.
    let (first, second) = rows.split_at(1638 * 40);
    assert_eq!(items(&script), [stmt("COPY t FROM stdin;", 1), data(first), data(second), copy_end(3002)]);
}

#[test]
fn copy_data_chunk_exactly_full_and_oversized_lines() {
    let line = [b"x".repeat(4095), b"\n".to_vec()].concat();
    let mut script = b"COPY t FROM stdin;\n".to_vec();
    for _ in 0..16 {
        script.extend_from_slice(&line);
    }
    script.extend_from_slice(b"\\.\n");
    assert_eq!(items(&script), [stmt("COPY t FROM stdin;", 1), data(&line.repeat(16)), copy_end(18)]);
    assert_eq!(line.len() * 16, COPY_CHUNK_BYTES);

    let big = [b"b".repeat(69_999), b"\n".to_vec()].concat();
    let script = [b"COPY t FROM stdin;\na\n".as_slice(), &big, b"c\n\\.\n"].concat();
    assert_eq!(items(&script), [stmt("COPY t FROM stdin;", 1), data(b"a\n"), data(&big), data(b"c\n"), copy_end(5)]);
}

#[test]
fn meta_commands() {
    let script = concat!(
        "\\set ON_ERROR_STOP on\n",
        "  \\encoding UTF8\r\n",
        "\\restrict abc123\n",
        "SELECT 1;\n",
        "\\unrestrict abc123\n",
        "\\echo 'a:b' \"c:d\"   \n",
        "\\q\n",
    );
    assert_eq!(
        items(script.as_bytes()),
        [
            meta("set", "ON_ERROR_STOP on", 1),
            meta("encoding", "UTF8", 2),
            meta("restrict", "abc123", 3),
            stmt("SELECT 1;", 4),
            meta("unrestrict", "abc123", 5),
            meta("echo", "'a:b' \"c:d\"", 6),
            meta("q", "", 7),
        ]
    );
}

#[test]
fn meta_command_errors() {
    let cases: [(&[u8], u64, ErrorKind); 14] = [
        (b"SELECT 1\n\\g\n", 2, ErrorKind::BackslashInStatement),
        (b"SELECT 1 \\g\n", 1, ErrorKind::BackslashInStatement),
        (b"/* c */\n\\set x 1\n", 2, ErrorKind::BackslashInStatement),
        (b"SELECT 'a' \\; SELECT 2;\n", 1, ErrorKind::BackslashInStatement),
        (b"\\;\n", 1, ErrorKind::BackslashInStatement),
        (b"SELECT 1; \\set x 1\n", 1, ErrorKind::BackslashNotAtLineStart),
        (b"SELECT 1;\n\\.\n", 2, ErrorKind::EndOfCopyOutsideCopy),
        (b"\\copy t from stdin\n", 1, ErrorKind::BackslashCopy),
        (b"\\echo `rm -rf /`\n", 1, ErrorKind::UnsupportedArgument),
        (b"\\set a b \\\\ SELECT 1;\n", 1, ErrorKind::UnsupportedArgument),
        (b"\\set a :b\n", 1, ErrorKind::VariableReference),
        (b"\\set a 'b\n", 1, ErrorKind::UnterminatedArgument),
        (b"\\ x\n", 1, ErrorKind::MissingCommandName),
        (b"\\\n", 1, ErrorKind::MissingCommandName),
    ];
    for (script, line, kind) in cases {
        assert_eq!(error_of(script), (line, kind), "{}", String::from_utf8_lossy(script));
    }
    let (seen, e) = failure(b"SELECT 1; \\set x 1\n");
    assert_eq!(seen, [stmt("SELECT 1;", 1)]);
    assert_eq!(e.to_string(), "line 1: backslash command must start a line");
    let (_, e) = failure(b"SELECT 1\n\\g\n");
    assert_eq!(e.to_string(), "line 2: unsupported backslash command inside a statement");
}

#[test]
fn unterminated_statement_at_end_of_file() {
    let (seen, e) = failure(b"SELECT 1;\nSELECT\n  2\n");
    assert_eq!(seen, [stmt("SELECT 1;", 1)]);
    assert_eq!(e.line(), 2);
    assert_eq!(e.kind(), Some(&ErrorKind::UnterminatedStatement));
    assert_eq!(e.to_string(), "line 2: statement not terminated at end of file");
    assert_eq!(error_of(b"SELECT (1;\n"), (1, ErrorKind::UnterminatedStatement));
    assert_eq!(error_of(b"SELECT 'a'"), (1, ErrorKind::UnterminatedStatement));
    assert_eq!(error_of(b"CREATE PROCEDURE p() BEGIN ATOMIC SELECT 1;\n"), (1, ErrorKind::UnterminatedStatement));
}

#[test]
fn unterminated_quotes_and_comments_at_end_of_file() {
    let cases: [(&[u8], u64, ErrorKind, &str); 6] = [
        (b"SELECT 1;\nSELECT 'abc\n;\n", 2, ErrorKind::UnterminatedString, "unterminated quoted string at end of file"),
        (b"SELECT E'\\'\n", 1, ErrorKind::UnterminatedString, "unterminated quoted string at end of file"),
        (
            b"SELECT 1 AS \"a\";\nSELECT U&'x;\n",
            2,
            ErrorKind::UnterminatedString,
            "unterminated quoted string at end of file",
        ),
        (b"SELECT \"abc;\n", 1, ErrorKind::UnterminatedIdentifier, "unterminated quoted identifier at end of file"),
        (
            b"SELECT $x$ abc;\n\n",
            1,
            ErrorKind::UnterminatedDollarQuote,
            "unterminated dollar-quoted string at end of file",
        ),
        (b"SELECT 1;\n\n/* a /* b */ ;\n", 3, ErrorKind::UnterminatedComment, "unterminated /* comment at end of file"),
    ];
    for (script, line, kind, message) in cases {
        let (_, e) = failure(script);
        assert_eq!((e.line(), e.kind()), (line, Some(&kind)));
        assert_eq!(e.to_string(), format!("line {line}: {message}"));
    }
}

#[test]
fn psql_variable_references_are_errors() {
    for script in [
        "SELECT :foo;",
        "SELECT :'foo';",
        "SELECT :\"foo\";",
        "SELECT :{?foo};",
        "SELECT arr[1:2];",
        "SELECT 1:::x;",
        "SELECT 1 FROM t WHERE a = :_1;",
    ] {
        let (seen, e) = failure(script.as_bytes());
        assert_eq!(seen, [], "{script}");
        assert_eq!(e.to_string(), "line 1: psql variable references are not supported", "{script}");
    }
    assert_eq!(error_of(b"SELECT 1;\n\nSELECT\n  :x;\n"), (4, ErrorKind::VariableReference));
}

#[test]
fn casts_and_colons_that_are_not_variables() {
    let sql = "SELECT '1'::int, now()::date::text, 'a:b', \":c\", $$:d$$, E':e', x := 1, a[1 : 2], 1:: int, $1:$2 /* :f */ -- :g\n;";
    assert_eq!(items(sql.as_bytes()), [stmt(sql, 1)]);
}

#[test]
fn statement_limit() {
    // "SELECT 1234567890;" is 18 bytes.
    let script = b"SELECT 1234567890;\nSELECT\n   123456789\n;\n";
    let mut reader = ScriptReader::with_max_statement_bytes(script.as_slice(), 18);
    assert_eq!(reader.next_item().ok().flatten(), Some(stmt("SELECT 1234567890;", 1)));
    let e = reader.next_item().unwrap_err();
    assert_eq!(e.to_string(), "line 3: statement exceeds the limit of 18 bytes");
    assert_eq!(reader.next_item().ok(), Some(None));

    // The newline joining two lines counts too.
    let (seen, e) = failure_with_limit(b"SELECT\n12345678901;\n", 18);
    assert_eq!(seen, []);
    assert_eq!((e.line(), e.kind()), (2, Some(&ErrorKind::StatementTooLong { limit: 18 })));
}

#[test]
fn line_limit() {
    let (_, e) = failure_with_limit(b"-- a very long comment line\n", 10);
    assert_eq!(e.to_string(), "line 1: line exceeds the limit of 10 bytes");
    let script = [b"COPY t FROM stdin;\n".as_slice(), &b"x".repeat(30), b"\n\\.\n"].concat();
    let (seen, e) = failure_with_limit(&script, 20);
    assert_eq!(seen, [stmt("COPY t FROM stdin;", 1)]);
    assert_eq!((e.line(), e.kind()), (2, Some(&ErrorKind::LineTooLong { limit: 20 })));
    // Exactly at the limit is fine; the `\n` does not count.
    assert_eq!(
        ScriptReader::with_max_statement_bytes(b"SELECT 1;\n".as_slice(), 9).collect::<Result<Vec<_>, _>>().ok(),
        Some(vec![stmt("SELECT 1;", 1)])
    );
}

#[test]
fn line_numbers_with_bom_crlf_and_copy() {
    let script = b"\xef\xbb\xbfSELECT 1;\r\n\r\n-- c\r\nSELECT\r\n2;\r\nCOPY t FROM stdin;\r\na\r\n\\.\r\n\\set x y\r\n\n\nSELECT\n\n3;\n";
    assert_eq!(
        items(script),
        [
            stmt("SELECT 1;", 1),
            stmt("SELECT\r\n2;", 4),
            stmt("COPY t FROM stdin;", 6),
            data(b"a\r\n"),
            copy_end(8),
            meta("set", "x y", 9),
            stmt("SELECT\n3;", 12),
        ]
    );
}

#[test]
fn invalid_utf8_and_nul_bytes() {
    let (seen, e) = failure(b"SELECT 1;\nSELECT '\xff';\n");
    assert_eq!(seen, [stmt("SELECT 1;", 1)]);
    assert_eq!(e.to_string(), "line 2: invalid UTF-8");
    assert_eq!(error_of(b"SELECT '\0';\n"), (1, ErrorKind::NulByte));
    let (seen, e) = failure(b"COPY t FROM stdin;\na\0b\n\\.\n");
    assert_eq!(seen, [stmt("COPY t FROM stdin;", 1)]);
    assert_eq!(e.to_string(), "line 2: unexpected NUL byte");
    // COPY data is bytes, not text.
    assert_eq!(
        items(b"COPY t FROM stdin;\n\xff\xfe\n\\.\n"),
        [stmt("COPY t FROM stdin;", 1), data(b"\xff\xfe\n"), copy_end(3)]
    );
}

/// Input that yields some bytes and then fails.
struct FailingInput(&'static [u8]);

impl Read for FailingInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::other("disk on fire"));
        }
        let n = self.0.len().min(buf.len());
        let (head, tail) = self.0.split_at(n);
        buf[..n].copy_from_slice(head);
        self.0 = tail;
        Ok(n)
    }
}

#[test]
fn io_errors_carry_the_line() {
    let mut reader = ScriptReader::new(BufReader::new(FailingInput(b"SELECT 1;\n")));
    assert_eq!(reader.next_item().ok().flatten(), Some(stmt("SELECT 1;", 1)));
    let e = reader.next_item().unwrap_err();
    assert!(matches!(e, ScriptError::Io { line: 2, .. }));
    assert_eq!(e.kind(), None);
    assert_eq!(e.to_string(), "line 2: could not read script: disk on fire");
    assert!(reader.next().is_none());
}

/// An endless script, to show that reading does not need the whole input.
struct Endless {
    pattern: &'static [u8],
    pos: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for b in buf.iter_mut() {
            *b = self.pattern[self.pos % self.pattern.len()];
            self.pos += 1;
        }
        Ok(buf.len())
    }
}

#[test]
fn reads_incrementally() {
    let input = BufReader::new(Endless { pattern: b"SELECT 1;\n", pos: 0 });
    let mut reader = ScriptReader::new(input);
    for line in 1..=1000 {
        assert_eq!(reader.next_item().ok().flatten(), Some(stmt("SELECT 1;", line)));
    }
    assert_eq!(reader.lines_read(), 1000);
}

#[test]
fn iterator_stops_after_an_error() {
    let mut reader = ScriptReader::new(b"SELECT :x;\nSELECT 1;\n".as_slice());
    assert!(matches!(reader.next(), Some(Err(ScriptError::Invalid { line: 1, .. }))));
    assert!(reader.next().is_none());
    assert!(reader.next().is_none());
}

/// xorshift64: enough randomness for fuzzing without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

/// Runs a script to its end and checks what must hold for any input.
fn check_never_panics(input: &[u8], limit: usize) {
    let mut reader = ScriptReader::with_max_statement_bytes(input, limit);
    let mut count = 0usize;
    let mut in_copy = false;
    while let Some(result) = reader.next() {
        count += 1;
        assert!(count <= input.len() + 1, "more items than input bytes");
        match result {
            Ok(Item::Statement { sql, line }) => {
                assert!(!in_copy);
                assert!(sql.ends_with(';'), "{sql:?}");
                assert!(sql.len() <= limit);
                assert!(line >= 1);
                in_copy = reader.awaiting_copy_data();
            }
            Ok(Item::Meta { command, .. }) => {
                assert!(!in_copy);
                assert!(!command.is_empty());
            }
            Ok(Item::CopyData(chunk)) => {
                assert!(in_copy);
                assert!(!chunk.is_empty());
                assert!(chunk.len() <= COPY_CHUNK_BYTES.max(limit + 2));
            }
            Ok(Item::CopyEnd { .. }) => {
                assert!(in_copy);
                in_copy = false;
            }
            Err(e) => assert!(e.line() >= 1),
        }
    }
}

#[test]
fn random_input_never_panics() {
    const ALPHABET: &[u8] =
        b"  \t\n\n\r\x0b;;;(())''\"\"$$$--//**\\\\::.eEuUnNbBxX&_019aZ{?}|=+<>,\x00\xc3\xa9\xff\xef\xbb\xbf";
    const WORDS: [&str; 12] = [
        "COPY t FROM stdin;\n",
        "\\.\n",
        "CREATE FUNCTION f() BEGIN ",
        "CASE ",
        "END",
        "$a$",
        "E'",
        "U&'",
        "\\set x 1\n",
        "1e-",
        "/*",
        "*/",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let len = rng.below(120);
        let mut input = Vec::with_capacity(len);
        for _ in 0..len {
            match rng.below(10) {
                0 => input.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes()),
                1 => input.push(u8::try_from(rng.below(256)).unwrap_or(0)),
                _ => input.push(ALPHABET[rng.below(ALPHABET.len())]),
            }
        }
        let limit = if round % 3 == 0 { 1 + rng.below(40) } else { 1 << 20 };
        check_never_panics(&input, limit);
    }
}
