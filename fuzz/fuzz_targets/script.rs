//! The psql script reader, on whole transaction files.
//!
//! It must end (with `Ok(None)` or an error) without panicking, once with the default limit and
//! once with a small one. Each item consumes input, so a bounded number of items is expected:
//! more than one per input byte (plus a few) would mean it loops without progress.
#![no_main]

use dbmirror_script::{Item, ScriptReader};
use libfuzzer_sys::fuzz_target;

const SMALL_LIMIT: usize = 4096;

fn drain<R: std::io::BufRead>(mut reader: ScriptReader<R>, input_len: usize, limit: usize) {
    let max_items = 2 * input_len + 4;
    let mut items = 0usize;
    loop {
        match reader.next_item() {
            Ok(Some(item)) => {
                items += 1;
                assert!(items <= max_items, "{items} items from {input_len} bytes: no progress");
                match item {
                    Item::Statement { sql, .. } => {
                        assert!(sql.len() <= limit, "a statement of {} bytes passed a limit of {limit}", sql.len());
                        assert!(!sql.contains('\0'));
                    }
                    Item::Meta { command, .. } => assert!(!command.is_empty()),
                    Item::CopyData(data) => assert!(!data.is_empty()),
                    Item::CopyEnd { .. } => {}
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    // After the end or an error the reader stays done.
    assert!(matches!(reader.next_item(), Ok(None)));
}

fuzz_target!(|data: &[u8]| {
    drain(ScriptReader::new(data), data.len(), dbmirror_script::DEFAULT_MAX_STATEMENT_BYTES);
    drain(ScriptReader::with_max_statement_bytes(data, SMALL_LIMIT), data.len(), SMALL_LIMIT);
});
