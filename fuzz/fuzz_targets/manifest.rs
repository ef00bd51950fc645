//! Manifests and transaction file headers, as read from the spool.
//!
//! Input: byte 0 and byte 1 choose the manifest's name (first = 1 + byte0 % 4,
//! last = first + byte1 % 4), the rest is the manifest text. The whole input is also read as a
//! transaction file header.
//!
//! Invariant: a manifest that parses renders to a text that parses to the same manifest.
#![no_main]

use dbmirror_spool::{Header, Manifest, ManifestName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::read(&mut &data[..]);

    let [b0, b1, text @ ..] = data else { return };
    let first = 1 + u64::from(b0 % 4);
    let name = ManifestName { first, last: first + u64::from(b1 % 4) };
    if let Ok(manifest) = Manifest::parse(&name, text) {
        assert_eq!(manifest.name, name);
        assert_eq!(manifest.entries.len() as u64, name.last - name.first + 1);
        let rendered = manifest.render();
        let again = Manifest::parse(&manifest.name, rendered.as_bytes()).expect("a rendered manifest parses");
        assert_eq!(again, manifest);
        for number in name.first..=name.last {
            assert_eq!(manifest.entry(number).map(|e| e.file.number), Some(number));
        }
    }
});
