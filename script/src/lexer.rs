//! The statement-boundary lexer: a hand-written copy of the rules of psql's
//! `src/fe_utils/psqlscan.l` (PostgreSQL 17 and 18) that decide where a
//! statement ends.
//!
//! psql hands its lexer one line at a time, without the newline, and keeps
//! the lexer state from one line to the next. [`Lexer::scan`] works the same
//! way, because some constructs end differently depending on what the lexer
//! can see: a string continuation (`'a'` newline `'b'`) is only recognised
//! when both parts are on one psql line, so psql never joins strings across
//! `\n`. Flex picks the longest match and then the earliest rule; the
//! comments below point out where that changes a token's extent.

use crate::error::ErrorKind;

/// The lexer's start condition; each variant names its psqlscan.l state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Between tokens (`INITIAL`).
    Initial,
    /// Inside `B'...'` (`xb`).
    BitString,
    /// Inside a `/* */` comment (`xc`).
    Comment,
    /// Inside `"..."` (`xd`).
    Identifier,
    /// Inside `X'...'` (`xh`).
    HexString,
    /// Inside `'...'` (`xq`).
    String,
    /// Just after a closing quote, looking for a continuation (`xqs`).
    QuoteStop,
    /// Inside `E'...'` (`xe`).
    EscapeString,
    /// Inside `$tag$...$tag$` (`xdolq`).
    DollarString,
    /// Inside `U&"..."` (`xui`).
    UnicodeIdentifier,
    /// Inside `U&'...'` (`xus`).
    UnicodeString,
}

/// Why [`Lexer::scan`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The line is used up; the statement (if any) continues on the next.
    EndOfLine,
    /// A terminating semicolon was appended to the pending statement.
    Semicolon {
        /// The statement is `COPY ... FROM STDIN`, so data lines follow.
        copy_from_stdin: bool,
    },
    /// The line is a backslash command; the whole line has been used.
    Meta {
        /// Command name, without the backslash.
        command: String,
        /// The rest of the line, without surrounding whitespace.
        args: String,
    },
}

/// The text of the statement being collected: psql's `query_buf`.
#[derive(Debug)]
pub(crate) struct Pending {
    text: Vec<u8>,
    limit: usize,
    /// Whether anything other than whitespace and comments was collected.
    has_token: bool,
    start_line: u64,
}

impl Pending {
    pub(crate) fn new(limit: usize) -> Self {
        Self { text: Vec::new(), limit, has_token: false, start_line: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub(crate) fn has_token(&self) -> bool {
        self.has_token
    }

    pub(crate) fn start_line(&self) -> u64 {
        self.start_line
    }

    /// Appends `bytes`; `token` says whether they are more than whitespace
    /// or comment text.
    pub(crate) fn push(&mut self, bytes: &[u8], line: u64, token: bool) -> Result<(), ErrorKind> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.text.len().saturating_add(bytes.len()) > self.limit {
            return Err(ErrorKind::StatementTooLong { limit: self.limit });
        }
        if self.text.is_empty() {
            self.start_line = line;
        }
        self.text.extend_from_slice(bytes);
        self.has_token |= token;
        Ok(())
    }

    /// Hands out the collected text and its first line, and starts afresh.
    pub(crate) fn take(&mut self) -> (Vec<u8>, u64) {
        self.has_token = false;
        (std::mem::take(&mut self.text), self.start_line)
    }
}

/// One step of the `INITIAL` state.
enum Step {
    /// This many bytes were used; keep going.
    Consumed(usize),
    /// Stop scanning after using this many bytes.
    Done(Scan, usize),
}

/// Tokens that matter for recognising `COPY ... FROM STDIN`.
#[derive(Debug, Clone, Copy)]
enum Token<'a> {
    Word(&'a [u8]),
    Dot,
    Open,
    Close,
    Other,
}

/// Recognises `COPY [BINARY] name [(columns)] FROM STDIN ...` from the
/// statement's tokens, the way the server's grammar reads it. psql itself
/// does not need this (the server tells it that data is expected), so this
/// is our own decision, made on the same tokens psql's lexer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyDetector {
    /// Before the first token.
    Start,
    /// After `COPY`, looking for `FROM` or `TO` outside parentheses.
    Target {
        depth: usize,
        after_dot: bool,
    },
    /// After `COPY ... FROM`.
    Source,
    Yes,
    No,
}

impl CopyDetector {
    fn feed(&mut self, token: Token<'_>) {
        *self = match (*self, token) {
            (Self::Start, Token::Word(w)) if w.eq_ignore_ascii_case(b"copy") => {
                Self::Target { depth: 0, after_dot: false }
            }
            (Self::Start, _) => Self::No,
            (Self::Target { depth, .. }, Token::Open) => {
                Self::Target { depth: depth.saturating_add(1), after_dot: false }
            }
            (Self::Target { depth, .. }, Token::Close) => {
                Self::Target { depth: depth.saturating_sub(1), after_dot: false }
            }
            (Self::Target { depth, .. }, Token::Dot) => Self::Target { depth, after_dot: true },
            // A word after a dot is part of a qualified name, where even
            // reserved words are allowed (`COPY s.from FROM STDIN`).
            (Self::Target { depth: 0, after_dot: false }, Token::Word(w)) if w.eq_ignore_ascii_case(b"from") => {
                Self::Source
            }
            (Self::Target { depth: 0, after_dot: false }, Token::Word(w)) if w.eq_ignore_ascii_case(b"to") => Self::No,
            (Self::Target { depth, .. }, _) => Self::Target { depth, after_dot: false },
            (Self::Source, Token::Word(w)) if w.eq_ignore_ascii_case(b"stdin") => Self::Yes,
            (Self::Source, _) => Self::No,
            (decided @ (Self::Yes | Self::No), _) => decided,
        };
    }

    fn finish(&mut self) -> bool {
        let yes = *self == Self::Yes;
        *self = Self::Start;
        yes
    }
}

/// psql's lexer state, kept from line to line.
#[derive(Debug)]
pub(crate) struct Lexer {
    state: State,
    state_before_stop: State,
    paren_depth: usize,
    comment_depth: usize,
    dollar_tag: Vec<u8>,
    /// psql's `identifier_count` and `identifiers[4]`: the first letters of
    /// the first four words, kept only for CREATE, OR, REPLACE, FUNCTION and
    /// PROCEDURE.
    identifier_count: usize,
    identifiers: [u8; 4],
    /// psql's `begin_depth`: inside `BEGIN ... END` of a routine body.
    begin_depth: usize,
    /// Line where the open quote or comment started, for end-of-file errors.
    opened_line: u64,
    copy: CopyDetector,
}

impl Lexer {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Initial,
            state_before_stop: State::Initial,
            paren_depth: 0,
            comment_depth: 0,
            dollar_tag: Vec::new(),
            identifier_count: 0,
            identifiers: [0; 4],
            begin_depth: 0,
            opened_line: 0,
            copy: CopyDetector::Start,
        }
    }

    /// psql's `psql_scan_in_quote`: blank lines are dropped unless this holds.
    pub(crate) fn in_quote(&self) -> bool {
        !matches!(self.state, State::Initial | State::QuoteStop)
    }

    /// What is wrong if the input ends now, as `(line, kind)`.
    pub(crate) fn end_of_file_error(&self, pending: &Pending) -> Option<(u64, ErrorKind)> {
        let kind = match self.state {
            State::Initial | State::QuoteStop => {
                return pending.has_token().then(|| (pending.start_line(), ErrorKind::UnterminatedStatement));
            }
            State::String | State::EscapeString | State::BitString | State::HexString | State::UnicodeString => {
                ErrorKind::UnterminatedString
            }
            State::Identifier | State::UnicodeIdentifier => ErrorKind::UnterminatedIdentifier,
            State::DollarString => ErrorKind::UnterminatedDollarQuote,
            State::Comment => ErrorKind::UnterminatedComment,
        };
        Some((self.opened_line, kind))
    }

    /// Lexes `line` (without its `\n`) from `*pos`, appending to `out` what
    /// psql would append to its query buffer, until the line is used up, a
    /// statement ends, or a backslash command is found.
    pub(crate) fn scan(
        &mut self,
        line: &[u8],
        pos: &mut usize,
        line_no: u64,
        out: &mut Pending,
    ) -> Result<Scan, ErrorKind> {
        loop {
            let rest = line.get(*pos..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(Scan::EndOfLine);
            }
            let used = match self.state {
                State::Initial => match self.initial(line, *pos, line_no, out)? {
                    Step::Consumed(n) => n,
                    Step::Done(scan, n) => {
                        *pos = pos.saturating_add(n);
                        return Ok(scan);
                    }
                },
                State::Comment => self.comment(rest, line_no, out)?,
                State::String | State::UnicodeString => self.quoted(rest, line_no, out, true)?,
                State::BitString | State::HexString => self.quoted(rest, line_no, out, false)?,
                State::EscapeString => self.escape_string(rest, line_no, out)?,
                State::QuoteStop => self.quote_stop(rest, line_no, out)?,
                State::Identifier | State::UnicodeIdentifier => self.identifier(rest, line_no, out)?,
                State::DollarString => self.dollar_string(rest, line_no, out)?,
            };
            *pos = pos.saturating_add(used);
        }
    }

    fn open(&mut self, state: State, line_no: u64) {
        self.state = state;
        self.opened_line = line_no;
    }

    fn initial(&mut self, line: &[u8], start: usize, line_no: u64, out: &mut Pending) -> Result<Step, ErrorKind> {
        let rest = line.get(start..).unwrap_or_default();
        let Some(&c) = rest.first() else {
            return Ok(Step::Done(Scan::EndOfLine, 0));
        };
        let c1 = rest.get(1).copied();
        let c2 = rest.get(2).copied();

        // psql drops whitespace and `--` comments until the query buffer
        // holds something, and keeps them afterwards (psql 15 and later).
        if is_space(c) {
            let n = span(rest, is_space);
            if !out.is_empty() {
                out.push(prefix(rest, n), line_no, false)?;
            }
            return Ok(Step::Consumed(n));
        }
        if c == b'-' && c1 == Some(b'-') {
            let n = 2 + span(rest.get(2..).unwrap_or_default(), |b| !is_newline(b));
            if !out.is_empty() {
                out.push(prefix(rest, n), line_no, false)?;
            }
            return Ok(Step::Consumed(n));
        }
        // A `/* */` comment is always kept, even before the first token.
        if c == b'/' && c1 == Some(b'*') {
            self.open(State::Comment, line_no);
            self.comment_depth = 0;
            out.push(b"/*", line_no, false)?;
            return Ok(Step::Consumed(2));
        }

        let n = match c {
            b'\'' => {
                self.copy.feed(Token::Other);
                self.open(State::String, line_no);
                1
            }
            b'"' => {
                self.copy.feed(Token::Other);
                self.open(State::Identifier, line_no);
                1
            }
            b'$' => self.dollar(rest, line_no),
            b'(' => {
                self.paren_depth = self.paren_depth.saturating_add(1);
                self.copy.feed(Token::Open);
                1
            }
            b')' => {
                self.paren_depth = self.paren_depth.saturating_sub(1);
                self.copy.feed(Token::Close);
                1
            }
            b';' => {
                out.push(b";", line_no, true)?;
                if self.paren_depth == 0 && self.begin_depth == 0 {
                    self.identifier_count = 0;
                    let copy_from_stdin = self.copy.finish();
                    return Ok(Step::Done(Scan::Semicolon { copy_from_stdin }, 1));
                }
                return Ok(Step::Consumed(1));
            }
            b'\\' => return self.backslash(line, start, c1, out),
            b':' => match c1 {
                // `::` is a cast, so `x::text` is never a variable reference.
                Some(b':' | b'=') => {
                    self.copy.feed(Token::Other);
                    2
                }
                Some(next) if is_variable_char(next) || next == b'\'' || next == b'"' => {
                    return Err(ErrorKind::VariableReference);
                }
                Some(b'{') if c2 == Some(b'?') => return Err(ErrorKind::VariableReference),
                _ => {
                    self.copy.feed(Token::Other);
                    1
                }
            },
            b'.' => match c1 {
                Some(d) if d.is_ascii_digit() => {
                    self.copy.feed(Token::Other);
                    number_len(rest)
                }
                Some(b'.') => {
                    self.copy.feed(Token::Other);
                    2
                }
                _ => {
                    self.copy.feed(Token::Dot);
                    1
                }
            },
            b'0'..=b'9' => {
                self.copy.feed(Token::Other);
                number_len(rest)
            }
            _ if is_ident_start(c) => self.word(rest, c1, c2, line_no),
            _ if is_op_char(c) => {
                self.copy.feed(Token::Other);
                operator_len(rest)
            }
            _ => {
                self.copy.feed(Token::Other);
                1
            }
        };
        // Every branch above uses at least one byte, which guarantees
        // progress; `max` only makes that independent of the helpers.
        let n = n.max(1);
        out.push(prefix(rest, n), line_no, true)?;
        Ok(Step::Consumed(n))
    }

    /// A token starting with a letter: a prefixed literal or a word.
    fn word(&mut self, rest: &[u8], c1: Option<u8>, c2: Option<u8>, line_no: u64) -> usize {
        let first = rest.first().copied().unwrap_or_default();
        // The prefixed-literal rules are longer than the one-letter word, so
        // flex prefers them; after a longer word the quote starts afresh.
        match (first.to_ascii_lowercase(), c1, c2) {
            (b'b', Some(b'\''), _) => {
                self.copy.feed(Token::Other);
                self.open(State::BitString, line_no);
                2
            }
            (b'x', Some(b'\''), _) => {
                self.copy.feed(Token::Other);
                self.open(State::HexString, line_no);
                2
            }
            (b'e', Some(b'\''), _) => {
                self.copy.feed(Token::Other);
                self.open(State::EscapeString, line_no);
                2
            }
            (b'u', Some(b'&'), Some(b'\'')) => {
                self.copy.feed(Token::Other);
                self.open(State::UnicodeString, line_no);
                3
            }
            (b'u', Some(b'&'), Some(b'"')) => {
                self.copy.feed(Token::Other);
                self.open(State::UnicodeIdentifier, line_no);
                3
            }
            // psql eats only the `n` (the quote then opens a plain literal)
            // or the `u` of a failed `U&`; neither counts as a word.
            (b'n', Some(b'\''), _) | (b'u', Some(b'&'), _) => {
                self.copy.feed(Token::Other);
                1
            }
            _ => {
                let n = 1 + span(rest.get(1..).unwrap_or_default(), is_ident_cont);
                let word = prefix(rest, n);
                self.track_identifier(word);
                self.copy.feed(Token::Word(word));
                n
            }
        }
    }

    /// psql's BEGIN ... END tracking for `CREATE [OR REPLACE] FUNCTION` and
    /// `PROCEDURE` with a SQL-standard body, whose semicolons do not end the
    /// statement. It is a heuristic, copied as it is so that we split where
    /// psql splits, including where the heuristic is wrong.
    fn track_identifier(&mut self, word: &[u8]) {
        const RECORDED: [&[u8]; 5] = [b"create", b"function", b"procedure", b"or", b"replace"];
        if self.identifier_count == 0 {
            self.identifiers = [0; 4];
        }
        if RECORDED.iter().any(|k| word.eq_ignore_ascii_case(k)) {
            if let (Some(slot), Some(first)) = (self.identifiers.get_mut(self.identifier_count), word.first()) {
                *slot = first.to_ascii_lowercase();
            }
        }
        self.identifier_count = self.identifier_count.saturating_add(1);

        let [i0, i1, i2, i3] = self.identifiers;
        let creates_routine =
            i0 == b'c' && (i1 == b'f' || i1 == b'p' || (i1 == b'o' && i2 == b'r' && (i3 == b'f' || i3 == b'p')));
        if !creates_routine || self.paren_depth != 0 {
            return;
        }
        if word.eq_ignore_ascii_case(b"begin") {
            self.begin_depth = self.begin_depth.saturating_add(1);
        } else if word.eq_ignore_ascii_case(b"case") {
            // CASE also ends with END, but psql counts it only inside BEGIN.
            if self.begin_depth >= 1 {
                self.begin_depth = self.begin_depth.saturating_add(1);
            }
        } else if word.eq_ignore_ascii_case(b"end") {
            self.begin_depth = self.begin_depth.saturating_sub(1);
        }
    }

    /// A `$` between tokens: a parameter, a dollar-quote opener, or itself.
    fn dollar(&mut self, rest: &[u8], line_no: u64) -> usize {
        match rest.get(1).copied() {
            // `$1`, and `$1abc` which psql 16+ lexes as one junk token.
            Some(d) if d.is_ascii_digit() => {
                self.copy.feed(Token::Other);
                let digits = 1 + span(rest.get(1..).unwrap_or_default(), |b| b.is_ascii_digit());
                ident_end(rest, digits)
            }
            Some(b'$') => {
                self.dollar_tag = b"$$".to_vec();
                self.copy.feed(Token::Other);
                self.open(State::DollarString, line_no);
                2
            }
            Some(c) if is_ident_start(c) => {
                let end = 2 + span(rest.get(2..).unwrap_or_default(), is_dolq_cont);
                self.copy.feed(Token::Other);
                if rest.get(end) == Some(&b'$') {
                    self.dollar_tag = prefix(rest, end + 1).to_vec();
                    self.open(State::DollarString, line_no);
                    end + 1
                } else {
                    // psql's `dolqfailed`: only the `$` is used up, and the
                    // word after it is lexed again (and counts as a word).
                    1
                }
            }
            _ => {
                self.copy.feed(Token::Other);
                1
            }
        }
    }

    fn backslash(&mut self, line: &[u8], start: usize, c1: Option<u8>, out: &Pending) -> Result<Step, ErrorKind> {
        let rest = line.get(start..).unwrap_or_default();
        // `\;` and `\:` put a literal character into the statement in psql;
        // any other command would run in the middle of the statement.
        if matches!(c1, Some(b';' | b':')) || !out.is_empty() {
            return Err(ErrorKind::BackslashInStatement);
        }
        if !line.get(..start).unwrap_or_default().iter().all(|&b| is_space(b)) {
            return Err(ErrorKind::BackslashNotAtLineStart);
        }
        let (command, args) = parse_meta(rest.get(1..).unwrap_or_default())?;
        Ok(Step::Done(Scan::Meta { command, args }, rest.len()))
    }

    fn comment(&mut self, rest: &[u8], line_no: u64, out: &mut Pending) -> Result<usize, ErrorKind> {
        let n = match rest.first() {
            Some(b'/') if rest.get(1) == Some(&b'*') => {
                self.comment_depth = self.comment_depth.saturating_add(1);
                2
            }
            Some(b'*') => {
                let stars = span(rest, |b| b == b'*');
                if rest.get(stars) == Some(&b'/') {
                    if self.comment_depth == 0 {
                        self.state = State::Initial;
                    } else {
                        self.comment_depth -= 1;
                    }
                    stars + 1
                } else {
                    stars
                }
            }
            Some(b'/') => 1,
            _ => span(rest, |b| b != b'*' && b != b'/'),
        };
        out.push(prefix(rest, n), line_no, false)?;
        Ok(n)
    }

    /// `'...'`, `U&'...'` (with `''` doubling) and `B'...'`, `X'...'`
    /// (without: there a second quote ends the literal and opens another,
    /// which ends at the same place).
    fn quoted(&mut self, rest: &[u8], line_no: u64, out: &mut Pending, doubling: bool) -> Result<usize, ErrorKind> {
        let n = if rest.first() == Some(&b'\'') {
            if doubling && rest.get(1) == Some(&b'\'') {
                2
            } else {
                self.stop_quote();
                1
            }
        } else {
            span(rest, |b| b != b'\'')
        };
        out.push(prefix(rest, n), line_no, true)?;
        Ok(n)
    }

    fn escape_string(&mut self, rest: &[u8], line_no: u64, out: &mut Pending) -> Result<usize, ErrorKind> {
        let n = match rest.first() {
            // A backslash escapes the next byte; at the end of a line it
            // stands alone, as in psql, which never sees the newline.
            Some(b'\\') => rest.len().min(2),
            Some(b'\'') if rest.get(1) == Some(&b'\'') => 2,
            Some(b'\'') => {
                self.stop_quote();
                1
            }
            _ => span(rest, |b| b != b'\'' && b != b'\\'),
        };
        out.push(prefix(rest, n), line_no, true)?;
        Ok(n)
    }

    fn stop_quote(&mut self) {
        self.state_before_stop = self.state;
        self.state = State::QuoteStop;
    }

    /// After a closing quote: whitespace containing a newline and then a
    /// quote continue the same literal. Within psql's lines the only
    /// possible newline is a bare `\r`.
    fn quote_stop(&mut self, rest: &[u8], line_no: u64, out: &mut Pending) -> Result<usize, ErrorKind> {
        match quote_continuation_len(rest) {
            Some(n) => {
                self.state = self.state_before_stop;
                out.push(prefix(rest, n), line_no, true)?;
                Ok(n)
            }
            None => {
                // Nothing is used: the text is lexed again between tokens.
                self.state = State::Initial;
                Ok(0)
            }
        }
    }

    fn identifier(&mut self, rest: &[u8], line_no: u64, out: &mut Pending) -> Result<usize, ErrorKind> {
        let n = if rest.first() == Some(&b'"') {
            if rest.get(1) == Some(&b'"') {
                2
            } else {
                self.state = State::Initial;
                1
            }
        } else {
            span(rest, |b| b != b'"')
        };
        out.push(prefix(rest, n), line_no, true)?;
        Ok(n)
    }

    fn dollar_string(&mut self, rest: &[u8], line_no: u64, out: &mut Pending) -> Result<usize, ErrorKind> {
        let n = if rest.first() == Some(&b'$') {
            let delimiter = match rest.get(1).copied() {
                Some(b'$') => Some(2),
                Some(c) if is_ident_start(c) => {
                    let end = 2 + span(rest.get(2..).unwrap_or_default(), is_dolq_cont);
                    if rest.get(end) == Some(&b'$') {
                        Some(end + 1)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            match delimiter {
                Some(len) if prefix(rest, len) == self.dollar_tag.as_slice() => {
                    self.state = State::Initial;
                    len
                }
                // Another tag: its closing `$` may open the real one, as in
                // `$a$ ... $junk$a$`.
                Some(len) => len - 1,
                None => 1,
            }
        } else {
            span(rest, |b| b != b'$')
        };
        out.push(prefix(rest, n), line_no, true)?;
        Ok(n)
    }
}

/// Splits a backslash command line (after the backslash) into command name
/// and arguments, refusing what psql would not take literally.
fn parse_meta(body: &[u8]) -> Result<(String, String), ErrorKind> {
    let name_len = span(body, |b| !is_space(b) && b != b'\\');
    let name = prefix(body, name_len);
    match name {
        b"" => return Err(ErrorKind::MissingCommandName),
        b"." => return Err(ErrorKind::EndOfCopyOutsideCopy),
        b"copy" => return Err(ErrorKind::BackslashCopy),
        _ => {}
    }
    let args = trim_space(body.get(name_len..).unwrap_or_default());
    check_arguments(args)?;
    Ok((utf8(name)?, utf8(args)?))
}

/// psql ends a command's arguments at a backslash, runs backquoted text as
/// a shell command and substitutes variables outside quotes. Arguments are
/// handed over raw, so any of these would make them mean something else.
fn check_arguments(args: &[u8]) -> Result<(), ErrorKind> {
    let mut quote = None;
    for (i, &b) in args.iter().enumerate() {
        if b == b'\\' || b == b'`' {
            return Err(ErrorKind::UnsupportedArgument);
        }
        match quote {
            Some(q) => {
                if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b':' => {
                    let next = args.get(i + 1).copied();
                    let after = args.get(i + 2).copied();
                    if next.is_some_and(|n| is_variable_char(n) || n == b'\'' || n == b'"')
                        || (next == Some(b'{') && after == Some(b'?'))
                    {
                        return Err(ErrorKind::VariableReference);
                    }
                }
                _ => {}
            },
        }
    }
    match quote {
        Some(_) => Err(ErrorKind::UnterminatedArgument),
        None => Ok(()),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, ErrorKind> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ErrorKind::InvalidUtf8)
}

fn trim_space(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_space(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Length of a quote continuation at the start of `s`: psql's
/// `{non_newline_whitespace}*{newline}{special_whitespace}*{quote}`.
fn quote_continuation_len(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        match s.get(i).copied() {
            Some(b) if is_non_newline_space(b) => i += 1,
            Some(b'-') if s.get(i + 1) == Some(&b'-') => {
                i += 2 + span(s.get(i + 2..).unwrap_or_default(), |b| !is_newline(b));
            }
            _ => break,
        }
    }
    if !s.get(i).copied().is_some_and(is_newline) {
        return None;
    }
    i += 1;
    loop {
        match s.get(i).copied() {
            Some(b) if is_space(b) => i += 1,
            // Here a comment only counts when a newline follows it.
            Some(b'-') if s.get(i + 1) == Some(&b'-') => {
                let end = i + 2 + span(s.get(i + 2..).unwrap_or_default(), |b| !is_newline(b));
                if !s.get(end).copied().is_some_and(is_newline) {
                    return None;
                }
                i = end + 1;
            }
            _ => break,
        }
    }
    (s.get(i) == Some(&b'\'')).then_some(i + 1)
}

/// Length of a run of operator characters. psql cuts an operator before an
/// embedded `--` or `/*`, which then start a comment.
fn operator_len(s: &[u8]) -> usize {
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        let comment = matches!((b, s.get(i + 1)), (b'-', Some(b'-')) | (b'/', Some(b'*')));
        if !is_op_char(b) || comment {
            break;
        }
        i += 1;
    }
    i
}

/// Length of the numeric token at the start of `s` (a digit, or `.` and a
/// digit): the longest match of psql's number rules, including the "junk"
/// rules (psql 15.9 and later) that glue a following word onto a number.
/// The extent matters: in `1e'\''` the `e` belongs to the number, so the
/// quote opens a plain literal, not an `E'...'` one; in `1e--x` the first
/// `-` belongs to the number, so no comment starts; and in `1_000$$` the
/// `$$` belongs to the number, so no dollar quote starts.
fn number_len(s: &[u8]) -> usize {
    let integer = decinteger_end(s, 0);
    if let Some(end) = integer {
        // `1..10` is 1, `..`, 10.
        if s.get(end) == Some(&b'.') && s.get(end + 1) == Some(&b'.') {
            return end;
        }
    }
    let mut best = 0;
    if let Some(end) = integer {
        best = best.max(junk_end(s, 0, end));
    }
    let dot = match integer {
        Some(end) if s.get(end) == Some(&b'.') => Some(end),
        Some(_) => None,
        None => Some(0),
    };
    let numeric = dot.map(|dot| {
        let fraction_end = decinteger_end(s, dot + 1).unwrap_or(dot + 1);
        best = best.max(junk_end(s, dot + 1, fraction_end));
        fraction_end
    });
    for base in [integer, numeric].into_iter().flatten() {
        if matches!(s.get(base), Some(b'e' | b'E')) {
            let mut k = base + 1;
            let signed = matches!(s.get(k), Some(b'+' | b'-'));
            if signed {
                k += 1;
            }
            match decinteger_end(s, k) {
                // `{real}` and `{real}{identifier}`.
                Some(end) => best = best.max(junk_end(s, k, end)),
                // `{realfail}`: `1e+` without digits.
                None if signed => best = best.max(k),
                None => {}
            }
        }
    }
    best.max(1)
}

/// End of the digits `s[start..end]` of a number, extended by a junk rule
/// (`{decinteger}{identifier}` and the like). Flex takes the longest match
/// over every way of splitting the text, so an identifier may start at any
/// `_` between digits as well as right after the last digit; it then runs
/// to the end of the identifier characters, `$` included.
fn junk_end(s: &[u8], start: usize, end: usize) -> usize {
    let digits = s.get(start..end).unwrap_or_default();
    if digits.contains(&b'_') || s.get(end).copied().is_some_and(is_ident_start) {
        start + span(s.get(start..).unwrap_or_default(), is_ident_cont)
    } else {
        end
    }
}

/// End of `{decinteger}` (`[0-9](_?[0-9])*`) starting at `i`, if any.
fn decinteger_end(s: &[u8], i: usize) -> Option<usize> {
    if !s.get(i).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut j = i + 1;
    loop {
        match s.get(j) {
            Some(d) if d.is_ascii_digit() => j += 1,
            Some(b'_') if s.get(j + 1).is_some_and(u8::is_ascii_digit) => j += 2,
            _ => return Some(j),
        }
    }
}

/// End of an `{identifier}` starting at `i`, or `i` if none starts there.
fn ident_end(s: &[u8], i: usize) -> usize {
    if s.get(i).copied().is_some_and(is_ident_start) {
        i + 1 + span(s.get(i + 1..).unwrap_or_default(), is_ident_cont)
    } else {
        i
    }
}

fn prefix(s: &[u8], n: usize) -> &[u8] {
    s.get(..n).unwrap_or(s)
}

fn span(s: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    s.iter().take_while(|&&b| pred(b)).count()
}

/// psql's `{space}`; vertical tab counts from psql 17 on.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_non_newline_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x0b | 0x0c)
}

fn is_newline(b: u8) -> bool {
    matches!(b, b'\n' | b'\r')
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_dolq_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

fn is_variable_char(b: u8) -> bool {
    is_dolq_cont(b)
}

fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}
