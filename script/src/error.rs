//! Errors reported by [`ScriptReader`](crate::ScriptReader).

use std::io;

/// An error that stops reading a script.
///
/// Every error carries the 1-based line it refers to. After an error the
/// reader yields nothing more: a script that cannot be split exactly as psql
/// would split it must not be executed any further.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The script is malformed, or uses something this reader refuses to
    /// handle because it cannot guarantee psql's behaviour for it.
    #[error("line {line}: {kind}")]
    Invalid {
        /// 1-based line the problem refers to.
        line: u64,
        /// What is wrong.
        kind: ErrorKind,
    },
    /// Reading the underlying input failed.
    #[error("line {line}: could not read script: {source}")]
    Io {
        /// 1-based line that was being read.
        line: u64,
        /// The error returned by the input.
        #[source]
        source: io::Error,
    },
}

impl ScriptError {
    /// The 1-based line the error refers to.
    #[must_use]
    pub fn line(&self) -> u64 {
        match self {
            Self::Invalid { line, .. } | Self::Io { line, .. } => *line,
        }
    }

    /// The kind of problem, or `None` for an I/O error.
    #[must_use]
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Invalid { kind, .. } => Some(kind),
            Self::Io { .. } => None,
        }
    }
}

/// What is wrong with a script.
///
/// The `Display` text is a PostgreSQL-style message: lowercase, no trailing
/// period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Statement text without its terminating semicolon at end of file.
    /// psql would send it anyway; a truncated file must not be half-executed.
    #[error("statement not terminated at end of file")]
    UnterminatedStatement,
    /// A `'...'`, `E'...'`, `B'...'`, `X'...'` or `U&'...'` literal is still
    /// open at end of file; the line is where it starts.
    #[error("unterminated quoted string at end of file")]
    UnterminatedString,
    /// A `"..."` or `U&"..."` identifier is still open at end of file.
    #[error("unterminated quoted identifier at end of file")]
    UnterminatedIdentifier,
    /// A dollar-quoted string is still open at end of file.
    #[error("unterminated dollar-quoted string at end of file")]
    UnterminatedDollarQuote,
    /// A `/* */` comment is still open at end of file.
    #[error("unterminated /* comment at end of file")]
    UnterminatedComment,
    /// End of file inside `COPY ... FROM STDIN` data; the line is the one
    /// where the `COPY` statement starts.
    #[error("end of file inside COPY data (missing \\. line)")]
    UnterminatedCopy,
    /// `:name`, `:'name'`, `:"name"` or `:{?name}`: psql would substitute a
    /// variable there.
    #[error("psql variable references are not supported")]
    VariableReference,
    /// A backslash outside quotes after statement text has begun, or `\;`
    /// and `\:` anywhere.
    #[error("unsupported backslash command inside a statement")]
    BackslashInStatement,
    /// A backslash command after other text on the same line.
    #[error("backslash command must start a line")]
    BackslashNotAtLineStart,
    /// A backslash with no command name after it.
    #[error("missing backslash command name")]
    MissingCommandName,
    /// `\.` outside `COPY ... FROM STDIN` data.
    #[error("\\. outside COPY data")]
    EndOfCopyOutsideCopy,
    /// `\copy`: psql would read its data from the script, which this reader
    /// cannot delimit; use `COPY ... FROM STDIN` instead.
    #[error("\\copy is not supported, use COPY ... FROM STDIN")]
    BackslashCopy,
    /// A backslash or a backquote in the arguments of a backslash command;
    /// psql would end the command there or run a shell command.
    #[error("backslash or backquote in backslash command arguments is not supported")]
    UnsupportedArgument,
    /// An unbalanced quote in the arguments of a backslash command.
    #[error("unterminated quoted string in backslash command arguments")]
    UnterminatedArgument,
    /// Script text outside COPY data is not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A NUL byte: psql silently drops the rest of such a line, so the file
    /// would not mean the same thing to us and to psql.
    #[error("unexpected NUL byte")]
    NulByte,
    /// A statement longer than the configured limit.
    #[error("statement exceeds the limit of {limit} bytes")]
    StatementTooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A line longer than the configured limit.
    #[error("line exceeds the limit of {limit} bytes")]
    LineTooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
}
