//! Tables a slave takes from a copy of their own (`dbmirror-export snapshot --table`): which
//! captured changes its files leave out. While a table awaits its copy, all of its changes;
//! once the copy is taken, those of the transactions visible in the copy's snapshot, which the
//! copy holds. Every other change is written as usual.

use std::collections::HashMap;

use crate::error::{Error, Kind};
use crate::sql::Change;

/// A `pg_snapshot` as its text form gives it: `xmin:xmax:xip,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    xmin: i64,
    xmax: i64,
    running: Vec<i64>,
}

impl Visible {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = || Error::new(Kind::Runtime, format!("\"{text}\" is not a pg_snapshot"));
        let mut parts = text.split(':');
        let (Some(xmin), Some(xmax), Some(running), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let number = |s: &str| s.parse::<i64>().map_err(|_| bad());
        let running =
            if running.is_empty() { Vec::new() } else { running.split(',').map(number).collect::<Result<_, _>>()? };
        Ok(Self { xmin: number(xmin)?, xmax: number(xmax)?, running })
    }

    /// Whether a committed transaction `xid` is visible in the snapshot, as
    /// `pg_visible_in_snapshot()` says.
    pub fn sees(&self, xid: i64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }
}

/// The tables of one slave that come from a copy of their own, by relid: `None` while the
/// copy is awaited.
#[derive(Debug, Default)]
pub struct TableFilter {
    tables: HashMap<u32, Option<Visible>>,
}

impl TableFilter {
    pub fn new(tables: HashMap<u32, Option<Visible>>) -> Self {
        Self { tables }
    }

    /// Whether the change of table `relid` by transaction `xid` stays out of the slave's file.
    pub fn leaves_out(&self, relid: u32, xid: i64) -> bool {
        match self.tables.get(&relid) {
            None => false,
            Some(None) => true,
            Some(Some(copy)) => copy.sees(xid),
        }
    }

    /// Whether `change` of transaction `xid` stays out of the slave's file: a change of rows
    /// when its table's does, a DDL change when every table it changes does (the copy was
    /// taken after it, or the table awaits its copy, which will be taken after it).
    pub fn leaves_out_change(&self, change: &Change<'_>, xid: i64) -> bool {
        let relids = change.relids();
        !relids.is_empty() && relids.iter().all(|&relid| self.leaves_out(relid, xid))
    }

    /// Whether no change of the transactions `xids` stays out of the slave's files: it has no
    /// table of its own, or each was copied before all of them. Its files of these
    /// transactions are then the same as any other such slave's (see [`crate::group`]).
    pub fn keeps_all(&self, xids: &[i64]) -> bool {
        self.tables.values().all(|copy| copy.as_ref().is_some_and(|copy| xids.iter().all(|&xid| !copy.sees(xid))))
    }

    /// Whether the slave awaits the copy of table `relid`.
    pub fn awaits(&self, relid: u32) -> bool {
        matches!(self.tables.get(&relid), Some(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_holds_what_its_snapshot_sees_and_an_awaited_table_nothing_yet() {
        let copy = Visible::parse("100:105:101,103").unwrap();
        assert!(copy.sees(99) && copy.sees(102) && copy.sees(104));
        assert!(!copy.sees(101) && !copy.sees(103) && !copy.sees(105) && !copy.sees(200));
        assert_eq!(Visible::parse("7:7:").unwrap(), Visible { xmin: 7, xmax: 7, running: vec![] });
        assert!(Visible::parse("7:7").is_err() && Visible::parse("a:1:").is_err());

        let filter = TableFilter::new(HashMap::from([(1, None), (2, Some(copy))]));
        assert!(filter.leaves_out(1, 500) && filter.awaits(1));
        assert!(filter.leaves_out(2, 99) && !filter.leaves_out(2, 101) && !filter.awaits(2));
        assert!(!filter.leaves_out(3, 99));
    }

    /// A slave can share files with others only for transactions it takes whole: none before
    /// or in a copy's snapshot, none while a copy is awaited.
    #[test]
    fn a_slave_keeps_all_changes_only_of_transactions_after_its_copies() {
        assert!(TableFilter::default().keeps_all(&[1, 2, 3]));
        let copied = TableFilter::new(HashMap::from([(2, Some(Visible::parse("100:105:101,103").unwrap()))]));
        assert!(copied.keeps_all(&[101, 103, 105, 300]));
        assert!(!copied.keeps_all(&[103, 104]));
        let awaiting = TableFilter::new(HashMap::from([(1, None)]));
        assert!(!awaiting.keeps_all(&[300]));
    }
}
