//! Identifiers and literals as SQL text. Every file sets `standard_conforming_strings = on`, so
//! a literal doubles its single quotes and nothing else; an identifier is always double-quoted,
//! which keeps its case and lets it hold any character but NUL.

/// `name` as a double-quoted SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a single-quoted SQL literal.
pub fn quote_literal(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len() + 2);
    push_literal(&mut out, Some(value));
    String::from_utf8(out).expect("quoting keeps UTF-8 valid")
}

/// Appends `value` as a single-quoted SQL literal, or `NULL`.
pub fn push_literal(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(mut rest) = value else {
        out.extend_from_slice(b"NULL");
        return;
    };
    out.push(b'\'');
    while let Some(i) = rest.find('\'') {
        out.extend_from_slice(&rest.as_bytes()[..=i]);
        out.push(b'\'');
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_double_their_own_quote_character_only() {
        assert_eq!(quote_identifier(r#"Tab "4" ☃"#), r#""Tab ""4"" ☃""#);
        assert_eq!(quote_literal(r"it's a \ backslash"), r"'it''s a \ backslash'");
        let mut out = Vec::new();
        push_literal(&mut out, None);
        assert_eq!(out, b"NULL");
    }
}
