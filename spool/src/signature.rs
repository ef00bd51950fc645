//! Ed25519 signatures of manifests.
//!
//! A checksum proves a file arrived as the manifest says; it does not prove who wrote the
//! manifest. With a key pair, the exporter signs each manifest with the secret key and the
//! applier, holding only the public key, refuses manifests that are unsigned or signed by
//! anyone else. The signature covers the manifest's file lines (every file's name and
//! checksum, and through the checksums every byte of every file), prefixed with a fixed
//! context string so it cannot be taken for a signature of anything else.
//!
//! Keys are text files: `dbmirror-ed25519-secret <64 hex digits>` (the 32-byte seed; keep it
//! readable by the exporter only) and `dbmirror-ed25519-public <64 hex digits>`.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use ed25519_dalek::{Signer, Verifier};

use crate::error::{Error, ErrorKind};

const SECRET_MARKER: &str = "dbmirror-ed25519-secret";
const PUBLIC_MARKER: &str = "dbmirror-ed25519-public";
/// Signed ahead of the manifest's lines.
const CONTEXT: &[u8] = b"dbmirror manifest signature v1\n";

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl Signature {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| Error::new(ErrorKind::BadSignature, "the signature is not 128 hex digits"))?;
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The exporter's secret key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    /// Shows the public half only: a secret never goes into a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", hex::encode(self.0.verifying_key().as_bytes()))
    }
}

/// The applier's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0.as_bytes()))
    }
}

/// Largest key file read: a key file is one line of about 90 bytes, and a path that names
/// something else (a device, a log) must not be read without end.
const MAX_KEY_FILE_BYTES: u64 = 4096;

fn read_key(path: &Path, marker: &str) -> Result<[u8; 32], Error> {
    let bad =
        || Error::new(ErrorKind::BadSignature, format!("\"{}\" is not a {marker} key file", path.display())).at(path);
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, "read key file", e))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(bad());
    }
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut words = text.split_whitespace();
    let (Some(found), Some(hex_key), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    if found != marker {
        return Err(bad());
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| bad())?;
    Ok(bytes)
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, "create key file", e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| Error::io(path, "write key file", e))
}

impl SigningKey {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Result<(Self, PublicKey), Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::new(ErrorKind::Io, format!("could not get random bytes for a key: {e}")))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = PublicKey(key.verifying_key());
        Ok((Self(key), public))
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&read_key(path, SECRET_MARKER)?)))
    }

    /// Writes the key to a new file readable by its owner only; never replaces a file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        write_new(path, &format!("{SECRET_MARKER} {}\n", hex::encode(self.0.to_bytes())), 0o600)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, lines: &[u8]) -> Signature {
        Signature(self.0.sign(&[CONTEXT, lines].concat()).to_bytes())
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = read_key(path, PUBLIC_MARKER)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map(Self).map_err(|_| {
            Error::new(ErrorKind::BadSignature, format!("\"{}\" holds no valid public key", path.display())).at(path)
        })
    }

    /// Writes the key to a new file; never replaces a file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        write_new(path, &format!("{PUBLIC_MARKER} {}\n", hex::encode(self.0.as_bytes())), 0o644)
    }

    pub(crate) fn verify(&self, lines: &[u8], signature: &Signature) -> bool {
        self.0.verify(&[CONTEXT, lines].concat(), &ed25519_dalek::Signature::from_bytes(&signature.0)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_files_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = SigningKey::generate().unwrap();
        secret.save(&dir.path().join("k.key")).unwrap();
        public.save(&dir.path().join("k.pub")).unwrap();
        assert!(secret.save(&dir.path().join("k.key")).is_err(), "never replaces a key file");
        let secret = SigningKey::load(&dir.path().join("k.key")).unwrap();
        let public = PublicKey::load(&dir.path().join("k.pub")).unwrap();
        let signature = secret.sign(b"lines");
        assert!(public.verify(b"lines", &signature));
        assert!(!public.verify(b"lines!", &signature));
        let (_, other) = SigningKey::generate().unwrap();
        assert!(!other.verify(b"lines", &signature));
        // A secret key is not a public key.
        assert!(PublicKey::load(&dir.path().join("k.key")).is_err());
        // Files that are no key files at all are refused, however large.
        for other in ["/dev/null", "/dev/zero", "/proc/self/status"] {
            assert!(PublicKey::load(Path::new(other)).is_err(), "{other}");
            assert!(SigningKey::load(Path::new(other)).is_err(), "{other}");
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(dir.path().join("k.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
