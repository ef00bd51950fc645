//! Rows in the text format of `COPY`: fields separated by tabs, `\N` for NULL, and backslash
//! escapes for backslash, newline, carriage return and tab. The master renders captured rows
//! in this form (`dbmirror_values()`, with [`escape_into`]), so that runs of inserts go into a
//! file's `COPY` blocks as they are; the other statements take the fields apart with [`fields`].

use std::borrow::Cow;
use std::fmt;

/// Appends `text` escaped for `COPY`'s text format. Escaping byte by byte cannot split a
/// UTF-8 character: every escaped byte is ASCII.
pub fn escape_into(line: &mut Vec<u8>, text: &[u8]) {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        line.extend_from_slice(&text[start..i]);
        line.extend_from_slice(escaped);
        start = i + 1;
    }
    line.extend_from_slice(&text[start..]);
}

/// A field holds a backslash escape that [`escape_into`] never writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapeError {
    /// The character after the backslash; `None` for a lone backslash at the end of a field.
    pub escape: Option<char>,
}

impl fmt::Display for EscapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.escape {
            Some(c) => write!(f, "unexpected escape \\{c} in a COPY text field"),
            None => f.write_str("a lone backslash at the end of a COPY text field"),
        }
    }
}

impl std::error::Error for EscapeError {}

/// The fields of one row; `None` is NULL. A field without escapes is borrowed from `line`.
/// Only the escapes [`escape_into`] writes are accepted.
pub fn fields(line: &str) -> Result<Vec<Option<Cow<'_, str>>>, EscapeError> {
    line.split('\t').map(field).collect()
}

fn field(text: &str) -> Result<Option<Cow<'_, str>>, EscapeError> {
    if text == "\\N" {
        return Ok(None);
    }
    if !text.contains('\\') {
        return Ok(Some(Cow::Borrowed(text)));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('\\') => '\\',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            other => return Err(EscapeError { escape: other }),
        });
    }
    Ok(Some(Cow::Owned(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_unescapes_and_borrows_plain_fields() {
        let got = fields("1\t\\N\ttab\\there\\\\ and \\n\\r\t\t\\\\N").unwrap();
        assert_eq!(
            got.iter().map(|f| f.as_deref()).collect::<Vec<_>>(),
            [Some("1"), None, Some("tab\there\\ and \n\r"), Some(""), Some("\\N")]
        );
        assert!(matches!(got[0], Some(Cow::Borrowed(_))));
        assert_eq!(fields("").unwrap(), [Some(Cow::Borrowed(""))]);
    }

    #[test]
    fn refuses_escapes_it_does_not_write() {
        assert!(fields("a\\x").unwrap_err().to_string().contains("\\x"));
        assert!(fields("a\\").unwrap_err().to_string().contains("lone backslash"));
    }

    #[test]
    fn what_is_escaped_reads_back_as_it_was() {
        let text = "tab\there\\ and \n\r ☃ \\N";
        let mut line = Vec::new();
        escape_into(&mut line, text.as_bytes());
        let line = String::from_utf8(line).unwrap();
        assert_eq!(fields(&line).unwrap(), [Some(Cow::Borrowed(text))]);
    }
}
