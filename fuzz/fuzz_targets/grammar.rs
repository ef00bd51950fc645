//! The grammar of transaction files, on the statements the script reader splits out of them.
//!
//! Invariant: a statement the checker accepts has no `$`, `/*` or `--` outside of single- or
//! double-quoted spans, so neither a comment nor a dollar quote ever reaches the slave.
#![no_main]

use dbmirror_replay::grammar::{Checker, DdlPolicy};
use dbmirror_script::{Item, ScriptReader};
use libfuzzer_sys::fuzz_target;

/// The first `$`, `/*` or `--` outside `'...'` and `"..."` (a doubled quote inside a span
/// closes and reopens it, which comes to the same).
fn unquoted_comment_or_dollar(sql: &str) -> Option<usize> {
    let bytes = sql.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'$' => return Some(i),
                b'/' | b'-' if bytes.get(i + 1) == Some(&if b == b'/' { b'*' } else { b'-' }) => return Some(i),
                _ => {}
            },
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Under every DDL policy: they accept different files.
    let mut checkers = DdlPolicy::ALL.map(Checker::new);
    for item in ScriptReader::new(text.as_bytes()) {
        let Ok(item) = item else { break };
        if let Item::Statement { sql, .. } = item {
            for checker in &mut checkers {
                if checker.check(&sql).is_ok() {
                    if let Some(at) = unquoted_comment_or_dollar(&sql) {
                        panic!("the grammar accepted a comment or dollar quote at byte {at}: {sql:?}");
                    }
                }
            }
        }
    }
});
