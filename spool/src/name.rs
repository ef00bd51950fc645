//! Transaction file names: `NNNNNNNNNNNNNNNNNNNN_YYYYMMDDTHHMMSSZ_XID.sql[.zst]`.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::error::{Error, ErrorKind};
use crate::{NUMBER_WIDTH, SQL_EXTENSION, ZSTD_EXTENSION};

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The parts of a transaction file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionFileName {
    /// Gapless per-slave file number, from 1.
    pub number: u64,
    /// When the number was assigned, to the second.
    pub time: DateTime<Utc>,
    /// 64-bit id of the master transaction.
    pub xid: u64,
    /// Whether the file is zstd-compressed (`.sql.zst`).
    pub compressed: bool,
}

impl TransactionFileName {
    /// The file name.
    pub fn file_name(&self) -> String {
        let extension =
            if self.compressed { format!("{SQL_EXTENSION}.{ZSTD_EXTENSION}") } else { SQL_EXTENSION.to_string() };
        format!(
            "{:0width$}_{}_{}.{extension}",
            self.number,
            self.time.format(TIME_FORMAT),
            self.xid,
            width = NUMBER_WIDTH
        )
    }

    /// Parses a file name, refusing anything that [`file_name`](Self::file_name) would not
    /// produce, so that one file has exactly one name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::new(ErrorKind::BadName, format!("bad transaction file name \"{name}\": {why}"));
        let (stem, compressed) = if let Some(stem) = name.strip_suffix(&format!(".{SQL_EXTENSION}.{ZSTD_EXTENSION}")) {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(&format!(".{SQL_EXTENSION}")) {
            (stem, false)
        } else {
            return Err(bad("it does not end in .sql or .sql.zst"));
        };
        let mut parts = stem.split('_');
        let (Some(number), Some(time), Some(xid), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected NUMBER_TIME_XID"));
        };
        if number.len() != NUMBER_WIDTH || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the number must have exactly 20 digits"));
        }
        let number: u64 = number.parse().map_err(|_| bad("the number does not fit in 64 bits"))?;
        if number == 0 {
            return Err(bad("file numbers start at 1"));
        }
        let time = NaiveDateTime::parse_from_str(time, TIME_FORMAT)
            .map_err(|_| bad("the time must be YYYYMMDDTHHMMSSZ"))?
            .and_utc();
        if xid.is_empty() || !xid.bytes().all(|b| b.is_ascii_digit()) || (xid.len() > 1 && xid.starts_with('0')) {
            return Err(bad("the xid must be a decimal number without leading zeros"));
        }
        let xid: u64 = xid.parse().map_err(|_| bad("the xid does not fit in 64 bits"))?;
        let parsed = Self { number, time, xid, compressed };
        // The time format cannot express everything chrono accepts when parsing (for example a
        // leap second); insist on the canonical spelling.
        if parsed.file_name() != name {
            return Err(bad("not in canonical form"));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> TransactionFileName {
        TransactionFileName {
            number: 42,
            time: Utc.with_ymd_and_hms(2026, 12, 1, 1, 2, 3).unwrap(),
            xid: 7731,
            compressed: false,
        }
    }

    #[test]
    fn formats_fixed_width_number_time_and_xid() {
        assert_eq!(sample().file_name(), "00000000000000000042_20261201T010203Z_7731.sql");
        let zst = TransactionFileName { compressed: true, ..sample() };
        assert_eq!(zst.file_name(), "00000000000000000042_20261201T010203Z_7731.sql.zst");
    }

    #[test]
    fn parses_what_it_formats() {
        for name in [sample(), TransactionFileName { compressed: true, number: u64::MAX, xid: u64::MAX, ..sample() }] {
            assert_eq!(TransactionFileName::parse(&name.file_name()).unwrap(), name);
        }
    }

    /// Lexical order of names must be apply order even when the clock went backwards.
    #[test]
    fn lexical_order_is_number_order_when_the_clock_goes_backwards() {
        let first = sample();
        let second = TransactionFileName {
            number: 43,
            time: Utc.with_ymd_and_hms(1999, 1, 1, 0, 0, 0).unwrap(),
            xid: 1,
            compressed: false,
        };
        assert!(first.file_name() < second.file_name());
    }

    #[test]
    fn refuses_names_it_would_not_write() {
        for name in [
            "",
            "42_20261201T010203Z_7731.sql",
            "00000000000000000042_20261201T010203Z_7731.txt",
            "00000000000000000042_20261201T010203Z_07731.sql",
            "00000000000000000042_20261201T010203Z_.sql",
            "00000000000000000042_20261301T010203Z_7731.sql",
            "00000000000000000042_20261201T010203_7731.sql",
            "00000000000000000000_20261201T010203Z_7731.sql",
            "00000000000000000042_20261201T010203Z_7731_9.sql",
            "99999999999999999999_20261201T010203Z_7731.sql",
            "00000000000000000042_20261201T010203Z_99999999999999999999.sql",
            "0000000000000000004x_20261201T010203Z_7731.sql",
            "00000000000000000042_20261201T010203Z_7731.sql.tmp",
        ] {
            let err = TransactionFileName::parse(name).expect_err(name);
            assert_eq!(err.kind(), ErrorKind::BadName, "{name}");
        }
    }
}
