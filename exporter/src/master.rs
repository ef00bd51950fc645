//! The exporter's session on the master: every query it runs against the pending tables.
//!
//! # Which transactions, in which order
//!
//! The capture extension gives each committed transaction a `commit_seq` taken just before
//! commit, under the transaction's row locks: a transaction that waited for another's locks
//! always has the higher number. Ordering by `commit_seq` therefore applies conflicting
//! transactions in master commit order. Transactions that do not conflict may commit in a
//! different order than their numbers, which is harmless: their changes commute.
//!
//! A transaction is exported only once it is visible (committed). Nothing is skipped because it
//! was still running: the exporter does not keep a high-water mark of numbers, it asks for
//! every committed transaction not yet sent to this slave. To keep that question cheap it
//! keeps, per slave, an xid horizon in the manner of PgQ's snapshot ticks: the `xmin` of the
//! snapshot of an assignment that took everything visible. Every transaction below it had
//! ended by then, and all the committed ones were assigned, so later scans start there.
//!
//! # Crash safety
//!
//! A batch is first *assigned* in one master transaction: numbers, the assignment time and the
//! sequence values are stored in dbmirror_MirroredTransaction. Files are then written from
//! that record alone, so rewriting them after a crash gives the same bytes. Only after the
//! files are durably on disk is the batch marked *written* (with each file's checksum) and
//! purged where every slave has it.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use chrono::{DateTime, Utc};
use dbmirror_cli::conninfo::Connection;
use dbmirror_spool::Checksum;
use dbmirror_sql::CANONICAL_SETTINGS;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel};

use crate::error::{Error, Kind};
use crate::filter::{TableFilter, Visible};
use crate::sql::{Change, SequenceValue, Table, Values};
use dbmirror_sql::{quote_identifier, quote_literal};

/// Who the master is, as written in every file header.
#[derive(Debug, Clone)]
pub struct Identity {
    pub system_identifier: u64,
    pub database: String,
}

/// Something that keeps a mirrored table from being captured completely (see
/// `dbmirror_capture_problems()` on the master).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaptureProblem {
    /// The table, or None for a problem of the whole master (a missing event trigger).
    pub table: Option<String>,
    pub problem: String,
    pub hint: Option<String>,
}

/// The slave's stream, as the master records it.
#[derive(Debug, Clone)]
pub struct SlaveRow {
    /// Highest number assigned.
    pub last_number: i64,
    /// SQL checksum of the last file written.
    pub last_sha256: Option<Checksum>,
    /// Numbers assigned but not yet recorded as written.
    pub unwritten: i64,
    /// A snapshot for the slave was started and not recorded.
    pub seeding: bool,
    /// A copy of some tables for the slave was started and not recorded.
    pub copying: bool,
}

impl SlaveRow {
    /// The number and checksum of the last file written, if any.
    pub fn last_written(&self) -> Option<(i64, Checksum)> {
        self.last_sha256.map(|sha| (self.last_number - self.unwritten, sha))
    }

    /// Fails while a snapshot for the slave is unfinished: nothing may be exported to it then.
    pub fn check_not_seeding(&self, slave: &str) -> Result<(), Error> {
        if self.copying && !self.seeding {
            return Err(Error::new(
                Kind::NotPrepared,
                format!("slave \"{slave}\" awaits a copy of tables: one was started and did not finish"),
            )
            .with_hint("Run the same dbmirror-export snapshot --table for this slave again; it starts over cleanly."));
        }
        if self.seeding {
            return Err(Error::new(
                Kind::NotPrepared,
                format!("slave \"{slave}\" awaits its snapshot: one was started and did not finish"),
            )
            .with_hint("Run the same dbmirror-export snapshot for this slave again; it starts over cleanly."));
        }
        Ok(())
    }
}

/// A transaction with a number for this slave.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub xid: i64,
    pub number: i64,
    pub assigned_at: DateTime<Utc>,
    /// The master's commit time of the transaction, as capture recorded it.
    pub committed_at: DateTime<Utc>,
    pub changes: i64,
    pub sequences: Vec<SequenceValue>,
}

/// What `status` reports about the master side.
#[derive(Debug, serde::Serialize)]
pub struct MasterStatus {
    pub last_number: i64,
    /// A snapshot was started for the slave and is not recorded yet.
    pub seeding: bool,
    /// The snapshot the slave was started from, if it was (`dbmirror-export snapshot`).
    pub snapshot: Option<String>,
    /// Tables whose changes the slave's files leave out until it gets a copy of them
    /// (`dbmirror-export snapshot --table`).
    pub awaiting_copy: Vec<String>,
    pub unwritten: i64,
    pub waiting_transactions: i64,
    pub waiting_changes: i64,
    /// Commit time of the oldest waiting transaction, as capture recorded it (`None` when
    /// nothing is waiting).
    pub oldest_waiting_committed_at: Option<String>,
    /// Seconds since then.
    pub oldest_waiting_age_seconds: Option<f64>,
}

pub struct Master {
    client: Client,
    /// Quoted schema of the extension's objects.
    schema: String,
    slave: String,
    pub identity: Identity,
    tables: HashMap<i64, Rc<Table>>,
    /// Batches still to read sorted after one whose rows lay out of order on disk.
    sorted_batches: u32,
}

impl Master {
    /// Connects, puts the session in canonical settings and checks the extension is there.
    pub fn connect(config: &Connection, slave: &str) -> Result<Self, Error> {
        let mut client = config.connect("the master", "dbmirror-export")?;
        let settings: String =
            CANONICAL_SETTINGS.iter().map(|(name, value)| format!("SET {name} = {};", quote_literal(value))).collect();
        // Every query of the exporter handles one batch: compiling it with JIT (which large
        // cost estimates trigger) costs more than it saves.
        client.batch_execute(&format!("{settings} SET jit = off;"))?;
        let row = client.query_opt(
            "SELECT n.nspname, (SELECT system_identifier FROM pg_catalog.pg_control_system())::text, \
                    pg_catalog.current_database() \
               FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
              WHERE e.extname = 'dbmirror'",
            &[],
        )?;
        let Some(row) = row else {
            return Err(Error::new(
                Kind::NotPrepared,
                "extension \"dbmirror\" is not installed in the master database",
            )
            .with_hint("Run CREATE EXTENSION dbmirror; in the master database."));
        };
        let schema: String = row.get(0);
        let system_identifier: String = row.get(1);
        let identity = Identity {
            system_identifier: system_identifier
                .parse()
                .map_err(|_| Error::runtime(format!("unexpected system identifier \"{system_identifier}\"")))?,
            database: row.get(2),
        };
        Ok(Self {
            client,
            schema: quote_identifier(&schema),
            slave: slave.to_string(),
            identity,
            tables: HashMap::new(),
            sorted_batches: 0,
        })
    }

    /// The session, for queries of other modules (verify).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The quoted schema of the extension's objects.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// Takes the session lock that makes this the only exporter for the slave. An exporter that
    /// was just killed holds it until its server session notices and ends, which takes a moment
    /// on a busy server: the lock is tried for a few seconds before another exporter is blamed.
    pub fn lock(&mut self) -> Result<(), Error> {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
        let started = std::time::Instant::now();
        let locked = loop {
            let locked: bool = self
                .client
                .query_one("SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('dbmirror-export'), pg_catalog.hashtext($1))", &[&self.slave])?
                .get(0);
            if locked || started.elapsed() >= PATIENCE {
                break locked;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        if !locked {
            return Err(Error::new(
                Kind::Busy,
                format!("another dbmirror-export is running for slave \"{}\"", self.slave),
            )
            .with_hint("Only one exporter may run per slave; stop the other one or wait for it."));
        }
        Ok(())
    }

    /// The slave's stream as the master records it; fails if the slave is not registered, or if
    /// the stream belongs to another cluster (the master was restored from a dump into a new
    /// cluster, or upgraded with pg_upgrade).
    pub fn slave_row(&mut self) -> Result<SlaveRow, Error> {
        let query = format!(
            "SELECT h.last_number, h.last_sha256, h.system_identifier, \
                    (SELECT count(*) FROM {} m WHERE m.SlaveName = h.SlaveName AND m.sha256 IS NULL), h.seeding, h.copying \
               FROM {} h WHERE h.SlaveName = $1",
            self.table("dbmirror_MirroredTransaction"),
            self.table("dbmirror_MirrorHost")
        );
        let Some(row) = self.client.query_opt(&query, &[&self.slave])? else {
            return Err(Error::new(
                Kind::NotPrepared,
                format!("slave \"{}\" is not in dbmirror_MirrorHost", self.slave),
            )
            .with_hint(format!(
                "Register it on the master: INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ({});",
                quote_literal(&self.slave)
            )));
        };
        let sha: Option<String> = row.get(1);
        let sha = sha
            .map(|s| Checksum::parse(&s))
            .transpose()
            .map_err(|_| Error::runtime("dbmirror_MirrorHost.last_sha256 is not a sha256"))?;
        let owner: String = row.get(2);
        if owner != self.identity.system_identifier.to_string() {
            return Err(Error::new(
                Kind::Diverged,
                format!(
                    "the stream of slave \"{}\" was made by cluster {owner}, but this master is cluster {}",
                    self.slave, self.identity.system_identifier
                ),
            )
            .with_hint(
                "The master was restored from a dump into a new cluster, or upgraded with pg_upgrade: its slaves follow the old cluster \
                 and cannot continue from here. Seed each slave again from this master with dbmirror-export snapshot (applied with \
                 dbmirror-apply --replace), or start a new stream for every slave at once with SELECT dbmirror_reset(); and seed them \
                 after (docs/exporter.md, \"A restored master\").",
            ));
        }
        let unwritten: i64 = row.get(3);
        Ok(SlaveRow { last_number: row.get(0), last_sha256: sha, unwritten, seeding: row.get(4), copying: row.get(5) })
    }

    /// The slave's tables that come from a copy of their own.
    pub fn table_filter(&mut self) -> Result<TableFilter, Error> {
        table_filter(&mut self.client, &self.schema, &self.slave)
    }

    /// Prepares copies of `tables` for the slave, which is running: mirrors those not mirrored
    /// yet (every other slave then awaits a copy of its own), makes the slave await the copies,
    /// and marks it seeding, so that nothing is exported to it until the copy is recorded.
    /// Returns the tables' relids and the first number the copy may use: after every number
    /// the master assigned the slave and after `seen`, the last one its outbox has seen.
    pub fn begin_table_copy(&mut self, tables: &[String], seen: i64) -> Result<(Vec<u32>, i64), Error> {
        let schema = self.schema.clone();
        let row = self.slave_row()?;
        if row.unwritten > 0 {
            return Err(Error::new(
                Kind::NotPrepared,
                format!("slave \"{}\" has {} transactions assigned and not yet written", self.slave, row.unwritten),
            )
            .with_hint("Run dbmirror-export once first, then the copy."));
        }
        let mut tx = self.client.transaction()?;
        // Against a slave registered meanwhile (begin_seeding): it either is in the list of
        // slaves that await the new tables, or its snapshot sees them mirrored.
        tx.batch_execute(&format!("LOCK TABLE {schema}.dbmirror_MirrorHost IN SHARE ROW EXCLUSIVE MODE"))?;
        let mut relids = Vec::with_capacity(tables.len());
        for table in tables {
            let relid: Option<u32> = tx.query_one("SELECT pg_catalog.to_regclass($1)::oid", &[table])?.get(0);
            let Some(relid) = relid else {
                return Err(Error::config(format!("table \"{table}\" does not exist on the master")));
            };
            let mirrored: bool = tx
                .query_one(
                    &format!("SELECT $1::oid::regclass IN (SELECT * FROM {schema}.dbmirror_mirrored_tables())"),
                    &[&relid],
                )?
                .get(0);
            if !mirrored {
                tx.execute(&format!("SELECT {schema}.dbmirror_mirror_table($1::oid::regclass)"), &[&relid])?;
                // The other slaves do not have the table's rows either: each awaits a copy of
                // its own, and meanwhile its files leave the table out.
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.dbmirror_SlaveTable (SlaveName, relid) \
                         SELECT h.SlaveName, $2 FROM {schema}.dbmirror_MirrorHost h WHERE h.SlaveName <> $1 \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&self.slave, &relid],
                )?;
            }
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.dbmirror_SlaveTable (SlaveName, relid) VALUES ($1, $2) \
                     ON CONFLICT (SlaveName, relid) DO UPDATE SET snapshot = NULL"
                ),
                &[&self.slave, &relid],
            )?;
            relids.push(relid);
        }
        let first = row.last_number.max(seen) + 1;
        tx.execute(
            &format!("UPDATE {schema}.dbmirror_MirrorHost SET copying = true, last_number = $2 WHERE SlaveName = $1"),
            &[&self.slave, &(first - 1)],
        )?;
        tx.commit()?;
        Ok((relids, first))
    }

    /// Registers the slave as awaiting a snapshot (or marks it so, if it is registered), and
    /// returns the first number the snapshot may use: after every number the master assigned
    /// the slave and after `seen`, the last one its outbox has seen. Until the snapshot is
    /// recorded, the slave holds back the purge of every transaction not sent to it, and
    /// nothing is exported to it. Numbers assigned but never recorded as written are dropped:
    /// their transactions are in the snapshot. A stream made by another cluster (the master was
    /// restored from a dump into a new one) is forgotten: the snapshot starts a new one.
    pub fn begin_seeding(&mut self, seen: i64) -> Result<i64, Error> {
        let schema = self.schema.clone();
        let mut tx = self.client.transaction()?;
        tx.batch_execute(&format!("LOCK TABLE {schema}.dbmirror_MirrorHost IN SHARE ROW EXCLUSIVE MODE"))?;
        let row = tx.query_one(
            &format!(
                "INSERT INTO {schema}.dbmirror_MirrorHost AS h (SlaveName, seeding) VALUES ($1, true) \
                 ON CONFLICT (SlaveName) DO UPDATE SET seeding = true, copying = false \
                 RETURNING h.last_number, h.system_identifier"
            ),
            &[&self.slave],
        )?;
        let (last, owner): (i64, String) = (row.get(0), row.get(1));
        if owner != self.identity.system_identifier.to_string() {
            tx.execute(
                &format!("DELETE FROM {schema}.dbmirror_MirroredTransaction WHERE SlaveName = $1"),
                &[&self.slave],
            )?;
            tx.execute(
                &format!(
                    "UPDATE {schema}.dbmirror_MirrorHost \
                        SET system_identifier = {schema}.dbmirror_system_identifier(), last_sha256 = NULL, \
                            xid_horizon = 0, snapshot = NULL \
                      WHERE SlaveName = $1"
                ),
                &[&self.slave],
            )?;
        } else {
            tx.execute(
                &format!("DELETE FROM {schema}.dbmirror_MirroredTransaction WHERE SlaveName = $1 AND sha256 IS NULL"),
                &[&self.slave],
            )?;
        }
        let first = last.max(seen) + 1;
        tx.execute(
            &format!("UPDATE {schema}.dbmirror_MirrorHost SET last_number = $2 WHERE SlaveName = $1"),
            &[&self.slave, &(first - 1)],
        )?;
        tx.commit()?;
        Ok(first)
    }

    /// The first assignment numbered above `after` whose files were not recorded as written: a
    /// crash came between its assignment and the end of its writing (two assignments can be
    /// left so, as batches overlap). They are written first, again, one assignment at a time,
    /// so each batch and its manifest are written again as they were.
    pub fn unwritten(&mut self, after: i64) -> Result<Vec<Assigned>, Error> {
        let query = format!(
            "SELECT m.xid, m.number, m.assigned_at, m.sequences, p.changes, p.committed_at \
               FROM {} m JOIN {} p ON p.xid = m.xid \
              WHERE m.SlaveName = $1 AND m.sha256 IS NULL AND m.number > $2 ORDER BY m.number",
            self.table("dbmirror_MirroredTransaction"),
            self.table("dbmirror_Pending")
        );
        let mut batch: Vec<Assigned> =
            self.client.query(&query, &[&self.slave, &after])?.iter().map(assigned).collect::<Result<_, _>>()?;
        // One assignment at a time: its transactions share the time they were assigned at.
        if let Some(first) = batch.first().map(|a| a.assigned_at) {
            let end = batch.iter().position(|a| a.assigned_at != first).unwrap_or(batch.len());
            batch.truncate(end);
        }
        Ok(batch)
    }

    /// Assigns numbers to up to `limit` committed transactions not yet sent to this slave, in
    /// commit order, and stores the assignment.
    pub fn assign(&mut self, limit: usize) -> Result<Vec<Assigned>, Error> {
        let mut tx = self.client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start()?;
        let host = tx.query_one(
            &format!(
                "SELECT last_number, xid_horizon, pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint, \
                        pg_catalog.clock_timestamp(), snapshot::text FROM {} WHERE SlaveName = $1 FOR UPDATE",
                format_args!("{}.dbmirror_MirrorHost", self.schema)
            ),
            &[&self.slave],
        )?;
        let (last_number, horizon, xmin, now, snapshot): (i64, i64, i64, DateTime<Utc>, Option<String>) =
            (host.get(0), host.get(1), host.get(2), host.get(3), host.get(4));
        let filter = table_filter(&mut tx, &self.schema, &self.slave)?;
        // The transactions this slave was already given are found by the primary key of
        // dbmirror_MirroredTransaction, one probe per pending transaction. Left to its
        // statistics, the planner takes the table for nearly empty (it is, after each purge)
        // and compares every pending transaction with every row held there: a batch still
        // being written, or the rows kept while another slave lags, made that quadratic (1.5 s
        // for 10,000 pending transactions against 1,000 held rows, 60 ms with the probes).
        tx.batch_execute(
            "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_material = off",
        )?;
        // Microseconds are what PostgreSQL stores: keep exactly what will be read back.
        let now = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        let rows = tx.query(
            &format!(
                "SELECT p.xid, p.relids, p.changes, p.committed_at FROM {0}.dbmirror_Pending p \
                  WHERE p.xid >= $2 AND NOT EXISTS (SELECT 1 FROM {0}.dbmirror_MirroredTransaction m \
                                                     WHERE m.SlaveName = $1 AND m.xid = p.xid) \
                    AND NOT coalesce(pg_catalog.pg_visible_in_snapshot(p.xid::text::xid8, $4::text::pg_snapshot), false) \
                  ORDER BY p.commit_seq LIMIT $3",
                self.schema
            ),
            &[&self.slave, &horizon, &(limit as i64), &snapshot],
        )?;
        let relids: Vec<u32> = {
            // A table the slave awaits a copy of is not there yet: its sequences neither.
            let mut all: Vec<u32> =
                rows.iter().flat_map(|r| r.get::<_, Vec<u32>>(1)).filter(|&t| !filter.awaits(t)).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let sequences = sequences_of(&mut tx, &relids)?;
        let mut batch = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let tables: Vec<u32> = row.get(1);
            let mut values: Vec<SequenceValue> =
                tables.iter().flat_map(|t| sequences.get(t).into_iter().flatten().cloned()).collect();
            values.sort_by(|a, b| a.sequence.cmp(&b.sequence));
            values.dedup();
            batch.push(Assigned {
                xid: row.get(0),
                number: last_number + 1 + i as i64,
                assigned_at: now,
                committed_at: row.get(3),
                changes: row.get(2),
                sequences: values,
            });
        }
        if !batch.is_empty() {
            let xids: Vec<i64> = batch.iter().map(|a| a.xid).collect();
            let numbers: Vec<i64> = batch.iter().map(|a| a.number).collect();
            let sequences: Vec<String> = batch
                .iter()
                .map(|a| serde_json::to_string(&a.sequences).expect("sequence values always serialise"))
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO {}.dbmirror_MirroredTransaction (SlaveName, xid, number, assigned_at, sequences) \
                     SELECT $1, u.xid, u.number, $5, u.sequences::jsonb \
                       FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS u(xid, number, sequences)",
                    self.schema
                ),
                &[&self.slave, &xids, &numbers, &sequences, &now],
            )?;
        }
        // Everything visible was assigned only if the batch was not cut short.
        let horizon = if batch.len() < limit { xmin.max(horizon) } else { horizon };
        tx.execute(
            &format!(
                "UPDATE {}.dbmirror_MirrorHost SET last_number = $2, xid_horizon = $3 WHERE SlaveName = $1",
                self.schema
            ),
            &[&self.slave, &(last_number + batch.len() as i64), &horizon],
        )?;
        tx.commit()?;
        Ok(batch)
    }

    /// Streams the changes of a batch of transactions in one query: transaction by transaction
    /// in batch order, and within a transaction in the order the changes happened. `sink` gets
    /// the position of the transaction in `batch` with each change.
    ///
    /// With [`Read::Physical`] the rows come as they lie on disk, unsorted: capture writes each
    /// transaction's rows together and in capture order into partitions that are only ever
    /// emptied whole, so they usually lie in batch and change order already, and the master
    /// sends the first row at once instead of after sorting the batch. Every row is checked
    /// against the order it must have; the first one out of place stops the stream, and the
    /// position of its transaction is returned (`Some(p)`): every transaction before `p` went
    /// to `sink` whole and in order, `p` partly (drop what it got), and the caller reads the
    /// rest again with [`Read::Sorted`], which always returns `None`.
    pub fn stream_batch(
        &mut self,
        batch: &[Assigned],
        read: Read,
        mut sink: impl FnMut(usize, Change<'_>) -> Result<(), Error>,
    ) -> Result<Option<usize>, Error> {
        let (Some(low), Some(high)) = (batch.iter().map(|a| a.xid).min(), batch.iter().map(|a| a.xid).max()) else {
            return Ok(None);
        };
        let xids: Vec<i64> = batch.iter().map(|a| a.xid).collect();
        let schema = self.schema.clone();
        let mut tx = self.client.transaction()?;
        // Every shape the batch can use is in dbmirror_Shape already (it was written with the
        // changes, which committed before they were assigned): load the new ones first, so that
        // the changes can stream without another query on this connection.
        load_shapes(&mut tx, &schema, &mut self.tables)?;
        let tables = &self.tables;
        // The planner takes the batch's xid array for 10 rows and, without this, joins it with
        // a nested loop that compares every xid with every row; a hash join (built on the
        // array, probed in the scan's order) is what a batch needs. More sort memory keeps a
        // sorted batch of small transactions off the disk. A physical read must see the rows in
        // the table's order: no scan started midway by another one, no parallel workers.
        tx.batch_execute(
            "SET LOCAL enable_nestloop = off; SET LOCAL work_mem = '64MB'; \
             SET LOCAL synchronize_seqscans = off; SET LOCAL max_parallel_workers_per_gather = 0",
        )?;
        // Physical: the batch's rows as the scan finds them, with no join (a hash join with the
        // xid array may build its table on either side, and then gives each transaction's rows
        // in whatever order its hash table holds them); `= ANY` with a constant array is a hash
        // lookup per row, so every plan here is custom. The BRIN index finds the pages by the
        // batch's xid range only: given the `= ANY` as an index condition, a bitmap scan would
        // search the whole index once for every xid of the batch (`IS TRUE` keeps the condition
        // a filter). Sorted: sort the raw rows first and render after (the inner query's
        // OFFSET 0 keeps the planner from rendering every value before the sort).
        let rows = match read {
            Read::Physical => {
                "SELECT d.xid, d.op, d.shape, d.key, d.data, d.unchanged, d.old, d.cid, d.seq \
                                 FROM {schema}.dbmirror_PendingData d \
                                WHERE (d.xid = ANY ($1)) IS TRUE AND d.xid BETWEEN $2 AND $3"
            }
            Read::Sorted => {
                "SELECT d.xid, d.op, d.shape, d.key, d.data, d.unchanged, d.old, d.cid, d.seq \
                               FROM unnest($1::bigint[]) WITH ORDINALITY AS b(xid, position) \
                               JOIN {schema}.dbmirror_PendingData d ON d.xid = b.xid \
                              WHERE d.xid BETWEEN $2 AND $3 \
                              ORDER BY b.position, d.cid, d.seq OFFSET 0"
            }
        }
        .replace("{schema}", &schema);
        tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")?;
        let statement = tx.prepare(&format!(
            "SELECT s.xid, s.op, s.shape, {schema}.dbmirror_values(s.shape, s.key, true), \
                    {schema}.dbmirror_values(s.shape, s.data, false), s.unchanged, \
                    {schema}.dbmirror_values(s.shape, s.old, false), s.cid, s.seq \
               FROM ({rows}) s"
        ))?;
        // One streamed result rather than pages of a portal: the server renders the next rows
        // while the exporter writes files, held back only by the socket's buffer, so memory
        // stays bounded and the two work at once.
        let params: [&(dyn postgres::types::ToSql + Sync); 3] = [&xids, &low, &high];
        let mut rows = tx.query_raw(&statement, params)?;
        let positions: HashMap<i64, usize> = xids.iter().enumerate().map(|(position, &xid)| (xid, position)).collect();
        let mut order = ChangeOrder::new(batch);
        while let Some(row) = rows.next()? {
            let xid: i64 = row.get(0);
            let position = *positions.get(&xid).ok_or_else(|| {
                Error::runtime(format!("the master sent a change of transaction {xid}, not of this batch"))
            })?;
            if read == Read::Physical {
                if let Err(broken) = order.next(position, row.get(7), row.get(8)) {
                    // The rest of the result is not needed: ending the transaction discards it.
                    drop(rows);
                    drop(tx);
                    return Ok(Some(broken));
                }
            }
            let op: i8 = row.get(1);
            let shape: i64 = row.get(2);
            if op as u8 == b'x' {
                sink(position, ddl(&row, xid)?)?;
                continue;
            }
            let table = tables.get(&shape).cloned().ok_or_else(|| {
                Error::runtime(format!("shape {shape} of a captured change is missing from dbmirror_Shape"))
            })?;
            let key: Option<&str> = row.get(3);
            let values: Option<&str> = row.get(4);
            let unchanged: Option<&[u8]> = row.get(5);
            let old: Option<&str> = row.get(6);
            let missing = |what: &str| Error::runtime(format!("captured change of transaction {xid} has no {what}"));
            // Rows come in COPY's text format: an insert's goes into the file as it is, the
            // others are taken apart into values.
            let change = match op as u8 {
                b'i' => {
                    let row = values.ok_or_else(|| missing("row"))?;
                    // Counting tabs is enough to check the row: a field holds no raw tab.
                    check_count(row.bytes().filter(|&b| b == b'\t').count() + 1, table.columns.len(), xid, &table)?;
                    Change::Insert { table, row }
                }
                b'u' => Change::Update {
                    old_key: key.map(|k| split(k, table.key.len(), xid, &table)).transpose()?,
                    values: split(values.ok_or_else(|| missing("row"))?, table.columns.len(), xid, &table)?,
                    old: old.map(|o| split(o, table.columns.len(), xid, &table)).transpose()?,
                    table,
                    unchanged,
                },
                b'd' => Change::Delete {
                    key: split(key.ok_or_else(|| missing("key"))?, table.key.len(), xid, &table)?,
                    old: old.map(|o| split(o, table.columns.len(), xid, &table)).transpose()?,
                    table,
                },
                b't' => Change::Truncate { table },
                other => {
                    return Err(Error::runtime(format!(
                        "captured change of transaction {xid} has unknown operation {other}"
                    )))
                }
            };
            sink(position, change)?;
        }
        drop(rows);
        if read == Read::Physical {
            if let Err(broken) = order.end() {
                drop(tx);
                return Ok(Some(broken));
            }
        }
        tx.commit()?;
        Ok(None)
    }

    /// How to read the next batch: physically, unless a recent batch's rows lay out of order
    /// (concurrent writers interleaving their transactions, free space reused), where sorting
    /// at once costs less than reading twice.
    pub fn next_read(&mut self) -> Read {
        if self.sorted_batches == 0 {
            return Read::Physical;
        }
        self.sorted_batches -= 1;
        Read::Sorted
    }

    /// A physical read found rows out of order: read the next batches sorted.
    pub fn out_of_order(&mut self) {
        const SORTED_BATCHES: u32 = 10;
        self.sorted_batches = SORTED_BATCHES;
    }

    /// Records a batch as durably written (with the checksums of the files' SQL), and purges
    /// what every slave now has.
    pub fn mark_written(&mut self, written: &[(i64, Checksum)]) -> Result<i64, Error> {
        let Some((_, last)) = written.last() else {
            return Ok(0);
        };
        let xids: Vec<i64> = written.iter().map(|(x, _)| *x).collect();
        let shas: Vec<String> = written.iter().map(|(_, c)| c.to_string()).collect();
        let schema = self.schema.clone();
        // READ COMMITTED, whatever the database's default: only then does dbmirror_purge empty
        // the partitions of dbmirror_PendingData that hold nothing unsent.
        let mut tx = self.client.build_transaction().isolation_level(IsolationLevel::ReadCommitted).start()?;
        // Lock the transactions first, in a fixed order: two exporters finishing the same
        // transaction for different slaves then purge it once, and never deadlock.
        tx.execute(
            &format!("SELECT 1 FROM {schema}.dbmirror_Pending WHERE xid = ANY ($1) ORDER BY xid FOR UPDATE"),
            &[&xids],
        )?;
        tx.execute(
            &format!(
                "UPDATE {schema}.dbmirror_MirroredTransaction m SET sha256 = u.sha \
                   FROM unnest($2::bigint[], $3::text[]) AS u(xid, sha) \
                  WHERE m.SlaveName = $1 AND m.xid = u.xid"
            ),
            &[&self.slave, &xids, &shas],
        )?;
        tx.execute(
            &format!("UPDATE {schema}.dbmirror_MirrorHost SET last_sha256 = $2 WHERE SlaveName = $1"),
            &[&self.slave, &last.to_string()],
        )?;
        let purged: i64 = tx.query_one(&format!("SELECT {schema}.dbmirror_purge($1)"), &[&xids])?.get(0);
        tx.commit()?;
        Ok(purged)
    }

    /// What keeps the master's capture from being complete, table by table.
    pub fn capture_problems(&mut self) -> Result<Vec<CaptureProblem>, Error> {
        let rows = self.client.query(
            &format!("SELECT tbl::text, problem, hint FROM {}.dbmirror_capture_problems() ORDER BY 1, 2", self.schema),
            &[],
        )?;
        Ok(rows.iter().map(|row| CaptureProblem { table: row.get(0), problem: row.get(1), hint: row.get(2) }).collect())
    }

    /// `clean`: purges everything all current slaves have.
    pub fn clean(&mut self) -> Result<i64, Error> {
        // READ COMMITTED, as in mark_written.
        let mut tx = self.client.build_transaction().isolation_level(IsolationLevel::ReadCommitted).start()?;
        let purged = tx.query_one(&format!("SELECT {}.dbmirror_clean()", self.schema), &[])?.get(0);
        tx.commit()?;
        Ok(purged)
    }

    pub fn status(&mut self) -> Result<MasterStatus, Error> {
        let s = self.schema.clone();
        let host = self.client.query_opt(
            &format!("SELECT last_number, seeding OR copying, snapshot::text FROM {s}.dbmirror_MirrorHost WHERE SlaveName = $1"),
            &[&self.slave],
        )?;
        let Some(host) = host else {
            // Not registered: the same error as every other command gives.
            self.slave_row()?;
            return Err(Error::runtime(format!("slave \"{}\" vanished from dbmirror_MirrorHost", self.slave)));
        };
        let row = self.client.query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {s}.dbmirror_MirroredTransaction WHERE SlaveName = $1 AND sha256 IS NULL), \
                        count(*), coalesce(sum(p.changes), 0)::bigint, \
                        to_char(min(p.committed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                        extract(epoch FROM pg_catalog.now() - min(p.committed_at))::double precision \
                   FROM {s}.dbmirror_Pending p \
                  WHERE NOT EXISTS (SELECT 1 FROM {s}.dbmirror_MirroredTransaction m WHERE m.SlaveName = $1 AND m.xid = p.xid) \
                    AND NOT coalesce(pg_catalog.pg_visible_in_snapshot(p.xid::text::xid8, $2::text::pg_snapshot), false)"
            ),
            &[&self.slave, &host.get::<_, Option<String>>(2)],
        )?;
        let awaiting_copy = self
            .client
            .query(
                &format!(
                    "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM {s}.dbmirror_SlaveTable t \
                       JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                      WHERE t.SlaveName = $1 AND t.snapshot IS NULL ORDER BY 1"
                ),
                &[&self.slave],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(MasterStatus {
            awaiting_copy,
            last_number: host.get(0),
            unwritten: row.get(0),
            waiting_transactions: row.get(1),
            waiting_changes: row.get(2),
            oldest_waiting_committed_at: row.get(3),
            oldest_waiting_age_seconds: row.get(4),
            seeding: host.get(1),
            snapshot: host.get(2),
        })
    }
}

/// The values of a row of COPY text, which must be `expected` (the table's columns, or its key).
/// How [`Master::stream_batch`] reads a batch's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// In the order the rows lie on disk, checked as they come.
    Physical,
    /// Sorted by the master.
    Sorted,
}

/// Checks that rows read in physical order come in the order of the file: transaction by
/// transaction in batch order, each whole (as many rows as dbmirror_Pending counts) and in
/// increasing (cid, seq).
struct ChangeOrder<'a> {
    batch: &'a [Assigned],
    position: usize,
    last: Option<(i64, i64)>,
    rows: i64,
}

impl<'a> ChangeOrder<'a> {
    fn new(batch: &'a [Assigned]) -> Self {
        Self { batch, position: 0, last: None, rows: 0 }
    }

    /// Takes the next row; `Err(p)` if it is out of place, `p` being the first transaction
    /// whose rows are not all in order before it (or, for a row of a transaction already whole,
    /// that transaction: one row too many, which the caller reports).
    fn next(&mut self, position: usize, cid: i64, seq: i64) -> Result<(), usize> {
        if position != self.position {
            // Moving on: the current transaction must be whole, and the next one must follow it.
            if position < self.position || self.rows != self.batch[self.position].changes {
                return Err(position.min(self.position));
            }
            if position != self.position + 1 {
                return Err(self.position + 1);
            }
            self.position = position;
            self.last = None;
            self.rows = 0;
        }
        if self.last.is_some_and(|last| last >= (cid, seq)) {
            return Err(position);
        }
        self.last = Some((cid, seq));
        self.rows += 1;
        Ok(())
    }

    /// The stream ended: the last transaction must be whole, and the batch's last.
    fn end(&self) -> Result<(), usize> {
        let whole = self.rows == self.batch[self.position].changes;
        match (whole, self.position + 1 == self.batch.len()) {
            (true, true) => Ok(()),
            (true, false) => Err(self.position + 1),
            (false, _) => Err(self.position),
        }
    }
}

fn split<'a>(row: &'a str, expected: usize, xid: i64, table: &Table) -> Result<Values<'a>, Error> {
    let values = dbmirror_sql::copy_text::fields(row)
        .map_err(|e| Error::caused_by(Kind::Runtime, &format!("captured change of transaction {xid}"), e))?;
    check_count(values.len(), expected, xid, table)?;
    Ok(values)
}

fn check_count(count: usize, expected: usize, xid: i64, table: &Table) -> Result<(), Error> {
    if count != expected {
        return Err(Error::runtime(format!(
            "captured change of transaction {xid} has {count} values where {} has {expected}",
            table.name
        )));
    }
    Ok(())
}

fn assigned(row: &postgres::Row) -> Result<Assigned, Error> {
    let sequences: serde_json::Value = row.get(3);
    Ok(Assigned {
        xid: row.get(0),
        number: row.get(1),
        assigned_at: row.get(2),
        sequences: serde_json::from_value(sequences)
            .map_err(|e| Error::caused_by(Kind::Runtime, "dbmirror_MirroredTransaction.sequences is malformed", e))?,
        changes: row.get(4),
        committed_at: row.get(5),
    })
}

/// A DDL change of transaction `xid`, from a row of the stream (see trigger/src/ddl.rs for
/// where its parts are kept).
fn ddl(row: &postgres::Row, xid: i64) -> Result<Change<'_>, Error> {
    let missing = |what: &str| Error::runtime(format!("DDL change of transaction {xid} has no {what}"));
    let tables: &str = row.get::<_, Option<&str>>(6).ok_or_else(|| missing("tables"))?;
    let relids: &[u8] = row.get::<_, Option<&[u8]>>(5).ok_or_else(|| missing("table oids"))?;
    Ok(Change::Ddl {
        statement: row.get::<_, Option<&str>>(4).ok_or_else(|| missing("statement"))?,
        search_path: row.get::<_, Option<&str>>(3).ok_or_else(|| missing("search_path"))?,
        tables: tables.lines().collect(),
        relids: relids.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
    })
}

/// Adds to `tables` every shape of dbmirror_Shape it does not hold yet. The table is small: a
/// shape is a table's columns and key as they were when a change was captured, and a new one
/// appears only after DDL on a mirrored table.
fn load_shapes(
    tx: &mut postgres::Transaction<'_>,
    schema: &str,
    tables: &mut HashMap<i64, Rc<Table>>,
) -> Result<(), Error> {
    let known: Vec<i64> = tables.keys().copied().collect();
    let rows = tx.query(
        &format!(
            "SELECT shape, nspname, relname, columns, key, identity_always, relid, definitions FROM {schema}.dbmirror_Shape WHERE shape <> ALL ($1)"
        ),
        &[&known],
    )?;
    for row in rows {
        let columns: Vec<String> = row.get(3);
        let key: Vec<i16> = row.get(4);
        let key: Vec<usize> = key.iter().map(|&k| k as usize).filter(|&k| k < columns.len()).collect();
        let identity: Vec<i16> = row.get(5);
        let identity: Vec<usize> = identity.iter().map(|&k| k as usize).filter(|&k| k < columns.len()).collect();
        // Two backends may record the same shape at once: the rows are equal, keep one.
        tables.entry(row.get(0)).or_insert_with(|| {
            let definitions: Vec<String> = row.get(7);
            let mut table =
                Table::new(row.get::<_, &str>(1), row.get::<_, &str>(2), &columns, &definitions, &key, &identity);
            table.relid = row.get(6);
            Rc::new(table)
        });
    }
    Ok(())
}

/// The slave's tables that come from a copy of their own, read through `client` (a session or
/// a transaction).
fn table_filter(client: &mut impl postgres::GenericClient, schema: &str, slave: &str) -> Result<TableFilter, Error> {
    let rows = client.query(
        &format!("SELECT relid, snapshot::text FROM {schema}.dbmirror_SlaveTable WHERE SlaveName = $1"),
        &[&slave],
    )?;
    let mut tables = HashMap::new();
    for row in rows {
        let snapshot: Option<String> = row.get(1);
        tables.insert(row.get::<_, u32>(0), snapshot.as_deref().map(Visible::parse).transpose()?);
    }
    Ok(TableFilter::new(tables))
}

/// Current positions of the sequences that the tables `relids` own or use in column defaults,
/// by table. Sequences never used (`is_called` false) have nothing to mirror.
pub(crate) fn sequences_of(
    tx: &mut postgres::Transaction<'_>,
    relids: &[u32],
) -> Result<BTreeMap<u32, Vec<SequenceValue>>, Error> {
    let mut map: BTreeMap<u32, Vec<SequenceValue>> = BTreeMap::new();
    if relids.is_empty() {
        return Ok(map);
    }
    let rows = tx.query(
        "WITH used AS ( \
            SELECT d.refobjid AS tbl, d.objid AS seq FROM pg_catalog.pg_depend d \
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND d.deptype IN ('a', 'i') AND d.refobjid = ANY ($1) \
            UNION \
            SELECT ad.adrelid, d.refobjid FROM pg_catalog.pg_attrdef ad \
              JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid \
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
             WHERE ad.adrelid = ANY ($1)) \
         SELECT used.tbl, pg_catalog.format('%I.%I', n.nspname, c.relname), pg_catalog.pg_sequence_last_value(c.oid) \
           FROM used JOIN pg_catalog.pg_class c ON c.oid = used.seq AND c.relkind = 'S' \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
        &[&relids],
    )?;
    for row in rows {
        let value: Option<i64> = row.get(2);
        if let Some(value) = value {
            map.entry(row.get(0)).or_default().push(SequenceValue { sequence: row.get(1), value });
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(changes: &[i64]) -> Vec<Assigned> {
        changes
            .iter()
            .enumerate()
            .map(|(i, &changes)| Assigned {
                xid: 100 + i as i64,
                number: 1 + i as i64,
                assigned_at: DateTime::UNIX_EPOCH,
                committed_at: DateTime::UNIX_EPOCH,
                changes,
                sequences: Vec::new(),
            })
            .collect()
    }

    /// Feeds (position, cid, seq) rows; the first out of place, or what the end says.
    fn check(batch: &[Assigned], rows: &[(usize, i64, i64)]) -> Result<(), usize> {
        let mut order = ChangeOrder::new(batch);
        for &(position, cid, seq) in rows {
            order.next(position, cid, seq)?;
        }
        order.end()
    }

    #[test]
    fn rows_in_batch_and_change_order_pass() {
        let b = batch(&[2, 1, 3]);
        assert_eq!(check(&b, &[(0, 0, 1), (0, 0, 2), (1, 5, 1), (2, 0, 1), (2, 1, 2), (2, 1, 3)]), Ok(()));
        // Command ids order before capture order.
        assert_eq!(check(&batch(&[2]), &[(0, 0, 2), (0, 1, 1)]), Ok(()));
    }

    #[test]
    fn the_first_transaction_out_of_place_is_named() {
        let b = batch(&[2, 2, 1]);
        // Within a transaction, a change captured earlier comes later.
        assert_eq!(check(&b, &[(0, 0, 1), (0, 0, 2), (1, 0, 2), (1, 0, 1)]), Err(1));
        // A later command id before an earlier one.
        assert_eq!(check(&b, &[(0, 1, 1), (0, 0, 2)]), Err(0));
        // Transactions interleaved: the first left unfinished is named.
        assert_eq!(check(&b, &[(0, 0, 1), (1, 0, 1), (0, 0, 2)]), Err(0));
        // A transaction skipped, its rows perhaps further on.
        assert_eq!(check(&b, &[(0, 0, 1), (0, 0, 2), (2, 0, 1)]), Err(1));
        // The stream ends early, inside a transaction or before the last one.
        assert_eq!(check(&b, &[(0, 0, 1), (0, 0, 2), (1, 0, 1)]), Err(1));
        assert_eq!(check(&b, &[(0, 0, 1), (0, 0, 2), (1, 0, 1), (1, 0, 2)]), Err(2));
        assert_eq!(check(&b, &[]), Err(0));
        // A row of a transaction already whole: one too many, named for the caller to report.
        assert_eq!(check(&b, &[(0, 0, 1), (0, 0, 2), (1, 0, 1), (1, 0, 2), (0, 0, 3)]), Err(0));
    }
}
