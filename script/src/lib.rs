//! A streaming reader that splits a psql script into the statements,
//! backslash commands and `COPY` data that `psql -v ON_ERROR_STOP=1 -f FILE`
//! would act on, so that the dbmirror applier can replay the file itself.
//!
//! The reader only splits. It executes nothing, never talks to a server and
//! does not check that a statement is valid SQL or that a backslash command
//! exists; it promises that every statement boundary is the one psql would
//! use, and it stops with a [`ScriptError`] wherever it cannot promise that
//! (a damaged or hostile file must never make us send a different statement
//! than psql would). Memory use is bounded by the largest statement or line
//! (see [`ScriptReader::with_max_statement_bytes`]), not by the file size.
//!
//! ```
//! use dbmirror_script::{Item, ScriptReader};
//!
//! let script = "\\set ON_ERROR_STOP on\nCOPY t (a) FROM stdin;\n1\n\\.\nSELECT 1;\n";
//! let items = ScriptReader::new(script.as_bytes()).collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(
//!     items,
//!     [
//!         Item::Meta { command: "set".into(), args: "ON_ERROR_STOP on".into(), line: 1 },
//!         Item::Statement { sql: "COPY t (a) FROM stdin;".into(), line: 2 },
//!         Item::CopyData(b"1\n".to_vec()),
//!         Item::CopyEnd { line: 4 },
//!         Item::Statement { sql: "SELECT 1;".into(), line: 5 },
//!     ]
//! );
//! # Ok::<(), dbmirror_script::ScriptError>(())
//! ```
//!
//! # How psql is matched
//!
//! The lexer copies the statement-splitting rules of psql 17 and 18
//! (`psqlscan.l` and `MainLoop()`), with `standard_conforming_strings = on`
//! and client encoding UTF-8. Like psql it works line by line: it sees each
//! line without its `\n` and keeps its state from one line to the next.
//!
//! - **Statement text** is what psql sends. Whitespace and `--` comments
//!   before the first token are dropped; a `/* */` comment before it is
//!   kept. Everything from there through the terminating `;` is kept,
//!   including `--` comments inside the statement: psql 15 and later send
//!   them (psql 14 and older removed them, which makes no difference to the
//!   server). Lines are joined with `\n`, so the `\r` of a CRLF line stays
//!   at the end of its line. Blank lines are dropped, also in the middle of a
//!   statement, unless they are inside a quoted string or a comment, because
//!   psql drops them. A lone `;` is the statement `;`: psql sends it and the
//!   server answers with an empty-query response.
//! - **Where a statement ends**: at a `;` outside quotes and comments, and
//!   also outside parentheses: psql counts `(` and `)` and does not end a
//!   statement inside them (an unmatched `)` is ignored). psql also does not
//!   end a `CREATE [OR REPLACE] FUNCTION` or `PROCEDURE` statement inside a
//!   `BEGIN ... END` body (counting `CASE ... END` inside it); this is a
//!   word-counting heuristic, copied as it is, blind spots included.
//! - **Literals**: `'...'` with `''`; `E'...'` where a backslash escapes the
//!   next character; `B'...'`, `X'...'`, `N'...'`, `U&'...'`; `"..."` and
//!   `U&"..."` with `""`; `$tag$...$tag$` (a tag is a letter or `_` and then
//!   letters, digits and `_`; `$1` is a parameter, and a `$` inside a word,
//!   as in `a$$`, is part of the word); `--` comments to the end of the
//!   line; nesting `/* */` comments. A quote right after a word or a number
//!   does not take a prefix (`1e'\'` is the number `1e` and then `'\'`, as
//!   in psql 15.9 and later).
//! - **String continuation** (`'a'` newline `'b'`, one literal for the
//!   server) is recognised only inside one line, where the newline can only
//!   be a bare `\r`, because that is all psql's lexer sees. So `E'a'`,
//!   newline, `'\';` ends at that `;` for psql even though the server reads
//!   the `\'` as an escaped quote; we split where psql splits.
//! - A UTF-8 byte order mark at the start of the file is skipped.
//!
//! # Deviations from psql
//!
//! All of them turn something psql would accept into an error, never into a
//! different split.
//!
//! - **End of file**: psql sends unterminated statement text anyway; we
//!   report [`ErrorKind::UnterminatedStatement`] (or the unterminated quote
//!   or comment), because a truncated file must never be half-executed.
//!   Trailing whitespace and comments are fine; psql would send a trailing
//!   `/* */` comment as an empty query, which we skip.
//! - **psql variables** are not supported: `:name`, `:'name'`, `:"name"`
//!   and `:{?name}` outside quotes and comments are errors, so we never send
//!   text psql would have rewritten. `::` casts and `:=` are fine, but an
//!   array slice must be written `a[1 : 2]`, as `a[1:2]` contains `:2`.
//! - **Backslash commands** are supported only at the start of a line
//!   (after optional whitespace) when no statement text is pending, not
//!   even a comment. The rest of the line is the raw argument text; a
//!   backslash (psql's `\\` separator), a backquote (a shell command), a
//!   variable reference outside quotes or an unbalanced quote in it is an
//!   error. `\;`, `\:`, `\.` outside COPY data and `\copy` (whose data psql
//!   would read from the script) are errors. Which commands to obey is the
//!   caller's decision.
//! - **COPY**: psql learns from the server that data follows; we decide
//!   from the text, on the tokens psql's lexer sees: the statement starts
//!   with `COPY` and its first `FROM` or `TO` outside parentheses (and not
//!   after a `.`) is `FROM` followed by `STDIN`. The caller must check that
//!   the server's answer agrees (a `CopyInResponse` exactly when
//!   [`ScriptReader::awaiting_copy_data`] is true) and stop otherwise. Data
//!   lines end at a line that is exactly `\.`, followed by `\n`, `\r\n` or
//!   the end of the file, as in psql. End of file inside the data is an
//!   error ([`ErrorKind::UnterminatedCopy`]), where psql would end the COPY.
//!   Text after the `;` of the COPY statement on its line is read after the
//!   data, as psql does.
//! - **NUL bytes** are errors everywhere, also in COPY data: psql silently
//!   drops the rest of such a line and, in COPY data, stops recognising the
//!   `\.` line after it. Binary COPY data therefore cannot pass (its
//!   signature contains a NUL), which is intended: psql would read the whole
//!   rest of the file as binary data.
//! - **Invalid UTF-8** outside COPY data is an error; COPY data is passed
//!   through unchecked.
//! - **Limits**: a statement, or any line, longer than the limit is an error.

#![warn(missing_docs)]

mod error;
mod lexer;
#[cfg(test)]
mod tests;

use std::io::{self, BufRead};
use std::iter::FusedIterator;

pub use error::{ErrorKind, ScriptError};
use lexer::{Lexer, Pending, Scan};

/// Default limit for one statement, and for one line, in bytes (256 MiB).
pub const DEFAULT_MAX_STATEMENT_BYTES: usize = 256 * 1024 * 1024;

/// Target size of one [`Item::CopyData`] chunk, in bytes (64 KiB).
///
/// A chunk holds whole lines and is never larger than this, except when a
/// single line is larger: then that line is a chunk of its own.
pub const COPY_CHUNK_BYTES: usize = 64 * 1024;

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// One thing psql would act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete SQL statement, exactly the text psql would send, ending
    /// with its `;`.
    Statement {
        /// The statement text.
        sql: String,
        /// 1-based line where the statement text starts.
        line: u64,
    },
    /// A backslash command such as `\set ON_ERROR_STOP on`.
    Meta {
        /// The command name, without the backslash (`set`).
        command: String,
        /// The rest of the line without surrounding whitespace, unprocessed
        /// (`ON_ERROR_STOP on`); psql's quoting is not undone.
        args: String,
        /// 1-based line of the command.
        line: u64,
    },
    /// Whole lines of `COPY ... FROM STDIN` data, byte for byte, each with
    /// its `\n` or `\r\n`. See [`COPY_CHUNK_BYTES`] for the chunk size.
    CopyData(Vec<u8>),
    /// The `\.` line that ends `COPY ... FROM STDIN` data; the marker is not
    /// data and is not included in any chunk.
    CopyEnd {
        /// 1-based line of the `\.`.
        line: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sql,
    Copy,
    /// The `\.` line was read while a chunk was pending; report it next.
    CopyEnd(u64),
    Done,
}

/// Reads a psql script from a [`BufRead`] one [`Item`] at a time.
///
/// Use it as an iterator of `Result<Item, ScriptError>` or call
/// [`next_item`](Self::next_item). After the end of the input or an error
/// it yields nothing more.
///
/// After a `COPY ... FROM STDIN` statement come zero or more
/// [`Item::CopyData`] chunks and then one [`Item::CopyEnd`];
/// [`awaiting_copy_data`](Self::awaiting_copy_data) tells a caller, right
/// after the statement, that it should start a COPY rather than a query.
#[derive(Debug)]
pub struct ScriptReader<R> {
    input: R,
    limit: usize,
    lines_read: u64,
    /// The current SQL line, without its `\n`.
    line: Vec<u8>,
    line_no: u64,
    pos: usize,
    have_line: bool,
    lexer: Lexer,
    pending: Pending,
    mode: Mode,
    /// Line where the current COPY statement starts.
    copy_line: u64,
    copy_buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl<R: BufRead> ScriptReader<R> {
    /// A reader with the default limit, [`DEFAULT_MAX_STATEMENT_BYTES`].
    pub fn new(input: R) -> Self {
        Self::with_max_statement_bytes(input, DEFAULT_MAX_STATEMENT_BYTES)
    }

    /// A reader that refuses statements, and lines, longer than `limit`
    /// bytes (a line's `\n` does not count).
    pub fn with_max_statement_bytes(input: R, limit: usize) -> Self {
        Self {
            input,
            limit,
            lines_read: 0,
            line: Vec::new(),
            line_no: 0,
            pos: 0,
            have_line: false,
            lexer: Lexer::new(),
            pending: Pending::new(limit),
            mode: Mode::Sql,
            copy_line: 0,
            copy_buf: Vec::new(),
            chunk: Vec::new(),
        }
    }

    /// The next item, or `Ok(None)` at the end of the script.
    ///
    /// # Errors
    ///
    /// A [`ScriptError`] when the input cannot be read or cannot be split
    /// the way psql would split it. The reader then yields `Ok(None)`.
    pub fn next_item(&mut self) -> Result<Option<Item>, ScriptError> {
        let result = self.advance();
        if !matches!(result, Ok(Some(_))) {
            self.mode = Mode::Done;
        }
        result
    }

    /// Whether the last item was a `COPY ... FROM STDIN` statement or COPY
    /// data, that is, whether the next item is [`Item::CopyData`] or
    /// [`Item::CopyEnd`] (unless it is an error).
    pub fn awaiting_copy_data(&self) -> bool {
        matches!(self.mode, Mode::Copy | Mode::CopyEnd(_))
    }

    /// Number of lines read from the input so far.
    pub fn lines_read(&self) -> u64 {
        self.lines_read
    }

    fn advance(&mut self) -> Result<Option<Item>, ScriptError> {
        loop {
            match self.mode {
                Mode::Done => return Ok(None),
                Mode::Copy => return self.copy_step().map(Some),
                Mode::CopyEnd(line) => {
                    self.mode = Mode::Sql;
                    return Ok(Some(Item::CopyEnd { line }));
                }
                Mode::Sql => {}
            }
            if !self.have_line {
                if !self.next_sql_line()? {
                    return match self.lexer.end_of_file_error(&self.pending) {
                        Some((line, kind)) => Err(ScriptError::Invalid { line, kind }),
                        None => Ok(None),
                    };
                }
                self.have_line = true;
            }
            let scan = self
                .lexer
                .scan(&self.line, &mut self.pos, self.line_no, &mut self.pending)
                .map_err(|kind| invalid(self.line_no, kind))?;
            match scan {
                Scan::EndOfLine => self.have_line = false,
                Scan::Semicolon { copy_from_stdin } => {
                    let (text, line) = self.pending.take();
                    let sql = String::from_utf8(text).map_err(|_| invalid(line, ErrorKind::InvalidUtf8))?;
                    if copy_from_stdin {
                        // The rest of this line stays in `self.line` and is
                        // lexed after the data, as psql does.
                        self.mode = Mode::Copy;
                        self.copy_line = line;
                    }
                    return Ok(Some(Item::Statement { sql, line }));
                }
                Scan::Meta { command, args } => {
                    self.have_line = false;
                    return Ok(Some(Item::Meta { command, args, line: self.line_no }));
                }
            }
        }
    }

    /// Loads the next line that psql would lex; `false` at end of input.
    fn next_sql_line(&mut self) -> Result<bool, ScriptError> {
        loop {
            let line_no = self.lines_read.saturating_add(1);
            match read_line(&mut self.input, &mut self.line, self.limit)
                .map_err(|source| ScriptError::Io { line: line_no, source })?
            {
                LineRead::Eof => return Ok(false),
                LineRead::TooLong => {
                    return Err(invalid(line_no, ErrorKind::LineTooLong { limit: self.limit }));
                }
                LineRead::Line => {}
            }
            self.lines_read = line_no;
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
            }
            if line_no == 1 && self.line.starts_with(UTF8_BOM) {
                self.line.drain(..UTF8_BOM.len());
            }
            if self.line.contains(&0) {
                return Err(invalid(line_no, ErrorKind::NulByte));
            }
            if std::str::from_utf8(&self.line).is_err() {
                return Err(invalid(line_no, ErrorKind::InvalidUtf8));
            }
            // psql skips an empty line outside quotes and comments without
            // adding its newline to the pending statement.
            if self.line.is_empty() && !self.lexer.in_quote() {
                continue;
            }
            self.line_no = line_no;
            self.pos = 0;
            if !self.pending.is_empty() {
                self.pending.push(b"\n", line_no, false).map_err(|kind| invalid(line_no, kind))?;
            }
            return Ok(true);
        }
    }

    fn copy_step(&mut self) -> Result<Item, ScriptError> {
        loop {
            let line_no = self.lines_read.saturating_add(1);
            match read_line(&mut self.input, &mut self.copy_buf, self.limit)
                .map_err(|source| ScriptError::Io { line: line_no, source })?
            {
                LineRead::Eof => return Err(invalid(self.copy_line, ErrorKind::UnterminatedCopy)),
                LineRead::TooLong => {
                    return Err(invalid(line_no, ErrorKind::LineTooLong { limit: self.limit }));
                }
                LineRead::Line => {}
            }
            self.lines_read = line_no;
            // A line without `\n` can only be the last one of the input.
            if matches!(self.copy_buf.as_slice(), b"\\.\n" | b"\\.\r\n" | b"\\.") {
                if self.chunk.is_empty() {
                    self.mode = Mode::Sql;
                    return Ok(Item::CopyEnd { line: line_no });
                }
                self.mode = Mode::CopyEnd(line_no);
                return Ok(Item::CopyData(std::mem::take(&mut self.chunk)));
            }
            if self.copy_buf.contains(&0) {
                return Err(invalid(line_no, ErrorKind::NulByte));
            }
            if !self.chunk.is_empty() && self.chunk.len().saturating_add(self.copy_buf.len()) > COPY_CHUNK_BYTES {
                let full = std::mem::replace(&mut self.chunk, std::mem::take(&mut self.copy_buf));
                return Ok(Item::CopyData(full));
            }
            self.chunk.extend_from_slice(&self.copy_buf);
            if self.chunk.len() >= COPY_CHUNK_BYTES {
                return Ok(Item::CopyData(std::mem::take(&mut self.chunk)));
            }
        }
    }
}

impl<R: BufRead> Iterator for ScriptReader<R> {
    type Item = Result<Item, ScriptError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

impl<R: BufRead> FusedIterator for ScriptReader<R> {}

fn invalid(line: u64, kind: ErrorKind) -> ScriptError {
    ScriptError::Invalid { line, kind }
}

enum LineRead {
    Eof,
    Line,
    TooLong,
}

/// Reads one line, with its `\n` if any, into `buf`, without ever holding
/// more than `limit` bytes of it (plus the `\n`).
fn read_line<R: BufRead>(input: &mut R, buf: &mut Vec<u8>, limit: usize) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() { LineRead::Eof } else { LineRead::Line });
        }
        let (take, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let content = buf.len().saturating_add(take) - usize::from(complete);
        if content > limit {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(available.get(..take).unwrap_or(available));
        input.consume(take);
        if complete {
            return Ok(LineRead::Line);
        }
    }
}
