//! What makes a table mirrorable, and whether its capture is complete: one examination of a
//! table and its triggers, used at every place that must refuse or report what dbmirror cannot
//! capture (docs/capture.md, "What cannot be captured").
//!
//! A table is *mirrored* when it has a trigger that calls `recordchange()` (created by
//! `dbmirror_mirror_table()` or in the seed's own form). Its capture is complete when, besides:
//!
//! * every such trigger fires AFTER each row INSERT, UPDATE and DELETE, with no WHEN condition
//!   and no column list (a partial trigger would capture part of the changes);
//! * the table has dbmirror's two internal companion triggers: `~dbmirror_order`, BEFORE each
//!   row change, which pins when the change takes effect, and `~dbmirror_truncate`, BEFORE
//!   TRUNCATE, which captures the TRUNCATE;
//! * all of these are ENABLE ALWAYS: they fire whatever the writing session's
//!   `session_replication_role` (logical replication workers and `pg_restore
//!   --disable-triggers` write as replicas);
//! * no other BEFORE trigger fires after `~dbmirror_order` (a change it made would be ordered
//!   wrongly);
//! * the table is an ordinary, logged heap table with an immediate primary key made of
//!   captured (not generated) columns.
//!
//! The examination reads only the relation's relcache entry and its indexes' syscache rows, so
//! capture can afford it once per relcache entry.

use std::ffi::CStr;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use crate::objects::Objects;

/// Name of the companion trigger that pins the order of row changes; PostgreSQL appends the
/// trigger's OID. `~` sorts after the letters, digits and `_` that trigger names are usually
/// made of, so it fires after other BEFORE triggers (triggers of one kind fire in name order).
pub const ORDER_TRIGGER: &CStr = c"~dbmirror_order";
/// Name of the companion trigger that captures TRUNCATE (with the OID appended).
pub const TRUNCATE_TRIGGER: &CStr = c"~dbmirror_truncate";

/// Argument of a capture trigger that turns on the check of old values on the slave.
pub const CHECK_CONFLICTS_ARGUMENT: &str = "check_conflicts";

/// Something that keeps a table from being captured completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    OwnTable,
    NotTable,
    Partitioned,
    Temporary,
    Unlogged,
    NotHeap,
    NoPrimaryKey,
    DeferrableKey,
    GeneratedKey(String),
    BadCaptureTrigger { trigger: String, why: &'static str },
    Incomplete { trigger: String },
    Disabled { trigger: String },
    NotAlways { trigger: String },
    FiresAfterOrdering { trigger: String },
}

/// How a problem is treated where it is found, besides capture itself, which refuses a write to
/// a table with any problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// `dbmirror_mirror_table()` (and the event trigger after a new capture trigger) adds the
    /// missing companions and makes the triggers ENABLE ALWAYS.
    Repair,
    Refuse,
    /// Only a warning at DDL time; writes are refused until it is fixed.
    Warn,
}

/// Where a table is examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// `dbmirror_mirror_table()`.
    Mirror,
    /// A trigger calling `recordchange()` was just created (the seed's form).
    NewCaptureTrigger,
    /// Other DDL on a mirrored table.
    Ddl,
}

impl Problem {
    fn is_key(&self) -> bool {
        matches!(self, Problem::NoPrimaryKey | Problem::DeferrableKey | Problem::GeneratedKey(_))
    }

    fn is_repairable(&self) -> bool {
        matches!(self, Problem::Incomplete { .. } | Problem::Disabled { .. } | Problem::NotAlways { .. })
    }

    pub fn treatment(&self, context: Context) -> Treatment {
        match context {
            Context::Mirror if self.is_repairable() => Treatment::Repair,
            Context::Mirror => Treatment::Refuse,
            Context::NewCaptureTrigger if self.is_repairable() => Treatment::Repair,
            // The seed's instructions create triggers on tables that may get their key later:
            // writes are refused until they do, with this very message.
            Context::NewCaptureTrigger | Context::Ddl if self.is_key() => Treatment::Warn,
            Context::NewCaptureTrigger | Context::Ddl => Treatment::Refuse,
        }
    }

    pub fn code(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Problem::OwnTable | Problem::Partitioned | Problem::Temporary | Problem::Unlogged | Problem::NotHeap => {
                ERRCODE_FEATURE_NOT_SUPPORTED
            }
            Problem::NotTable => ERRCODE_WRONG_OBJECT_TYPE,
            Problem::NoPrimaryKey | Problem::DeferrableKey | Problem::GeneratedKey(_) => {
                ERRCODE_INVALID_TABLE_DEFINITION
            }
            Problem::BadCaptureTrigger { .. } => ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            Problem::Incomplete { .. }
            | Problem::Disabled { .. }
            | Problem::NotAlways { .. }
            | Problem::FiresAfterOrdering { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }

    /// The primary message; `table` is the table's qualified name.
    pub fn message(&self, table: &str) -> String {
        match self {
            Problem::OwnTable => format!("cannot mirror dbmirror's own table {table}"),
            Problem::NotTable => format!("{table} is not a table"),
            Problem::Partitioned => format!("cannot mirror partitioned table {table}"),
            Problem::Temporary => format!("cannot mirror temporary table {table}"),
            Problem::Unlogged => format!("cannot mirror unlogged table {table}"),
            Problem::NotHeap => format!("cannot mirror table {table}: it does not use the heap access method"),
            Problem::NoPrimaryKey => format!("table {table} has no primary key"),
            Problem::DeferrableKey => format!("primary key of table {table} is deferrable"),
            Problem::GeneratedKey(column) => {
                format!("primary key of table {table} uses generated column \"{column}\"")
            }
            Problem::BadCaptureTrigger { trigger, why } => {
                format!("trigger \"{trigger}\" on table {table} calls recordchange() but {why}")
            }
            Problem::Incomplete { trigger } => format!(
                "table {table} is mirrored by trigger \"{trigger}\" but lacks dbmirror's ordering and TRUNCATE triggers"
            ),
            Problem::Disabled { trigger } => {
                format!("capture on table {table} is disabled: trigger \"{trigger}\" is disabled")
            }
            Problem::NotAlways { trigger } => format!(
                "capture on table {table} does not fire in every session: trigger \"{trigger}\" is not ENABLE ALWAYS"
            ),
            Problem::FiresAfterOrdering { trigger } => {
                format!("trigger \"{trigger}\" on mirrored table {table} would fire after dbmirror's ordering trigger")
            }
        }
    }

    pub fn hint(&self, table: &str) -> Option<String> {
        let literal = table.replace('\'', "''");
        Some(match self {
            Problem::OwnTable | Problem::Temporary => return None,
            Problem::NotTable => "Only ordinary tables can be mirrored.".into(),
            Problem::Partitioned => "Mirror each partition instead.".into(),
            Problem::Unlogged => "A crash empties an unlogged table without firing any trigger, so the slave would keep rows the master lost. Make it logged with ALTER TABLE ... SET LOGGED, or stop mirroring it.".into(),
            Problem::NotHeap => "Only heap tables can be mirrored.".into(),
            Problem::NoPrimaryKey => format!(
                "dbmirror finds rows on the slave by primary key; add one with ALTER TABLE ... ADD PRIMARY KEY, or stop mirroring with SELECT dbmirror_unmirror_table('{literal}')."
            ),
            Problem::DeferrableKey => "dbmirror finds rows on the slave by primary key, which must be unique after every statement: recreate it NOT DEFERRABLE.".into(),
            Problem::GeneratedKey(_) => "The slave computes generated columns itself, so a key made of them cannot be sent; use a primary key of ordinary columns.".into(),
            Problem::BadCaptureTrigger { .. } => format!(
                "Drop that trigger; SELECT dbmirror_mirror_table('{literal}') creates the capture trigger that fires AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW."
            ),
            Problem::Incomplete { .. } | Problem::NotAlways { .. } => {
                format!("SELECT dbmirror_mirror_table('{literal}') completes them.")
            }
            Problem::Disabled { .. } => format!(
                "Changes made while capture is disabled never reach the slaves. Enable it again with SELECT dbmirror_mirror_table('{literal}'), or stop mirroring with SELECT dbmirror_unmirror_table('{literal}')."
            ),
            Problem::FiresAfterOrdering { .. } => format!(
                "Rename the trigger so that its name sorts before \"{}\" (triggers fire in name order).",
                ORDER_TRIGGER.to_string_lossy()
            ),
        })
    }

    /// Raises the problem at `level` (ERROR does not return).
    pub fn report(&self, table: &str, level: PgLogLevel) {
        let mut report = ErrorReport::new(self.code(), self.message(table), "dbmirror");
        if let Some(hint) = self.hint(table) {
            report = report.set_hint(hint);
        }
        report.report(level);
    }
}

/// What an examination found.
#[derive(Debug, Clone, Default)]
pub struct Examination {
    /// The table has at least one trigger calling `recordchange()`.
    pub mirrored: bool,
    pub problems: Vec<Problem>,
    /// The capture triggers (calling `recordchange()`), in firing order: OID and enabled state.
    pub capture_triggers: Vec<(Oid, u8)>,
}

impl Examination {
    /// The capture trigger that records the changes in this session: the first capture trigger
    /// that fires in it. The others do nothing, so a table is captured once however many
    /// triggers call `recordchange()`.
    pub fn recording_trigger(&self) -> Option<Oid> {
        // SAFETY: plain read of a GUC variable.
        let replica = unsafe { pg_sys::SessionReplicationRole } == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as i32;
        self.capture_triggers
            .iter()
            .find(|(_, enabled)| match *enabled {
                pg_sys::TRIGGER_FIRES_ALWAYS => true,
                pg_sys::TRIGGER_FIRES_ON_ORIGIN => !replica,
                pg_sys::TRIGGER_FIRES_ON_REPLICA => replica,
                _ => false,
            })
            .map(|(oid, _)| *oid)
    }
}

/// `schema.table`, each part quoted where needed, as PostgreSQL names relations in messages.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn qualified_name(rel: pg_sys::Relation) -> String {
    // SAFETY: an open relation's pg_class row is valid.
    unsafe {
        let form = (*rel).rd_rel;
        let name = pg_sys::quote_qualified_identifier(
            pg_sys::get_namespace_name((*form).relnamespace),
            (*form).relname.data.as_ptr(),
        );
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

fn has(tgtype: i16, bit: u32) -> bool {
    tgtype as u32 & bit != 0
}

/// Examines `rel` (open, with at least AccessShareLock).
///
/// # Safety
/// `rel` must be an open relation; must run inside a transaction.
pub unsafe fn examine(rel: pg_sys::Relation, objects: &Objects) -> Examination {
    let mut exam = Examination::default();
    // SAFETY (whole function): the relation is open, so its relcache entry, trigger descriptor
    // and tuple descriptor stay valid while we read them.
    unsafe {
        let form = &*(*rel).rd_rel;
        let triggers = match (*rel).trigdesc.as_ref() {
            Some(desc) => std::slice::from_raw_parts(desc.triggers, desc.numtriggers as usize),
            None => &[],
        };
        let name = |t: &pg_sys::Trigger| CStr::from_ptr(t.tgname).to_string_lossy().into_owned();
        let mut order_position = None;
        let mut truncate_position = None;
        let mut companions_enabled = Vec::new();
        for (i, t) in triggers.iter().enumerate() {
            if t.tgfoid == objects.recordchange {
                exam.mirrored = true;
                exam.capture_triggers.push((t.tgoid, t.tgenabled as u8));
                let why = if !has(t.tgtype, pg_sys::TRIGGER_TYPE_ROW) {
                    Some("fires FOR EACH STATEMENT (TRUNCATE is captured by dbmirror's own trigger)")
                } else if has(t.tgtype, pg_sys::TRIGGER_TYPE_BEFORE) || has(t.tgtype, pg_sys::TRIGGER_TYPE_INSTEAD) {
                    Some("does not fire AFTER the change")
                } else if ![pg_sys::TRIGGER_TYPE_INSERT, pg_sys::TRIGGER_TYPE_UPDATE, pg_sys::TRIGGER_TYPE_DELETE]
                    .iter()
                    .all(|&event| has(t.tgtype, event))
                {
                    Some("does not fire on each of INSERT, UPDATE and DELETE")
                } else if !t.tgqual.is_null() {
                    Some("has a WHEN condition")
                } else if t.tgnattr > 0 {
                    Some("fires only for some columns")
                } else if t.tgconstraint != pg_sys::InvalidOid {
                    Some("is a constraint trigger")
                } else if !arguments(t).iter().all(|a| a == CHECK_CONFLICTS_ARGUMENT) {
                    Some("has an argument other than 'check_conflicts'")
                } else {
                    None
                };
                if let Some(why) = why {
                    exam.problems.push(Problem::BadCaptureTrigger { trigger: name(t), why });
                }
                companions_enabled.push((name(t), t.tgenabled as u8));
            } else if t.tgfoid == objects.before {
                if has(t.tgtype, pg_sys::TRIGGER_TYPE_ROW) {
                    order_position = Some(i);
                } else {
                    truncate_position = Some(i);
                }
                companions_enabled.push((name(t), t.tgenabled as u8));
            }
        }
        exam.problems.extend(table_problems(rel, form, objects));
        if !exam.mirrored {
            return exam;
        }
        let first_capture = companions_enabled.first().map(|(n, _)| n.clone()).unwrap_or_default();
        if order_position.is_none() || truncate_position.is_none() {
            exam.problems.push(Problem::Incomplete { trigger: first_capture });
        }
        for (trigger, enabled) in companions_enabled {
            match enabled {
                pg_sys::TRIGGER_FIRES_ALWAYS => {}
                pg_sys::TRIGGER_DISABLED => exam.problems.push(Problem::Disabled { trigger }),
                _ => exam.problems.push(Problem::NotAlways { trigger }),
            }
        }
        // Other BEFORE triggers of the same kind must fire before the companions.
        for (position, row) in [(order_position, true), (truncate_position, false)] {
            let Some(position) = position else { continue };
            for t in &triggers[position + 1..] {
                let same_kind = has(t.tgtype, pg_sys::TRIGGER_TYPE_ROW) == row;
                if t.tgfoid != objects.before
                    && same_kind
                    && has(t.tgtype, pg_sys::TRIGGER_TYPE_BEFORE)
                    && t.tgenabled as u8 != pg_sys::TRIGGER_DISABLED
                {
                    exam.problems.push(Problem::FiresAfterOrdering { trigger: name(t) });
                }
            }
        }
    }
    exam
}

/// Problems of the table itself, whatever its triggers.
///
/// # Safety
/// `rel` must be an open relation and `form` its pg_class row.
pub unsafe fn table_problems(
    rel: pg_sys::Relation,
    form: &pg_sys::FormData_pg_class,
    objects: &Objects,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    // SAFETY: plain reads of the relcache entry of an open relation.
    unsafe {
        let relname = CStr::from_ptr(form.relname.data.as_ptr()).to_bytes();
        if form.relnamespace == objects.schema && relname.starts_with(b"dbmirror_") {
            problems.push(Problem::OwnTable);
            return problems;
        }
        match form.relkind as u8 {
            pg_sys::RELKIND_RELATION => {}
            pg_sys::RELKIND_PARTITIONED_TABLE => {
                problems.push(Problem::Partitioned);
                return problems;
            }
            _ => {
                problems.push(Problem::NotTable);
                return problems;
            }
        }
        match form.relpersistence as u8 {
            pg_sys::RELPERSISTENCE_TEMP => problems.push(Problem::Temporary),
            pg_sys::RELPERSISTENCE_UNLOGGED => problems.push(Problem::Unlogged),
            _ => {}
        }
        if form.relam != pg_sys::HEAP_TABLE_AM_OID {
            problems.push(Problem::NotHeap);
        }
        if let Some(problem) = key_problem(rel) {
            problems.push(problem);
        }
    }
    problems
}

/// The trigger's arguments.
///
/// # Safety
/// `t` must be a trigger of an open relation's trigger descriptor.
pub unsafe fn arguments(t: &pg_sys::Trigger) -> Vec<String> {
    // SAFETY: tgargs holds tgnargs NUL-terminated strings.
    unsafe {
        (0..t.tgnargs as usize).map(|i| CStr::from_ptr(*t.tgargs.add(i)).to_string_lossy().into_owned()).collect()
    }
}

/// What is wrong with the table's primary key, if anything. PostgreSQL's relcache knows only
/// immediate primary keys, so the index list is read here to tell a deferrable key from none.
unsafe fn key_problem(rel: pg_sys::Relation) -> Option<Problem> {
    // SAFETY: the relation is open; index rows come from the syscache and are released.
    unsafe {
        for index in oid_list(pg_sys::RelationGetIndexList(rel)) {
            let tuple =
                pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::INDEXRELID as i32, pg_sys::Datum::from(index));
            if tuple.is_null() {
                continue;
            }
            let form = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_index>(tuple);
            let found = if !form.indisprimary {
                None
            } else if !form.indimmediate {
                Some(Some(Problem::DeferrableKey))
            } else {
                let attnums = form.indkey.values.as_slice(form.indnkeyatts as usize);
                let attrs = crate::image::attributes((*rel).rd_att);
                let generated = attnums
                    .iter()
                    .filter_map(|&n| attrs.get((n as usize).wrapping_sub(1)))
                    .find(|a| a.attgenerated != 0)
                    .map(|a| CStr::from_ptr(a.attname.data.as_ptr()).to_string_lossy().into_owned());
                Some(generated.map(Problem::GeneratedKey))
            };
            pg_sys::ReleaseSysCache(tuple);
            if let Some(found) = found {
                return found;
            }
        }
        Some(Problem::NoPrimaryKey)
    }
}

/// The OIDs of a PostgreSQL `List` of OIDs.
///
/// # Safety
/// `list` must be NIL (null) or a valid OID list.
unsafe fn oid_list(list: *mut pg_sys::List) -> Vec<Oid> {
    // SAFETY: a non-null list has `length` cells.
    unsafe {
        match list.as_ref() {
            None => Vec::new(),
            Some(l) => (0..l.length as usize).map(|i| (*l.elements.add(i)).oid_value).collect(),
        }
    }
}
