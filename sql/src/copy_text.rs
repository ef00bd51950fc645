//! Rows in the text format of `COPY`: fields separated by tabs, `\N` for NULL, and backslash
//! escapes for backslash, newline, carriage return and tab. The master renders captured rows
//! in this form (`dbmirror_values()`), so that runs of inserts go into a file's `COPY` blocks
//! as they are; the other statements take the fields apart with [`fields`].

use std::borrow::Cow;

/// The fields of one row; `None` is NULL. A field without escapes is borrowed from `line`.
/// Only the escapes `dbmirror_values()` writes are accepted.
pub fn fields(line: &str) -> Result<Vec<Option<Cow<'_, str>>>, String> {
    line.split('\t').map(field).collect()
}

fn field(text: &str) -> Result<Option<Cow<'_, str>>, String> {
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
            other => {
                let what = other.map_or_else(|| "a lone backslash at the end".to_string(), |c| format!("\\{c}"));
                return Err(format!("unexpected escape {what} in a COPY text field"));
            }
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
        assert!(fields("a\\x").unwrap_err().contains("\\x"));
        assert!(fields("a\\").unwrap_err().contains("lone backslash"));
    }
}
