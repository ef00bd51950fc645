//! What the generator may put into a scenario, switchable one construct at a time.
//!
//! Every switch names one construct of schema or workload. All are on by default; a
//! specification such as `all,-inheritance,-replica_role` or `none,+copy,+merge` (the
//! `DIFFERENTIAL_FEATURES` variable of the differential test) turns some off or on, so that a
//! fixed seed set can be chosen that passes while a known class of failure is being fixed,
//! and so that a failure can be pinned to the construct that causes it.

use std::collections::BTreeSet;
use std::fmt;

/// Every switch, with what it puts into a scenario.
pub const FEATURES: &[(&str, &str)] = &[
    ("types", "columns of every built-in type the catalog offers, with their edge values"),
    ("arrays", "array columns"),
    ("user_types", "enums, composites, domains and user-defined ranges"),
    ("identifiers", "mixed-case, quoted, unicode and reserved-word names, and a second schema"),
    ("composite_keys", "primary keys of two or three columns"),
    ("identity", "identity columns, GENERATED ALWAYS and BY DEFAULT, as keys and not"),
    ("generated", "stored generated columns"),
    ("inheritance", "a table inheriting from another, both mirrored"),
    ("foreign_keys", "foreign keys with every action, deferrable ones and self-references"),
    ("triggers_before_capture", "AFTER ROW user triggers named to fire before dbmirror_capture"),
    ("triggers_after_capture", "AFTER ROW user triggers named to fire after dbmirror_capture"),
    ("before_row_triggers", "BEFORE ROW triggers that change NEW or suppress a delete"),
    ("before_row_writes", "BEFORE ROW triggers that write into another mirrored table"),
    ("statement_triggers", "statement triggers, with and without transition tables"),
    ("truncate_triggers", "AFTER TRUNCATE triggers writing into a mirrored table"),
    ("deferred_triggers", "deferred constraint triggers writing into mirrored tables at commit"),
    ("upsert_triggers", "a BEFORE INSERT trigger that deletes the same key first"),
    ("row_functions", "functions writing mirrored tables, called per row from a statement's expressions and CTEs"),
    ("concurrency", "several sessions with interleaved transactions"),
    ("savepoints", "savepoints released and rolled back"),
    ("error_rollback", "psql's ON_ERROR_ROLLBACK: a savepoint around every statement"),
    ("exception_blocks", "PL/pgSQL exception blocks that undo part of a DO block"),
    ("two_phase", "PREPARE TRANSACTION and COMMIT PREPARED"),
    ("rollback_prepared", "ROLLBACK PREPARED"),
    ("isolation", "REPEATABLE READ and SERIALIZABLE transactions"),
    ("truncate", "TRUNCATE: single, several tables, CASCADE, ONLY, RESTART IDENTITY"),
    ("copy", "COPY FROM STDIN"),
    ("bulk", "statements of more than a thousand rows, past the rows capture buffers before writing"),
    ("merge", "MERGE"),
    ("on_conflict", "INSERT ... ON CONFLICT DO NOTHING and DO UPDATE"),
    ("key_updates", "updates that change primary keys"),
    ("identity_default", "updates that set identity and defaulted columns to DEFAULT"),
    ("replica_role", "transactions under session_replication_role = replica"),
    ("exports_during_workload", "exports while other transactions are still open"),
    ("ddl", "DDL between transactions: columns added, dropped, renamed, retyped; tables made, renamed, dropped"),
    ("ddl_before_export", "DDL on the master before the changes that precede it are exported"),
    ("ddl_stream", "DDL captured on the master (dbmirror.capture_ddl) and carried to the slaves in the stream"),
    ("drop_type", "DROP TYPE of an enum that captured changes used"),
    ("seed_form", "tables mirrored with the seed's CREATE TRIGGER ... recordchange form"),
    ("double_mirroring", "the seed's trigger added to a table dbmirror_mirror_table() mirrored, and the reverse"),
];

/// A set of switched-on features.
#[derive(Clone, PartialEq, Eq)]
pub struct Features {
    on: BTreeSet<&'static str>,
}

impl Features {
    pub fn all() -> Self {
        Features { on: FEATURES.iter().map(|(name, _)| *name).collect() }
    }

    pub fn none() -> Self {
        Features { on: BTreeSet::new() }
    }

    /// Reads a specification: comma-separated items, each `all`, `none`, `NAME` or `+NAME`
    /// (switch on) or `-NAME` (switch off), applied from left to right to the full set.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut features = Self::all();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "all" => features = Self::all(),
                "none" => features = Self::none(),
                _ => {
                    let (on, name) = match item.strip_prefix('-') {
                        Some(name) => (false, name),
                        None => (true, item.strip_prefix('+').unwrap_or(item)),
                    };
                    let name = Self::known(name).ok_or_else(|| {
                        format!(
                            "unknown feature {name:?} in {spec:?}; the features are: all, none, {}",
                            FEATURES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                        )
                    })?;
                    if on {
                        features.on.insert(name);
                    } else {
                        features.on.remove(name);
                    }
                }
            }
        }
        Ok(features)
    }

    fn known(name: &str) -> Option<&'static str> {
        FEATURES.iter().map(|(n, _)| *n).find(|n| *n == name)
    }

    /// Whether `name` is switched on. An unknown name is a mistake in the generator.
    pub fn has(&self, name: &str) -> bool {
        assert!(Self::known(name).is_some(), "the generator asked for unknown feature {name:?}");
        self.on.contains(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.on.iter().copied()
    }
}

impl fmt::Display for Features {
    /// The shortest specification that [`parse`](Self::parse) reads back to this set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off: Vec<&str> = FEATURES.iter().map(|(n, _)| *n).filter(|n| !self.on.contains(n)).collect();
        if off.is_empty() {
            write!(f, "all")
        } else if off.len() * 2 <= FEATURES.len() {
            write!(f, "all,-{}", off.join(",-"))
        } else if self.on.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "none,+{}", self.on.iter().copied().collect::<Vec<_>>().join(",+"))
        }
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::Features;

    #[test]
    fn specifications_read_back_as_written() {
        for spec in ["all", "none", "all,-inheritance,-copy", "none,+copy,+merge"] {
            assert_eq!(Features::parse(spec).unwrap().to_string(), spec);
        }
        assert_eq!(Features::parse("-copy,+copy").unwrap(), Features::all());
        let err = Features::parse("all,-inheritence").unwrap_err();
        assert!(err.contains("unknown feature \"inheritence\"") && err.contains("inheritance"), "{err}");
    }
}
