//! sha256 checksums, and readers and writers that compute them on the way through.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

/// A sha256 checksum, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum(pub [u8; 32]);

impl Checksum {
    /// The checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 lowercase hex digits (the only spelling this library writes).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = || Error::new(ErrorKind::BadManifest, format!("bad sha256 \"{}\"", text.escape_debug()));
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

/// A writer that computes the sha256 of everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hash: Sha256::new(), bytes: 0 }
    }

    /// Bytes written so far.
    pub fn byte_count(&self) -> u64 {
        self.bytes
    }

    /// The inner writer and the checksum of what went through.
    pub fn finish(self) -> (W, Checksum) {
        (self.inner, Checksum(self.hash.finalize().into()))
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that computes the sha256 of everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, hash: Sha256::new(), bytes: 0 }
    }

    /// Bytes read so far.
    pub fn byte_count(&self) -> u64 {
        self.bytes
    }

    /// The checksum of what was read so far.
    pub fn checksum(&self) -> Checksum {
        Checksum(self.hash.clone().finalize().into())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for HashingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        // Hash exactly what the caller consumed, which is what it has read.
        if let Ok(buf) = self.inner.fill_buf() {
            let amount = amount.min(buf.len());
            self.hash.update(&buf[..amount]);
            self.bytes += amount as u64;
            self.inner.consume(amount);
        }
    }
}

/// The sha256 of a whole reader's content, and its length.
pub fn sha256_of(mut reader: impl Read) -> io::Result<(Checksum, u64)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Checksum(hash.finalize().into()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_round_trips_as_lowercase_hex() {
        let sum = Checksum::of(b"abc");
        let text = sum.to_string();
        assert_eq!(text, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(Checksum::parse(&text).unwrap(), sum);
        assert!(Checksum::parse(&text.to_uppercase()).is_err());
        assert!(Checksum::parse(&text[1..]).is_err());
    }

    #[test]
    fn hashing_reader_and_writer_agree_with_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(&data).unwrap();
        let (out, sum) = writer.finish();
        assert_eq!(out, data);
        assert_eq!(sum, Checksum::of(&data));

        let mut reader = HashingReader::new(io::BufReader::with_capacity(7, &data[..]));
        let mut lines = 0;
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap() > 0 {
            lines += 1;
            line.clear();
        }
        assert!(lines > 0);
        assert_eq!(reader.checksum(), Checksum::of(&data));
        assert_eq!(reader.byte_count(), data.len() as u64);
        assert_eq!(sha256_of(&data[..]).unwrap(), (Checksum::of(&data), data.len() as u64));
    }
}
