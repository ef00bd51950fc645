//! `snapshot`: a consistent copy of every mirrored table for one slave, written as numbered
//! files into its outbox, so that the slave starts (or starts again) on a live master.
//!
//! # The split between copy and stream
//!
//! The copy is read in one REPEATABLE READ transaction on the master, under its snapshot S (as
//! PgQ and Londiste split a table copy from the event stream with txid snapshots). Every
//! committed transaction visible in S is in the copy; every other one is in the stream. The
//! same transaction records S for the slave in `dbmirror_MirrorHost.snapshot`: from then on the
//! exporter never assigns the slave a transaction visible in S, and the purge counts such a
//! transaction as sent to it. Its xid horizon becomes the xmin of S, below which every
//! transaction is visible in S or was never committed. The copy's files take the next numbers;
//! every transaction of the stream is assigned after S is recorded, so it comes after them.
//!
//! Before S is taken, the slave is registered (or marked) as *seeding* in a transaction of its
//! own: it then holds back the purge of every pending transaction, so none that S does not see
//! can be purged before S is recorded, and `once` and `run` refuse to export to it until the
//! snapshot is recorded.
//!
//! # Files and crashes
//!
//! The first file starts the slave's stream (`dbmirror.start_stream`, in the guard's place)
//! and checks that the tables are empty, or empties them when the applier is told to replace
//! them; the others are ordinary files with the guard. Files are bounded in size and each is
//! one slave transaction. They are written under temporary names and made durable; then the
//! outbox's state file records the last of them, they are renamed into place with their
//! manifest, and only then is S recorded on the master. A crash before the rename leaves only
//! temporary files, and the slave marked seeding: running `snapshot` again starts over. A crash
//! after it leaves a complete snapshot in the outbox that the master did not record; the next
//! snapshot takes numbers after it (the state file says where), and a slave that applied the
//! first needs the second applied with `--replace`.

use std::io::{self, BufWriter, Read, Seek, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use dbmirror_cli::log;
use dbmirror_cli::progress::Progress;
use dbmirror_spool::{scan, Checksum, Entry, Header, FORMAT_VERSION};
use postgres::IsolationLevel;

use crate::config::{Config, Output};
use crate::error::{Error, Kind};
use crate::export::{Destination, Files};
use crate::fault;
use crate::master::{Assigned, Master};
use crate::outbox;
use crate::sql::{Change, FileWriter, SequenceValue, Table};
use dbmirror_sql::quote_identifier;

/// A table to copy: how files name it, and the query that reads it.
struct Source {
    table: Rc<Table>,
    query: String,
}

/// Writes a snapshot of every mirrored table for the configured slave into its outbox, files
/// of about `file_size` bytes of SQL each; or, with `tables`, a copy of those tables for the
/// running slave, which then takes their changes from the copy's snapshot on.
pub fn snapshot(
    config: &Config,
    file_size: u64,
    tables: &[String],
    schema_file: Option<&std::path::Path>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let Output::Files { directory, compress, signing_key } = &config.output else {
        return Err(Error::config("snapshot writes files: it needs transaction_file_directory, not slave").with_hint(
            "A slave fed in direct mode can start from a pg_dump of the master taken before its registration.",
        ));
    };
    let started = Instant::now();
    let mut master = Master::connect(&config.master, &config.slave_name)?;
    master.lock()?;

    // The numbers start after everything this outbox or the master has seen for the slave.
    let state = outbox::read(directory)?;
    if let Some(state) = &state {
        if state.slave != config.slave_name {
            return Err(Error::new(
                Kind::Diverged,
                format!(
                    "outbox \"{}\" holds the stream of slave \"{}\", not of \"{}\"",
                    directory.display(),
                    state.slave,
                    config.slave_name
                ),
            )
            .with_hint("Each slave has an outbox of its own; check transaction_file_directory."));
        }
    }
    let entries = scan(directory)?;
    // Temporary files are what a killed snapshot (or export) left: this exporter holds the
    // slave's lock, so nothing else is writing them, and a snapshot takes new numbers.
    for entry in &entries {
        if let Entry::Temporary(path) = entry {
            std::fs::remove_file(path)
                .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not remove \"{}\"", path.display()), e))?;
            log::info(&format!("removed \"{}\", left by an export that did not finish", path.display()));
        }
    }
    let in_outbox = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Transaction { name, .. } => Some(name.number as i64),
            Entry::Manifest { name, .. } => Some(name.last as i64),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let seen = state.as_ref().map_or(0, |s| s.number).max(in_outbox);
    let copy_of = if tables.is_empty() {
        None
    } else {
        // The slave's stream goes on: it must be this master's, as for `once` (unless a copy
        // that did not finish left the outbox ahead of the master).
        let stream = master.slave_row()?;
        if stream.seeding {
            // What did not finish was a whole snapshot: a copy of some tables cannot replace it.
            return Err(Error::new(
                Kind::NotPrepared,
                format!("slave \"{}\" awaits its snapshot: one was started and did not finish", config.slave_name),
            )
            .with_hint("Run dbmirror-export snapshot without --table for this slave; it starts over cleanly."));
        }
        if !stream.copying {
            outbox::check(directory, &master.identity, &config.slave_name, stream.last_number, stream.last_written())?;
        }
        // The copy continues the stream, so its numbers must follow the last file the slave
        // may have: the master's, or one a copy that did not finish published. Numbers that
        // such a copy only wrote into the state file were never seen by a slave.
        let (relids, first) = master.begin_table_copy(tables, in_outbox)?;
        let previous = if first - 1 > stream.last_number {
            Some(published_sha(directory, &entries, first - 1)?)
        } else {
            stream.last_sha256
        };
        Some((relids, first, previous))
    };
    let first = match &copy_of {
        Some((_, first, _)) => *first,
        None => master.begin_seeding(seen)?,
    };
    let only = copy_of.as_ref().map(|(relids, _, _)| relids.clone());
    let schema = master.schema().to_string();
    let locked = table_names(master.client(), &schema, only.as_deref())?;
    // Never a number a file in the outbox has; a whole snapshot not even one the state file saw.
    let floor = if copy_of.is_some() { in_outbox } else { seen };
    if floor >= first {
        return Err(Error::runtime(format!("snapshot numbering went wrong: {first} after {floor}")));
    }

    let identity = master.identity.clone();
    let client = master.client();
    let mut tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start()?;
    // Rows hidden by row-level security would be missing from the copy: fail instead, as
    // pg_dump does. The tables are locked before the snapshot is taken (LOCK takes none), so
    // that no table can be rewritten under it (a rewrite gives every row an xid the snapshot
    // cannot see, and the table would look empty); then the snapshot is taken.
    tx.batch_execute("SET LOCAL row_security = off")?;
    if !locked.is_empty() {
        tx.batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", locked.join(", ")))?;
    }
    let row = tx.query_one(
        "SELECT pg_catalog.pg_current_snapshot()::text, \
                pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint, \
                pg_catalog.txid_current(), pg_catalog.clock_timestamp()",
        &[],
    )?;
    let (visible, xmin, xid, now): (String, i64, i64, DateTime<Utc>) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let exported_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let (sources, relids, expected_rows) = sources(&mut tx, &schema, only.as_deref())?;
    // A table mirrored between the list above and the snapshot is locked only now.
    let late: Vec<&str> =
        sources.iter().map(|s| s.table.name.as_str()).filter(|name| !locked.iter().any(|l| l == name)).collect();
    if !late.is_empty() {
        tx.batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", late.join(", ")))?;
    }
    if sources.is_empty() {
        return Err(Error::new(Kind::NotPrepared, "no table is mirrored: the snapshot would be empty")
            .with_hint("Mirror the tables first: SELECT dbmirror_mirror_table('TABLE');"));
    }
    if let Some(path) = schema_file {
        write_schema(config, &sources, path)?;
    }
    let sequences: Vec<SequenceValue> = {
        let mut all: Vec<SequenceValue> =
            crate::master::sequences_of(&mut tx, &relids)?.into_values().flatten().collect();
        all.sort_by(|a, b| a.sequence.cmp(&b.sequence));
        all.dedup();
        all
    };
    log::info(&format!(
        "snapshot for slave \"{}\": {} tables, about {expected_rows} rows, under snapshot {visible}, from file {first}",
        config.slave_name,
        sources.len()
    ));

    // A copy for a running slave continues its stream: its first file follows the last one.
    let previous = copy_of.as_ref().and_then(|(_, _, previous)| *previous);
    let mut files = Files::new(directory, *compress, signing_key.as_deref(), config.sync_method);
    let mut chunk = Chunk::new(
        directory,
        first,
        &sources,
        &identity,
        config,
        xid,
        exported_at,
        Opening::First { previous, whole: copy_of.is_none() },
    )?;
    let mut progress = Progress::new(format!("snapshot for slave \"{}\"", config.slave_name), Some(expected_rows));
    let mut written: Vec<(i64, Checksum)> = Vec::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for source in &sources {
        let mut reader = BufReaderLines::new(tx.copy_out(source.query.as_str())?);
        while let Some(line) = reader.next_line()? {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::runtime("stopped on signal before the snapshot was complete")
                    .with_hint("Nothing was recorded; run dbmirror-export snapshot again."));
            }
            if chunk.sql_bytes() >= file_size {
                let done = chunk.finish(&mut files, &[])?;
                written.push(done);
                chunk = Chunk::new(
                    directory,
                    first + written.len() as i64,
                    &sources,
                    &identity,
                    config,
                    xid,
                    exported_at,
                    Opening::Next(done.1),
                )?;
            }
            chunk.row(&source.table, line)?;
            rows += 1;
            bytes += line.len() as u64 + 1;
            progress.add(1, line.len() as u64 + 1);
        }
    }
    written.push(chunk.finish(&mut files, &sequences)?);
    progress.finish();
    let (last, last_sha) = *written.last().expect("a snapshot has at least one file");

    // The files durable, then the state file, then the files in place: a number the outbox
    // ever showed is never used again, even if the master does not record this snapshot.
    files.make_durable()?;
    fault::point("snapshot-before-state");
    outbox::record(
        directory,
        &outbox::Written {
            master: identity.system_identifier.to_string(),
            database: identity.database.clone(),
            slave: config.slave_name.clone(),
            number: last,
            sql_sha256: last_sha.to_string(),
        },
    )?;
    fault::point("snapshot-before-publish");
    files.end()?;
    fault::point("snapshot-before-commit");
    match &copy_of {
        None => {
            tx.execute(
                &format!(
                    "UPDATE {schema}.dbmirror_MirrorHost \
                        SET seeding = false, snapshot = $2::text::pg_snapshot, xid_horizon = $3, \
                            last_number = $4, last_sha256 = $5 \
                      WHERE SlaveName = $1"
                ),
                &[&config.slave_name, &visible, &xmin, &last, &last_sha.to_string()],
            )?;
            // A whole snapshot supersedes the copies of single tables.
            tx.execute(
                &format!("DELETE FROM {schema}.dbmirror_SlaveTable WHERE SlaveName = $1"),
                &[&config.slave_name],
            )?;
        }
        Some((relids, _, _)) => {
            tx.execute(
                &format!(
                    "UPDATE {schema}.dbmirror_MirrorHost SET copying = false, last_number = $2, last_sha256 = $3 \
                      WHERE SlaveName = $1"
                ),
                &[&config.slave_name, &last, &last_sha.to_string()],
            )?;
            tx.execute(
                &format!(
                    "UPDATE {schema}.dbmirror_SlaveTable SET snapshot = $3::text::pg_snapshot \
                      WHERE SlaveName = $1 AND relid = ANY ($2)"
                ),
                &[&config.slave_name, relids, &visible],
            )?;
        }
    }
    tx.commit()?;
    // The pending transactions the copy holds are sent as far as this slave is concerned:
    // purge those that every other slave has too.
    let purged = master.clean()?;
    log::info(&format!(
        "snapshot for slave \"{}\": files {first}-{last}, {} tables, {rows} rows, {:.1} MB of SQL, {:.1}s; {purged} transactions purged",
        config.slave_name,
        sources.len(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Writes the DDL of the tables `sources` copies into `path`, as `pg_dump --schema-only` gives
/// it, with every trigger that calls `recordchange()` left out: the slave has no capture. The
/// tables' dependencies (types, sequences owned elsewhere, referenced tables) are the
/// operator's to bring along.
fn write_schema(config: &Config, sources: &[Source], path: &std::path::Path) -> Result<(), Error> {
    let mut command = std::process::Command::new("pg_dump");
    command.args(["--schema-only", "--no-owner", "--no-privileges", "--dbname"]).arg(&config.master_conninfo);
    for source in sources {
        command.arg("--table").arg(&source.table.name);
    }
    let output = command.output().map_err(|e| {
        Error::caused_by(Kind::Config, "could not run pg_dump for --schema-file", e).with_hint(
            "Install PostgreSQL's client programs (pg_dump) on the exporter's machine, or leave out --schema-file.",
        )
    })?;
    if !output.status.success() {
        return Err(Error::runtime(format!(
            "pg_dump --schema-only failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // pg_dump writes each trigger on one line, `CREATE TRIGGER name ...`, and its firing mode
    // as `ALTER TABLE table ENABLE ALWAYS TRIGGER name;`: both go.
    let mut out = String::with_capacity(text.len());
    let mut capture: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let leave_out = if line.starts_with("CREATE TRIGGER ") && line.contains("recordchange(") {
            let name = line["CREATE TRIGGER ".len()..].split(' ').next().unwrap_or_default();
            let table = line.split(" ON ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap_or_default();
            capture.push((table.to_string(), name.to_string()));
            true
        } else {
            capture.iter().any(|(table, name)| {
                line.starts_with(&format!("ALTER TABLE {table} ")) && line.ends_with(&format!(" TRIGGER {name};"))
            })
        };
        if leave_out {
            out.push_str("-- left out by dbmirror-export: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    std::fs::write(path, out)
        .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not write \"{}\"", path.display()), e))?;
    log::info(&format!("wrote the DDL of {} tables to \"{}\"", sources.len(), path.display()));
    Ok(())
}

/// The SQL checksum of file `number` of the outbox, among its scanned `entries`.
fn published_sha(directory: &std::path::Path, entries: &[Entry], number: i64) -> Result<Checksum, Error> {
    let found = entries.iter().find_map(|entry| match entry {
        Entry::Transaction { name, path } if name.number as i64 == number => Some((name, path)),
        _ => None,
    });
    let Some((name, path)) = found else {
        return Err(Error::runtime(format!("file {number} is not in the outbox \"{}\"", directory.display())));
    };
    let (sha, _) = dbmirror_spool::sha256_of(dbmirror_spool::open_sql(path, name)?)?;
    Ok(sha)
}

/// The names of the mirrored tables (those of `only`, if given), quoted as files name them.
fn table_names(client: &mut postgres::Client, schema: &str, only: Option<&[u32]>) -> Result<Vec<String>, Error> {
    let all: Vec<u32> = Vec::new();
    let rows = client.query(
        &format!(
            "SELECT n.nspname, c.relname \
               FROM {schema}.dbmirror_mirrored_tables() t \
               JOIN pg_catalog.pg_class c ON c.oid = t AND ($1 OR c.oid = ANY ($2)) \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        ),
        &[&only.is_none(), &only.unwrap_or(&all)],
    )?;
    Ok(rows.iter().map(|r| format!("{}.{}", quote_identifier(r.get(0)), quote_identifier(r.get(1)))).collect())
}

/// The mirrored tables (those of `only`, if given) in name order, with the query that copies
/// each, their relids and the rows the planner expects in all.
fn sources(
    tx: &mut postgres::Transaction<'_>,
    schema: &str,
    only: Option<&[u32]>,
) -> Result<(Vec<Source>, Vec<u32>, u64), Error> {
    let all: Vec<u32> = Vec::new();
    let rows = tx.query(
        &format!(
            "SELECT c.oid, n.nspname, c.relname, greatest(c.reltuples, 0)::bigint, \
                    array_agg(a.attname::text ORDER BY a.attnum) \
               FROM {schema}.dbmirror_mirrored_tables() t \
               JOIN pg_catalog.pg_class c ON c.oid = t AND ($1 OR c.oid = ANY ($2)) \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
                    AND NOT a.attisdropped AND a.attgenerated = '' \
              GROUP BY c.oid, n.nspname, c.relname, c.reltuples \
              ORDER BY n.nspname, c.relname"
        ),
        &[&only.is_none(), &only.unwrap_or(&all)],
    )?;
    let mut sources = Vec::with_capacity(rows.len());
    let mut relids = Vec::with_capacity(rows.len());
    let mut expected = 0u64;
    for row in rows {
        let (relid, nspname, relname, tuples, columns): (u32, String, String, i64, Vec<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let table = Rc::new(Table::new(&nspname, &relname, &columns, &[], &[], &[]));
        let list: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
        // Generated columns are left out (the slave computes them); ONLY, since every table of
        // an inheritance tree is mirrored (and copied) on its own.
        let query = format!("COPY (SELECT {} FROM ONLY {}) TO STDOUT", list.join(", "), table.name);
        relids.push(relid);
        expected += tuples as u64;
        sources.push(Source { table, query });
    }
    Ok((sources, relids, expected))
}

/// How a file of a snapshot opens.
#[derive(Clone, Copy)]
enum Opening {
    /// The first file: of a whole snapshot, which starts the slave's stream; or of a copy of
    /// tables, which follows the file with SQL checksum `previous`.
    First { previous: Option<Checksum>, whole: bool },
    /// A later file, following the one with this SQL checksum.
    Next(Checksum),
}

/// One file of the snapshot being written. Its header must give the number of rows, known only
/// at its end, so the body goes to an unnamed temporary file first and is copied behind the
/// header when the file is complete.
struct Chunk {
    assigned: Assigned,
    header: Header,
    /// Length of the provisional header at the top of the temporary file.
    provisional: usize,
    writer: FileWriter<Counting<BufWriter<std::fs::File>>>,
}

impl Chunk {
    #[allow(clippy::too_many_arguments)]
    fn new(
        directory: &std::path::Path,
        number: i64,
        sources: &[Source],
        identity: &crate::master::Identity,
        config: &Config,
        xid: i64,
        exported_at: DateTime<Utc>,
        opening: Opening,
    ) -> Result<Self, Error> {
        let previous = match opening {
            Opening::First { previous, .. } => previous,
            Opening::Next(previous) => Some(previous),
        };
        let header = Header {
            format: FORMAT_VERSION,
            master: identity.system_identifier,
            database: identity.database.clone(),
            slave: config.slave_name.clone(),
            number: number as u64,
            xid: xid as u64,
            changes: 0,
            exported_at,
            // The data is as of the snapshot: the slave is as current as the master was when
            // the snapshot was taken.
            committed_at: Some(exported_at),
            previous_sha256: previous,
        };
        let temporary = tempfile::tempfile_in(directory).map_err(|e| {
            Error::caused_by(Kind::Runtime, &format!("could not write in \"{}\"", directory.display()), e)
        })?;
        let out = Counting { inner: BufWriter::with_capacity(1 << 20, temporary), bytes: 0 };
        let tables: Vec<Rc<Table>> = sources.iter().map(|s| Rc::clone(&s.table)).collect();
        let writer = match opening {
            Opening::First { whole: true, .. } => FileWriter::begin_snapshot(out, &header, &tables)?,
            Opening::First { whole: false, .. } => {
                let mut writer = FileWriter::begin(out, &header)?;
                writer.snapshot_tables(&tables)?;
                writer
            }
            Opening::Next(_) => FileWriter::begin(out, &header)?,
        };
        let assigned = Assigned {
            xid,
            number,
            assigned_at: exported_at,
            committed_at: exported_at,
            changes: 0,
            sequences: Vec::new(),
        };
        Ok(Self { provisional: header.render().len(), assigned, header, writer })
    }

    fn sql_bytes(&self) -> u64 {
        self.writer.get_ref().bytes
    }

    fn row(&mut self, table: &Rc<Table>, line: &str) -> Result<(), Error> {
        self.writer.change(Change::Insert { table: Rc::clone(table), row: line })?;
        self.header.changes += 1;
        Ok(())
    }

    /// Completes the file: the real header, then the body, through the outbox's writer.
    fn finish(self, files: &mut Files<'_>, sequences: &[SequenceValue]) -> Result<(i64, Checksum), Error> {
        let body = self.writer.finish(sequences)?;
        let mut temporary = body.inner.into_inner().map_err(|e| Error::from(e.into_error()))?;
        temporary.seek(io::SeekFrom::Start(self.provisional as u64))?;
        let mut assigned = self.assigned;
        assigned.changes = self.header.changes as i64;
        let mut out = files.open(&assigned)?;
        out.write_all(self.header.render().as_bytes())?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = temporary.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            out.write_all(&buffer[..n])?;
        }
        let sha = files.close(&assigned, out)?;
        Ok((assigned.number, sha))
    }
}

/// A writer that counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Lines of a COPY TO STDOUT stream in text format, one row each (the format escapes newlines
/// inside values), read into one reused buffer.
struct BufReaderLines<R> {
    reader: io::BufReader<R>,
    line: String,
}

impl<R: Read> BufReaderLines<R> {
    fn new(reader: R) -> Self {
        Self { reader: io::BufReader::with_capacity(1 << 20, reader), line: String::new() }
    }

    fn next_line(&mut self) -> Result<Option<&str>, Error> {
        use io::BufRead;
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .map_err(|e| Error::caused_by(Kind::Runtime, "could not read the copy from the master", e))?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.ends_with('\n') {
            self.line.pop();
        }
        Ok(Some(&self.line))
    }
}
