-- dbmirror slave setup: what transaction files need on a slave.
--
--     psql -v ON_ERROR_STOP=1 -d SLAVEDB -f sql/slave_setup.sql
--
-- `dbmirror-apply init` runs the same SQL. Running it again is harmless: it only creates what
-- is missing and replaces the functions with the current version, and it upgrades a slave
-- prepared by an earlier version in place, keeping what that slave has applied.
--
-- Every transaction file runs, in its own transaction, first
--     SELECT dbmirror.guard(slave, master, number, xid, previous_sha256, exported_at);
-- which aborts the file unless it is the next one for that slave and records it, so a file
-- is applied exactly once and in order, by the applier or by hand with psql. (Files written
-- before the guard took `exported_at` call it with the first five arguments only.)

CREATE SCHEMA IF NOT EXISTS dbmirror;

-- One row per slave name (several masters can feed one database under different names).
CREATE TABLE IF NOT EXISTS dbmirror.slave_state (
    slave_name      text PRIMARY KEY,
    -- System identifier of the master cluster the files come from.
    master          text NOT NULL,
    -- Number, master xid and time of the last applied file.
    last_number     bigint NOT NULL CHECK (last_number > 0),
    last_xid        bigint NOT NULL,
    applied_at      timestamptz NOT NULL,
    -- sha256 of the SQL text of the last applied file when the applier applied it (it checks
    -- the next file's previous-sha256 against it); NULL after a file applied by hand.
    last_sha256     text
);

-- One row per applied file: which master transaction each number carried, and when the master
-- assigned it. A file that comes again under an applied number is a true re-send only if it
-- carries the same; otherwise the master's history diverged (it was restored from an older
-- copy, say) and the slave must not take the new history for the one it applied. Rows may be
-- deleted to save space; a number without a row can no longer be checked this way.
CREATE TABLE IF NOT EXISTS dbmirror.applied_file (
    slave_name      text NOT NULL,
    number          bigint NOT NULL,
    -- The master transaction the file carried.
    xid             bigint NOT NULL,
    -- When the master assigned the number (the header's exported-at); NULL for files written
    -- before the guard took it.
    exported_at     timestamptz,
    -- sha256 of the file's SQL text when the applier applied it; NULL after psql -f.
    sha256          text,
    applied_at      timestamptz NOT NULL,
    CONSTRAINT applied_file_pkey PRIMARY KEY (slave_name, number)
);

-- A slave prepared by an earlier version knows only its last applied file: that one starts the
-- history. Harmless when the row is there already.
INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, sha256, applied_at)
SELECT s.slave_name, s.last_number, s.last_xid, NULL, s.last_sha256, s.applied_at
  FROM dbmirror.slave_state s
ON CONFLICT (slave_name, number) DO NOTHING;

-- Aborts the current transaction unless file `number` from master `master` is the next one for
-- `slave`; otherwise records it as applied. Errors carry their own SQLSTATE so the applier can
-- tell them apart:
--   DM001  already applied       DM002  out of order (an earlier file is missing)
--   DM003  another master        DM004  does not follow the file applied before it
--   DM006  a file with this number was applied, but it carried another master transaction or
--          export time: the master's history diverged
CREATE OR REPLACE FUNCTION dbmirror.guard(slave text, master text, number bigint, xid bigint, previous_sha256 text,
                                          exported_at timestamptz)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    state dbmirror.slave_state%ROWTYPE;
    applied dbmirror.applied_file%ROWTYPE;
BEGIN
    SELECT * INTO state FROM dbmirror.slave_state s WHERE s.slave_name = guard.slave FOR UPDATE;
    IF NOT FOUND THEN
        IF guard.number <> 1 THEN
            RAISE EXCEPTION 'file % for slave "%" is out of order: no file has been applied yet, the next is 1', guard.number, guard.slave
                USING ERRCODE = 'DM002',
                      HINT = 'Apply the files in order, starting with file 1.';
        END IF;
        INSERT INTO dbmirror.slave_state (slave_name, master, last_number, last_xid, applied_at, last_sha256)
        VALUES (guard.slave, guard.master, guard.number, guard.xid, pg_catalog.clock_timestamp(), NULL);
        INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, sha256, applied_at)
        VALUES (guard.slave, guard.number, guard.xid, guard.exported_at, NULL, pg_catalog.clock_timestamp())
        ON CONFLICT ON CONSTRAINT applied_file_pkey DO UPDATE
           SET xid = excluded.xid, exported_at = excluded.exported_at, sha256 = NULL, applied_at = excluded.applied_at;
        RETURN;
    END IF;
    IF state.master <> guard.master THEN
        RAISE EXCEPTION 'file % for slave "%" comes from master %, but this slave follows master %', guard.number, guard.slave, guard.master, state.master
            USING ERRCODE = 'DM003',
                  HINT = 'The file belongs to another master''s spool; check where it was copied from.';
    END IF;
    IF guard.number <= state.last_number THEN
        SELECT * INTO applied FROM dbmirror.applied_file a WHERE a.slave_name = guard.slave AND a.number = guard.number;
        -- The export time tells two exports of one number apart even when a restored master
        -- handed out the same xid again; files without it are compared by xid alone.
        IF FOUND AND (applied.xid <> guard.xid
                      OR applied.exported_at <> guard.exported_at) THEN
            RAISE EXCEPTION 'file % for slave "%" is not the file % that was applied: the master''s history diverged', guard.number, guard.slave, guard.number
                USING ERRCODE = 'DM006',
                      DETAIL = pg_catalog.format('File %s was applied as master transaction %s exported at %s; this one is master transaction %s exported at %s.',
                                                 guard.number, applied.xid, coalesce(applied.exported_at::text, 'an unrecorded time'),
                                                 guard.xid, coalesce(guard.exported_at::text, 'an unrecorded time')),
                      HINT = 'Was the master restored from an older copy? The slave has applied changes that the master''s history no longer has: make the slave a copy of the master again before applying its files.';
        END IF;
        RAISE EXCEPTION 'file % for slave "%" was already applied (last applied: %)', guard.number, guard.slave, state.last_number
            USING ERRCODE = 'DM001';
    END IF;
    IF guard.number > state.last_number + 1 THEN
        RAISE EXCEPTION 'file % for slave "%" is out of order: the next file is %', guard.number, guard.slave, state.last_number + 1
            USING ERRCODE = 'DM002',
                  HINT = 'Apply the missing files first.';
    END IF;
    IF state.last_sha256 IS NOT NULL AND guard.previous_sha256 IS DISTINCT FROM state.last_sha256 THEN
        RAISE EXCEPTION 'file % for slave "%" does not follow the file applied as %', guard.number, guard.slave, state.last_number
            USING ERRCODE = 'DM004',
                  DETAIL = pg_catalog.format('The file names previous sha256 %s, the applied file had %s.', guard.previous_sha256, state.last_sha256),
                  HINT = 'A file was replaced or the spool was mixed up; compare both files with their manifests.';
    END IF;
    UPDATE dbmirror.slave_state s
       SET last_number = guard.number, last_xid = guard.xid, applied_at = pg_catalog.clock_timestamp(), last_sha256 = NULL
     WHERE s.slave_name = guard.slave;
    -- A row left from before the slave's state was reset describes a file of another life.
    INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, sha256, applied_at)
    VALUES (guard.slave, guard.number, guard.xid, guard.exported_at, NULL, pg_catalog.clock_timestamp())
    ON CONFLICT ON CONSTRAINT applied_file_pkey DO UPDATE
       SET xid = excluded.xid, exported_at = excluded.exported_at, sha256 = NULL, applied_at = excluded.applied_at;
END
$fn$;

-- The guard as files written before it took the export time call it: the same checks, with
-- the xid alone telling two exports of one number apart.
CREATE OR REPLACE FUNCTION dbmirror.guard(slave text, master text, number bigint, xid bigint, previous_sha256 text)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT dbmirror.guard(slave, master, number, xid, previous_sha256, NULL::timestamptz);
$fn$;

-- Prepares the tables a snapshot fills: they must be empty, unless the session sets
-- dbmirror.replace to on (dbmirror-apply --replace, or PGOPTIONS='-c dbmirror.replace=on'
-- psql -f FILE): then they are emptied first. The first file of a snapshot calls it, through
-- start_stream for a whole snapshot, or after the guard for tables added to a running slave.
CREATE OR REPLACE FUNCTION dbmirror.snapshot_tables(tables text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    tbl text;
    has_rows boolean;
    filled text[] := '{}';
BEGIN
    IF pg_catalog.current_setting('dbmirror.replace', true) = 'on' THEN
        -- Each table with its own ONLY: the snapshot copies every table of an inheritance tree.
        EXECUTE 'TRUNCATE ' || (SELECT pg_catalog.string_agg('ONLY ' || t::regclass::text, ', ') FROM pg_catalog.unnest(tables) t);
    ELSE
        FOREACH tbl IN ARRAY tables LOOP
            EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', tbl::regclass) INTO STRICT has_rows;
            IF has_rows THEN
                filled := filled || tbl;
            END IF;
        END LOOP;
        IF filled <> '{}' THEN
            RAISE EXCEPTION 'a snapshot goes into empty tables, but % % not empty',
                            pg_catalog.array_to_string(filled, ', '), CASE WHEN pg_catalog.cardinality(filled) = 1 THEN 'is' ELSE 'are' END
                USING ERRCODE = 'DM007',
                      HINT = 'Empty them, or let the snapshot replace their rows: dbmirror-apply --replace, or PGOPTIONS=''-c dbmirror.replace=on'' psql -f FILE.';
        END IF;
    END IF;
END
$fn$;

-- Starts a stream with the first file of a snapshot (`dbmirror-export snapshot`), in place of
-- the guard: the slave follows `master` from file `number` on, whatever it followed before (a
-- snapshot seeds a new slave, or seeds a lost one again; files of the stream it replaces are
-- then "already applied" and never run). The snapshot's `tables` are prepared by
-- snapshot_tables(). A start file that comes again is told apart by the guard's own checks
-- (DM001, DM006).
CREATE OR REPLACE FUNCTION dbmirror.start_stream(slave text, master text, number bigint, xid bigint,
                                                 exported_at timestamptz, tables text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    state dbmirror.slave_state%ROWTYPE;
BEGIN
    SELECT * INTO state FROM dbmirror.slave_state s WHERE s.slave_name = start_stream.slave FOR UPDATE;
    IF FOUND AND state.master = start_stream.master AND start_stream.number <= state.last_number THEN
        PERFORM dbmirror.guard(slave, master, number, xid, NULL, exported_at);
    END IF;
    PERFORM dbmirror.snapshot_tables(tables);
    INSERT INTO dbmirror.slave_state (slave_name, master, last_number, last_xid, applied_at, last_sha256)
    VALUES (slave, master, number, xid, pg_catalog.clock_timestamp(), NULL)
    ON CONFLICT (slave_name) DO UPDATE
       SET master = excluded.master, last_number = excluded.last_number, last_xid = excluded.last_xid,
           applied_at = excluded.applied_at, last_sha256 = NULL;
    -- The history of the stream this one replaces stays: its numbers are below this one (the
    -- exporter never numbers a snapshot at or below a number its outbox has seen), and a row
    -- left under a number of this stream describes a file of another life.
    INSERT INTO dbmirror.applied_file (slave_name, number, xid, exported_at, sha256, applied_at)
    VALUES (slave, number, xid, exported_at, NULL, pg_catalog.clock_timestamp())
    ON CONFLICT ON CONSTRAINT applied_file_pkey DO UPDATE
       SET xid = excluded.xid, exported_at = excluded.exported_at, sha256 = NULL, applied_at = excluded.applied_at;
END
$fn$;

-- Fails the file when an UPDATE or DELETE did not find exactly its one row: the slave has
-- drifted from the master, and going on would hide it.
CREATE OR REPLACE FUNCTION dbmirror.one_row(matched bigint, what text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF matched <> 1 THEN
        RAISE EXCEPTION '% matched % rows on the slave instead of 1', what, matched
            USING ERRCODE = 'DM005',
                  HINT = 'The slave no longer equals the master for this table; compare them with dbmirror-export verify.';
    END IF;
END
$fn$;

-- Moves a sequence forward to the master's position, never backwards (a file applied late
-- must not undo a newer value).
CREATE OR REPLACE FUNCTION dbmirror.advance_sequence(seq regclass, value bigint, is_called boolean)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    current_value bigint;
    current_called boolean;
    step bigint;
BEGIN
    EXECUTE pg_catalog.format('SELECT last_value, is_called FROM %s', seq) INTO current_value, current_called;
    SELECT s.seqincrement INTO step FROM pg_catalog.pg_sequence s WHERE s.seqrelid = seq;
    -- Compare the values nextval() would return next.
    IF (step > 0 AND value + CASE WHEN is_called THEN step ELSE 0 END
                   > current_value + CASE WHEN current_called THEN step ELSE 0 END)
       OR (step < 0 AND value + CASE WHEN is_called THEN step ELSE 0 END
                   < current_value + CASE WHEN current_called THEN step ELSE 0 END) THEN
        PERFORM pg_catalog.setval(seq, value, is_called);
    END IF;
END
$fn$;

-- For tables mirrored with check_conflicts: whether a column still holds the value the master's
-- row had before the change, compared as text under the file's canonical settings (every type
-- has an output function, not every type an equality operator). NULL is only NULL.
CREATE OR REPLACE FUNCTION dbmirror.old_value(value anyelement, old text)
RETURNS boolean LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT CASE WHEN old IS NULL THEN value IS NULL
                ELSE value IS NOT NULL AND pg_catalog.format('%s', value) = old END
$fn$;
