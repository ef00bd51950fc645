//! Manifests: `FIRST-LAST.sha256`, one `sha256sum` line per transaction file numbered FIRST to
//! LAST, then, if the manifest is signed, `# signature ed25519 <hex>` (see [`crate::signature`]),
//! then `# end <sha256 of the lines before>`.

use crate::checksum::Checksum;
use crate::error::{Error, ErrorKind};
use crate::name::TransactionFileName;
use crate::signature::{PublicKey, Signature, SigningKey};
use crate::{MANIFEST_EXTENSION, NUMBER_WIDTH};

/// Prefix of a manifest's last line.
const END: &str = "# end ";
/// Prefix of a manifest's signature line.
const SIGNATURE: &str = "# signature ed25519 ";

/// The range of file numbers a manifest covers, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestName {
    pub first: u64,
    pub last: u64,
}

impl ManifestName {
    pub fn file_name(&self) -> String {
        format!("{:0w$}-{:0w$}.{MANIFEST_EXTENSION}", self.first, self.last, w = NUMBER_WIDTH)
    }

    pub fn parse(name: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::new(ErrorKind::BadName, format!("bad manifest name \"{name}\": {why}"));
        let stem =
            name.strip_suffix(&format!(".{MANIFEST_EXTENSION}")).ok_or_else(|| bad("it does not end in .sha256"))?;
        let (first, last) = stem.split_once('-').ok_or_else(|| bad("expected FIRST-LAST"))?;
        let number = |s: &str| -> Result<u64, Error> {
            if s.len() != NUMBER_WIDTH || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("numbers must have exactly 20 digits"));
            }
            s.parse().map_err(|_| bad("a number does not fit in 64 bits"))
        };
        let parsed = Self { first: number(first)?, last: number(last)? };
        if parsed.first == 0 || parsed.first > parsed.last {
            return Err(bad("the range is empty or starts at 0"));
        }
        Ok(parsed)
    }

    pub fn contains(&self, number: u64) -> bool {
        (self.first..=self.last).contains(&number)
    }
}

/// One covered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// sha256 of the file as stored.
    pub checksum: Checksum,
    pub file: TransactionFileName,
}

/// A complete, checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: ManifestName,
    pub entries: Vec<ManifestEntry>,
    /// Signature of the file lines, if signed.
    pub signature: Option<Signature>,
}

impl Manifest {
    /// A manifest for `entries`, which must be numbered consecutively.
    pub fn new(entries: Vec<ManifestEntry>) -> Result<Self, Error> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Err(Error::new(ErrorKind::BadManifest, "a manifest must cover at least one file"));
        };
        let name = ManifestName { first: first.file.number, last: last.file.number };
        check_numbers(&name, &entries)?;
        Ok(Self { name, entries, signature: None })
    }

    /// The file lines, which the signature covers.
    fn lines(&self) -> String {
        self.entries.iter().map(|entry| format!("{}  {}\n", entry.checksum, entry.file.file_name())).collect()
    }

    /// Signs the manifest with the exporter's secret key.
    pub fn sign(&mut self, key: &SigningKey) {
        self.signature = Some(key.sign(self.lines().as_bytes()));
    }

    /// Checks that the manifest is signed, and by the holder of `key`'s secret.
    pub fn verify(&self, key: &PublicKey) -> Result<(), Error> {
        let what =
            |why: &str| Error::new(ErrorKind::BadSignature, format!("manifest \"{}\" {why}", self.name.file_name()));
        match &self.signature {
            None => Err(what("is not signed, and a public key is configured")),
            Some(signature) if key.verify(self.lines().as_bytes(), signature) => Ok(()),
            Some(_) => Err(what("has a signature that does not verify with the configured public key")),
        }
    }

    /// The manifest's text.
    pub fn render(&self) -> String {
        let mut text = self.lines();
        if let Some(signature) = &self.signature {
            text.push_str(&format!("{SIGNATURE}{}\n", signature.to_hex()));
        }
        let end = Checksum::of(text.as_bytes());
        text.push_str(&format!("{END}{end}\n"));
        text
    }

    /// Parses and checks a manifest read from a file called `name`: every line well formed,
    /// the end line present with the right checksum (so a manifest still being copied is
    /// refused), and exactly the files `name` promises, in order.
    pub fn parse(name: &ManifestName, text: &[u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(text).map_err(|_| bad(name, "it is not UTF-8"))?;
        let body_len = text
            .strip_suffix('\n')
            .and_then(|t| t.rfind('\n').map(|i| i + 1).or(Some(0)))
            .ok_or_else(|| bad(name, "it is incomplete (no end line)"))?;
        let (body, end_line) = text.split_at(body_len);
        let end = end_line
            .strip_prefix(END)
            .and_then(|rest| rest.strip_suffix('\n'))
            .ok_or_else(|| bad(name, "it is incomplete (no end line)"))?;
        let end = Checksum::parse(end).map_err(|_| bad(name, "its end line has no valid sha256"))?;
        if end != Checksum::of(body.as_bytes()) {
            return Err(bad(name, "its end line does not match its content"));
        }
        let (body, signature) = match body.strip_suffix('\n').and_then(|b| b.rsplit_once('\n').or(Some(("", b)))) {
            Some((before, last)) if last.starts_with(SIGNATURE) => {
                let signature = Signature::parse(&last[SIGNATURE.len()..]).map_err(|e| bad(name, &e.to_string()))?;
                (if before.is_empty() { "" } else { &body[..before.len() + 1] }, Some(signature))
            }
            _ => (body, None),
        };
        let mut entries = Vec::new();
        for (i, line) in body.lines().enumerate() {
            let (checksum, file) =
                line.split_once("  ").ok_or_else(|| bad(name, &format!("line {} is not \"SHA256  FILE\"", i + 1)))?;
            let checksum =
                Checksum::parse(checksum).map_err(|_| bad(name, &format!("line {} has no valid sha256", i + 1)))?;
            let file = TransactionFileName::parse(file).map_err(|e| bad(name, &format!("line {}: {e}", i + 1)))?;
            entries.push(ManifestEntry { checksum, file });
        }
        check_numbers(name, &entries)?;
        Ok(Self { name: *name, entries, signature })
    }

    /// The entry for file `number`, if the manifest covers it.
    pub fn entry(&self, number: u64) -> Option<&ManifestEntry> {
        let index = number.checked_sub(self.name.first)?;
        self.entries.get(usize::try_from(index).ok()?)
    }
}

fn check_numbers(name: &ManifestName, entries: &[ManifestEntry]) -> Result<(), Error> {
    let expected = name.first..=name.last;
    if entries.len() as u64 != name.last - name.first + 1
        || !entries.iter().zip(expected).all(|(entry, number)| entry.file.number == number)
    {
        return Err(bad(name, &format!("it must list files {} to {} in order, once each", name.first, name.last)));
    }
    Ok(())
}

fn bad(name: &ManifestName, why: &str) -> Error {
    Error::new(ErrorKind::BadManifest, format!("bad manifest \"{}\": {why}", name.file_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn entry(number: u64) -> ManifestEntry {
        ManifestEntry {
            checksum: Checksum::of(&number.to_le_bytes()),
            file: TransactionFileName {
                number,
                time: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
                xid: 1000 + number,
                compressed: number.is_multiple_of(2),
            },
        }
    }

    fn sample() -> Manifest {
        Manifest::new((41..=43).map(entry).collect()).unwrap()
    }

    #[test]
    fn name_is_the_covered_range() {
        assert_eq!(sample().name.file_name(), "00000000000000000041-00000000000000000043.sha256");
        assert_eq!(ManifestName::parse(&sample().name.file_name()).unwrap(), sample().name);
        for bad in ["41-43.sha256", "00000000000000000043-00000000000000000041.sha256", "x.sha256"] {
            assert!(ManifestName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_sha256sum_lines_and_an_end_line() {
        let text = sample().render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], format!("{}  00000000000000000041_20261201T000000Z_1041.sql", entry(41).checksum));
        assert_eq!(lines[1], format!("{}  00000000000000000042_20261201T000000Z_1042.sql.zst", entry(42).checksum));
        let body: String = lines[..3].iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(lines[3], format!("# end {}", Checksum::of(body.as_bytes())));
        assert_eq!(Manifest::parse(&sample().name, text.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn refuses_incomplete_or_altered_manifests() {
        let text = sample().render();
        let name = sample().name;
        let cut = &text[..text.len() - 10];
        let without_end = &text[..text.rfind("# end").unwrap()];
        let altered = text.replacen("00000000000000000041_", "00000000000000000044_", 1);
        let wrong_name = ManifestName { first: 41, last: 44 };
        for (case, name) in [
            (cut.to_string(), name),
            (without_end.to_string(), name),
            (altered, name),
            (text.clone(), wrong_name),
            (String::new(), name),
        ] {
            let err = Manifest::parse(&name, case.as_bytes()).expect_err(&case);
            assert_eq!(err.kind(), ErrorKind::BadManifest);
        }
    }

    #[test]
    fn signed_manifests_verify_and_still_suit_sha256sum() {
        let (key, public) = SigningKey::generate().unwrap();
        let mut manifest = sample();
        manifest.sign(&key);
        let text = manifest.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[3].starts_with("# signature ed25519 ") && lines[3].len() == 20 + 128, "{}", lines[3]);
        let parsed = Manifest::parse(&manifest.name, text.as_bytes()).unwrap();
        assert_eq!(parsed, manifest);
        parsed.verify(&public).unwrap();

        let (_, stranger) = SigningKey::generate().unwrap();
        assert_eq!(parsed.verify(&stranger).unwrap_err().kind(), ErrorKind::BadSignature);
        assert_eq!(sample().verify(&public).unwrap_err().kind(), ErrorKind::BadSignature);
        // Rewriting a checksum and the end line, without the secret key, breaks the signature.
        let mut forged = parsed.clone();
        forged.entries[0].checksum = Checksum::of(b"forged");
        let forged = Manifest::parse(&forged.name, forged.render().as_bytes()).unwrap();
        assert!(forged.verify(&public).is_err());
    }

    #[test]
    fn a_manifest_must_be_consecutive() {
        assert!(Manifest::new(vec![entry(1), entry(3)]).is_err());
        assert!(Manifest::new(vec![]).is_err());
        assert_eq!(sample().entry(42), Some(&entry(42)));
        assert_eq!(sample().entry(44), None);
        assert_eq!(sample().entry(40), None);
    }
}
