//! The comment header at the top of every transaction file.

use std::io::BufRead;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::checksum::Checksum;
use crate::error::{Error, ErrorKind};
use crate::FORMAT_VERSION;

/// First line of every transaction file.
pub const MAGIC: &str = "-- dbmirror transaction file";

/// Header keys, in the order they appear.
const KEYS: [&str; 10] = [
    "format",
    "master",
    "database",
    "slave",
    "number",
    "xid",
    "changes",
    "exported-at",
    COMMITTED_AT,
    "previous-sha256",
];

/// The one optional key: files written before the master recorded commit times lack it.
const COMMITTED_AT: &str = "committed-at";

/// Longest header line accepted when reading; real ones are far shorter.
const MAX_LINE: usize = 4096;

/// What a transaction file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub format: u32,
    /// System identifier of the master cluster.
    pub master: u64,
    /// Name of the master database.
    pub database: String,
    /// Slave name, as in dbmirror_MirrorHost.
    pub slave: String,
    pub number: u64,
    pub xid: u64,
    /// Number of changes the master captured in the transaction (rows, in a snapshot's files);
    /// a table left out for the slave (`snapshot --table`) still counts.
    pub changes: u64,
    pub exported_at: DateTime<Utc>,
    /// The master's commit time of the transaction (for a snapshot's files, the time the
    /// snapshot was taken); `None` in files written before the master recorded it. Always
    /// written now.
    pub committed_at: Option<DateTime<Utc>>,
    /// sha256 of the SQL text of file `number - 1`; `None` for file 1.
    pub previous_sha256: Option<Checksum>,
}

impl Header {
    /// The header as SQL comment lines, each ending in a newline.
    pub fn render(&self) -> String {
        let json = |s: &str| serde_json::to_string(s).expect("a string always serialises");
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        let values = [
            Some(self.format.to_string()),
            Some(self.master.to_string()),
            Some(json(&self.database)),
            Some(json(&self.slave)),
            Some(self.number.to_string()),
            Some(self.xid.to_string()),
            Some(self.changes.to_string()),
            Some(time(&self.exported_at)),
            self.committed_at.as_ref().map(time),
            Some(self.previous_sha256.map_or_else(|| "none".to_string(), |c| c.to_string())),
        ];
        let mut out = format!("{MAGIC}\n");
        for (key, value) in KEYS.iter().zip(values) {
            if let Some(value) = value {
                out.push_str(&format!("-- {key}: {value}\n"));
            }
        }
        out
    }

    /// Reads the header from the start of a file, consuming exactly its lines.
    pub fn read(reader: &mut impl BufRead) -> Result<Self, Error> {
        let mut line = Vec::new();
        let mut next_line = |what: &str| -> Result<String, Error> {
            line.clear();
            let n = std::io::Read::take(&mut *reader, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::new(ErrorKind::Io, format!("could not read the header: {e}")))?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Err(bad(&format!("it ends before {what}")));
            }
            line.pop();
            String::from_utf8(line.clone()).map_err(|_| bad("it is not UTF-8"))
        };
        if next_line("the first line")? != MAGIC {
            return Err(bad(&format!("the first line is not \"{MAGIC}\"")));
        }
        let value_of = |text: &str, key: &str| {
            text.strip_prefix("-- ")
                .and_then(|rest| rest.strip_prefix(key))
                .and_then(|rest| rest.strip_prefix(": "))
                .map(str::to_string)
        };
        let mut values: Vec<Option<String>> = Vec::with_capacity(KEYS.len());
        // A line read for the optional key that turned out to be the next key's.
        let mut unused: Option<String> = None;
        for key in KEYS {
            let text = match unused.take() {
                Some(text) => text,
                None => next_line(key)?,
            };
            match value_of(&text, key) {
                Some(value) => values.push(Some(value)),
                None if key == COMMITTED_AT => {
                    values.push(None);
                    unused = Some(text);
                }
                None => {
                    return Err(bad(&format!("expected \"-- {key}: ...\", found \"{}\"", text.escape_debug())));
                }
            }
        }
        let values: Vec<String> = values.into_iter().map(Option::unwrap_or_default).collect();
        let number = |i: usize| -> Result<u64, Error> {
            let v = &values[i];
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{} is not a number", KEYS[i])));
            }
            v.parse().map_err(|_| bad(&format!("{} does not fit in 64 bits", KEYS[i])))
        };
        let string = |i: usize| -> Result<String, Error> {
            serde_json::from_str::<String>(&values[i]).map_err(|_| bad(&format!("{} is not a JSON string", KEYS[i])))
        };
        let format = u32::try_from(number(0)?).map_err(|_| bad("format does not fit in 32 bits"))?;
        if format != FORMAT_VERSION {
            return Err(bad(&format!("format {format} is not supported (this version reads format {FORMAT_VERSION})")));
        }
        let time = |i: usize| -> Result<DateTime<Utc>, Error> {
            DateTime::parse_from_rfc3339(&values[i])
                .map_err(|_| bad(&format!("{} is not an RFC 3339 time", KEYS[i])))
                .map(|t| t.with_timezone(&Utc))
        };
        let exported_at = time(7)?;
        let committed_at = if values[8].is_empty() { None } else { Some(time(8)?) };
        let previous_sha256 = match values[9].as_str() {
            "none" => None,
            text => Some(Checksum::parse(text).map_err(|_| bad("previous-sha256 is not a sha256"))?),
        };
        Ok(Self {
            format,
            master: number(1)?,
            database: string(2)?,
            slave: string(3)?,
            number: number(4)?,
            xid: number(5)?,
            changes: number(6)?,
            exported_at,
            committed_at,
            previous_sha256,
        })
    }
}

fn bad(why: &str) -> Error {
    Error::new(ErrorKind::BadHeader, format!("bad transaction file header: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Header {
        Header {
            format: FORMAT_VERSION,
            master: 7449123456789012345,
            database: "shop \"main\"\nline".into(),
            slave: "backup_system".into(),
            number: 42,
            xid: 7731,
            changes: 3,
            exported_at: Utc.with_ymd_and_hms(2026, 12, 1, 1, 2, 3).unwrap() + chrono::Duration::microseconds(123456),
            committed_at: Some(
                Utc.with_ymd_and_hms(2026, 12, 1, 1, 1, 59).unwrap() + chrono::Duration::microseconds(7),
            ),
            previous_sha256: Some(Checksum::of(b"41")),
        }
    }

    #[test]
    fn renders_one_comment_line_per_field() {
        let text = Header { previous_sha256: None, ..sample() }.render();
        assert_eq!(
            text,
            "-- dbmirror transaction file\n-- format: 1\n-- master: 7449123456789012345\n\
             -- database: \"shop \\\"main\\\"\\nline\"\n-- slave: \"backup_system\"\n-- number: 42\n\
             -- xid: 7731\n-- changes: 3\n-- exported-at: 2026-12-01T01:02:03.123456Z\n\
             -- committed-at: 2026-12-01T01:01:59.000007Z\n-- previous-sha256: none\n"
        );
    }

    /// Files written before the master recorded commit times have no committed-at line; they
    /// must stay readable.
    #[test]
    fn reads_headers_without_committed_at() {
        let old = Header { committed_at: None, ..sample() };
        let text = format!("{}BEGIN;\n", old.render());
        assert!(!text.contains("committed-at"), "{text}");
        let mut reader = text.as_bytes();
        assert_eq!(Header::read(&mut reader).unwrap(), old);
        assert_eq!(reader, b"BEGIN;\n");
    }

    #[test]
    fn reads_what_it_renders_and_stops_after_the_header() {
        for header in [sample(), Header { previous_sha256: None, ..sample() }] {
            let text = format!("{}BEGIN;\n", header.render());
            let mut reader = text.as_bytes();
            assert_eq!(Header::read(&mut reader).unwrap(), header);
            assert_eq!(reader, b"BEGIN;\n");
        }
    }

    #[test]
    fn refuses_damaged_headers() {
        let good = sample().render();
        let cases = [
            String::new(),
            good.replace("-- dbmirror transaction file", "-- something else"),
            good.replace("-- format: 1", "-- format: 2"),
            good.replace("-- number: 42", "-- number: -42"),
            good.replace("-- xid: 7731\n", ""),
            good.replace("-- slave: \"backup_system\"", "-- slave: backup_system"),
            good.replace("2026-12-01T01:02", "2026-13-01T01:02"),
            good.replace("2026-12-01T01:01", "2026-13-01T01:01"),
            good.replace("-- committed-at:", "-- committed_at:"),
            good[..good.len() - 1].to_string(),
            good.replace("-- master: 7449123456789012345", "-- master: 99999999999999999999"),
        ];
        for case in cases {
            let err = Header::read(&mut case.as_bytes()).expect_err(&case);
            assert_eq!(err.kind(), ErrorKind::BadHeader, "{case}");
        }
    }
}
