-- dbmirror master setup: the tables of the seed's MirrorSetup.sql and the SQL-level API.
--
-- This file is part of the `dbmirror` extension script (CREATE EXTENSION dbmirror runs it);
-- it is not meant to be run by hand. Objects are created in the extension's schema, which
-- should be on the search_path of whoever uses them (by default `public`), so that the seed's
-- own instructions keep working verbatim:
--
--     INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('backup_system');
--     CREATE TRIGGER "T_Trig" AFTER INSERT OR DELETE OR UPDATE ON "T"
--         FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();
--
-- The capture trigger writes dbmirror_Pending and dbmirror_PendingData directly through the
-- storage layer, not through SQL, so users who change mirrored tables need no privilege on
-- these tables and cannot forge captured rows. Only the owner (and the exporter's role, once
-- granted) can read or change them.

-- The system identifier of this cluster, as transaction files name their master.
CREATE FUNCTION dbmirror_system_identifier() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT system_identifier::text FROM pg_catalog.pg_control_system()
$fn$;

-- Slaves. SlaveName is the name each slave's configuration uses.
CREATE TABLE dbmirror_MirrorHost (
    SlaveName       text PRIMARY KEY CHECK (SlaveName <> ''),
    -- The cluster whose stream the columns below describe. Capture state belongs to one
    -- cluster: a master restored from a dump into another cluster (or upgraded with
    -- pg_upgrade, which makes a new one) has a different system identifier, and the exporter
    -- refuses to continue the old stream there (see dbmirror_reset()).
    system_identifier text NOT NULL DEFAULT @extschema@.dbmirror_system_identifier(),
    -- Highest file number assigned to this slave. Numbers are gapless per slave.
    last_number     bigint NOT NULL DEFAULT 0 CHECK (last_number >= 0),
    -- sha256 of the SQL text of the last file written for this slave (the hash chain).
    last_sha256     text,
    -- Every committed transaction whose xid is below this horizon has been assigned a number
    -- for this slave; the exporter scans only xid >= horizon (see docs/format.md).
    xid_horizon     bigint NOT NULL DEFAULT 0,
    -- The snapshot of the slave's initial copy (`dbmirror-export snapshot`): a transaction
    -- visible in it is in the copy, so it is never exported to this slave, and counts as sent
    -- when pending changes are purged. NULL for a slave that takes every change from its
    -- registration on (the seed's way: the slave was copied before the triggers were added).
    snapshot        pg_snapshot,
    -- A snapshot for this slave was started and has not been recorded yet: nothing is
    -- exported to it until `dbmirror-export snapshot` finishes.
    seeding         boolean NOT NULL DEFAULT false,
    -- The same for a copy of some tables (`dbmirror-export snapshot --table`).
    copying         boolean NOT NULL DEFAULT false
);

-- One row per master transaction that captured changes, written by the capture extension
-- just before the transaction commits.
CREATE TABLE dbmirror_Pending (
    -- 64-bit top-level transaction id of the master transaction.
    xid             bigint PRIMARY KEY,
    -- Taken just before commit, while the transaction still holds its row locks: a transaction
    -- that waited for another's locks always gets a higher number, so ordering by commit_seq
    -- applies conflicting transactions in master commit order.
    commit_seq      bigint NOT NULL,
    -- Number of captured changes (rows of dbmirror_PendingData) of the transaction.
    changes         bigint NOT NULL CHECK (changes > 0),
    -- Mirrored tables the transaction changed (for the sequences the exporter mirrors).
    relids          oid[] NOT NULL,
    -- The master's clock just before the transaction commits (GetCurrentTimestamp() at
    -- pre-commit): its commit time for monitoring, carried to the slave in each file.
    committed_at    timestamptz NOT NULL
);

CREATE SEQUENCE dbmirror_commit_seq AS bigint;

-- One row per captured change, in one of two partitions chosen by the transaction's xid:
-- transactions alternate between them every 16,384 xids. Capture writes each transaction's
-- rows straight into its partition; sent rows are never deleted one by one: once nothing in a
-- partition is waiting for any slave, dbmirror_purge empties it with TRUNCATE. While one
-- partition fills, the other drains (see docs/capture.md). The partition expression is repeated
-- in the capture library (trigger/src/pending.rs) and in dbmirror_purge.
CREATE TABLE dbmirror_PendingData (
    xid             bigint NOT NULL,
    -- Command id of the change: changes made by cascading triggers run in later commands, so
    -- (cid, seq) is the order in which the changes happened, not the order triggers fired.
    cid             bigint NOT NULL,
    -- Capture order within the transaction.
    seq             bigint NOT NULL,
    -- The table's shape (names, types and key) when the change was captured; 0 for DDL.
    shape           bigint NOT NULL,
    -- 'i' insert, 'u' update, 'd' delete, 't' truncate, 'x' DDL (dbmirror_ddl() or
    -- dbmirror.capture_ddl). A DDL change keeps its statement in data, the session's
    -- search_path in key, the quoted names of the tables it changes in old (one per line) and
    -- their OIDs in unchanged (4 bytes each, little-endian).
    op              "char" NOT NULL CHECK (op IN ('i', 'u', 'd', 't', 'x')),
    -- Binary image of the old primary key: deletes, and updates that change the key.
    key             bytea,
    -- Binary image of the new row: inserts and updates.
    data            bytea,
    -- Updates only: bitmap of the columns the update left unchanged (bit i of byte i/8, least
    -- significant first); those columns are NULL in data unless they belong to the key.
    unchanged       bytea,
    -- Tables mirrored with check_conflicts: image of the old values the slave checks before it
    -- applies the change (the changed columns of an update, the whole row of a delete).
    old             bytea
) PARTITION BY LIST (((xid >> 14) & 1));
CREATE TABLE dbmirror_PendingData_0 PARTITION OF dbmirror_PendingData FOR VALUES IN (0);
CREATE TABLE dbmirror_PendingData_1 PARTITION OF dbmirror_PendingData FOR VALUES IN (1);
-- Rows are written in batches at about the time their transaction commits, so xids are
-- clustered on disk and a BRIN index finds a batch's rows for almost nothing at capture time;
-- the exporter sorts each batch by (cid, seq). A b-tree here cost a quarter of capture.
CREATE INDEX dbmirror_pendingdata_0_xid ON dbmirror_PendingData_0 USING brin (xid) WITH (pages_per_range = 16);
CREATE INDEX dbmirror_pendingdata_1_xid ON dbmirror_PendingData_1 USING brin (xid) WITH (pages_per_range = 16);

-- The shape of a mirrored table, content-addressed: shape is a hash of everything below, so a
-- change of name, column, type or key makes a new shape and old changes keep theirs.
-- Deliberately without a unique constraint: a backend inserts a shape it cannot see yet in the
-- capturing transaction itself, and a unique index would make every other writer of the same
-- table wait for that transaction to end. Two backends may thus store the same shape twice;
-- the rows are identical, and readers take any one.
CREATE TABLE dbmirror_Shape (
    shape           bigint NOT NULL,
    relid           oid NOT NULL,
    nspname         text NOT NULL,
    relname         text NOT NULL,
    columns         text[] NOT NULL,
    types           oid[] NOT NULL,
    typmods         integer[] NOT NULL,
    -- Primary key columns, as 0-based positions in columns.
    key             smallint[] NOT NULL,
    -- Identity columns GENERATED ALWAYS, as 0-based positions in columns.
    identity_always smallint[] NOT NULL DEFAULT '{}',
    -- Each column as '"name" type', its type as format_type() shows it with only pg_catalog on
    -- the search_path: the fingerprint that files ask the slave to check (dbmirror.check_table).
    definitions     text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX dbmirror_shape_shape ON dbmirror_Shape (shape);

-- What each slave has been sent: the number assigned to a transaction, and once the file is
-- durably written, the sha256 of its SQL text.
CREATE TABLE dbmirror_MirroredTransaction (
    SlaveName       text NOT NULL REFERENCES dbmirror_MirrorHost ON UPDATE CASCADE ON DELETE CASCADE,
    xid             bigint NOT NULL,
    number          bigint NOT NULL,
    -- Fixed when the number is assigned, so a file rewritten after a crash is byte-identical.
    assigned_at     timestamptz NOT NULL,
    -- Sequence values to mirror with this transaction, read when the number was assigned.
    sequences       jsonb NOT NULL DEFAULT '[]',
    sha256          text,
    PRIMARY KEY (SlaveName, xid),
    UNIQUE (SlaveName, number)
);

-- Tables that a slave takes from a copy of their own (`dbmirror-export snapshot --table`), added
-- after the slave started. While snapshot is NULL the slave awaits the copy, and changes of the
-- table are left out of its files; once the copy is taken, changes of transactions visible in
-- its snapshot are left out (the copy has them). A table without a row here streams as usual.
CREATE TABLE dbmirror_SlaveTable (
    SlaveName       text NOT NULL REFERENCES dbmirror_MirrorHost ON UPDATE CASCADE ON DELETE CASCADE,
    relid           oid NOT NULL,
    snapshot        pg_snapshot,
    PRIMARY KEY (SlaveName, relid)
);

REVOKE ALL ON dbmirror_SlaveTable FROM PUBLIC;
REVOKE ALL ON dbmirror_MirrorHost, dbmirror_Pending, dbmirror_PendingData, dbmirror_PendingData_0,
    dbmirror_PendingData_1, dbmirror_Shape, dbmirror_MirroredTransaction, dbmirror_commit_seq FROM PUBLIC;

-- Monitoring, for dashboards that read SQL: one row per slave with what `dbmirror-export status
-- --json` reports of it. Waiting transactions were captured and not yet assigned a number for
-- the slave (those its snapshot holds do not count); the oldest one's commit time is the
-- committed_at capture recorded with it (NULL when nothing is waiting). Readers other than the
-- owner need GRANT SELECT ON dbmirror_status.
CREATE VIEW dbmirror_status AS
SELECT h.SlaveName AS slave_name,
       h.last_number,
       w.waiting_transactions,
       w.oldest_waiting_committed_at,
       extract(epoch FROM pg_catalog.now() - w.oldest_waiting_committed_at)::double precision
           AS oldest_waiting_age_seconds
  FROM @extschema@.dbmirror_MirrorHost h
 CROSS JOIN LATERAL (
       SELECT count(*) AS waiting_transactions,
              min(p.committed_at) AS oldest_waiting_committed_at
         FROM @extschema@.dbmirror_Pending p
        WHERE NOT EXISTS (SELECT 1 FROM @extschema@.dbmirror_MirroredTransaction m
                           WHERE m.SlaveName = h.SlaveName AND m.xid = p.xid)
          AND NOT coalesce(pg_catalog.pg_visible_in_snapshot(p.xid::text::xid8, h.snapshot), false)) w;

-- pg_dump keeps the list of slaves with the database, and nothing of the capture state: the
-- captured changes and their transaction ids belong to this cluster (a restored copy in another
-- cluster would reuse those ids), and a restored master starts a new stream (see
-- dbmirror_reset()).
SELECT pg_catalog.pg_extension_config_dump('dbmirror_MirrorHost', '');

-- Starts mirroring a table: checks that its changes can be captured completely (an ordinary,
-- logged table with an immediate primary key of ordinary columns), creates the capture trigger
-- dbmirror_capture (AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, calling recordchange()),
-- and completes dbmirror's own internal triggers (ordering, TRUNCATE), all ENABLE ALWAYS. On a
-- table already mirrored (in the seed's form too), it completes and repairs what is missing.
-- check_conflicts: the slave checks, before each UPDATE and DELETE, that the row holds the
-- values the master had before the change (see docs/format.md).
CREATE FUNCTION dbmirror_mirror_table(tbl regclass, check_conflicts boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    fn  oid := '@extschema@.recordchange()'::pg_catalog.regprocedure;
    trg record;
    existed boolean := false;
    changed boolean := false;
BEGIN
    -- Refuses what cannot be mirrored before any trigger exists.
    PERFORM @extschema@.dbmirror_check_table(tbl, 'mirror');
    FOR trg IN
        SELECT t.tgname, t.tgnargs > 0 AS checks FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = tbl AND t.tgfoid = fn AND NOT t.tgisinternal
    LOOP
        existed := true;
        IF trg.checks IS DISTINCT FROM check_conflicts THEN
            -- Replaced in the same transaction, under the same lock: no change goes uncaptured.
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trg.tgname, tbl);
            changed := true;
        END IF;
    END LOOP;
    IF NOT existed OR changed THEN
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER dbmirror_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION %s(%s)', tbl, fn::pg_catalog.regproc,
            CASE WHEN check_conflicts THEN pg_catalog.quote_literal('check_conflicts') ELSE '' END);
    END IF;
    IF @extschema@.dbmirror_check_table(tbl, 'mirror') THEN
        changed := true;
    END IF;
    IF existed AND NOT changed THEN
        RAISE NOTICE 'table % is already mirrored', tbl;
    END IF;
END
$fn$;

-- Stops mirroring a table: drops every trigger on it that calls recordchange(), whatever its
-- name (the seed's AddTrigger.sql names them freely), and dbmirror's own triggers on it.
CREATE FUNCTION dbmirror_unmirror_table(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    trg record;
    found boolean := false;
BEGIN
    FOR trg IN
        SELECT t.tgname FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = tbl AND t.tgfoid = '@extschema@.recordchange()'::pg_catalog.regprocedure
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trg.tgname, tbl);
        found := true;
    END LOOP;
    -- The event trigger drops these once no capture trigger is left; without it, they go here.
    FOR trg IN
        SELECT t.tgname FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = tbl AND t.tgfoid = '@extschema@.dbmirror_before()'::pg_catalog.regprocedure
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS %I ON %s', trg.tgname, tbl);
    END LOOP;
    DELETE FROM @extschema@.dbmirror_SlaveTable s WHERE s.relid = tbl;
    IF NOT found THEN
        RAISE NOTICE 'table % is not mirrored', tbl;
    END IF;
END
$fn$;

-- The mirrored tables: every table with a trigger that calls recordchange().
CREATE FUNCTION dbmirror_mirrored_tables() RETURNS SETOF regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT DISTINCT t.tgrelid::pg_catalog.regclass
      FROM pg_catalog.pg_trigger t
     WHERE t.tgfoid = '@extschema@.recordchange()'::pg_catalog.regprocedure
     ORDER BY 1
$fn$;

-- Starts a new stream on this master for every slave: forgets what was sent (numbers, the
-- checksum chain, the xid horizon) and records this cluster as the stream's owner. For a
-- master restored from a dump or upgraded with pg_upgrade (the exporter refuses to continue
-- the old stream there) or restored from an older copy: every slave must then be seeded again
-- from this master, because it holds rows the new stream does not carry. Changes captured and
-- not yet exported stay, and are the first files of the new stream.
CREATE FUNCTION dbmirror_reset() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    DELETE FROM @extschema@.dbmirror_MirroredTransaction;
    DELETE FROM @extschema@.dbmirror_SlaveTable;
    UPDATE @extschema@.dbmirror_MirrorHost
       SET system_identifier = @extschema@.dbmirror_system_identifier(),
           last_sha256 = NULL, xid_horizon = 0, snapshot = NULL, seeding = false, copying = false;
END
$fn$;

-- Purges the captured transactions among xids that every slave in dbmirror_MirrorHost has been
-- sent (its file durably written): their dbmirror_Pending rows and sent-records. Then empties
-- each partition of dbmirror_PendingData that no transaction still pending has changes in.
-- Returns how many transactions were purged.
CREATE FUNCTION dbmirror_purge(xids bigint[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $fn$
DECLARE
    purged bigint;
    part int;
    partitions regclass[] := ARRAY['@extschema@.dbmirror_PendingData_0', '@extschema@.dbmirror_PendingData_1'];
BEGIN
    WITH done AS (
        SELECT p.xid FROM @extschema@.dbmirror_Pending p
         WHERE p.xid = ANY (xids)
           -- With no slave registered nothing has been sent anywhere: keep everything.
           AND EXISTS (SELECT 1 FROM @extschema@.dbmirror_MirrorHost)
           AND NOT EXISTS (
               SELECT 1 FROM @extschema@.dbmirror_MirrorHost h
                WHERE NOT EXISTS (
                    SELECT 1 FROM @extschema@.dbmirror_MirroredTransaction m
                     WHERE m.SlaveName = h.SlaveName AND m.xid = p.xid AND m.sha256 IS NOT NULL)
                  -- A slave whose initial copy holds the transaction has it too.
                  AND NOT (h.snapshot IS NOT NULL AND NOT h.seeding
                           AND pg_catalog.pg_visible_in_snapshot(p.xid::text::xid8, h.snapshot)))
    ), sent AS (
        DELETE FROM @extschema@.dbmirror_MirroredTransaction m USING done WHERE m.xid = done.xid
    ), gone AS (
        DELETE FROM @extschema@.dbmirror_Pending p USING done WHERE p.xid = done.xid RETURNING 1
    )
    SELECT count(*) INTO purged FROM gone;
    -- A partition may be emptied when no pending transaction has changes in it and no
    -- transaction is writing into it. The lock tells the second: capture holds a lock on the
    -- partition from its first write until its transaction ends, so once this lock is granted
    -- every transaction that wrote there has ended, and one that writes next does so into the
    -- emptied partition. NOWAIT: never queue in front of capture. The check after the lock
    -- needs a snapshot taken after it, which only READ COMMITTED gives; under another
    -- isolation level nothing is emptied (and nothing lost: the rows wait for a later purge).
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN purged;
    END IF;
    FOR part IN 0..1 LOOP
        CONTINUE WHEN pg_catalog.pg_relation_size(partitions[part + 1]) = 0
            OR EXISTS (SELECT 1 FROM @extschema@.dbmirror_Pending p WHERE ((p.xid >> 14) & 1) = part);
        BEGIN
            EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', partitions[part + 1]);
        EXCEPTION WHEN lock_not_available THEN
            CONTINUE;
        END;
        IF NOT EXISTS (SELECT 1 FROM @extschema@.dbmirror_Pending p WHERE ((p.xid >> 14) & 1) = part) THEN
            EXECUTE pg_catalog.format('TRUNCATE %s', partitions[part + 1]);
        END IF;
    END LOOP;
    RETURN purged;
END
$fn$;

-- The seed's clean_pending.pl: purges every captured transaction that all current slaves have
-- been sent, including those a removed slave held back. Returns how many were purged.
CREATE FUNCTION dbmirror_clean() RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT @extschema@.dbmirror_purge(ARRAY(SELECT xid FROM @extschema@.dbmirror_Pending))
$fn$;

-- Retires a slave: removes it from dbmirror_MirrorHost (with its records of what it was sent)
-- and purges every captured change that it alone still held. Returns how many transactions
-- were purged. Its outbox and the slave database are left as they are.
CREATE FUNCTION dbmirror_retire_slave(slave text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    DELETE FROM @extschema@.dbmirror_MirrorHost h WHERE h.SlaveName = dbmirror_retire_slave.slave;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'slave "%" is not in dbmirror_MirrorHost', slave
            USING HINT = 'SELECT SlaveName FROM dbmirror_MirrorHost; lists the slaves.';
    END IF;
    RETURN @extschema@.dbmirror_clean();
END
$fn$;
