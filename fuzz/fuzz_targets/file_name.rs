//! Transaction file and manifest names, as read from a spool directory listing.
//!
//! Invariant: names are canonical, so a name that parses is exactly the name its parsed value
//! formats to, and that name parses back to the same value.
#![no_main]

use dbmirror_spool::{ManifestName, TransactionFileName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    if let Ok(parsed) = TransactionFileName::parse(name) {
        let formatted = parsed.file_name();
        assert_eq!(formatted, name, "a transaction file name is not canonical");
        let again = TransactionFileName::parse(&formatted).expect("a formatted transaction file name parses");
        assert_eq!(again, parsed);
    }
    if let Ok(parsed) = ManifestName::parse(name) {
        let formatted = parsed.file_name();
        assert_eq!(formatted, name, "a manifest name is not canonical");
        let again = ManifestName::parse(&formatted).expect("a formatted manifest name parses");
        assert_eq!(again, parsed);
        assert!(parsed.first >= 1 && parsed.first <= parsed.last);
    }
});
